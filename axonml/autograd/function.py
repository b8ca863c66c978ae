"""``Function``: one differentiable op, forward and backward side by side, on raw arrays.

Usage (a custom op)::

    class Cube(ax.autograd.Function):
        @staticmethod
        def forward(ctx, x):            # x is a NumPy (or CuPy) array
            ctx.save_for_backward(x)
            return x ** 3
        @staticmethod
        def backward(ctx, g):           # g is an array shaped like the output
            (x,) = ctx.saved_tensors
            return 3 * x * x * g

    y = Cube.apply(t)                   # t is an axonml Tensor; y is one too

Note on ctx: the ctx *is* the graph node (an instance of the Function subclass), as in
PyTorch. Its class attributes give defaults so that ``apply`` only sets what differs.
``ctx.xp`` is the array module of the inputs' device: write ``ctx.xp.exp(x)`` rather than
``np.exp(x)`` and the op runs on CuPy too.

Note on second order: a subclass may define ``differentiable_backward(ctx, *grads)``
working on Tensors with differentiable ops; with ``create_graph=True`` the engine calls it
instead of ``backward``. ``keep_inputs = True`` makes ``ctx.inputs`` hold the input
tensors for it (only ops that need them set it, since it keeps them alive).
"""

from __future__ import annotations

import functools
from typing import Any

from ..errors import AutogradError, DeviceError
from ..runtime.devices.device import cpu
from .grad_mode import state as _grad_state
from .variable import NP_TO_DTYPE, TensorBase, _seq, make_tensor

_new = object.__new__


class Node:
    """A node of the backward graph: ``next_functions`` holds (node, output_nr) edges."""

    next_functions: tuple = ()
    _seq: float = 0
    _n_outputs: int = 1
    _pre_hooks: dict | None = None
    _retain_hooks: dict | None = None
    _freed: bool = False

    def name(self) -> str:
        return type(self).__name__

    def register_prehook(self, output_nr: int, hook: Any) -> None:
        """Run ``hook(grad_tensor)`` on this node's ``output_nr`` gradient before it runs."""
        if self._pre_hooks is None:
            self._pre_hooks = {}
        self._pre_hooks.setdefault(output_nr, []).append(hook)


class Function(Node):
    """Base of differentiable ops; subclass with static ``forward`` and ``backward``."""

    # ctx defaults
    _saved: tuple = ()
    _saved_vcs: tuple | None = None
    view_of: int | None = None  # the output views the storage of input ``view_of``
    materialize_grads: bool = True
    keep_inputs: bool = False
    always_record: bool = False  # record a node even when no input requires grad
    differentiable_backward: Any = None
    _nondiff: frozenset = frozenset()
    _out_meta: tuple | None = None

    # -- ctx API ----------------------------------------------------------------------
    @functools.cached_property
    def needs_input_grad(self) -> tuple:
        """One bool per forward argument: does backward need to produce its gradient?
        (Derived from the graph edges on first use, so forward does not pay for it.)"""
        return tuple([e is not None for e in self.next_functions])

    def save_for_backward(self, *arrays: Any) -> None:
        """Keep ``arrays`` for backward; in-place changes to them are detected."""
        self._saved = arrays

    @property
    def saved_tensors(self) -> tuple:
        """The saved arrays; raises if the graph was freed or one was modified in place."""
        if self._freed:
            raise _freed_error(self)
        vcs = self._saved_vcs
        if vcs is not None:
            for i, entry in enumerate(vcs):
                if entry is not None and entry[0][0] != entry[1]:
                    raise AutogradError(
                        "one of the variables needed for gradient computation has been "
                        f"modified by an inplace operation: saved tensor {i} of "
                        f"{self.name()} (shape {tuple(self._saved[i].shape)}) is at version "
                        f"{entry[0][0]}; expected version {entry[1]}. Use an out-of-place "
                        "op, or .clone() the tensor before modifying it."
                    )
        return self._saved

    def mark_non_differentiable(self, *arrays: Any) -> None:
        """Outputs in ``arrays`` get no gradient (e.g. the indices of ``max``)."""
        self._nondiff = frozenset(id(a) for a in arrays)

    def set_materialize_grads(self, value: bool) -> None:
        """With False, backward receives None for outputs that got no gradient."""
        self.materialize_grads = value

    # -- the op ------------------------------------------------------------------------
    @staticmethod
    def forward(ctx: Any, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError("a Function subclass must define forward(ctx, ...)")

    @staticmethod
    def backward(ctx: Any, *grads: Any) -> Any:
        raise NotImplementedError("a Function subclass must define backward(ctx, ...)")

    @classmethod
    def apply(cls, *args: Any, **kwargs: Any) -> Any:
        """Run forward on the arrays of the tensor arguments and record the graph."""
        ctx = _new(cls)
        dev = None
        need = False
        raw = []
        for a in args:
            if isinstance(a, TensorBase):
                d = a._device
                if dev is None:
                    dev = d
                elif d is not dev:
                    raise DeviceError(
                        f"{cls.__name__}: expected all tensors on one device, got {dev} and {d}; move them with .to(device)"
                    )
                raw.append(a._data)
                if a._rg:
                    need = True
            else:
                raw.append(a)
        if dev is None:
            dev = kwargs.pop("device", None) or cpu
        ctx.device = dev
        ctx.xp = xp = dev._xp or dev.xp
        if (need or cls.always_record) and _grad_state.enabled:
            need = True
            edges = tuple(
                [
                    ((a.grad_fn, a._output_nr) if a.grad_fn is not None else a._grad_edge())
                    if isinstance(a, TensorBase) and a._rg
                    else None
                    for a in args
                ]
            )
            ctx.next_functions = edges
        else:
            need = False
        out = cls.forward(ctx, *raw, **kwargs) if kwargs else cls.forward(ctx, *raw)
        if ctx.device is not dev:  # a device copy: outputs live where forward put them
            dev = ctx.device
            xp = dev.xp
        view_of = ctx.view_of
        base = None if view_of is None else args[view_of]
        if type(out) is not tuple:
            # the common case: one output
            if not isinstance(out, xp.ndarray):
                out = xp.asarray(out)  # NumPy reductions return scalars
            if not need:
                return make_tensor(out, dev, False, None, 0, base)
            ctx._seq = next(_seq)
            if ctx.keep_inputs:
                ctx.inputs = args
            diff = NP_TO_DTYPE[out.dtype].is_floating_point and id(out) not in ctx._nondiff
            res = make_tensor(out, dev, diff, ctx if diff else None, 0, base)
            if ctx._saved:
                ctx._saved_vcs = _saved_versions(ctx._saved, args, (res,))
            return res

        outs = tuple([o if o is None or isinstance(o, xp.ndarray) else xp.asarray(o) for o in out])
        if not need:
            return tuple([None if o is None else make_tensor(o, dev, False, None, 0, base) for o in outs])
        ctx._seq = next(_seq)
        ctx._n_outputs = len(outs)
        if ctx.keep_inputs:
            ctx.inputs = args
        nondiff = ctx._nondiff
        res = []
        for i, o in enumerate(outs):
            if o is None:
                res.append(None)
                continue
            diff = NP_TO_DTYPE[o.dtype].is_floating_point and id(o) not in nondiff
            res.append(make_tensor(o, dev, diff, ctx if diff else None, i, base))
        ctx._out_meta = tuple([None if t is None else (t.shape, t._data.dtype) for t in res])
        if ctx._saved:
            ctx._saved_vcs = _saved_versions(ctx._saved, args, res)
        return tuple(res)

    # -- engine side ------------------------------------------------------------------
    def _run(self, grads: list, create_graph: bool) -> tuple:
        if self._freed:
            raise _freed_error(self)
        if self.materialize_grads and self._out_meta is not None:
            xp = self.xp
            for i, g in enumerate(grads):
                if g is None and self._out_meta[i] is not None:
                    shape, dt = self._out_meta[i]
                    z = xp.zeros(shape, dtype=dt)
                    grads[i] = make_tensor(z, self.device) if create_graph else z
        if create_graph:
            fn = type(self).differentiable_backward
            if fn is None:
                raise AutogradError(
                    f"create_graph=True is not supported through {self.name()}: it has no "
                    "differentiable backward. Second order works through elementwise ops, "
                    "reductions, reshapes and matmul."
                )
            res = fn(self, *grads)
        else:
            res = type(self).backward(self, *grads)
        if type(res) is not tuple:
            res = (res,)
        if len(res) != len(self.next_functions):
            raise AutogradError(
                f"{self.name()}.backward returned {len(res)} gradient(s), expected "
                f"{len(self.next_functions)} (one per forward argument, None for non-tensors)"
            )
        return res

    def _release(self) -> None:
        """Free what backward saved (retain_graph=False)."""
        d = self.__dict__
        keep = {
            k: d[k] for k in ("next_functions", "_seq", "_n_outputs", "device", "xp", "_pre_hooks", "_retain_hooks") if k in d
        }
        d.clear()
        d.update(keep)
        self._freed = True


def _saved_versions(saved: tuple, inputs: tuple, outputs: list) -> tuple:
    vcs = []
    for s in saved:
        entry = None
        for t in (*inputs, *outputs):
            if isinstance(t, TensorBase) and t._data is s:
                entry = (t._vc, t._vc[0], t._storage)  # the storage token keeps it counted
                break
        vcs.append(entry)
    return tuple(vcs)


def _freed_error(node: Node) -> AutogradError:
    return AutogradError(
        f"trying to backward through {node.name()} a second time, or to read its saved "
        "tensors after they were freed. Pass retain_graph=True to the first backward "
        "if you need to backward through the graph again."
    )


class once_differentiable:
    """Decorator for a backward that is not itself differentiable (for API parity)."""

    def __new__(cls, fn: Any) -> Any:
        return fn
