"""Pointwise ops of several operands: clamp (tensor or scalar bounds), where,
maximum/minimum, fmod/remainder, lerp, and nan_to_num.

Part of :mod:`.pointwise` (split off to keep modules short): pointwise re-exports these
functions and binds their Tensor methods.

Note on gradients at the kinks, as in PyTorch: ``clamp`` passes the input's gradient
where ``min <= x <= max`` (inclusive) and a tensor bound's where it binds;
``maximum``/``minimum`` give half to each side where the operands are equal; ``where``
routes the gradient by the condition. Their derivatives are piecewise constant, so the
differentiable backwards (second order) multiply by constant masks.
"""

from __future__ import annotations

from typing import Any

import ml_dtypes

from ...autograd.function import Function
from ...autograd.variable import TensorBase
from ...errors import DTypeError, ShapeError
from ...runtime.dtypes import result_type
from .._helpers import SCALARS, broadcast_error, promote, promote_scalar_first, scalar_value, sum_to_shape, wrap
from .logical import NonzeroTuple, _check_tensor, _quiet


def _const(arr: Any, like: Any) -> Any:
    """A constant (graph-free) tensor for differentiable backwards: masks, signs."""
    return wrap(arr.astype(like._data.dtype, copy=False), like)


# -- clamp ---------------------------------------------------------------------------------
def _shape(v: Any) -> Any:
    return getattr(v, "shape", None)


class Clamp(Function):
    """``min(max(x, lo), hi)``; ``lo``/``hi`` are arrays, scalars or None. The input's
    gradient passes where ``lo <= x <= hi`` (inclusive), the bounds' where they bind."""

    @staticmethod
    def forward(ctx, x, lo, hi):
        xp = ctx.xp
        ctx.save_for_backward(x, lo, hi)
        shapes = [s for s in (_shape(x), _shape(lo), _shape(hi)) if s is not None]
        try:
            out = x if lo is None else xp.maximum(x, lo)
            out = out if hi is None else xp.minimum(out, hi)
        except ValueError:
            raise broadcast_error("clamp", *shapes) from None
        if out.shape != x.shape:
            raise ShapeError(
                f"clamp: min/max of shapes {shapes[1:]} must broadcast to the input's shape {tuple(x.shape)} "
                f"(they would make it {tuple(out.shape)}); expand the input first"
            )
        return out

    @staticmethod
    def _masks(ctx):
        x, lo, hi = ctx.saved_tensors
        keep = None
        if lo is not None:
            keep = x >= lo
        if hi is not None:
            keep = (x <= hi) if keep is None else keep & (x <= hi)
        both = lo is not None and hi is not None
        lo_m = None if lo is None else ((x < lo) & (lo < hi) if both else x < lo)
        hi_m = None if hi is None else ((x > hi) | (hi < lo) if both else x > hi)
        return (x, lo, hi), (keep, lo_m, hi_m)

    @staticmethod
    def backward(ctx, g):
        xp = ctx.xp
        ins, masks = Clamp._masks(ctx)
        res = []
        for need, v, m in zip(ctx.needs_input_grad, ins, masks):
            res.append(sum_to_shape(xp, xp.where(m, g, 0), v.shape) if need else None)
        return tuple(res)

    @staticmethod
    def differentiable_backward(ctx, g):
        ins, masks = Clamp._masks(ctx)
        res = []
        for need, v, m in zip(ctx.needs_input_grad, ins, masks):
            res.append((g * _const(ctx.xp.broadcast_to(m, g.shape), g)).sum_to_size(v.shape) if need else None)
        return tuple(res)


def clamp(input: Any, min: Any = None, max: Any = None) -> Any:  # noqa: A002
    """Limit ``input`` to ``[min, max]``; each bound a number, a tensor (broadcast) or None.

    The result dtype follows PyTorch's promotion over all three (``int_t.clamp(min=0.5)`` is
    float). Example: ``x.clamp(min=0)`` is ReLU; ``x.clamp(-1, 1)``.
    """
    _check_tensor(input, "clamp")
    if min is None and max is None:
        raise ValueError("clamp: at least one of 'min' or 'max' must not be None")
    bounds = [scalar_value(b) for b in (min, max)]
    for b in bounds:
        if b is not None and not isinstance(b, (TensorBase, *SCALARS)):
            raise TypeError(f"clamp: min and max must be numbers, tensors or None, got {type(b).__name__}")
    dt = result_type(input, *[b for b in bounds if b is not None])
    x, lo, hi = [b.to(dt) if isinstance(b, TensorBase) and b._dtype is not dt else b for b in (input, *bounds)]
    return Clamp.apply(x, lo, hi)


clip = clamp


def clamp_min(input: Any, min: Any) -> Any:  # noqa: A002
    """``clamp(input, min=min)``."""
    return clamp(input, min=min)


def clamp_max(input: Any, max: Any) -> Any:  # noqa: A002
    """``clamp(input, max=max)``."""
    return clamp(input, max=max)


# -- where / maximum / minimum ---------------------------------------------------------------
class Where(Function):
    @staticmethod
    def forward(ctx, cond, x, y, npdt):
        ctx.save_for_backward(cond)
        ctx.sx, ctx.sy = _shape(x), _shape(y)
        try:
            out = ctx.xp.where(cond, x, y)
        except ValueError:
            raise broadcast_error("where", *[s for s in (cond.shape, ctx.sx, ctx.sy) if s is not None]) from None
        return out.astype(npdt, copy=False)

    @staticmethod
    def backward(ctx, g):
        xp = ctx.xp
        (cond,) = ctx.saved_tensors
        need = ctx.needs_input_grad
        gx = sum_to_shape(xp, xp.where(cond, g, 0), ctx.sx) if need[1] else None
        gy = sum_to_shape(xp, xp.where(cond, 0, g), ctx.sy) if need[2] else None
        return None, gx, gy, None

    @staticmethod
    def differentiable_backward(ctx, g):
        (cond,) = ctx.saved_tensors
        need = ctx.needs_input_grad
        c = ctx.xp.broadcast_to(cond, g.shape)
        gx = (g * _const(c, g)).sum_to_size(ctx.sx) if need[1] else None
        gy = (g * _const(~c, g)).sum_to_size(ctx.sy) if need[2] else None
        return None, gx, gy, None


def where(condition: Any, input: Any = None, other: Any = None) -> Any:  # noqa: A002
    """``input`` where ``condition`` holds, else ``other`` (tensors or numbers, broadcast;
    dtype promoted as in PyTorch). ``where(condition)`` alone is ``nonzero(as_tuple=True)``.

    Example: ``ax.where(x > 0, x, 0.0)``.
    """
    _check_tensor(condition, "where")
    if input is None and other is None:
        return NonzeroTuple.apply(condition)
    if condition._dtype.name not in ("bool", "uint8"):
        raise DTypeError(f"where: expected condition to be a bool tensor, got {condition._dtype}; use (cond != 0)")
    if condition._dtype.name == "uint8":
        condition = condition.to("bool")
    vals = [scalar_value(v) for v in (input, other)]
    for v in vals:
        if not isinstance(v, (TensorBase, *SCALARS)):
            raise TypeError(f"where: input and other must be tensors or numbers, got {type(v).__name__}")
    dt = result_type(*vals)
    x, y = [v.to(dt) if isinstance(v, TensorBase) and v._dtype is not dt else v for v in vals]
    return Where.apply(condition, x, y, dt.np)


def _where_method(self: Any, condition: Any, other: Any) -> Any:
    return where(condition, self, other)


class Extremum(Function):
    """maximum/minimum; where the two are equal each gets half the gradient (as PyTorch)."""

    @staticmethod
    def forward(ctx, a, b, kind):
        ctx.save_for_backward(a, b)
        ctx.kind = kind
        try:
            return ctx.xp.maximum(a, b) if kind == "maximum" else ctx.xp.minimum(a, b)
        except ValueError:
            raise broadcast_error(kind, a.shape, b.shape) from None

    @staticmethod
    def _weights(ctx):
        a, b = ctx.saved_tensors
        xp = ctx.xp
        a_loses, b_loses = (a < b, a > b) if ctx.kind == "maximum" else (a > b, a < b)
        tie = a == b
        wa = xp.where(tie, 0.5, xp.where(a_loses, 0.0, 1.0))  # nan: both get the gradient
        wb = xp.where(tie, 0.5, xp.where(b_loses, 0.0, 1.0))
        return (a, b), (wa, wb)

    @staticmethod
    def backward(ctx, g):
        ins, ws = Extremum._weights(ctx)
        pairs = zip(ctx.needs_input_grad, ins, ws)
        res = [sum_to_shape(ctx.xp, g * w.astype(g.dtype), v.shape) if need else None for need, v, w in pairs]
        return res[0], res[1], None

    @staticmethod
    def differentiable_backward(ctx, g):
        ins, ws = Extremum._weights(ctx)
        res = [(g * _const(w, g)).sum_to_size(v.shape) if need else None for need, v, w in zip(ctx.needs_input_grad, ins, ws)]
        return res[0], res[1], None


def _extremum(a: Any, b: Any, kind: str) -> Any:
    if not isinstance(a, TensorBase) or not isinstance(b, TensorBase):
        raise TypeError(f"{kind}: both arguments must be tensors, got {type(a).__name__} and {type(b).__name__}")
    a, b = promote(a, b)
    return Extremum.apply(a, b, kind)


def maximum(input: Any, other: Any) -> Any:  # noqa: A002
    """Elementwise maximum of two tensors (nan propagates; ties split the gradient)."""
    return _extremum(input, other, "maximum")


def minimum(input: Any, other: Any) -> Any:  # noqa: A002
    """Elementwise minimum of two tensors (nan propagates; ties split the gradient)."""
    return _extremum(input, other, "minimum")


# -- fmod / remainder / lerp / nan_to_num ------------------------------------------------------------
class Mod(Function):
    """``fmod`` (sign of the dividend) or ``remainder`` (sign of the divisor)."""

    @staticmethod
    def forward(ctx, a, b, kind):
        xp = ctx.xp
        ctx.kind = kind
        ctx.save_for_backward(a, b)
        dt = a.dtype if hasattr(a, "dtype") else b.dtype
        if dt.kind in "iub" and bool(xp.any(xp.asarray(b) == 0)):
            raise ZeroDivisionError(f"{kind}: integer division by zero (a divisor is 0)")
        try:
            with _quiet(xp):
                return xp.fmod(a, b) if kind == "fmod" else xp.remainder(a, b)
        except ValueError:
            raise broadcast_error(kind, _shape(a), _shape(b)) from None

    @staticmethod
    def backward(ctx, g):
        xp = ctx.xp
        a, b = ctx.saved_tensors
        need = ctx.needs_input_grad
        ga = sum_to_shape(xp, g, a.shape) if need[0] else None
        gb = None
        if need[1]:
            with _quiet(xp):
                q = a / b
            q = xp.trunc(q) if ctx.kind == "fmod" else xp.floor(q)
            gb = sum_to_shape(xp, -g * q, b.shape)
        return ga, gb, None


def _mod(a: Any, b: Any, kind: str) -> Any:
    if isinstance(a, TensorBase):
        a, b = promote(a, b)
    elif isinstance(b, TensorBase) and kind == "remainder":
        a, b = promote_scalar_first(a, b)
    else:
        raise TypeError(f"{kind}: the first argument must be a tensor, got {type(a).__name__}")
    return Mod.apply(a, b, kind)


def fmod(input: Any, other: Any) -> Any:  # noqa: A002
    """C-style remainder: the result has the sign of ``input``. ``fmod(-3, 2) == -1``."""
    return _mod(input, other, "fmod")


def remainder(input: Any, other: Any) -> Any:  # noqa: A002
    """Python-style ``input % other``: the result has the sign of ``other``."""
    return _mod(input, other, "remainder")


def _rmod(a: Any, b: Any) -> Any:
    return remainder(b, a)


class Lerp(Function):
    @staticmethod
    def forward(ctx, start, end, weight):
        xp = ctx.xp
        ctx.save_for_backward(start, end, weight)
        try:
            d = end - start
            # PyTorch's two-sided formula: exact at weight 0 and at weight 1
            if isinstance(weight, (int, float)):
                return start + weight * d if -0.5 < weight < 0.5 else end - d * (1 - weight)
            return xp.where(xp.abs(weight) < 0.5, start + weight * d, end - d * (1 - weight))
        except ValueError:
            raise broadcast_error("lerp", start.shape, end.shape, *([weight.shape] if hasattr(weight, "shape") else [])) from None

    @staticmethod
    def backward(ctx, g):
        xp = ctx.xp
        s, e, w = ctx.saved_tensors
        need = ctx.needs_input_grad
        g_start = sum_to_shape(xp, g * (1 - w), s.shape) if need[0] else None
        g_end = sum_to_shape(xp, g * w, e.shape) if need[1] else None
        g_weight = sum_to_shape(xp, g * (e - s), w.shape) if need[2] else None
        return g_start, g_end, g_weight


def lerp(input: Any, end: Any, weight: Any) -> Any:  # noqa: A002
    """Linear interpolation ``input + weight * (end - input)``; ``weight`` a number or a tensor."""
    _check_tensor(input, "lerp")
    _check_tensor(end, "lerp")
    if not input._dtype.is_floating_point or input._dtype is not end._dtype:
        raise DTypeError(f"lerp: start and end must share one floating dtype, got {input._dtype} and {end._dtype}")
    weight = scalar_value(weight)
    if isinstance(weight, TensorBase):
        weight = weight.to(input._dtype)
    elif not isinstance(weight, (int, float)):
        raise TypeError(f"lerp: weight must be a number or a tensor, got {type(weight).__name__}")
    return Lerp.apply(input, end, weight)


class NanToNum(Function):
    @staticmethod
    def forward(ctx, x, nan, posinf, neginf):
        ctx.save_for_backward(x)
        if x.dtype.kind == "V":  # bfloat16: NumPy's nan_to_num passes it through unchanged
            big = float(ml_dtypes.finfo(x.dtype).max)
            posinf, neginf = big if posinf is None else posinf, -big if neginf is None else neginf
            return ctx.xp.nan_to_num(x.astype("float32"), nan=nan, posinf=posinf, neginf=neginf).astype(x.dtype)
        return ctx.xp.nan_to_num(x, nan=nan, posinf=posinf, neginf=neginf)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return ctx.xp.where(ctx.xp.isfinite(x), g, 0), None, None, None


def nan_to_num(input: Any, nan: float = 0.0, posinf: float | None = None, neginf: float | None = None) -> Any:  # noqa: A002
    """Replace nan by ``nan``, +inf by ``posinf`` and -inf by ``neginf`` (default: the
    dtype's largest/smallest finite value). Integer tensors are returned as a copy."""
    _check_tensor(input, "nan_to_num")
    if not input._dtype.is_floating_point:
        return input.clone()
    return NanToNum.apply(input, nan, posinf, neginf)
