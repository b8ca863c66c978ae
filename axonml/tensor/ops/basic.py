"""Basic ops every model uses: matmul, sum/mean, and the basic views (reshape/view,
permute/transpose, expand, contiguous).

Same pattern as :mod:`.core` (see its module note).
"""

from __future__ import annotations

from typing import Any

from ...autograd.autocast import lower_dtype
from ...autograd.autocast import state as _autocast_state
from ...autograd.function import Function
from ...autograd.variable import TensorBase
from ...errors import ShapeError
from ...runtime.devices.kernels import matmul as _mm
from .._helpers import norm_dim, norm_dims, promote, sum_to_shape


def _reduce_t(g: Any, shape: tuple | None) -> Any:
    """Tensor-level sum_to_shape for differentiable backwards."""
    if shape is None:
        return None
    return g.sum_to_size(shape) if tuple(g.shape) != tuple(shape) else g


# -- matmul ----------------------------------------------------------------------------
class MatMul(Function):
    keep_inputs = True

    @staticmethod
    def forward(ctx, a, b):
        if a.ndim == 0 or b.ndim == 0:
            raise ShapeError(f"matmul: both arguments need at least 1 dimension, got shapes {a.shape} and {b.shape}")
        ctx.save_for_backward(a, b)
        try:
            return _mm(ctx.xp, a, b)
        except ValueError:
            raise ShapeError(
                f"matmul: shapes {tuple(a.shape)} and {tuple(b.shape)} do not fit: the last "
                f"dimension of the first ({a.shape[-1]}) must equal the "
                f"{'only' if b.ndim == 1 else 'second-to-last'} dimension of the second "
                f"({b.shape[0] if b.ndim == 1 else b.shape[-2]})"
            ) from None

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.saved_tensors
        xp = ctx.xp
        need = ctx.needs_input_grad
        if a.ndim == 1 and b.ndim == 1:
            return (g * b if need[0] else None), (g * a if need[1] else None)
        a2 = a[None, :] if a.ndim == 1 else a  # (1, k)
        b2 = b[:, None] if b.ndim == 1 else b  # (k, 1)
        g2 = g
        if a.ndim == 1:
            g2 = g2[..., None, :]
        if b.ndim == 1:
            g2 = g2[..., :, None]
        ga = gb = None
        if need[0]:
            ga = sum_to_shape(xp, _mm(xp, g2, xp.swapaxes(b2, -1, -2)), a2.shape).reshape(a.shape)
        if need[1]:
            gb = sum_to_shape(xp, _mm(xp, xp.swapaxes(a2, -1, -2), g2), b2.shape).reshape(b.shape)
        return ga, gb

    @staticmethod
    def differentiable_backward(ctx, g):
        a, b = ctx.inputs
        need = ctx.needs_input_grad
        if a.ndim == 1 and b.ndim == 1:
            return (g * b if need[0] else None), (g * a if need[1] else None)
        a2 = a.unsqueeze(0) if a.ndim == 1 else a
        b2 = b.unsqueeze(1) if b.ndim == 1 else b
        g2 = g
        if a.ndim == 1:
            g2 = g2.unsqueeze(-2)
        if b.ndim == 1:
            g2 = g2.unsqueeze(-1)
        ga = _reduce_t(g2 @ b2.transpose(-1, -2), a2.shape).reshape(a.shape) if need[0] else None
        gb = _reduce_t(a2.transpose(-1, -2) @ g2, b2.shape).reshape(b.shape) if need[1] else None
        return ga, gb


def matmul(a: Any, b: Any) -> Any:
    """Matrix product with NumPy/PyTorch broadcasting rules (1-D operands are vectors).
    Under autocast, computes in the autocast dtype."""
    if not isinstance(a, TensorBase) or not isinstance(b, TensorBase):
        raise TypeError(f"matmul expects two tensors, got {type(a).__name__} and {type(b).__name__}")
    low = lower_dtype(a._device.type)
    if low is not None:
        # autocast casts float32/16 operands; float64 is left alone, as in PyTorch
        a, b = (t.to(low) if t._dtype.is_floating_point and t._dtype.name != "float64" else t for t in (a, b))
    a, b = promote(a, b)
    return MatMul.apply(a, b)


def _rmatmul(a: Any, b: Any) -> Any:
    return matmul(b, a)


# -- reductions --------------------------------------------------------------------------
class Sum(Function):
    @staticmethod
    def forward(ctx, x, axes, keepdim, dtype):
        ctx.shape = x.shape
        ctx.axes = axes
        ctx.keepdim = keepdim
        if x.dtype.itemsize == 2 and x.dtype.kind != "i" and dtype is None:
            # float16/bfloat16: accumulate in float32, as PyTorch does
            return x.astype("float32").sum(axis=axes, keepdims=keepdim).astype(x.dtype)
        return x.sum(axis=axes, keepdims=keepdim, dtype=dtype)

    @staticmethod
    def backward(ctx, g):
        xp = ctx.xp
        if ctx.axes is not None and not ctx.keepdim:
            g = xp.expand_dims(g, ctx.axes)
        return xp.broadcast_to(g, ctx.shape), None, None, None

    @staticmethod
    def differentiable_backward(ctx, g):
        if ctx.axes is not None and not ctx.keepdim:
            for ax in ctx.axes:
                g = g.unsqueeze(ax)
        return g.expand(*ctx.shape), None, None, None


def sum(x: Any, dim: Any = None, keepdim: bool = False, dtype: Any = None) -> Any:  # noqa: A001
    """Sum over ``dim`` (an int, a tuple, or None for all). Integer and bool inputs sum
    to int64, as in PyTorch."""
    axes = norm_dims(dim, x.ndim, "sum")
    npdt = None
    if dtype is not None:
        x = x.to(dtype)
    elif not x._dtype.is_floating_point:
        npdt = "int64"
    return Sum.apply(x, axes, keepdim, npdt)


def mean(x: Any, dim: Any = None, keepdim: bool = False, dtype: Any = None) -> Any:
    """Mean over ``dim``; needs a floating dtype (as in PyTorch)."""
    if dtype is not None:
        x = x.to(dtype)
    if not x._dtype.is_floating_point:
        raise TypeError(f"mean() needs a floating point tensor, got {x._dtype}; use .float() or dtype=")
    axes = norm_dims(dim, x.ndim, "mean")
    n = 1
    for ax in range(x.ndim) if axes is None else axes:
        n *= x.shape[ax]
    s = Sum.apply(x, axes, keepdim, None)
    return s / n if n else s * float("nan")


def sum_to_size(x: Any, *size: Any) -> Any:
    """Sum broadcast dimensions so the result has shape ``size``."""
    if len(size) == 1 and isinstance(size[0], (tuple, list)):
        size = tuple(size[0])
    size = tuple(size)
    if tuple(x.shape) == size:
        return x
    lead = x.ndim - len(size)
    axes = tuple(range(lead)) + tuple(i + lead for i, s in enumerate(size) if s == 1 and x.shape[i + lead] != 1)
    out = sum(x, dim=axes, keepdim=True) if axes else x
    return out.reshape(size) if lead else out


# -- views -------------------------------------------------------------------------------
class Reshape(Function):
    view_of = 0

    @staticmethod
    def forward(ctx, x, shape):
        ctx.shape = x.shape
        out = x.reshape(shape)
        if not _shares(out, x):
            ctx.view_of = None  # a copy was needed (non-contiguous input)
        return out

    @staticmethod
    def backward(ctx, g):
        return g.reshape(ctx.shape), None

    @staticmethod
    def differentiable_backward(ctx, g):
        return g.reshape(ctx.shape), None


def _shares(a: Any, b: Any) -> bool:
    base = a.base
    while base is not None:
        if base is b or base is b.base:
            return True
        base = getattr(base, "base", None)
    return False


def _infer_shape(shape: tuple, numel: int, op: str) -> tuple:
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = tuple(shape[0])
    shape = tuple(int(s) for s in shape)
    if shape.count(-1) > 1:
        raise ShapeError(f"{op}: only one dimension can be -1, got {shape}")
    known = 1
    for s in shape:
        if s != -1:
            if s < 0:
                raise ShapeError(f"{op}: invalid dimension {s} in {shape}")
            known *= s
    if -1 in shape:
        if known == 0 or numel % known:
            raise ShapeError(f"{op}: shape {shape} is invalid for a tensor of {numel} elements")
        shape = tuple(numel // known if s == -1 else s for s in shape)
    elif known != numel:
        raise ShapeError(f"{op}: shape {shape} is invalid for a tensor of {numel} elements")
    return shape


def reshape(x: Any, *shape: Any) -> Any:
    """A tensor with the same data in ``shape`` (a view when possible; one -1 is inferred)."""
    shape = _infer_shape(shape, x._data.size, "reshape")
    return Reshape.apply(x, shape)


def view(x: Any, *shape: Any) -> Any:
    """Like reshape, but refuses (as PyTorch) when a copy would be needed."""
    if len(shape) == 1 and not isinstance(shape[0], (tuple, list, int)):
        return x.to(shape[0])  # view(dtype) is not supported as a reinterpretation; cast
    shape = _infer_shape(shape, x._data.size, "view")
    if not x._data.flags.c_contiguous and x._data.size > 1:
        try:
            x._data.view().shape = shape  # NumPy raises if no view is possible
        except AttributeError:
            raise ShapeError(
                f"view size {shape} is not compatible with the input's strides (shape "
                f"{tuple(x.shape)}); use .reshape(...) or .contiguous().view(...)"
            ) from None
    return Reshape.apply(x, shape)


class Permute(Function):
    view_of = 0

    @staticmethod
    def forward(ctx, x, dims):
        ctx.dims = dims
        return x.transpose(dims)

    @staticmethod
    def backward(ctx, g):
        inv = [0] * len(ctx.dims)
        for i, d in enumerate(ctx.dims):
            inv[d] = i
        return g.transpose(inv), None

    @staticmethod
    def differentiable_backward(ctx, g):
        inv = [0] * len(ctx.dims)
        for i, d in enumerate(ctx.dims):
            inv[d] = i
        return g.permute(*inv), None


def permute(x: Any, *dims: Any) -> Any:
    if len(dims) == 1 and isinstance(dims[0], (tuple, list)):
        dims = tuple(dims[0])
    if len(dims) != x.ndim:
        raise ShapeError(f"permute: got {len(dims)} dims {dims} for a tensor with {x.ndim} dims")
    nd = tuple(norm_dim(d, x.ndim, "permute") for d in dims)
    if sorted(nd) != list(range(x.ndim)):
        raise ShapeError(f"permute: dims {dims} are not a permutation of 0..{x.ndim - 1}")
    return Permute.apply(x, nd)


def transpose(x: Any, dim0: int, dim1: int) -> Any:
    if x.ndim < 2 and x.ndim == 0:
        return x
    d0, d1 = norm_dim(dim0, x.ndim, "transpose"), norm_dim(dim1, x.ndim, "transpose")
    dims = list(range(x.ndim))
    dims[d0], dims[d1] = dims[d1], dims[d0]
    return Permute.apply(x, tuple(dims))


def t(x: Any) -> Any:
    if x.ndim > 2:
        raise ShapeError(f"t() expects a tensor with <= 2 dims, got {x.ndim}; use transpose(...)")
    return transpose(x, 0, 1) if x.ndim == 2 else x


class Expand(Function):
    view_of = 0

    @staticmethod
    def forward(ctx, x, shape):
        ctx.shape = x.shape
        return ctx.xp.broadcast_to(x, shape)

    @staticmethod
    def backward(ctx, g):
        return sum_to_shape(ctx.xp, g, ctx.shape), None

    @staticmethod
    def differentiable_backward(ctx, g):
        return _reduce_t(g, ctx.shape), None


def expand(x: Any, *sizes: Any) -> Any:
    """A broadcast view with ``sizes`` (-1 keeps a dimension)."""
    if len(sizes) == 1 and isinstance(sizes[0], (tuple, list)):
        sizes = tuple(sizes[0])
    lead = len(sizes) - x.ndim
    if lead < 0:
        raise ShapeError(f"expand: the number of sizes ({len(sizes)}) must be >= the tensor's dims ({x.ndim})")
    shape = tuple(x.shape[i - lead] if s == -1 and i >= lead else int(s) for i, s in enumerate(sizes))
    for i in range(x.ndim):
        if x.shape[i] != 1 and x.shape[i] != shape[i + lead]:
            raise ShapeError(f"expand: the size of dim {i} ({x.shape[i]}) must be 1 or match {shape[i + lead]} (target {shape})")
    return Expand.apply(x, shape)


def expand_as(x: Any, other: Any) -> Any:
    return expand(x, *other.shape)


def contiguous(x: Any) -> Any:
    if x._data.flags.c_contiguous:
        return x
    return _Contig.apply(x)


class _Contig(Function):
    @staticmethod
    def forward(ctx, x):
        return ctx.xp.ascontiguousarray(x)

    @staticmethod
    def backward(ctx, g):
        return g


def _op_matmul(a: Any, b: Any) -> Any:
    if isinstance(b, TensorBase) and b._dtype is a._dtype and not _autocast_state.enabled:
        return MatMul.apply(a, b)
    return matmul(a, b)


METHODS = {
    "__matmul__": _op_matmul,
    "__rmatmul__": _rmatmul,
    "matmul": matmul,
    "mm": matmul,
    "sum": sum,
    "mean": mean,
    "sum_to_size": sum_to_size,
    "reshape": reshape,
    "view": view,
    "permute": permute,
    "transpose": transpose,
    "t": t,
    "expand": expand,
    "expand_as": expand_as,
    "contiguous": contiguous,
}

__all__ = ["matmul", "sum", "mean", "reshape", "view", "permute", "transpose", "t", "expand", "contiguous", "sum_to_size"]
