"""Reductions: var/std, max/min (values and indices), amax/amin, argmax/argmin, prod,
logsumexp, all/any, count_nonzero, aminmax. (``sum``/``mean`` live in :mod:`.core`;
cumsum/cumprod, norms and the dim helpers shared by both modules in
:mod:`.reduce_scan`, which this module re-exports, so ``OP_MODULES`` lists only ``reduce``.)

Note on dims: ``dim`` is an int, a sequence of ints, or None (all dims); ``()`` also
means all dims, as in PyTorch's ``amax``. A dim out of range raises IndexError naming the
dim and the tensor's ndim; a repeated dim raises ValueError. A 0-d tensor accepts dim 0
or -1 and reduces its single element.

Note on precision: float16/bfloat16 inputs are reduced in float32 and the result is cast
back to the input dtype; integer and bool ``prod``/``cumsum``/``cumprod`` give int64.

Note on gradients at ties, as in PyTorch: ``max()``/``amax`` (no indices) split the
gradient evenly among the elements equal to the extremum; ``max(dim)`` sends it all to
the returned index (the first occurrence). Empty reductions without an identity (max,
argmax...) raise an error naming the op and the shape.
"""

from __future__ import annotations

import builtins
import warnings
from collections import namedtuple
from typing import Any

from ...autograd.function import Function
from ...autograd.variable import TensorBase
from ...errors import DTypeError, ShapeError
from ...runtime.dtypes import get_default_dtype
from .._helpers import norm_dim, wrap
from .logical import _check_tensor, _quiet
from .pointwise_multi import maximum, minimum, where
from .reduce_scan import METHODS as _SCAN_METHODS
from .reduce_scan import acc, count, cumprod, cumsum, dims_of, kept_shape, norm, out_shape, vector_norm  # noqa: F401 - re-exported

MaxResult = namedtuple("max", ["values", "indices"])
MinResult = namedtuple("min", ["values", "indices"])
AminmaxResult = namedtuple("aminmax", ["min", "max"])


# -- shared helpers -----------------------------------------------------------------------------
def _need_float(x: Any, op: str) -> None:
    _check_tensor(x, op)
    if not x._dtype.is_floating_point:
        raise DTypeError(f"{op}: only floating point tensors are supported, got {x._dtype}; convert with .float() first")


def _check_nonempty(x: Any, axes: tuple | None, op: str) -> None:
    if x._data.size:
        return
    shape = tuple(x.shape)
    if axes is None:
        raise ShapeError(
            f"{op}(): cannot reduce an empty tensor of shape {shape} over all dims: the operation has "
            "no identity. Pass dim= to reduce over a dimension of non-zero size"
        )
    for a in axes:
        if shape[a] == 0:
            raise IndexError(f"{op}(): expected reduction dim {a} to have non-zero size (input shape {shape})")


# -- var / std ------------------------------------------------------------------------------------
class VarStd(Function):
    keep_inputs = True

    @staticmethod
    def forward(ctx, x, axes, correction, keepdim, std):
        xp = ctx.xp
        xa = acc(x)
        n = count(x.shape, axes)
        ctx.meta = (axes, correction, keepdim, std, n)
        with _quiet(xp):
            d = xa - xa.sum(axis=axes, keepdims=True) / n
            out = (d * d).sum(axis=axes, keepdims=keepdim) / builtins.max(0, n - correction)
            if std:
                out = xp.sqrt(out)
        out = out.astype(x.dtype, copy=False)
        ctx.save_for_backward(x, out)
        return out

    @staticmethod
    def backward(ctx, g):
        xp = ctx.xp
        x, out = ctx.saved_tensors
        axes, correction, keepdim, std, n = ctx.meta
        ks = kept_shape(x.shape, axes)
        xa, g = acc(x), acc(g).reshape(ks)
        with _quiet(xp):
            if std:
                o = acc(out).reshape(ks)
                g = xp.where(o == 0, 0, g / (2 * o))  # PyTorch gives 0, not nan, at std == 0
            d = xa - xa.sum(axis=axes, keepdims=True) / n
            return (g * d * 2 / builtins.max(0, n - correction)).astype(x.dtype, copy=False), None, None, None, None

    @staticmethod
    def differentiable_backward(ctx, g):
        x = ctx.inputs[0]
        axes, correction, keepdim, std, n = ctx.meta
        g = g.reshape(kept_shape(x.shape, axes))
        if std:
            o = VarStd.apply(x, axes, correction, True, True)
            g = where(o == 0, 0.0, g / (2 * where(o == 0, 1.0, o)))
        d = x - x.mean(axes, keepdim=True)
        den = builtins.max(0, n - correction)
        return (g * d * (2 / den) if den else g * d * float("inf")), None, None, None, None


def _var_args(x: Any, op: str, dim: Any, unbiased: Any, correction: Any) -> tuple:
    """(axes, correction) from PyTorch's overloads; warns like PyTorch when N - correction <= 0."""
    _need_float(x, op)
    if isinstance(dim, bool):  # var(x, False): the legacy ``unbiased`` overload
        dim, unbiased = None, dim
    if unbiased is not None and correction is not None:
        raise TypeError(f"{op}: pass either unbiased= or correction=, not both")
    if correction is None:
        correction = 0 if unbiased is False else 1
    axes = dims_of(dim, x, op)
    n = count(x.shape, axes)
    if n - correction <= 0 and x._data.size:
        warnings.warn(
            f"{op}(): degrees of freedom is <= 0 ({n} elements per reduction, correction={correction}); "
            "the result is inf or nan",
            UserWarning,
            stacklevel=3,
        )
    return axes, correction


def var(
    input: Any, dim: Any = None, unbiased: bool | None = None, keepdim: bool = False, *, correction: float | None = None  # noqa: A002
) -> Any:
    """Variance over ``dim`` with Bessel's correction (``correction=1``, or ``unbiased=False``
    for 0). Where ``N - correction <= 0`` the result is inf or nan, as in PyTorch.

    Example: ``x.var(dim=0, keepdim=True)``, ``x.var(correction=0)``.
    """
    axes, c = _var_args(input, "var", dim, unbiased, correction)
    return VarStd.apply(input, axes, c, keepdim, False)


def std(
    input: Any, dim: Any = None, unbiased: bool | None = None, keepdim: bool = False, *, correction: float | None = None  # noqa: A002
) -> Any:
    """Standard deviation: the square root of :func:`var` (same arguments)."""
    axes, c = _var_args(input, "std", dim, unbiased, correction)
    return VarStd.apply(input, axes, c, keepdim, True)


def var_mean(
    input: Any, dim: Any = None, unbiased: bool | None = None, keepdim: bool = False, *, correction: float | None = None  # noqa: A002
) -> tuple:
    """``(var, mean)`` over ``dim``."""
    v = var(input, dim, unbiased, keepdim, correction=correction)
    d = None if isinstance(dim, bool) else dim
    return v, input.mean(dims_of(d, input, "var_mean"), keepdim=keepdim)


def std_mean(
    input: Any, dim: Any = None, unbiased: bool | None = None, keepdim: bool = False, *, correction: float | None = None  # noqa: A002
) -> tuple:
    """``(std, mean)`` over ``dim``."""
    s = std(input, dim, unbiased, keepdim, correction=correction)
    d = None if isinstance(dim, bool) else dim
    return s, input.mean(dims_of(d, input, "std_mean"), keepdim=keepdim)


# -- max / min / amax / amin / argmax / argmin --------------------------------------------------------
class Extreme(Function):
    """amax/amin and max()/min() without indices: ties share the gradient evenly."""

    @staticmethod
    def forward(ctx, x, axes, keepdim, kind):
        ctx.meta = (axes, keepdim)
        out = x.max(axis=axes, keepdims=keepdim) if kind == "max" else x.min(axis=axes, keepdims=keepdim)
        ctx.save_for_backward(x, out)
        return out

    @staticmethod
    def _weights(ctx):
        x, out = ctx.saved_tensors
        axes, _ = ctx.meta
        o = out.reshape(kept_shape(x.shape, axes))
        hit = ((x == o) | ((x != x) & (o != o))).astype(x.dtype)  # a nan extremum: the nans get it
        return hit / hit.sum(axis=axes, keepdims=True)

    @staticmethod
    def backward(ctx, g):
        w = Extreme._weights(ctx)
        return (g.reshape(kept_shape(w.shape, ctx.meta[0])) * w).astype(g.dtype, copy=False), None, None, None

    @staticmethod
    def differentiable_backward(ctx, g):
        w = Extreme._weights(ctx)
        return g.reshape(kept_shape(w.shape, ctx.meta[0])) * wrap(w.astype(g._data.dtype), g), None, None, None


class ExtremeDim(Function):
    """max(dim)/min(dim): values and int64 indices; the gradient goes to the index."""

    @staticmethod
    def forward(ctx, x, dim, keepdim, kind):
        xp = ctx.xp
        ctx.shape = x.shape
        x1 = x.reshape(1) if x.ndim == 0 else x
        idx = (xp.argmax if kind == "max" else xp.argmin)(x1, axis=dim, keepdims=True)
        vals = xp.take_along_axis(x1, idx, axis=dim)
        ctx.dim, ctx.idx, ctx.size = dim, idx, x1.shape[dim]
        shape = out_shape(x.shape, (dim,) if x.ndim else None, keepdim)
        idx = idx.reshape(shape).astype("int64", copy=False)
        ctx.mark_non_differentiable(idx)
        return vals.reshape(shape), idx

    @staticmethod
    def _onehot(ctx):
        nd = ctx.idx.ndim
        pos = ctx.xp.arange(ctx.size).reshape(tuple(ctx.size if i == ctx.dim else 1 for i in range(nd)))
        return pos == ctx.idx  # one-hot along dim, shaped like the keepdim input

    @staticmethod
    def backward(ctx, gv, gi):
        hot = ExtremeDim._onehot(ctx)
        return ctx.xp.where(hot, gv.reshape(ctx.idx.shape), 0).reshape(ctx.shape), None, None, None

    @staticmethod
    def differentiable_backward(ctx, gv, gi):
        hot = ExtremeDim._onehot(ctx)
        return (gv.reshape(ctx.idx.shape) * wrap(hot.astype(gv._data.dtype), gv)).reshape(ctx.shape), None, None, None


def _max_min(x: Any, dim: Any, keepdim: bool, kind: str) -> Any:
    _check_tensor(x, kind)
    if isinstance(dim, TensorBase):  # max(a, b): the elementwise form
        return (maximum if kind == "max" else minimum)(x, dim)
    if dim is None:
        _check_nonempty(x, None, kind)
        return Extreme.apply(x, None, False, kind)
    if not isinstance(dim, int) or isinstance(dim, bool):
        raise TypeError(f"{kind}: dim must be an int (or a tensor for the elementwise form), got {dim!r}")
    d = norm_dim(dim, x.ndim, kind)
    if x.ndim:
        _check_nonempty(x, (d,), kind)
    vals, idx = ExtremeDim.apply(x, d, keepdim, kind)
    return (MaxResult if kind == "max" else MinResult)(vals, idx)


def max(input: Any, dim: Any = None, keepdim: bool = False) -> Any:  # noqa: A001,A002
    """The largest element (0-d tensor); with ``dim``, a ``(values, indices)`` named tuple;
    with a tensor as second argument, :func:`maximum`.

    Example: ``v, i = x.max(dim=1)``.
    """
    return _max_min(input, dim, keepdim, "max")


def min(input: Any, dim: Any = None, keepdim: bool = False) -> Any:  # noqa: A001,A002
    """The smallest element; with ``dim``, ``(values, indices)``; see :func:`max`."""
    return _max_min(input, dim, keepdim, "min")


def _amax_amin(x: Any, dim: Any, keepdim: bool, kind: str) -> Any:
    _check_tensor(x, "a" + kind)
    axes = dims_of(dim, x, "a" + kind)
    _check_nonempty(x, axes, "a" + kind)
    return Extreme.apply(x, axes, keepdim, kind)


def amax(input: Any, dim: Any = (), keepdim: bool = False) -> Any:  # noqa: A002
    """The maximum over ``dim`` (an int, a tuple, or () for all); ties share the gradient."""
    return _amax_amin(input, dim, keepdim, "max")


def amin(input: Any, dim: Any = (), keepdim: bool = False) -> Any:  # noqa: A002
    """The minimum over ``dim``; ties share the gradient."""
    return _amax_amin(input, dim, keepdim, "min")


def aminmax(input: Any, *, dim: int | None = None, keepdim: bool = False) -> Any:  # noqa: A002
    """``(min, max)`` over ``dim`` (None for all) as a named tuple."""
    d = () if dim is None else dim
    return AminmaxResult(amin(input, d, keepdim), amax(input, d, keepdim))


class ArgExtreme(Function):
    @staticmethod
    def forward(ctx, x, dim, keepdim, kind):
        fn = ctx.xp.argmax if kind == "argmax" else ctx.xp.argmin
        if dim is None:
            r = fn(x.reshape(-1))
            return (r.reshape((1,) * x.ndim) if keepdim else r).astype("int64")
        r = fn(x.reshape(1) if x.ndim == 0 else x, axis=dim, keepdims=keepdim)
        return (r.reshape(()) if x.ndim == 0 else r).astype("int64")

    @staticmethod
    def backward(ctx, g):  # int64 output: never called
        return None, None, None, None


def _arg(x: Any, dim: Any, keepdim: bool, kind: str) -> Any:
    _check_tensor(x, kind)
    if x._dtype.name == "bool":
        raise DTypeError(f"{kind}: bool tensors are not supported; use .int() first")
    d = None if dim is None else norm_dim(dim, x.ndim, kind)
    _check_nonempty(x, None if d is None or x.ndim == 0 else (d,), kind)
    return ArgExtreme.apply(x, d, keepdim, kind)


def argmax(input: Any, dim: int | None = None, keepdim: bool = False) -> Any:  # noqa: A002
    """Index of the (first) largest element over ``dim``, or into the flattened tensor."""
    return _arg(input, dim, keepdim, "argmax")


def argmin(input: Any, dim: int | None = None, keepdim: bool = False) -> Any:  # noqa: A002
    """Index of the (first) smallest element over ``dim``, or into the flattened tensor."""
    return _arg(input, dim, keepdim, "argmin")


# -- prod / logsumexp -------------------------------------------------------------------------------
def _along(d: int, s: slice, ndim: int) -> tuple:
    idx = [slice(None)] * ndim
    idx[d] = s
    return tuple(idx)


def products_of_others(xp: Any, a: Any, d: int) -> Any:
    """For each element, the product of the other elements along ``d`` (zeros handled
    exactly: exclusive prefix times exclusive suffix products, no division)."""
    if a.shape[d] == 0:
        return xp.zeros_like(a)
    nd = a.ndim
    one = xp.ones_like(a[_along(d, slice(0, 1), nd)])
    left = xp.cumprod(a, axis=d)
    right = xp.flip(xp.cumprod(xp.flip(a, d), axis=d), d)
    left_ex = xp.concatenate([one, left[_along(d, slice(None, -1), nd)]], axis=d)
    right_ex = xp.concatenate([right[_along(d, slice(1, None), nd)], one], axis=d)
    return left_ex * right_ex


class Prod(Function):
    @staticmethod
    def forward(ctx, x, axis, keepdim, npdt):
        ctx.meta = (axis, keepdim)
        ctx.save_for_backward(x)
        xa = x.astype(npdt) if npdt is not None else acc(x)
        with _quiet(ctx.xp):
            out = xa.prod(axis=axis, keepdims=keepdim)
        return out.astype(npdt or x.dtype, copy=False)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        axis, _ = ctx.meta
        xa = acc(x)
        with _quiet(ctx.xp):
            if axis is None:
                others = products_of_others(ctx.xp, xa.reshape(-1), 0).reshape(x.shape)
            else:
                others = products_of_others(ctx.xp, xa, axis)
            g = acc(g).reshape(kept_shape(x.shape, None if axis is None else (axis,)))
            return (g * others).astype(x.dtype), None, None, None


def prod(input: Any, dim: int | None = None, keepdim: bool = False, *, dtype: Any = None) -> Any:  # noqa: A002
    """Product over ``dim`` (one int) or of all elements. Integer and bool inputs give
    int64; the gradient is exact with zeros in the input.

    Example: ``x.prod(dim=1)``.
    """
    _check_tensor(input, "prod")
    if dim is not None and not isinstance(dim, int):
        raise TypeError(f"prod: dim must be one int or None, got {dim!r}; reduce one dim at a time")
    if dtype is not None:
        input = input.to(dtype)
    axes = dims_of(dim, input, "prod")
    npdt = None if input._dtype.is_floating_point else "int64"
    return Prod.apply(input, None if axes is None else axes[0], keepdim, npdt)


class LogSumExp(Function):
    keep_inputs = True

    @staticmethod
    def forward(ctx, x, axes, keepdim):
        xp = ctx.xp
        ctx.meta = (axes, keepdim)
        xa = acc(x)
        if count(x.shape, axes) == 0:
            out = xp.full(out_shape(x.shape, axes, keepdim), -float("inf"), dtype=xa.dtype)
        else:
            with _quiet(xp):
                m = xa.max(axis=axes, keepdims=True)
                m = xp.where(xp.isfinite(m), m, 0)  # all -inf (or an inf): no shift
                out = xp.log(xp.exp(xa - m).sum(axis=axes, keepdims=True)) + m
            out = out.reshape(out_shape(x.shape, axes, keepdim))
        out = out.astype(x.dtype, copy=False)
        ctx.save_for_backward(x, out)
        return out

    @staticmethod
    def backward(ctx, g):
        x, out = ctx.saved_tensors
        ks = kept_shape(x.shape, ctx.meta[0])
        with _quiet(ctx.xp):
            return (acc(g).reshape(ks) * ctx.xp.exp(acc(x) - acc(out).reshape(ks))).astype(x.dtype), None, None

    @staticmethod
    def differentiable_backward(ctx, g):
        x = ctx.inputs[0]
        axes = ctx.meta[0]
        out = LogSumExp.apply(x, axes, True)
        return g.reshape(kept_shape(x.shape, axes)) * (x - out).exp(), None, None


def logsumexp(input: Any, dim: Any, keepdim: bool = False) -> Any:  # noqa: A002
    """``log(sum(exp(input)))`` over ``dim``, computed stably (shifted by the max).
    Integer inputs give the default float dtype; an empty reduction gives -inf."""
    _check_tensor(input, "logsumexp")
    if not input._dtype.is_floating_point:
        input = input.to(get_default_dtype())
    return LogSumExp.apply(input, dims_of(dim, input, "logsumexp"), keepdim)


# -- all / any / count_nonzero -----------------------------------------------------------------------
class Truth(Function):
    @staticmethod
    def forward(ctx, x, axes, keepdim, kind):
        xp = ctx.xp
        if kind == "count_nonzero":
            return (x != 0).sum(axis=axes, keepdims=keepdim).astype("int64")
        out = (xp.all if kind == "all" else xp.any)(x, axis=axes, keepdims=keepdim)
        return out.astype("uint8") if x.dtype == "uint8" else out  # PyTorch keeps uint8

    @staticmethod
    def backward(ctx, g):
        return None, None, None, None


def all(input: Any, dim: Any = None, keepdim: bool = False) -> Any:  # noqa: A001,A002
    """True if every element over ``dim`` (int, tuple or None) is non-zero (bool tensor)."""
    _check_tensor(input, "all")
    return Truth.apply(input, dims_of(dim, input, "all"), keepdim, "all")


def any(input: Any, dim: Any = None, keepdim: bool = False) -> Any:  # noqa: A001,A002
    """True if any element over ``dim`` is non-zero (bool tensor)."""
    _check_tensor(input, "any")
    return Truth.apply(input, dims_of(dim, input, "any"), keepdim, "any")


def count_nonzero(input: Any, dim: Any = None) -> Any:  # noqa: A002
    """The number of non-zero elements over ``dim`` (int64)."""
    _check_tensor(input, "count_nonzero")
    return Truth.apply(input, dims_of(dim, input, "count_nonzero"), False, "count_nonzero")


METHODS = {
    "var": var, "std": std, "max": max, "min": min, "amax": amax, "amin": amin, "aminmax": aminmax,
    "argmax": argmax, "argmin": argmin, "prod": prod, "logsumexp": logsumexp, "all": all, "any": any,
    "count_nonzero": count_nonzero, **_SCAN_METHODS,
}

__all__ = [
    "var", "std", "var_mean", "std_mean", "max", "min", "amax", "amin", "aminmax", "argmax", "argmin",
    "prod", "logsumexp", "all", "any", "count_nonzero", "cumsum", "cumprod", "norm",
]
