"""Cumulative ops (cumsum, cumprod), vector norms (``norm``, ``vector_norm``) and the dim
helpers shared with :mod:`.reduce`.

Part of :mod:`.reduce` (split off to keep modules short): reduce re-exports these
functions and binds their Tensor methods.

Note on cumprod's gradient with zeros: for an element before the first zero of its row
the gradient is ``revcumsum(g * out) / x``; at the first zero it is ``revcumsum(g * c)``
where ``c`` is the cumulative product with that zero replaced by 1; after it, zero.
This is exact (no 0/0) and vectorized over rows.

Note on norms, as ``torch.linalg.vector_norm``: ``ord`` 2 and other p >= 1 give 0
gradient where the norm is 0; ``inf``/``-inf`` split it among the elements of maximal
(minimal) absolute value; ``ord=0`` counts non-zeros and has zero gradient.
"""

from __future__ import annotations

import math
from typing import Any

from ...autograd.function import Function
from ...errors import AutogradError, DTypeError, ShapeError
from .._helpers import norm_dim, wrap
from .logical import _check_tensor, _quiet
from .pointwise_multi import where


# -- shared helpers -----------------------------------------------------------------------------
def dims_of(dim: Any, x: Any, op: str) -> tuple | None:
    """Normalize ``dim`` for ``x``: None means all dims; else a sorted tuple."""
    if dim is None:
        return None
    dims = (dim,) if isinstance(dim, int) else tuple(dim)
    if not dims:
        return None
    for d in dims:
        if not isinstance(d, int) or isinstance(d, bool):
            raise TypeError(f"{op}: dim must be an int or a sequence of ints, got {dim!r}")
    nd = [norm_dim(d, x.ndim, op) for d in dims]
    if len(set(nd)) != len(nd):
        raise ValueError(f"{op}: a dim appears multiple times in the list of dims {dims}")
    return None if x.ndim == 0 else tuple(sorted(nd))


def kept_shape(shape: tuple, axes: tuple | None) -> tuple:
    """``shape`` with the reduced dims set to 1 (the keepdim shape)."""
    return tuple(1 if axes is None or i in axes else s for i, s in enumerate(shape))


def out_shape(shape: tuple, axes: tuple | None, keepdim: bool) -> tuple:
    if keepdim:
        return kept_shape(shape, axes)
    return () if axes is None else tuple(s for i, s in enumerate(shape) if i not in axes)


def count(shape: tuple, axes: tuple | None) -> int:
    n = 1
    for i, s in enumerate(shape):
        if axes is None or i in axes:
            n *= s
    return n


def acc(x: Any) -> Any:
    """float16/bfloat16 arrays as float32 (the accumulation dtype); others unchanged."""
    return x.astype("float32") if x.dtype.kind in "fV" and x.dtype.itemsize == 2 else x


def acc_like(x: Any) -> Any:
    return "float32" if x.dtype.kind in "fV" and x.dtype.itemsize == 2 else x.dtype


# -- cumsum / cumprod ---------------------------------------------------------------------------
def _rev_cumsum(xp: Any, a: Any, d: int) -> Any:
    return xp.flip(xp.cumsum(xp.flip(a, d), axis=d), d)


class CumSum(Function):
    @staticmethod
    def forward(ctx, x, dim, npdt):
        ctx.dim, ctx.shape = dim, x.shape
        x1 = x.reshape(1) if x.ndim == 0 else x
        if npdt is not None:
            out = ctx.xp.cumsum(x1, axis=dim, dtype=npdt)
        else:
            out = ctx.xp.cumsum(acc(x1), axis=dim).astype(x.dtype, copy=False)
        return out.reshape(x.shape)

    @staticmethod
    def backward(ctx, g):
        if g.ndim == 0:
            return g, None, None
        return _rev_cumsum(ctx.xp, acc(g), ctx.dim).astype(g.dtype, copy=False), None, None

    @staticmethod
    def differentiable_backward(ctx, g):
        if g.ndim == 0:
            return g, None, None
        d = ctx.dim
        return g.sum(d, keepdim=True) - g.cumsum(d) + g, None, None  # the reversed cumsum


class CumProd(Function):
    @staticmethod
    def forward(ctx, x, dim, npdt):
        ctx.dim = dim
        x1 = x.reshape(1) if x.ndim == 0 else x
        if npdt is not None:
            return ctx.xp.cumprod(x1, axis=dim, dtype=npdt).reshape(x.shape)
        with _quiet(ctx.xp):
            out = ctx.xp.cumprod(acc(x1), axis=dim)
        ctx.save_for_backward(x)
        return out.astype(x.dtype, copy=False).reshape(x.shape)

    @staticmethod
    def backward(ctx, g):
        xp = ctx.xp
        (x,) = ctx.saved_tensors
        if x.ndim == 0:
            return g, None, None
        d = ctx.dim
        xa, ga = acc(x), acc(g)
        with _quiet(xp):
            out = xp.cumprod(xa, axis=d)
            zero = xa == 0
            first = zero & (xp.cumsum(zero, axis=d) == 1)  # the first zero of each row
            c = xp.cumprod(xp.where(first, 1, xa), axis=d)
            plain = _rev_cumsum(xp, ga * out, d) / xp.where(zero, 1, xa)
            grad = xp.where(first, _rev_cumsum(xp, ga * c, d), xp.where(zero, 0, plain))
        return grad.astype(x.dtype, copy=False), None, None


def _cum(x: Any, dim: int, dtype: Any, cls: type, op: str) -> Any:
    _check_tensor(x, op)
    if dtype is not None:
        x = x.to(dtype)
    d = norm_dim(dim, x.ndim, op)
    npdt = None if x._dtype.is_floating_point else "int64"
    return cls.apply(x, d, npdt)


def cumsum(input: Any, dim: int, *, dtype: Any = None) -> Any:  # noqa: A002 - PyTorch's name
    """Cumulative sum along ``dim``; integer and bool inputs give int64.

    Example: ``ax.arange(4).cumsum(0)`` is ``[0, 1, 3, 6]``.
    """
    return _cum(input, dim, dtype, CumSum, "cumsum")


def cumprod(input: Any, dim: int, *, dtype: Any = None) -> Any:  # noqa: A002
    """Cumulative product along ``dim``; integer and bool inputs give int64. The gradient
    is exact with zeros in the input."""
    return _cum(input, dim, dtype, CumProd, "cumprod")


# -- norms ------------------------------------------------------------------------------------------
class VectorNorm(Function):
    keep_inputs = True

    @staticmethod
    def forward(ctx, x, ord, axes, keepdim):
        xp = ctx.xp
        ctx.meta = (ord, axes, keepdim)
        xa = acc(x)
        with _quiet(xp):
            if ord == 2:
                out = xp.sqrt((xa * xa).sum(axis=axes, keepdims=keepdim))
            elif ord == 1:
                out = xp.abs(xa).sum(axis=axes, keepdims=keepdim)
            elif ord == math.inf:
                out = xp.abs(xa).max(axis=axes, keepdims=keepdim)
            elif ord == -math.inf:
                out = xp.abs(xa).min(axis=axes, keepdims=keepdim)
            elif ord == 0:
                out = (xa != 0).sum(axis=axes, keepdims=keepdim).astype(xa.dtype)
            else:
                out = (xp.abs(xa) ** ord).sum(axis=axes, keepdims=keepdim) ** (1.0 / ord)
        out = out.astype(x.dtype, copy=False)
        ctx.save_for_backward(x, out)
        return out

    @staticmethod
    def _inf_weights(xp, x, o, axes):
        a = xp.abs(x)
        hit = ((a == o) | (a != a)).astype(x.dtype)
        return xp.sign(x) * hit / hit.sum(axis=axes, keepdims=True)

    @staticmethod
    def backward(ctx, g):
        xp = ctx.xp
        x, out = ctx.saved_tensors
        p, axes, _ = ctx.meta
        ks = kept_shape(x.shape, axes)
        xa, o, g = acc(x), acc(out).reshape(ks), acc(g).reshape(ks)
        with _quiet(xp):
            if p == 0:
                grad = xp.zeros_like(xa)
            elif p == 1:
                grad = g * xp.sign(xa)
            elif math.isinf(p):
                grad = g * VectorNorm._inf_weights(xp, xa, o, axes)
            elif p == 2:
                grad = xa * xp.where(o == 0, 0, g / o)
            elif p < 1:
                scaled = xp.where(xa == 0, 0, xp.sign(xa) * xp.abs(xa) ** (p - 1))
                grad = scaled * g * o ** (1 - p)
            else:
                scaled = xp.sign(xa) * xp.abs(xa) ** (p - 1)
                grad = scaled * xp.where(o == 0, 0, g / o ** (p - 1))
        return grad.astype(x.dtype, copy=False), None, None, None

    @staticmethod
    def differentiable_backward(ctx, g):
        xp = ctx.xp
        x = ctx.inputs[0]
        p, axes, _ = ctx.meta
        g = g.reshape(kept_shape(x.shape, axes))
        if p == 0:
            return g * 0 * x, None, None, None
        if p == 1:
            return g * wrap(xp.sign(x._data), g), None, None, None
        if math.isinf(p):
            (_, out) = ctx.saved_tensors
            w = VectorNorm._inf_weights(xp, x._data, out.reshape(g.shape), axes)
            return g * wrap(w.astype(x._data.dtype, copy=False), g), None, None, None
        if p == 2:
            o = VectorNorm.apply(x, 2, axes, True)
            zero = o == 0
            return x * where(zero, 0.0, g / where(zero, 1.0, o)), None, None, None
        raise AutogradError(f"create_graph=True through norm is supported for ord in (0, 1, 2, inf, -inf), got ord={p}")


def vector_norm(x: Any, ord: float = 2, dim: Any = None, keepdim: bool = False, *, dtype: Any = None) -> Any:  # noqa: A002
    """The vector ``ord``-norm over ``dim`` (None: all elements), as
    ``torch.linalg.vector_norm``: ``sum(|x|**ord)**(1/ord)``; ``inf``/``-inf`` give the
    max/min absolute value, 0 the number of non-zeros.

    Example: ``vector_norm(x, 2, dim=-1)``.
    """
    _check_tensor(x, "vector_norm")
    if not x._dtype.is_floating_point:
        raise DTypeError(f"vector_norm: expected a floating point tensor, got {x._dtype}; convert with .float() first")
    if dtype is not None:
        x = x.to(dtype)
    if isinstance(ord, str) or isinstance(ord, bool):
        raise TypeError(f"vector_norm: ord must be a number, got {ord!r}")
    axes = dims_of(dim, x, "vector_norm")
    if (ord < 0 or math.isinf(ord)) and count(x.shape, axes) == 0:
        raise ShapeError(
            f"vector_norm: cannot compute the {ord} norm of an empty tensor of shape {tuple(x.shape)} "
            "(the operation has no identity)"
        )
    return VectorNorm.apply(x, float(ord), axes, keepdim)


def norm(input: Any, p: Any = "fro", dim: Any = None, keepdim: bool = False, dtype: Any = None) -> Any:  # noqa: A002
    """``torch.norm``: 'fro' (the 2-norm of the elements over ``dim``, at most 2 dims) or
    a number ``p`` (a vector norm over ``dim``, see :func:`vector_norm`).

    Example: ``x.norm()``, ``x.norm(1, dim=0)``, ``x.norm(float('inf'))``.
    """
    _check_tensor(input, "norm")
    if isinstance(p, str):
        if p == "nuc":
            raise ValueError("norm: p='nuc' (the nuclear norm) is a matrix norm; use linalg.matrix_norm")
        if p != "fro":
            raise ValueError(f"norm: p must be 'fro', 'nuc' or a number, got {p!r}")
        if dim is not None and not isinstance(dim, int) and len(tuple(dim)) > 2:
            raise ShapeError(f"norm: the Frobenius norm takes at most 2 dims, got dim={tuple(dim)}")
        p = 2
    return vector_norm(input, 2 if p is None else p, dim, keepdim, dtype=dtype)


METHODS = {"cumsum": cumsum, "cumprod": cumprod, "norm": norm}
