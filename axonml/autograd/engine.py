"""The backward engine.

Note on order: nodes run when all their inputs' gradients have arrived, latest-created
first (a heap on the creation sequence number), like PyTorch. ``AccumulateGrad`` nodes
have the highest priority, so a leaf's gradient is written, and its post-accumulate-grad
hooks fire, as soon as it is complete: DDP launches bucket all-reduces from there while
the rest of backward still runs.

Note on end-of-backward callbacks: :func:`queue_callback`, called while a backward runs
(from a hook), appends a function that runs once that backward has processed its whole
graph, in the thread that called it, after grad mode is restored (PyTorch's
``Variable._execution_engine.queue_callback``). DDP and FSDP finalise there: wait for
the last bucket, write the averaged gradients back. Callbacks may queue further ones; they
do not run when backward raised.

Note on values: without ``create_graph`` gradients are raw arrays; with it they are
Tensors and every node runs its ``differentiable_backward``. The engine only adds
gradients, which works for both.

Note on gradient buffers: :func:`offer_grad_buffer` lets the owner of a leaf's gradient
storage (DDP's buckets) offer an array where the leaf's next gradient may be computed
directly; an op whose backward produces a leaf's whole gradient in one product (Linear's
weight) takes it with :func:`claim_grad_buffer`, at most once per offer, so the leaf's
``.grad`` is then a tensor over that array and nobody copies it there afterwards. The
offer lives on the leaf's ``AccumulateGrad`` node (that is, with the current graph).
"""

from __future__ import annotations

import heapq
import itertools
import threading
from typing import Any, Sequence

from ..errors import AutogradError, ShapeError
from .function import Node
from .grad_mode import state as _grad_state
from .variable import _ACCUMULATE_GRAD, TensorBase, make_tensor

_INF = float("inf")
_TLS = threading.local()  # .callbacks: a stack of lists, one per running backward of this thread


def queue_callback(fn: Any) -> None:
    """Run ``fn()`` once when the backward that is running now (in this thread) finishes.

    Call it from a hook during backward. Example (DDP's end of backward)::

        def hook(param):
            if first_ready_in_this_backward:
                ax.autograd.queue_callback(reducer.finalize)
        p.register_post_accumulate_grad_hook(hook)

    Raises:
        AutogradError: no backward is running in this thread.
    """
    stack = getattr(_TLS, "callbacks", None)
    if not stack:
        raise AutogradError("queue_callback: no backward is running in this thread; call it from a hook during backward")
    if not callable(fn):
        raise TypeError(f"queue_callback: expected a callable, got {type(fn).__name__}")
    stack[-1].append(fn)


class AccumulateGrad(Node):
    """The sink of a leaf: runs the leaf's hooks, adds into ``.grad``, fires post hooks."""

    _seq = _INF
    #: an array offered for the leaf's next gradient (see :func:`offer_grad_buffer`)
    grad_buffer: Any = None

    def __init__(self, variable: TensorBase) -> None:
        self.variable = variable

    def accumulate(self, grad: Any, create_graph: bool) -> None:
        var = self.variable
        if var._hooks:
            grad = _run_hooks(var._hooks, grad, var._device, create_graph)
        if create_graph:
            if not isinstance(grad, TensorBase):
                grad = make_tensor(grad, var._device)
            var.grad = grad if var.grad is None else var.grad + grad
        else:
            if isinstance(grad, TensorBase):
                grad = grad._data
            if grad.shape != var._data.shape:
                raise ShapeError(
                    f"gradient of shape {tuple(grad.shape)} for a leaf of shape "
                    f"{tuple(var._data.shape)}: a hook or custom Function returned a wrong shape"
                )
            if grad.dtype != var._data.dtype:
                grad = grad.astype(var._data.dtype)
            old = var.grad
            if old is None:
                flags = grad.flags
                if not flags.c_contiguous or not getattr(flags, "writeable", True):
                    grad = grad.copy()  # never hand out a read-only or broadcast view
                var.grad = make_tensor(grad, var._device)
            else:
                xp = var._device.xp
                xp.add(old._data, grad, out=old._data)
                old._vc[0] += 1
        if var._post_hooks:
            for hook in var._post_hooks:
                hook(var)


_ACCUMULATE_GRAD[0] = AccumulateGrad


def offer_grad_buffer(leaf: TensorBase, buffer: Any) -> bool:
    """Offer ``buffer`` (a C-contiguous array of ``leaf``'s shape, dtype and device) as the
    place where this graph's backward may compute ``leaf``'s gradient (``None`` withdraws
    an offer). Returns False when ``leaf`` is in no graph now (nothing to offer to).

    Only an op that computes the leaf's whole gradient in one product takes it (see
    :func:`claim_grad_buffer`), and only while ``leaf.grad`` is None; the caller must not
    use the array for anything else until that backward ends or it withdraws the offer.
    """
    if buffer is not None and not (hasattr(buffer, "shape") and hasattr(buffer, "dtype")):
        raise TypeError(f"offer_grad_buffer: buffer must be an array (NumPy or CuPy) or None, got {type(buffer).__name__}")
    ref = leaf._acc
    acc = ref() if ref is not None else None
    if acc is None:
        return False
    acc.grad_buffer = buffer
    return True


def claim_grad_buffer(node: Node, index: int, shape: tuple, dtype: Any) -> Any:
    """The buffer offered for the leaf behind input ``index`` of ``node`` (an op's backward
    context), taken (the offer ends), when it has this ``shape`` and ``dtype`` and the
    leaf has no ``.grad``; else None (the op allocates its result as usual)."""
    edges = node.next_functions
    edge = edges[index] if index < len(edges) else None
    acc = edge[0] if edge is not None else None
    buf = getattr(acc, "grad_buffer", None)
    if buf is None or buf.shape != shape or buf.dtype != dtype or acc.variable.grad is not None:
        return None
    acc.grad_buffer = None
    return buf


def _run_hooks(hooks: list, grad: Any, device: Any, create_graph: bool) -> Any:
    """Run tensor hooks; each gets a Tensor and may return a replacement."""
    for hook in hooks:
        gt = grad if isinstance(grad, TensorBase) else make_tensor(grad, device)
        out = hook(gt)
        if out is not None:
            if not isinstance(out, TensorBase):
                raise AutogradError(f"a tensor hook must return a Tensor or None, got {type(out).__name__}")
            if tuple(out.shape) != tuple(gt.shape):
                raise ShapeError(
                    f"a tensor hook returned a gradient of shape {tuple(out.shape)} for a gradient of shape {tuple(gt.shape)}"
                )
            grad = out if create_graph else out._data
    return grad


def _dependencies(roots: Sequence[Node]) -> dict:
    deps: dict = {}
    seen = set(roots)
    stack = list(roots)
    while stack:
        node = stack.pop()
        for edge in node.next_functions:
            if edge is None:
                continue
            nxt = edge[0]
            deps[nxt] = deps.get(nxt, 0) + 1
            if nxt not in seen:
                seen.add(nxt)
                stack.append(nxt)
    return deps


def _run_callbacks(callbacks: list) -> None:
    """Run the end-of-backward callbacks in order; ones they queue run too (their own list
    is live while they run, as the backward's was)."""
    stack = _TLS.callbacks
    stack.append(callbacks)
    try:
        i = 0
        while i < len(callbacks):
            callbacks[i]()
            i += 1
    finally:
        stack.pop()


def run_backward(
    outputs: Sequence[TensorBase],
    grad_outputs: Sequence[Any],
    retain_graph: bool = False,
    create_graph: bool = False,
    inputs: Sequence[TensorBase] | None = None,
    allow_unused: bool = False,
) -> list | None:
    """Backpropagate ``grad_outputs`` (arrays, or Tensors with create_graph) from
    ``outputs``. With ``inputs``, return their gradients instead of accumulating
    into ``.grad`` (the ``grad()`` API)."""
    roots: list = []
    for i, (t, g) in enumerate(zip(outputs, grad_outputs)):
        if not t._rg:
            raise AutogradError(
                f"element {i} of the tensors passed to backward does not require grad and "
                "has no grad_fn: nothing to differentiate (did you call it inside no_grad, "
                "or forget requires_grad=True?)"
            )
        node, nr = t._grad_edge()
        roots.append((node, nr, g))
    captures: dict = {}
    if inputs is not None:
        for i, t in enumerate(inputs):
            if not t._rg:
                raise AutogradError(f"input {i} of grad() does not require grad")
            captures.setdefault(t._grad_edge(), []).append(i)
    results: list = [None] * (len(inputs) if inputs is not None else 0)

    root_nodes = list(dict.fromkeys(n for n, _, _ in roots))
    deps = _dependencies(root_nodes)
    buffers: dict = {}
    for node, nr, g in roots:
        buf = buffers.get(node)
        if buf is None:
            buf = buffers[node] = [None] * node._n_outputs
        buf[nr] = g if buf[nr] is None else buf[nr] + g

    tie = itertools.count()
    heap = [(-n._seq, next(tie), n) for n in root_nodes if deps.get(n, 0) == 0]
    heapq.heapify(heap)
    prev_mode = _grad_state.enabled
    _grad_state.enabled = create_graph
    stack = getattr(_TLS, "callbacks", None)
    if stack is None:
        stack = _TLS.callbacks = []
    callbacks: list = []
    stack.append(callbacks)
    try:
        while heap:
            node = heapq.heappop(heap)[2]
            buf = buffers.pop(node, None) or [None] * node._n_outputs
            if node._pre_hooks:
                dev = getattr(node, "device", None)
                for nr, hooks in node._pre_hooks.items():
                    if buf[nr] is not None:
                        buf[nr] = _run_hooks(hooks, buf[nr], dev, create_graph)
            if node._retain_hooks:  # retain_grad() sees the gradient after all other hooks
                dev = getattr(node, "device", None)
                for nr, keep in node._retain_hooks.items():
                    if buf[nr] is not None:
                        keep(buf[nr] if isinstance(buf[nr], TensorBase) else make_tensor(buf[nr], dev))
            if captures:
                for nr in range(len(buf)):
                    for idx in captures.get((node, nr), ()):
                        results[idx] = buf[nr]
            if isinstance(node, AccumulateGrad):
                if inputs is None and buf[0] is not None:
                    node.accumulate(buf[0], create_graph)
                continue
            if all(g is None for g in buf):
                grads_in: tuple = (None,) * len(node.next_functions)
            else:
                grads_in = node._run(buf, create_graph)
                if not retain_graph:
                    node._release()
            seen_ids: set = set()
            for edge, g in zip(node.next_functions, grads_in):
                if edge is None:
                    continue
                nxt, nr = edge
                if g is not None:
                    if id(g) in seen_ids:
                        g = g.clone() if isinstance(g, TensorBase) else g.copy()  # no aliasing
                    seen_ids.add(id(g))
                    nbuf = buffers.get(nxt)
                    if nbuf is None:
                        nbuf = buffers[nxt] = [None] * nxt._n_outputs
                    nbuf[nr] = g if nbuf[nr] is None else nbuf[nr] + g
                left = deps[nxt] - 1
                deps[nxt] = left
                if left == 0:
                    heapq.heappush(heap, (-nxt._seq, next(tie), nxt))
    finally:
        _grad_state.enabled = prev_mode
        stack.pop()
    _run_callbacks(callbacks)

    if inputs is None:
        return None
    for i, r in enumerate(results):
        if r is None and not allow_unused:
            raise AutogradError(
                f"input {i} of grad() was not used to compute the outputs; pass allow_unused=True to get None for it"
            )
    return results
