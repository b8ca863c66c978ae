"""``Tensor``: an array on a device with autograd metadata.

Operators and op methods are bound in :mod:`axonml.tensor.methods` from the op modules'
``METHODS`` tables, so this file holds only what is specific to the tensor object itself:
conversion, device/dtype movement, autograd entry points and hooks, and the in-place
write protocol.
"""

from __future__ import annotations

import weakref
from typing import Any, Callable, Sequence

import numpy as np

from ..autograd.engine import run_backward
from ..autograd.function import Function
from ..autograd.grad_mode import state as _grad_state
from ..autograd.variable import TensorBase, make_tensor, register_tensor_class
from ..errors import AutogradError, ShapeError
from ..runtime.devices.device import as_device
from ..runtime.dtypes import DType, get_dtype


class _ToCopy(Function):
    """Copy across devices and/or dtypes; backward brings the gradient back."""

    @staticmethod
    def forward(ctx, x, device, dtype):
        ctx.src_device = ctx.device
        ctx.src_dtype = x.dtype
        if dtype is not None:
            x = x.astype(dtype.np, copy=False)
        if device is not ctx.device:
            x = device.from_host(ctx.device.to_host(x))
            ctx.device = device
        return x

    @staticmethod
    def backward(ctx, g):
        if ctx.device is not ctx.src_device:
            g = ctx.src_device.from_host(ctx.device.to_host(g))
        return g.astype(ctx.src_dtype, copy=False), None, None

    @staticmethod
    def differentiable_backward(ctx, g):
        return g.to(ctx.src_device, get_dtype(ctx.src_dtype)), None, None


class _Clone(Function):
    @staticmethod
    def forward(ctx, x):
        return x.copy()

    @staticmethod
    def backward(ctx, g):
        return g

    @staticmethod
    def differentiable_backward(ctx, g):
        return g


class Tensor(TensorBase):
    """A multi-dimensional array on a device, with autograd.

    Create tensors with :func:`axonml.tensor`, :func:`axonml.zeros`, :func:`axonml.randn`...
    Example::

        x = ax.randn(4, 8, requires_grad=True)
        (x * 2).sum().backward()
        x.grad  # 2 everywhere
    """

    __slots__ = ()
    __array_priority__ = 1000  # NumPy defers `ndarray op Tensor` to Tensor's reflected ops

    # -- basic properties -----------------------------------------------------------
    @property
    def data(self) -> "Tensor":
        """A tensor sharing storage with this one, outside autograd."""
        return make_tensor(self._data, self._device, base=self)

    @data.setter
    def data(self, value: "Tensor") -> None:
        if tuple(value.shape) != tuple(self.shape) and self._base is not None:
            raise ShapeError(f"cannot replace .data of a view with a tensor of another shape ({tuple(value.shape)})")
        self._data = value._data
        self._dtype = value._dtype
        self._device = value._device
        self._storage = value._storage  # memory accounting follows the new storage

    @property
    def is_cuda(self) -> bool:
        return self._device.type == "cuda"

    @property
    def itemsize(self) -> int:
        return self._dtype.itemsize

    @property
    def nbytes(self) -> int:
        return self._data.nbytes

    @property
    def T(self) -> "Tensor":
        return self.permute(*reversed(range(self.ndim)))

    @property
    def mT(self) -> "Tensor":
        return self.transpose(-2, -1)

    def size(self, dim: int | None = None) -> Any:
        """The shape, or the size of dimension ``dim``."""
        if dim is None:
            return tuple(self._data.shape)
        return self._data.shape[dim]

    def dim(self) -> int:
        return self._data.ndim

    def numel(self) -> int:
        return int(self._data.size)

    def element_size(self) -> int:
        return self._dtype.itemsize

    def is_floating_point(self) -> bool:
        return self._dtype.is_floating_point

    def is_contiguous(self) -> bool:
        return bool(self._data.flags.c_contiguous)

    def stride(self, dim: int | None = None) -> Any:
        """Strides in elements (as in PyTorch), or the stride of ``dim``."""
        st = tuple(s // self._dtype.itemsize for s in self._data.strides)
        return st if dim is None else st[dim]

    def data_ptr(self) -> int:
        return int(self._data.__array_interface__["data"][0]) if self._device.type == "cpu" else int(self._data.data.ptr)

    def __len__(self) -> int:
        if self.ndim == 0:
            raise TypeError("len() of a 0-d tensor")
        return self._data.shape[0]

    def __iter__(self):
        if self.ndim == 0:
            raise TypeError("iteration over a 0-d tensor")
        for i in range(self._data.shape[0]):
            yield self[i]

    def __repr__(self) -> str:
        arr = self._device.to_host(self._data)
        if self._dtype.name == "bfloat16":
            arr = arr.astype(np.float32)
        body = np.array2string(arr, separator=", ", prefix="tensor(", precision=4)
        extras = []
        if self._device.type != "cpu":
            extras.append(f"device='{self._device}'")
        if self._dtype.name not in ("float32", "int64", "bool"):
            extras.append(f"dtype={self._dtype!r}")
        if self.grad_fn is not None:
            extras.append(f"grad_fn=<{self.grad_fn.name()}>")
        elif self._rg:
            extras.append("requires_grad=True")
        return "tensor(" + body + "".join(", " + e for e in extras) + ")"

    # -- conversion -----------------------------------------------------------------
    def numpy(self, force: bool = False) -> np.ndarray:
        """The data as a NumPy array (shares memory on CPU). Refuses tensors that require
        grad unless ``force``, as PyTorch does (call ``.detach()`` first)."""
        if self._rg and not force:
            raise AutogradError("can't call numpy() on a tensor that requires grad; use tensor.detach().numpy()")
        return self._device.to_host(self._data)

    def item(self) -> Any:
        """The value of a one-element tensor as a Python number."""
        if self._data.size != 1:
            raise ShapeError(f"item() needs a tensor with one element, got shape {tuple(self.shape)}")
        return self._device.to_host(self._data).reshape(()).item()

    def tolist(self) -> Any:
        return self._device.to_host(self._data).tolist()

    def __float__(self) -> float:
        return float(self.item())

    def __int__(self) -> int:
        return int(self.item())

    def __index__(self) -> int:
        if self._dtype.is_floating_point:
            raise TypeError("only integer tensors can be used as an index")
        return int(self.item())

    def __bool__(self) -> bool:
        if self._data.size != 1:
            raise RuntimeError(f"the truth value of a tensor with {self._data.size} elements is ambiguous; use .any() or .all()")
        return bool(self.item())

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        arr = self._device.to_host(self._data)
        return arr if dtype is None else arr.astype(dtype)

    def __hash__(self) -> int:
        return id(self)

    def __reduce_ex__(self, proto: int) -> Any:
        # pickles (deepcopy, worker processes, object collectives) carry data, not graphs
        return (_rebuild_tensor, (self._device.to_host(self._data), str(self._device), self._rg and self.grad_fn is None))

    def to(self, *args: Any, **kwargs: Any) -> "Tensor":
        """``to(device)``, ``to(dtype)``, ``to(device, dtype)``, ``to(other_tensor)``;
        differentiable; returns self when nothing changes."""
        device = kwargs.pop("device", None)
        dtype = kwargs.pop("dtype", None)
        kwargs.pop("non_blocking", None)
        copy = kwargs.pop("copy", False)
        if kwargs:
            raise TypeError(f"to() got unexpected arguments {sorted(kwargs)}")
        for a in args:
            if isinstance(a, Tensor):
                device, dtype = a._device, a._dtype
            elif isinstance(a, DType) or (isinstance(a, str) and not a.startswith(("cpu", "cuda"))) or isinstance(a, type):
                dtype = a
            else:
                device = a
        dev = self._device if device is None else as_device(device)
        dt = None if dtype is None else get_dtype(dtype)
        if dev is self._device and (dt is None or dt is self._dtype):
            return self.clone() if copy else self
        if dev.type == "cuda":
            _ = dev.xp  # raise a clear DeviceError early when CUDA is unusable
        return _ToCopy.apply(self, dev, dt)

    def cpu(self) -> "Tensor":
        return self.to("cpu")

    def cuda(self, device: int | str | None = None) -> "Tensor":
        return self.to(as_device("cuda" if device is None else device if isinstance(device, str) else f"cuda:{device}"))

    def type(self, dtype: Any = None) -> Any:
        if dtype is None:
            return f"axonml.{self._dtype.name}"
        return self.to(dtype)

    def float(self) -> "Tensor":
        return self.to(get_dtype("float32"))

    def double(self) -> "Tensor":
        return self.to(get_dtype("float64"))

    def half(self) -> "Tensor":
        return self.to(get_dtype("float16"))

    def bfloat16(self) -> "Tensor":
        return self.to(get_dtype("bfloat16"))

    def long(self) -> "Tensor":
        return self.to(get_dtype("int64"))

    def int(self) -> "Tensor":
        return self.to(get_dtype("int32"))

    def bool(self) -> "Tensor":
        return self.to(get_dtype("bool"))

    def byte(self) -> "Tensor":
        return self.to(get_dtype("uint8"))

    # -- autograd -------------------------------------------------------------------
    def detach(self) -> "Tensor":
        """A tensor sharing storage, cut from the graph."""
        return make_tensor(self._data, self._device, base=self)

    def detach_(self) -> "Tensor":
        self.grad_fn = None
        self._rg = False
        return self

    def clone(self) -> "Tensor":
        """A copy with its own storage; differentiable."""
        return _Clone.apply(self)

    def backward(
        self, gradient: Any = None, retain_graph: bool | None = None, create_graph: bool = False, inputs: Any = None
    ) -> None:
        """Accumulate d(self)/d(leaf) into every leaf's ``.grad``.

        ``gradient`` is required unless this tensor has one element.
        """
        backward([self], None if gradient is None else [gradient], retain_graph, create_graph)

    def register_hook(self, hook: Callable[["Tensor"], "Tensor | None"]) -> Any:
        """Call ``hook(grad)`` when this tensor's gradient is computed; a returned tensor
        replaces the gradient. Returns a handle with ``remove()``."""
        if not self._rg:
            raise AutogradError("cannot register a hook on a tensor that does not require grad")
        if self.grad_fn is None:
            if self._hooks is None:
                self._hooks = []
            lst = self._hooks
        else:
            self.grad_fn.register_prehook(self._output_nr, hook)
            lst = self.grad_fn._pre_hooks[self._output_nr]
            return _HookHandle(lst, hook)
        lst.append(hook)
        return _HookHandle(lst, hook)

    def register_post_accumulate_grad_hook(self, hook: Callable[["Tensor"], None]) -> Any:
        """On a leaf: call ``hook(tensor)`` right after its ``.grad`` was accumulated
        during backward, in the order leaves become ready."""
        if self.grad_fn is not None:
            raise AutogradError("post-accumulate-grad hooks can only be registered on leaf tensors")
        if not self._rg:
            raise AutogradError("cannot register a hook on a tensor that does not require grad")
        if self._post_hooks is None:
            self._post_hooks = []
        self._post_hooks.append(hook)
        return _HookHandle(self._post_hooks, hook)

    def retain_grad(self) -> None:
        """Keep ``.grad`` for this non-leaf tensor after backward."""
        if self.grad_fn is None or self._retains_grad:
            return
        self._retains_grad = True
        ref = weakref.ref(self)

        def _keep(g: "Tensor") -> None:
            t = ref()
            if t is not None:
                t.grad = g.detach().clone() if t.grad is None else t.grad + g.detach()

        node = self.grad_fn
        if node._retain_hooks is None:
            node._retain_hooks = {}
        node._retain_hooks[self._output_nr] = _keep

    @property
    def retains_grad(self) -> bool:
        return self._retains_grad

    # -- in-place protocol ------------------------------------------------------------
    def _check_inplace(self, op: str) -> None:
        if _grad_state.enabled and self._rg:
            if self.grad_fn is None:
                raise AutogradError(
                    f"{op}: a leaf tensor that requires grad (shape {tuple(self.shape)}) cannot be "
                    "modified in place; wrap the update in `with ax.no_grad():`"
                )

    def _inplace_result(self, result: "Tensor", op: str) -> "Tensor":
        """Make ``self`` hold ``result`` (same shape), the in-place protocol of every
        ``op_`` method: without grad, write into the storage (views see it); with grad,
        take over the result's node (a tensor with views then cannot be rebased)."""
        if tuple(result.shape) != tuple(self._data.shape):
            raise ShapeError(
                f"{op}: the result has shape {tuple(result.shape)}, which does not match the "
                f"in-place target's shape {tuple(self.shape)} (in-place ops cannot broadcast the target)"
            )
        self._check_inplace(op)
        if result._rg and _grad_state.enabled:
            if self._base is not None or self._has_live_views():
                raise AutogradError(
                    f"{op}: in-place op on a tensor that requires grad and shares storage with "
                    "views is not supported; use the out-of-place op or .clone() first"
                )
            # the result is a new storage: nodes that saved the old array keep a valid,
            # unmodified copy, so the tensor starts a new version counter
            self._data = result._data.astype(self._data.dtype, copy=False)
            self._storage = result._storage
            self._vc = [self._vc[0] + 1]
            self.grad_fn = result.grad_fn
            self._output_nr = result._output_nr
            self._rg = True
            return self
        else:
            src = result._data
            if self._data.dtype != src.dtype:
                src = src.astype(self._data.dtype)
            self._data[...] = src
        self._vc[0] += 1
        return self


def _rebuild_tensor(array: np.ndarray, device: str, requires_grad: bool) -> Tensor:
    dev = as_device(device)
    t = make_tensor(dev.from_host(np.array(array)), dev)
    return t.requires_grad_(True) if requires_grad else t


class _HookHandle:
    """Returned by hook registration; ``remove()`` unregisters."""

    def __init__(self, lst: list, hook: Any) -> None:
        self._lst = lst
        self._hook = hook

    def remove(self) -> None:
        if self._hook in self._lst:
            self._lst.remove(self._hook)


register_tensor_class(Tensor)


def _grad_array(t: Tensor, g: Any, create_graph: bool) -> Any:
    if g is None:
        if t._data.size != 1:
            raise AutogradError(
                f"grad can be implicitly created only for tensors with one element; this one "
                f"has shape {tuple(t.shape)}: pass gradient=... to backward()"
            )
        arr = t._device.xp.ones(t._data.shape, dtype=t._data.dtype)
        return make_tensor(arr, t._device) if create_graph else arr
    if not isinstance(g, Tensor):
        g = make_tensor(t._device.xp.asarray(g, dtype=t._data.dtype), t._device)
    if tuple(g.shape) != tuple(t.shape):
        raise ShapeError(f"gradient of shape {tuple(g.shape)} given for a tensor of shape {tuple(t.shape)}")
    if create_graph:
        return g
    return g._data.copy()  # the engine may hand it to a leaf's .grad: never alias the caller's


def backward(
    tensors: Sequence[Tensor] | Tensor,
    grad_tensors: Sequence[Any] | None = None,
    retain_graph: bool | None = None,
    create_graph: bool = False,
) -> None:
    """Accumulate gradients of ``tensors`` into the leaves' ``.grad`` (torch.autograd.backward)."""
    if isinstance(tensors, Tensor):
        tensors = [tensors]
    if grad_tensors is None:
        grad_tensors = [None] * len(tensors)
    elif isinstance(grad_tensors, Tensor):
        grad_tensors = [grad_tensors]
    if retain_graph is None:
        retain_graph = create_graph
    grads = [_grad_array(t, g, create_graph) for t, g in zip(tensors, grad_tensors)]
    run_backward(tensors, grads, retain_graph, create_graph)


def grad(
    outputs: Sequence[Tensor] | Tensor,
    inputs: Sequence[Tensor] | Tensor,
    grad_outputs: Sequence[Any] | None = None,
    retain_graph: bool | None = None,
    create_graph: bool = False,
    allow_unused: bool = False,
) -> tuple:
    """Gradients of ``outputs`` with respect to ``inputs`` (torch.autograd.grad); does not
    touch ``.grad``. With ``create_graph`` the results are differentiable."""
    if isinstance(outputs, Tensor):
        outputs = [outputs]
    if isinstance(inputs, Tensor):
        inputs = [inputs]
    if grad_outputs is None:
        grad_outputs = [None] * len(outputs)
    elif isinstance(grad_outputs, Tensor):
        grad_outputs = [grad_outputs]
    if retain_graph is None:
        retain_graph = create_graph
    grads = [_grad_array(t, g, create_graph) for t, g in zip(outputs, grad_outputs)]
    res = run_backward(outputs, grads, retain_graph, create_graph, inputs=list(inputs), allow_unused=allow_unused)
    out = []
    for t, r in zip(inputs, res):
        if r is None:
            out.append(None)
        elif isinstance(r, Tensor):
            out.append(r)
        else:
            out.append(make_tensor(r, t._device))
    return tuple(out)
