"""Activation checkpointing: keep only a segment's inputs, recompute its activations in
backward.

Note on mechanism: the segment runs under ``no_grad`` in forward, so none of its
intermediate tensors survive; one graph node (``_Checkpoint``) stands for it and saves
only the inputs. In backward that node restores the RNG state of the forward (so dropout
draws the same masks), reruns the segment with grad enabled on detached copies of the
inputs, and backpropagates through the recomputed graph: parameters used inside receive
their gradients there, and the inputs' gradients flow on to the outer graph.

Note on RNG: the generators live in layer 3; they register a (get_state, set_state)
pair with :func:`register_rng_state` so that this layer can save and restore them.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

from ..errors import AutogradError
from .engine import run_backward
from .function import Function
from .grad_mode import enable_grad, no_grad
from .variable import TensorBase, make_tensor

_RNG_STATES: list[tuple[Callable[[], Any], Callable[[Any], None]]] = []


def register_rng_state(get_state: Callable[[], Any], set_state: Callable[[Any], None]) -> None:
    """Register a random generator whose state checkpointing saves and replays."""
    _RNG_STATES.append((get_state, set_state))


class _Checkpoint(Function):
    always_record = True

    @staticmethod
    def forward(ctx, fn, preserve_rng, n_out, *arrays):
        ctx.fn = fn
        ctx.rng = [get() for get, _ in _RNG_STATES] if preserve_rng else None
        ctx.save_for_backward(*arrays)
        ctx.devices = ctx.device
        with no_grad():
            outs = fn(*[a if not _is_array(a) else make_tensor(a, ctx.device) for a in arrays])
        single = isinstance(outs, TensorBase)
        ctx.single = single
        outs = (outs,) if single else tuple(outs)
        for o in outs:
            if not isinstance(o, TensorBase):
                raise AutogradError(f"checkpoint: the function must return tensors, got {type(o).__name__}")
        n_out.append(len(outs))
        return outs[0]._data if single else tuple(o._data for o in outs)

    @staticmethod
    def backward(ctx, *grads):
        arrays = ctx.saved_tensors
        need = ctx.needs_input_grad[3:]
        inputs = []
        for a, req in zip(arrays, need):
            if _is_array(a):
                t = make_tensor(a, ctx.device)
                if req:
                    t.requires_grad_(True)
                inputs.append(t)
            else:
                inputs.append(a)
        saved_now = None
        if ctx.rng is not None:
            saved_now = [get() for get, _ in _RNG_STATES]
            for (_, set_state), st in zip(_RNG_STATES, ctx.rng):
                set_state(st)
        try:
            with enable_grad():
                outs = ctx.fn(*inputs)
        finally:
            if saved_now is not None:
                for (_, set_state), st in zip(_RNG_STATES, saved_now):
                    set_state(st)
        outs = (outs,) if isinstance(outs, TensorBase) else tuple(outs)
        pairs = [(o, g) for o, g in zip(outs, grads) if g is not None and o.requires_grad]
        if pairs:
            run_backward([o for o, _ in pairs], [g for _, g in pairs])
        in_grads = tuple(
            (t.grad._data if t.grad is not None else None) if isinstance(t, TensorBase) and t.requires_grad else None
            for t in inputs
        )
        return (None, None, None) + in_grads


def _is_array(a: Any) -> bool:
    return hasattr(a, "shape") and hasattr(a, "dtype") and not isinstance(a, TensorBase)


def checkpoint(
    function: Callable[..., Any], *args: Any, use_reentrant: bool = False, preserve_rng_state: bool = True, **kwargs: Any
) -> Any:
    """Run ``function(*args, **kwargs)`` without keeping its activations; recompute them
    in backward. Gradients equal those of the plain call (dropout included, through RNG
    state replay).

    Example::

        h = ax.autograd.checkpoint(block, h)   # block: a Module or function of tensors
    """
    if kwargs:
        fn: Callable[..., Any] = lambda *a: function(*a, **kwargs)  # noqa: E731
    else:
        fn = function
    n_out: list = []
    out = _Checkpoint.apply(fn, preserve_rng_state, n_out, *args)
    return out


def checkpoint_sequential(
    functions: Sequence[Callable[[Any], Any]], segments: int, input: Any, preserve_rng_state: bool = True
) -> Any:  # noqa: A002
    """Split ``functions`` (e.g. a Sequential) into ``segments`` checkpointed chunks; the
    last chunk runs normally (its activations are needed right away)."""
    funcs = list(functions.children()) if hasattr(functions, "children") else list(functions)
    if segments < 1:
        raise ValueError(f"checkpoint_sequential: segments must be >= 1, got {segments}")
    size = max(1, -(-len(funcs) // segments))

    def run(chunk: list) -> Callable[[Any], Any]:
        def f(x: Any) -> Any:
            for m in chunk:
                x = m(x)
            return x

        return f

    chunks = [funcs[i : i + size] for i in range(0, len(funcs), size)]
    for chunk in chunks[:-1]:
        input = checkpoint(run(chunk), input, preserve_rng_state=preserve_rng_state)
    return run(chunks[-1])(input)
