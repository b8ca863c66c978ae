"""Indexing: ``Tensor.__getitem__``/``__setitem__`` with every PyTorch index form,
masked_fill/masked_select, in-place scatter variants; re-exports :mod:`.selection`
(index_select, gather, scatter, sort, topk, one_hot...).

Note on the index plan: PyTorch applies ints, slices, None and Ellipsis first (giving a
view), then the advanced indices (integer tensors/lists/arrays, bool masks) to what is
left. So an int never counts as an advanced index, unlike in NumPy: ``x[0, :, [1, 2]]``
on a (2, 3, 4) tensor is (3, 2) in PyTorch and (2, 3) in NumPy. :func:`_plan` turns an
index into that pair: a *basic* key (ints/slices/None, ending in Ellipsis; applied by
``shape.BasicIndex`` as a view) and an optional *advanced* key over the view's dims, to
which NumPy's rule on where the advanced dims go (in place when adjacent, else first)
then applies exactly as PyTorch's does. A bool mask becomes its nonzero() coordinates; a
Python bool is a new size-1 dim indexed by ``[0]`` (True) or ``[]`` (False).

Note on gradients: the backward of an advanced index scatters with accumulation
(:func:`selection.add_at`), since integer indices may repeat; a single mask cannot
repeat, so it is written with a plain assignment.
"""

from __future__ import annotations

import operator
import warnings
from typing import Any

import numpy as np

from ...autograd.function import Function
from ...autograd.grad_mode import state as _grad_state
from ...autograd.variable import TensorBase
from ...errors import DTypeError, ShapeError
from .._helpers import scalar_value, sum_to_shape
from ..creation import tensor as _tensor
from .selection import METHODS as _SELECTION_METHODS
from .selection import (
    add_at,
    argsort,
    argwhere,
    check_bounds,
    gather,
    index_add,
    index_select,
    nonzero,
    one_hot,
    scatter,
    scatter_add,
    searchsorted,
    sort,
    take,
    take_along_dim,
    topk,
    unique,
)
from .shape import BasicIndex, broadcast_shapes, broadcast_tensors

_VALID = "only integers, slices (`:`), ellipsis (`...`), None and long or bool tensors are valid indices"


# -- the index plan ----------------------------------------------------------------------------
def _on_device(arr: Any, t: TensorBase | None, x: TensorBase) -> Any:
    if t is not None and t._device is not x._device:
        return x._device.from_host(t._device.to_host(arr))
    return arr if t is not None else x._device.from_host(arr)


def _slice_part(v: Any) -> Any:
    if v is None:
        return None
    try:
        return operator.index(v)
    except TypeError:
        raise IndexError(f"{_VALID}: slice bounds must be integers, got {type(v).__name__}") from None


def _classify(it: Any, x: TensorBase) -> tuple:
    """(kind, value) with kind in none/ell/bool/int/slice/array/mask."""
    if it is None:
        return "none", None
    if it is Ellipsis:
        return "ell", None
    if isinstance(it, (bool, np.bool_)):
        return "bool", bool(it)
    if isinstance(it, (int, np.integer)):
        return "int", int(it)
    if isinstance(it, slice):
        step = _slice_part(it.step)
        if step is not None and step <= 0:
            raise ValueError(f"step must be greater than zero (got {step}); use .flip(dim) to reverse")
        return "slice", slice(_slice_part(it.start), _slice_part(it.stop), step)
    if isinstance(it, TensorBase):
        name = it._dtype.name
        if name in ("bool", "uint8"):
            if name == "uint8":
                warnings.warn("indexing with a uint8 tensor is deprecated; use a bool tensor", DeprecationWarning, stacklevel=3)
            if it.ndim == 0:
                return "bool", bool(it.item())
            return "mask", _on_device(it._data.astype(bool, copy=False), it, x)
        if it._dtype.is_floating_point:
            raise IndexError(f"{_VALID} (got a {it._dtype} tensor)")
        if it.ndim == 0:
            return "int", int(it.item())
        return "array", _on_device(it._data.astype(np.int64, copy=False), it, x)
    if isinstance(it, (np.ndarray, list, tuple)):
        try:
            arr = np.asarray(it)
        except ValueError:
            raise IndexError(f"{_VALID}: a nested index list must not be ragged") from None
        if arr.dtype == np.bool_:
            return ("bool", bool(arr)) if arr.ndim == 0 else ("mask", _on_device(arr, None, x))
        if arr.dtype.kind in "iu" or arr.size == 0:
            if arr.ndim == 0:
                return "int", int(arr)
            return "array", _on_device(arr.astype(np.int64), None, x)
        raise IndexError(f"{_VALID} (got an index array of dtype {arr.dtype})")
    raise IndexError(f"{_VALID} (got {type(it).__name__})")


def _list_as_tuple(index: list) -> bool:
    """PyTorch (like old NumPy) reads a short list holding sequences, tensors, slices,
    None or Ellipsis as a tuple of indices: ``x[[[0, 1], [2, 2]]]`` is ``x[[0, 1], [2, 2]]``."""
    if len(index) >= 32:
        return False
    return any(it is None or it is Ellipsis or isinstance(it, (slice, list, tuple, np.ndarray, TensorBase)) for it in index)


def _plan(x: TensorBase, index: Any) -> tuple:
    """``(basic_key, advanced_key or None, unique)``; see the module note."""
    if type(index) is tuple:
        items = index
    elif type(index) is list and _list_as_tuple(index):
        warnings.warn(
            "indexing with a list of sequences is read as a tuple of indices (as PyTorch does, deprecated there); "
            "write x[tuple(seq)] or x[ax.tensor(seq)] to be explicit",
            FutureWarning,
            stacklevel=3,
        )
        items = tuple(index)
    else:
        items = (index,)
    parsed = []
    consumed = 0
    n_ell = 0
    for it in items:
        kind, val = _classify(it, x)
        if kind == "ell":
            n_ell += 1
            if n_ell > 1:
                raise IndexError("an index can only have a single ellipsis ('...')")
        elif kind in ("int", "slice", "array"):
            consumed += 1
        elif kind == "mask":
            consumed += val.ndim
        parsed.append((kind, val))
    ndim, shape = x.ndim, x.shape
    if consumed > ndim:
        raise IndexError(f"too many indices for tensor of dimension {ndim} (the index uses {consumed} dims)")
    xp = x._device.xp
    basic: list = []
    adv: list = []  # (dim of the basic view, index array)
    kinds = []
    pending = []  # bounds checks, run once the broadcast index shape is known
    src = out = 0
    for kind, val in parsed:
        if kind == "ell":
            k = ndim - consumed
            basic += [slice(None)] * k
            src, out = src + k, out + k
        elif kind == "int":
            n = shape[src]
            if not -n <= val < n:
                raise IndexError(f"index {val} is out of range for dimension {src} with size {n}")
            basic.append(val)
            src += 1
        elif kind == "slice":
            basic.append(val)
            src, out = src + 1, out + 1
        elif kind == "none":
            basic.append(None)
            out += 1
        elif kind == "bool":
            basic.append(None)
            adv.append((out, xp.arange(1 if val else 0, dtype=np.int64)))
            kinds.append(kind)
            out += 1
        elif kind == "array":
            pending.append((val, shape[src], src))
            basic.append(slice(None))
            adv.append((out, val))
            kinds.append(kind)
            src, out = src + 1, out + 1
        else:  # mask
            k = val.ndim
            if tuple(val.shape) != tuple(shape[src : src + k]):
                raise IndexError(
                    f"the shape of the mask {tuple(val.shape)} does not match the shape {tuple(shape[src : src + k])} "
                    f"of the indexed tensor (shape {tuple(shape)}) at dims {src}..{src + k - 1}"
                )
            basic += [slice(None)] * k
            adv += [(out + j, z) for j, z in enumerate(xp.nonzero(val))]
            kinds.append(kind)
            src, out = src + k, out + k
    basic.append(Ellipsis)
    if not adv:
        return tuple(basic), None, False
    try:
        bshape = np.broadcast_shapes(*[tuple(a.shape) for _, a in adv])
    except ValueError:
        shapes = " ".join(str(tuple(a.shape)) for _, a in adv)
        raise IndexError(f"shape mismatch: indexing tensors could not be broadcast together with shapes {shapes}") from None
    if 0 not in bshape:  # as in PyTorch, an empty selection reads nothing and is not checked
        for val, size, dim in pending:
            check_bounds(val, size, "", dim, allow_negative=True)
    key: list = [slice(None)] * (adv[-1][0] + 1)
    for pos, arr in adv:
        key[pos] = arr
    return tuple(basic), tuple(key), kinds in (["mask"], ["bool"])


def _scatter_into(xp: Any, target: Any, key: tuple, g: Any, unique: bool) -> None:
    if unique:
        target[key] = g
    else:
        add_at(xp, target, key, g)


# -- getitem -----------------------------------------------------------------------------------
class AdvancedIndex(Function):
    """``x[basic][adv]``: a copy; backward scatters (accumulating repeated indices)."""

    @staticmethod
    def forward(ctx, x, basic, adv, unique):
        ctx.shape, ctx.plan = x.shape, (basic, adv, unique)
        return x[basic][adv]

    @staticmethod
    def backward(ctx, g):
        basic, adv, unique = ctx.plan
        gx = ctx.xp.zeros(ctx.shape, dtype=g.dtype)
        _scatter_into(ctx.xp, gx[basic], adv, g, unique)
        return gx, None, None, None

    @staticmethod
    def differentiable_backward(ctx, g):
        return AdvancedIndexBackward.apply(g, ctx.shape, *ctx.plan), None, None, None


class AdvancedIndexBackward(Function):
    """The adjoint of :class:`AdvancedIndex` (so that indexing supports second order)."""

    @staticmethod
    def forward(ctx, g, shape, basic, adv, unique):
        ctx.plan = (basic, adv, unique)
        gx = ctx.xp.zeros(shape, dtype=g.dtype)
        _scatter_into(ctx.xp, gx[basic], adv, g, unique)
        return gx

    @staticmethod
    def backward(ctx, gg):
        basic, adv, _ = ctx.plan
        return gg[basic][adv], None, None, None, None

    @staticmethod
    def differentiable_backward(ctx, gg):
        return AdvancedIndex.apply(gg, *ctx.plan), None, None, None, None


def getitem(x: Any, index: Any) -> Any:
    """``x[index]`` with PyTorch's index forms: ints, slices (positive steps), None,
    Ellipsis, bool masks and integer tensors/lists/arrays. Basic indices give a view
    sharing ``x``'s storage; advanced ones a copy.

    Example: ``x[0, 1:3]`` (a view), ``x[:, [2, 0]]``, ``x[x > 0]``.
    """
    basic, adv, unique = _plan(x, index)
    if adv is None:
        return BasicIndex.apply(x, basic)
    return AdvancedIndex.apply(x, basic, adv, unique)


# -- setitem -----------------------------------------------------------------------------------
_SHARED_TARGET = ("__setitem__: the target is a read-only view (e.g. made by expand/broadcast_to) where several "
                  "elements share one memory location; clone() it first")


def _assign(out: Any, basic: tuple, adv: tuple | None, v: Any) -> None:
    if not isinstance(out, np.ndarray) and any(st == 0 and n > 1 for st, n in zip(out.strides, out.shape)):
        raise ValueError(_SHARED_TARGET)  # CuPy arrays have no read-only flag: check the strides
    view = out[basic]
    try:
        if adv is None:
            view[...] = v
        else:
            view[adv] = v
    except ValueError as e:
        if "read-only" in str(e):
            raise ValueError(_SHARED_TARGET) from None
        tshape = view.shape if adv is None else view[adv].shape
        raise ShapeError(
            f"__setitem__: value of shape {tuple(getattr(v, 'shape', ()))} cannot be broadcast to the indexed shape "
            f"{tuple(tshape)}"
        ) from None


class IndexPut(Function):
    """Out-of-place ``x[index] = v``; ``x``'s gradient is zero at the written positions,
    ``v``'s is the gathered gradient summed back to its shape."""

    @staticmethod
    def forward(ctx, x, v, basic, adv):
        ctx.basic, ctx.adv = basic, adv
        ctx.vshape = getattr(v, "shape", None)
        out = x.copy()
        _assign(out, basic, adv, v)
        return out

    @staticmethod
    def backward(ctx, g):
        need = ctx.needs_input_grad
        gx = gv = None
        if need[0]:
            gx = g.copy()
            _assign(gx, ctx.basic, ctx.adv, 0)
        if need[1]:
            sel = g[ctx.basic]
            if ctx.adv is not None:
                sel = sel[ctx.adv]
            vshape = tuple(ctx.vshape)
            if len(vshape) > sel.ndim:  # the value may carry extra leading size-1 dims
                sel = sel.reshape((1,) * (len(vshape) - sel.ndim) + sel.shape)
            gv = sum_to_shape(ctx.xp, sel, vshape)
        return gx, gv, None, None


def _as_value(x: TensorBase, value: Any) -> Any:
    """A Python scalar, or a tensor (any device/dtype) for the value of an assignment."""
    if isinstance(value, TensorBase):
        return value
    value = scalar_value(value)
    if isinstance(value, (bool, int, float)):
        return value
    return _tensor(np.asarray(value), dtype=x._dtype, device=x._device)


def setitem(x: Any, index: Any, value: Any) -> None:
    """``x[index] = value`` (a number or a tensor broadcast to the indexed shape, cast to
    ``x``'s dtype). Without autograd it writes into the storage (views see it, the version
    bumps); with autograd it records an out-of-place IndexPut that ``x`` takes over."""
    basic, adv, _ = _plan(x, index)
    v = _as_value(x, value)
    vt = isinstance(v, TensorBase)
    if _grad_state.enabled and (x._rg or (vt and v._rg)):
        if vt:
            v = v.to(x._device, x._dtype)
        x._inplace_result(IndexPut.apply(x, v, basic, adv), "__setitem__")
        return
    if vt:
        raw = v._data if v._device is x._device else x._device.from_host(v._device.to_host(v._data))
        if raw.dtype != x._data.dtype:
            raw = raw.astype(x._data.dtype)
    else:
        raw = v
    _assign(x._data, basic, adv, raw)
    x._vc[0] += 1


# -- masks -----------------------------------------------------------------------------------------
def _mask_array(x: TensorBase, mask: Any, op: str) -> Any:
    if not isinstance(mask, TensorBase) or mask._dtype.name != "bool":
        got = mask._dtype if isinstance(mask, TensorBase) else type(mask).__name__
        raise DTypeError(f"{op}: mask must be a bool tensor, got {got}")
    try:
        ok = broadcast_shapes(tuple(x.shape), tuple(mask.shape)) == tuple(x.shape)
    except ShapeError:
        ok = False
    if not ok:
        raise ShapeError(f"{op}: mask of shape {tuple(mask.shape)} cannot be broadcast to the input's shape {tuple(x.shape)}")
    return _on_device(mask._data, mask, x)


class MaskedFill(Function):
    @staticmethod
    def forward(ctx, x, mask, v):
        xp = ctx.xp
        ctx.mask, ctx.shape = mask, x.shape
        return xp.where(mask, xp.asarray(v, dtype=x.dtype), x)

    @staticmethod
    def backward(ctx, g):
        xp = ctx.xp
        zero = xp.zeros((), dtype=g.dtype)
        need = ctx.needs_input_grad
        gx = xp.where(ctx.mask, zero, g) if need[0] else None
        gv = xp.where(ctx.mask, g, zero).sum() if need[2] else None
        return gx, None, gv


def _fill_value(x: TensorBase, value: Any, op: str) -> Any:
    if isinstance(value, TensorBase):
        if value.ndim != 0:
            raise ShapeError(f"{op}: only a 0-dimensional value tensor is supported, got shape {tuple(value.shape)}")
        return value.to(x._device, x._dtype)
    value = scalar_value(value)
    if not isinstance(value, (bool, int, float)):
        raise TypeError(f"{op}: value must be a number or a 0-d tensor, got {type(value).__name__}")
    return value


def masked_fill(input: Any, mask: Any, value: Any) -> Any:  # noqa: A002 - PyTorch's name
    """``input`` with ``value`` (a number or 0-d tensor) where the bool ``mask``
    (broadcast to ``input``'s shape) is True. Example: ``x.masked_fill(x < 0, 0.0)``."""
    m = _mask_array(input, mask, "masked_fill")
    return MaskedFill.apply(input, m, _fill_value(input, value, "masked_fill"))


def masked_fill_(input: Any, mask: Any, value: Any) -> Any:  # noqa: A002
    """In-place :func:`masked_fill`; returns ``input``."""
    v = _fill_value(input, value, "masked_fill_")
    if _grad_state.enabled and (input._rg or (isinstance(v, TensorBase) and v._rg)):
        return input._inplace_result(masked_fill(input, mask, v), "masked_fill_")
    m = _mask_array(input, mask, "masked_fill_")
    xp = input._device.xp
    raw = v._data if isinstance(v, TensorBase) else xp.asarray(v, dtype=input._data.dtype)
    xp.copyto(input._data, raw, where=m)
    input._vc[0] += 1
    return input


def masked_select(input: Any, mask: Any) -> Any:  # noqa: A002
    """The 1-D tensor of ``input``'s entries where ``mask`` is True (both broadcast)."""
    if not isinstance(mask, TensorBase) or mask._dtype.name != "bool":
        raise DTypeError(f"masked_select: mask must be a bool tensor, got {getattr(mask, 'dtype', type(mask).__name__)}")
    xb, mb = broadcast_tensors(input, mask)
    return getitem(xb, mb)


def _inplace(fn: Any, name: str) -> Any:
    def method(self: Any, *args: Any, **kwargs: Any) -> Any:
        return self._inplace_result(fn(self, *args, **kwargs), name)

    method.__name__ = name
    method.__doc__ = f"In-place version of ``{name[:-1]}``; returns self."
    return method


scatter_ = _inplace(scatter, "scatter_")
scatter_add_ = _inplace(scatter_add, "scatter_add_")
index_add_ = _inplace(index_add, "index_add_")

METHODS = {
    **_SELECTION_METHODS,
    "__getitem__": getitem,
    "__setitem__": setitem,
    "masked_fill": masked_fill,
    "masked_fill_": masked_fill_,
    "masked_select": masked_select,
    "scatter_": scatter_,
    "scatter_add_": scatter_add_,
    "index_add_": index_add_,
}

__all__ = [
    "argsort", "argwhere", "gather", "index_add", "index_select", "masked_fill", "masked_select", "nonzero",
    "one_hot", "scatter", "scatter_add", "searchsorted", "sort", "take", "take_along_dim", "topk", "unique",
]
