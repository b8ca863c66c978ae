"""Selection ops along a dimension: index_select, gather/scatter, index_add,
take_along_dim, nonzero, sort/argsort/topk, one_hot, searchsorted, unique.

Part of :mod:`axonml.tensor.ops.index` (split out to keep modules short): ``index``
re-exports every public name and merges ``METHODS``.

Note on scatter-adds: gradients of gathers must *accumulate* at repeated indices.
:func:`add_at` is the one place that does it: ``xp.add.at`` where the array module has
it (NumPy, recent CuPy), else ``cupyx.scatter_add``, imported only on that path.

Note on "mesh" indices: ``gather(x, dim, idx)`` equals ``x[mesh]`` where ``mesh`` holds
``idx`` at ``dim`` and broadcastable ``arange``s elsewhere. Building that tuple once
(:func:`dim_mesh`) turns gather, scatter and their backwards into plain advanced
indexing, which NumPy and CuPy both support.
"""

from __future__ import annotations

import collections
import importlib
from typing import Any

import numpy as np

from ...autograd.function import Function
from ...autograd.variable import TensorBase
from ...errors import DTypeError, ShapeError
from .._helpers import norm_dim, wrap
from ..creation import full

values_indices = collections.namedtuple("values_indices", ["values", "indices"])
values_indices.__doc__ = "The (values, indices) pair returned by sort and topk."


# -- shared helpers ----------------------------------------------------------------------
def add_at(xp: Any, target: Any, index: Any, values: Any) -> None:
    """``target[index] += values`` with repeated indices accumulating, on NumPy or CuPy."""
    at = getattr(getattr(xp, "add", None), "at", None)
    if at is not None:
        at(target, index, values)
    else:  # CuPy without ufunc.at
        importlib.import_module("cupyx").scatter_add(target, index, values)


def dim_mesh(xp: Any, idx: Any, dim: int) -> tuple:
    """The advanced-index tuple selecting ``x[..., idx[i,j,k], ...]`` at ``dim`` for every
    position ``(i, j, k)`` of ``idx`` (the index form of ``gather``)."""
    nd = idx.ndim
    out = []
    for d in range(nd):
        if d == dim:
            out.append(idx)
        else:
            shape = [1] * nd
            shape[d] = idx.shape[d]
            out.append(xp.arange(idx.shape[d]).reshape(shape))
    return tuple(out)


def index_array(index: Any, like: TensorBase, op: str, name: str = "index") -> Any:
    """The raw integer array of ``index`` (a Tensor, NumPy array or list) on ``like``'s device."""
    if isinstance(index, TensorBase):
        if index._dtype.is_floating_point or index._dtype.name == "bool":
            raise DTypeError(f"{op}: {name} must be an integer tensor, got {index._dtype}; convert with .long()")
        data = index._data
        if index._device is not like._device:
            data = like._device.from_host(index._device.to_host(data))
        return data
    arr = np.asarray(index)
    if arr.dtype.kind not in "iu" and arr.size:
        raise DTypeError(f"{op}: {name} must hold integers, got dtype {arr.dtype}")
    return like._device.from_host(arr.astype(np.int64))


def check_bounds(idx: Any, size: int, op: str, dim: int, allow_negative: bool = False) -> None:
    """IndexError naming the first bad index, the dimension and its size."""
    if idx.size == 0:
        return
    lo, hi = int(idx.min()), int(idx.max())
    low = -size if allow_negative else 0
    if hi >= size or lo < low:
        bad = hi if hi >= size else lo
        raise IndexError(f"{op + ': ' if op else ''}index {bad} is out of range for dimension {dim} with size {size}")


def _first_slices(shape: tuple) -> tuple:
    return tuple(slice(0, s) for s in shape)


def _int_dtype_check(t: TensorBase, op: str) -> None:
    if t._dtype.is_floating_point or t._dtype.name == "bool":
        raise DTypeError(f"{op}: expected an integer tensor, got {t._dtype}")


class _NoGrad(Function):
    """Runs ``fn(xp, *arrays)``; every output is non-differentiable (indices, masks...)."""

    @staticmethod
    def forward(ctx, fn, *arrays):
        out = fn(ctx.xp, *arrays)
        single = not isinstance(out, tuple)
        outs = tuple(ctx.xp.asarray(o) for o in ((out,) if single else out))
        ctx.mark_non_differentiable(*outs)
        return outs[0] if single else outs


# -- index_select / index_add --------------------------------------------------------------
class IndexSelect(Function):
    @staticmethod
    def forward(ctx, x, dim, idx):
        ctx.shape, ctx.dim, ctx.idx = x.shape, dim, idx
        return ctx.xp.take(x, idx, axis=dim)

    @staticmethod
    def backward(ctx, g):
        gx = ctx.xp.zeros(ctx.shape, dtype=g.dtype)
        add_at(ctx.xp, gx, (slice(None),) * ctx.dim + (ctx.idx,), g)
        return gx, None, None


def _dim_index(x: TensorBase, dim: int, index: Any, op: str) -> tuple:
    d = norm_dim(dim, x.ndim, op)
    idx = index_array(index, x, op)
    if idx.ndim > 1:
        raise IndexError(f"{op}: index must be 0-d or 1-d, got shape {tuple(idx.shape)}")
    size = x.shape[d] if x.ndim else 1
    check_bounds(idx, size, op, d)
    return d, idx.reshape(-1)


def index_select(input: Any, dim: int, index: Any) -> Any:  # noqa: A002 - PyTorch's name
    """Entries of ``input`` at positions ``index`` (1-D integer) along ``dim``.

    Example: ``ax.index_select(x, 0, ax.tensor([2, 0]))`` picks rows 2 and 0.
    """
    d, idx = _dim_index(input, dim, index, "index_select")
    if input.ndim == 0:
        return IndexSelect.apply(input.reshape(1), 0, idx).reshape(())
    return IndexSelect.apply(input, d, idx)


class IndexAdd(Function):
    @staticmethod
    def forward(ctx, x, src, dim, idx, alpha):
        ctx.dim, ctx.idx, ctx.alpha = dim, idx, alpha
        out = x.copy()
        add_at(ctx.xp, out, (slice(None),) * dim + (idx,), src * alpha if alpha != 1 else src)
        return out

    @staticmethod
    def backward(ctx, g):
        gs = ctx.xp.take(g, ctx.idx, axis=ctx.dim)
        return g, (gs * ctx.alpha if ctx.alpha != 1 else gs), None, None, None


def index_add(input: Any, dim: int, index: Any, source: Any, alpha: Any = 1) -> Any:  # noqa: A002
    """Out-of-place ``input[..., index[i], ...] += alpha * source[..., i, ...]`` along ``dim``
    (repeated indices accumulate)."""
    d, idx = _dim_index(input, dim, index, "index_add")
    want = input.shape[:d] + (idx.shape[0],) + input.shape[d + 1 :]
    if tuple(source.shape) != tuple(want):
        raise ShapeError(
            f"index_add: source has shape {tuple(source.shape)}, expected {want} (input {tuple(input.shape)}, {idx.shape[0]} "
            f"indices on dim {d})"
        )
    return IndexAdd.apply(input, source.to(input._dtype), d, idx, alpha)


# -- gather / scatter --------------------------------------------------------------------
def _gather_args(x: TensorBase, dim: int, index: Any, op: str) -> tuple:
    d = norm_dim(dim, x.ndim, op)
    if not isinstance(index, TensorBase):
        raise TypeError(f"{op}: index must be a Tensor, got {type(index).__name__}")
    idx = index_array(index, x, op)
    if idx.ndim != x.ndim:
        raise ShapeError(
            f"{op}: index has {idx.ndim} dims (shape {tuple(idx.shape)}) but input has {x.ndim} (shape {tuple(x.shape)}); they "
            f"must match"
        )
    for k in range(x.ndim):
        if k != d and idx.shape[k] > x.shape[k]:
            raise ShapeError(f"{op}: index shape {tuple(idx.shape)} exceeds input shape {tuple(x.shape)} in dimension {k}")
    check_bounds(idx, x.shape[d] if x.ndim else 1, op, d)
    return d, idx


class Gather(Function):
    @staticmethod
    def forward(ctx, x, dim, idx):
        ctx.shape = x.shape
        ctx.mesh = dim_mesh(ctx.xp, idx, dim)
        return x[ctx.mesh]

    @staticmethod
    def backward(ctx, g):
        gx = ctx.xp.zeros(ctx.shape, dtype=g.dtype)
        add_at(ctx.xp, gx, ctx.mesh, g)
        return gx, None, None


def gather(input: Any, dim: int, index: Any) -> Any:  # noqa: A002
    """``out[i][j][k] = input[i][index[i][j][k]][k]`` for ``dim == 1`` (and likewise)."""
    if input.ndim == 0:
        return gather(input.reshape(1), 0, index.reshape(1)).reshape(())
    d, idx = _gather_args(input, dim, index, "gather")
    return Gather.apply(input, d, idx)


class Scatter(Function):
    @staticmethod
    def forward(ctx, x, src, dim, idx, accumulate):
        xp = ctx.xp
        ctx.mesh = mesh = dim_mesh(xp, idx, dim)
        ctx.src_shape = getattr(src, "shape", None)
        ctx.sub = _first_slices(idx.shape)
        out = x.copy()
        val = src[ctx.sub] if ctx.src_shape is not None else src
        if accumulate:
            add_at(xp, out, mesh, val)
        else:
            out[mesh] = val
        ctx.accumulate = accumulate
        return out

    @staticmethod
    def backward(ctx, g):
        xp = ctx.xp
        need = ctx.needs_input_grad
        gx = gs = None
        if need[0]:
            if ctx.accumulate:
                gx = g
            else:
                gx = g.copy()
                gx[ctx.mesh] = 0
        if need[1]:
            gs = xp.zeros(ctx.src_shape, dtype=g.dtype)
            gs[ctx.sub] = g[ctx.mesh]
        return gx, gs, None, None, None


def _scatter(x: TensorBase, dim: int, index: Any, src: Any, accumulate: bool, op: str) -> Any:
    d, idx = _gather_args(x, dim, index, op)
    if isinstance(src, TensorBase):
        if src.ndim != idx.ndim or any(i > s for i, s in zip(idx.shape, src.shape)):
            raise ShapeError(
                f"{op}: src of shape {tuple(src.shape)} must have at least the index's shape {tuple(idx.shape)} in every dim"
            )
        src = src.to(x._device, x._dtype)
    elif accumulate:
        raise TypeError(f"{op}: src must be a Tensor, got {type(src).__name__}")
    return Scatter.apply(x, src, d, idx, accumulate)


def scatter(input: Any, dim: int, index: Any, src: Any = None, value: Any = None, reduce: str | None = None) -> Any:  # noqa: A002
    """Out-of-place ``out[..., index[i,j], ...] = src[i, j]`` along ``dim`` (``src`` a
    tensor or a number; ``value=`` as PyTorch's keyword form; ``reduce='add'`` accumulates).

    Example: ``ax.zeros(3, 2).scatter(0, ax.tensor([[2, 0]]), 1.0)``
    """
    if src is None:
        src = value
    if src is None:
        raise TypeError("scatter: give src (a tensor or a number) or value=")
    if reduce not in (None, "add"):
        raise ValueError(f"scatter: reduce must be None or 'add', got {reduce!r} (use scatter_reduce-style ops elsewhere)")
    if reduce == "add" and not isinstance(src, TensorBase):
        src = _full_like_index(input, index, src)
    return _scatter(input, dim, index, src, reduce == "add", "scatter")


def _full_like_index(x: TensorBase, index: TensorBase, value: Any) -> Any:
    return full(tuple(index.shape), value, dtype=x._dtype, device=x._device)


def scatter_add(input: Any, dim: int, index: Any, src: Any) -> Any:  # noqa: A002
    """Out-of-place ``out[..., index[i,j], ...] += src[i, j]`` (repeated indices add up)."""
    return _scatter(input, dim, index, src, True, "scatter_add")


def take_along_dim(input: Any, indices: Any, dim: int | None = None) -> Any:  # noqa: A002
    """``gather`` with broadcasting of ``input`` and ``indices`` outside ``dim``; with
    ``dim=None`` both are flattened first."""
    if dim is None:
        return gather(input.reshape(-1), 0, indices.reshape(-1))
    d = norm_dim(dim, input.ndim, "take_along_dim")
    if indices.ndim != input.ndim:
        raise ShapeError(
            f"take_along_dim: input {tuple(input.shape)} and indices {tuple(indices.shape)} need the same number of dims"
        )
    xs, is_ = list(input.shape), list(indices.shape)
    for k in range(input.ndim):
        if k == d:
            continue
        a, b = xs[k], is_[k]
        if a != b and 1 not in (a, b):
            raise ShapeError(
                f"take_along_dim: input {tuple(input.shape)} and indices {tuple(indices.shape)} cannot be broadcast in "
                f"dimension {k}"
            )
        xs[k] = is_[k] = max(a, b) if 0 not in (a, b) else 0
    x = input if list(input.shape) == xs else input.expand(*xs)
    i = indices if list(indices.shape) == is_ else indices.expand(*is_)
    return gather(x, d, i)


def take(input: Any, index: Any) -> Any:  # noqa: A002
    """Elements of the flattened ``input`` at ``index`` (any shape; negative wraps)."""
    idx = index_array(index, input, "take")
    check_bounds(idx, input.numel(), "take", 0, allow_negative=True)
    n = input.numel()
    idx = idx % n if n else idx
    return gather(input.reshape(-1), 0, wrap(idx.reshape(-1), input)).reshape(tuple(idx.shape))


# -- nonzero -----------------------------------------------------------------------------
def nonzero(input: Any, *, as_tuple: bool = False) -> Any:  # noqa: A002
    """Indices of the non-zero entries: an int64 ``(n, ndim)`` tensor, or with
    ``as_tuple=True`` one 1-D tensor per dimension (what ``where(cond)`` returns)."""

    def run(xp: Any, a: Any) -> Any:
        nz = xp.nonzero(a.reshape(1) if a.ndim == 0 else a)
        nz = tuple(z.astype(np.int64, copy=False) for z in nz)
        if as_tuple:
            return nz if len(nz) > 1 else (nz[0],)
        if a.ndim == 0:
            return xp.zeros((nz[0].shape[0], 0), dtype=np.int64)
        return xp.stack(nz, axis=1)

    out = _NoGrad.apply(run, input)
    return tuple(out) if as_tuple else out


def argwhere(input: Any) -> Any:  # noqa: A002
    """``nonzero(input)``: an ``(n, ndim)`` int64 tensor of indices."""
    return nonzero(input)


# -- sorting -------------------------------------------------------------------------------
def _argsort(xp: Any, x: Any, dim: int, descending: bool) -> Any:
    """Stable argsort; descending keeps equal elements in their original order and puts
    NaN first, as PyTorch does."""
    if not descending:
        return xp.argsort(x, axis=dim, kind="stable")
    n = x.shape[dim]
    idx = xp.argsort(xp.flip(x, axis=dim), axis=dim, kind="stable")
    return (n - 1) - xp.flip(idx, axis=dim)


class Sort(Function):
    @staticmethod
    def forward(ctx, x, dim, descending, k):
        xp = ctx.xp
        ctx.shape = x.shape
        if x.ndim == 0:
            idx = xp.zeros((), dtype=np.int64)
            ctx.mesh = ()
            return x.copy(), idx
        idx = _argsort(xp, x, dim, descending).astype(np.int64, copy=False)
        if k is not None:
            idx = xp.ascontiguousarray(idx[(slice(None),) * dim + (slice(0, k),)])
        ctx.mesh = dim_mesh(xp, idx, dim)
        ctx.mark_non_differentiable(idx)
        return x[ctx.mesh], idx

    @staticmethod
    def backward(ctx, g, _gi):
        gx = ctx.xp.zeros(ctx.shape, dtype=g.dtype)
        gx[ctx.mesh] = g  # indices along dim are distinct: no accumulation needed
        return gx, None, None, None


def sort(input: Any, dim: int = -1, descending: bool = False, stable: bool = False) -> Any:  # noqa: A002
    """Sorted values and their int64 indices along ``dim`` as ``(values, indices)``;
    always stable (``stable`` is accepted for API parity)."""
    d = norm_dim(dim, input.ndim, "sort")
    return values_indices(*Sort.apply(input, d, bool(descending), None))


def argsort(input: Any, dim: int = -1, descending: bool = False, stable: bool = False) -> Any:  # noqa: A002
    """The int64 indices that sort ``input`` along ``dim`` (stable)."""
    d = norm_dim(dim, input.ndim, "argsort")
    if input.ndim == 0:
        return _NoGrad.apply(lambda xp, a: xp.zeros((), dtype=np.int64), input)
    return _NoGrad.apply(lambda xp, a: _argsort(xp, a, d, bool(descending)).astype(np.int64, copy=False), input)


def topk(input: Any, k: int, dim: int = -1, largest: bool = True, sorted: bool = True) -> Any:  # noqa: A002
    """The ``k`` largest (or smallest) entries along ``dim`` and their indices, as
    ``(values, indices)``; the gradient flows to the picked positions.

    Example: ``vals, idx = x.topk(2)``
    """
    d = norm_dim(dim, input.ndim, "topk")
    n = input.shape[d] if input.ndim else 1
    if not 0 <= k <= n:
        raise ValueError(f"topk: k ({k}) is out of range for dimension {d} with size {n}")
    return values_indices(*Sort.apply(input, d, bool(largest), k if input.ndim else None))


# -- one_hot / searchsorted / unique ---------------------------------------------------------
def one_hot(tensor: Any, num_classes: int = -1) -> Any:
    """int64 one-hot encoding with a new last dimension of ``num_classes`` (``-1`` infers
    ``max + 1``). Example: ``one_hot(ax.tensor([0, 2]))`` is ``[[1, 0, 0], [0, 0, 1]]``."""
    _int_dtype_check(tensor, "one_hot")
    host = tensor._device.to_host(tensor._data)
    if num_classes == -1:
        if host.size == 0:
            raise ValueError("one_hot: cannot infer the number of classes from an empty tensor; pass num_classes")
        num_classes = int(host.max()) + 1
    if host.size:
        lo, hi = int(host.min()), int(host.max())
        if lo < 0:
            raise ValueError(f"one_hot: class values must be non-negative, got {lo}")
        if hi >= num_classes:
            raise ValueError(f"one_hot: class value {hi} is not smaller than num_classes ({num_classes})")
    return _NoGrad.apply(lambda xp, a: (a[..., None] == xp.arange(num_classes)).astype(np.int64), tensor)


def searchsorted(  # noqa: A002
    sorted_sequence: Any,
    input: Any,  # noqa: A002
    *,
    out_int32: bool = False,
    right: bool = False,
    side: str | None = None,
    sorter: Any = None,
) -> Any:
    """Insertion indices of ``input`` into the innermost dimension of ``sorted_sequence``
    (1-D, or N-D with matching leading dims); ``right=True``/``side='right'`` picks the
    upper bound."""
    if side is not None:
        if side not in ("left", "right"):
            raise ValueError(f"searchsorted: side must be 'left' or 'right', got {side!r}")
        right = side == "right"
    sd = "right" if right else "left"
    odt = np.int32 if out_int32 else np.int64
    seq = sorted_sequence
    scalar = not isinstance(input, TensorBase)
    vals = input if not scalar else wrap(seq._device.from_host(np.asarray(input, dtype=seq._dtype.np)), seq)
    srt = None if sorter is None else index_array(sorter, seq, "searchsorted", "sorter")
    if seq.ndim > 1 and tuple(seq.shape[:-1]) != tuple(vals.shape[:-1]):
        raise ShapeError(
            f"searchsorted: leading dims of sorted_sequence {tuple(seq.shape)} and input {tuple(vals.shape)} must match"
        )

    def run(xp: Any, s: Any, v: Any) -> Any:
        if s.ndim <= 1:
            ss = s if srt is None else s[srt]
            return xp.searchsorted(ss, v, side=sd).astype(odt)
        s2, v2 = s.reshape(-1, s.shape[-1]), v.reshape(-1, v.shape[-1])
        srt2 = None if srt is None else srt.reshape(-1, s.shape[-1])
        rows = [xp.searchsorted(s2[i] if srt2 is None else s2[i][srt2[i]], v2[i], side=sd) for i in range(s2.shape[0])]
        out = xp.stack(rows) if rows else xp.zeros(v2.shape, dtype=odt)
        return out.reshape(v.shape).astype(odt)

    return _NoGrad.apply(run, seq, vals)


def unique(  # noqa: A002
    input: Any,  # noqa: A002
    sorted: bool = True,  # noqa: A002
    return_inverse: bool = False,
    return_counts: bool = False,
    dim: int | None = None,
) -> Any:
    """The sorted unique values (flattened, or unique slices along ``dim``), plus the
    int64 inverse indices and counts when asked; not differentiable."""
    d = None if dim is None else norm_dim(dim, input.ndim, "unique")

    def run(xp: Any, a: Any) -> Any:
        res = xp.unique(a.reshape(-1) if d is None else a, return_inverse=True, return_counts=True, axis=d)
        vals, inv, cnt = res
        inv = inv.reshape(a.shape if d is None else (-1,)).astype(np.int64)
        return vals, inv, cnt.astype(np.int64)

    vals, inv, cnt = _NoGrad.apply(run, input)
    out = (vals,) + ((inv,) if return_inverse else ()) + ((cnt,) if return_counts else ())
    return out[0] if len(out) == 1 else out


METHODS = {
    "index_select": index_select,
    "index_add": index_add,
    "gather": gather,
    "scatter": scatter,
    "scatter_add": scatter_add,
    "take_along_dim": take_along_dim,
    "take": take,
    "nonzero": nonzero,
    "argwhere": argwhere,
    "sort": sort,
    "argsort": argsort,
    "topk": topk,
    "unique": unique,
}

__all__ = [
    "argsort", "argwhere", "gather", "index_add", "index_select", "nonzero", "one_hot", "scatter",
    "scatter_add", "searchsorted", "sort", "take", "take_along_dim", "topk", "unique",
]
