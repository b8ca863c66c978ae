"""``Parameter``: a leaf tensor that a ``Module`` registers as trainable state."""

from __future__ import annotations

from typing import Any

from ..tensor import Tensor, empty, tensor

_SLOTS = [s for s in Tensor.__mro__[1].__slots__ if s != "__weakref__"]


class Parameter(Tensor):
    """A tensor that is a module parameter (``requires_grad=True`` by default).

    Example::

        w = ax.nn.Parameter(ax.randn(4, 3))
    """

    __slots__ = ()

    def __new__(cls, data: Tensor | None = None, requires_grad: bool = True) -> "Parameter":
        if data is None:
            data = empty(0)
        if not isinstance(data, Tensor):
            raise TypeError(f"Parameter expects a Tensor, got {type(data).__name__}")
        p = object.__new__(cls)
        for name in _SLOTS:
            setattr(p, name, getattr(data, name))
        # a parameter is a fresh leaf that shares the tensor's storage
        p.grad = None
        p.grad_fn = None
        p._output_nr = 0
        p._acc = None
        p._hooks = None
        p._post_hooks = None
        p._retains_grad = False
        p._rg = False
        p.requires_grad_(requires_grad)
        return p

    def __init__(self, data: Any = None, requires_grad: bool = True) -> None:
        pass

    def __repr__(self) -> str:
        return "Parameter containing:\n" + super().__repr__()

    def __reduce_ex__(self, proto: int) -> Any:
        return (_rebuild_parameter, (self.detach().numpy(), self._dtype.name, str(self._device), self._rg))


def _rebuild_parameter(array: Any, dtype: str, device: str, requires_grad: bool) -> Parameter:
    return Parameter(tensor(array, dtype=dtype, device=device), requires_grad)


class Buffer:
    """Marker for ``Module.register_buffer``-style attributes (PyTorch's ``nn.Buffer``)."""

    def __init__(self, data: Tensor, persistent: bool = True) -> None:
        self.data = data
        self.persistent = persistent
