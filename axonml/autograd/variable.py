"""``TensorBase``: the data and autograd metadata that the engine works on.

Note on layering: the engine (this layer) must create tensors (gradients, hook
arguments) but may not import the ``Tensor`` class of layer 3. Layer 3 registers its
class with :func:`register_tensor_class`; :func:`make_tensor` then builds instances of
it. Everything the engine needs lives on ``TensorBase``.

Note on versions: ``_vc`` is a one-element list shared by a tensor and all its views;
every in-place write bumps it, and saved tensors remember the value they were saved at.
"""

from __future__ import annotations

import itertools
import weakref
from typing import Any

from ..errors import AutogradError, DTypeError
from ..runtime.devices.device import Device
from ..runtime.devices.memory import new_storage
from ..runtime.dtypes import ALL_DTYPES, DType

NP_TO_DTYPE = {d.np: d for d in ALL_DTYPES}
_new = object.__new__
_seq = itertools.count()


class TensorBase:
    __slots__ = (
        "_data",
        "_dtype",
        "_device",
        "_rg",
        "grad",
        "grad_fn",
        "_output_nr",
        "_vc",
        "_base",
        "_has_views",
        "_acc",
        "_hooks",
        "_post_hooks",
        "_retains_grad",
        "_storage",
        "__weakref__",
    )

    # -- metadata -------------------------------------------------------------------
    @property
    def dtype(self) -> DType:
        return self._dtype

    @property
    def device(self) -> Device:
        return self._device

    @property
    def shape(self) -> tuple:
        return self._data.shape

    @property
    def ndim(self) -> int:
        return self._data.ndim

    @property
    def is_leaf(self) -> bool:
        """True for tensors created by the user rather than by a recorded op."""
        return self.grad_fn is None

    @property
    def requires_grad(self) -> bool:
        return self._rg

    @requires_grad.setter
    def requires_grad(self, value: bool) -> None:
        self.requires_grad_(value)

    def requires_grad_(self, requires_grad: bool = True) -> "TensorBase":
        """Set ``requires_grad`` in place on a leaf; returns self."""
        if self.grad_fn is not None:
            if not requires_grad:
                raise AutogradError(
                    "you can only change requires_grad of leaf tensors; this tensor was "
                    f"made by {type(self.grad_fn).__name__}. Use .detach() instead."
                )
            return self
        if requires_grad and not self._dtype.is_floating_point:
            raise DTypeError(f"only floating point tensors can require gradients, got {self._dtype}; convert with .float() first")
        self._rg = bool(requires_grad)
        return self

    @property
    def _version(self) -> int:
        return self._vc[0]

    def _has_live_views(self) -> bool:
        """True while a view of this tensor's storage (or the base it views) is alive."""
        views = self._has_views
        return views is not False and any(r() is not None for r in views)

    # -- autograd plumbing ----------------------------------------------------------
    def _grad_edge(self) -> tuple:
        """(node, output_nr) through which gradients flow into this tensor."""
        fn = self.grad_fn
        if fn is not None:
            return (fn, self._output_nr)
        acc = self._acc() if self._acc is not None else None
        if acc is None:
            acc = _ACCUMULATE_GRAD[0](self)
            self._acc = weakref.ref(acc)
        return (acc, 0)


_TENSOR_CLS: list[type] = [TensorBase]
_ACCUMULATE_GRAD: list[Any] = [None]


def register_tensor_class(cls: type) -> None:
    """Layer 3 calls this with its ``Tensor`` class (see the module note)."""
    _TENSOR_CLS[0] = cls


def make_tensor(
    data: Any,
    device: Device,
    requires_grad: bool = False,
    grad_fn: Any = None,
    output_nr: int = 0,
    base: "TensorBase | None" = None,
) -> Any:
    """Wrap an array as a tensor. ``base`` makes it a view sharing ``base``'s version."""
    t = _new(_TENSOR_CLS[0])
    t._data = data
    try:
        t._dtype = NP_TO_DTYPE[data.dtype]
    except KeyError:
        raise DTypeError(
            f"array dtype {data.dtype} has no AxonML equivalent; supported: {[d.name for d in ALL_DTYPES]}"
        ) from None
    t._device = device
    t._rg = requires_grad
    t.grad = None
    t.grad_fn = grad_fn
    t._output_nr = output_nr
    t._acc = None
    t._hooks = None
    t._post_hooks = None
    t._retains_grad = False
    t._has_views = False  # becomes a list of weak references to views of this storage
    if base is None:
        t._vc = [0]
        t._base = None
        t._storage = new_storage(device._key, data.nbytes)
    else:
        root = base._base if base._base is not None else base
        views = root._has_views
        if views is False:
            root._has_views = [weakref.ref(t)]
        else:
            if len(views) >= 64:  # prune dead views now and then
                views[:] = [r for r in views if r() is not None]
            views.append(weakref.ref(t))
        t._vc = base._vc
        t._base = root
        t._storage = root._storage
    return t
