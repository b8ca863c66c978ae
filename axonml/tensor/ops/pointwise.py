"""Elementwise math: exp/log/trig/sigmoid, rounding, clamp, where, maximum/minimum,
fmod/remainder, lerp, nan_to_num, and their in-place variants.

Split in three to keep modules short: this one (unary math, rounding, the in-place
variants and the ``METHODS`` table of all three), :mod:`.pointwise_multi` (clamp, where,
maximum/minimum, fmod/remainder, lerp, nan_to_num) and :mod:`.logical` (comparisons,
logical and bitwise ops, isnan/isclose/equal). This module re-exports the other two, so
``OP_MODULES`` lists only ``pointwise``.

Note on unary math: most ops here are "one array in, one array out, derivative is a
formula of the input or of the output". They share :class:`_Unary`: a subclass gives
``fn`` (forward, via ``xp``), ``save`` ('x' or 'out': the one array the derivative
needs, so backward keeps no more than that) and ``deriv``. Those that support second
order also give ``tensor_deriv`` (the derivative written with Tensor ops, from the input
tensor) and set ``keep_inputs``; ``abs`` needs no inputs because its derivative, the
sign, is locally constant.

Note on dtypes (as in PyTorch): transcendental ops turn integer and bool inputs into the
default float dtype; ``abs``/``square``/``sign``/rounding keep integer dtypes; in-place
variants refuse a result they cannot hold (``int_tensor.exp_()`` raises).

Note on warnings: NumPy warns on log(0), 1/0, overflow...; PyTorch silently follows
IEEE (inf, nan). Forwards run under :class:`_quiet` to do the same.
"""

from __future__ import annotations

import math
from typing import Any

from ...autograd.function import Function
from ...errors import DTypeError
from ...runtime.dtypes import get_default_dtype
from . import logical
from .core import neg
from .logical import (  # noqa: F401 - re-exported (see the module note)
    _check_tensor,
    _quiet,
    allclose,
    bitwise_and,
    bitwise_not,
    bitwise_or,
    bitwise_xor,
    eq,
    equal,
    ge,
    gt,
    isclose,
    isfinite,
    isinf,
    isnan,
    le,
    logical_and,
    logical_not,
    logical_or,
    logical_xor,
    lt,
    ne,
)
from .pointwise_multi import (  # noqa: F401 - re-exported
    _const,
    _rmod,
    _where_method,
    clamp,
    clamp_max,
    clamp_min,
    clip,
    fmod,
    lerp,
    maximum,
    minimum,
    nan_to_num,
    remainder,
    where,
)

LN2, LN10 = math.log(2.0), math.log(10.0)


def _float_input(x: Any, op: str) -> Any:
    """int/bool tensors become the default float dtype (PyTorch's rule for math ops)."""
    _check_tensor(x, op)
    return x if x._dtype.is_floating_point else x.to(get_default_dtype())


# -- unary math ------------------------------------------------------------------------------
class _Unary(Function):
    """Elementwise op of one tensor; see the module note."""

    save = "out"

    @staticmethod
    def forward(ctx, x):
        cls = type(ctx)
        with _quiet(ctx.xp):
            out = cls.fn(ctx.xp, x)
        ctx.save_for_backward(out if cls.save == "out" else x)
        return out

    @staticmethod
    def backward(ctx, g):
        (s,) = ctx.saved_tensors
        with _quiet(ctx.xp):
            return g * type(ctx).deriv(ctx.xp, s)

    @staticmethod
    def differentiable_backward(ctx, g):
        return g * type(ctx).tensor_deriv(ctx.inputs[0])


def _sigmoid_array(xp: Any, x: Any) -> Any:
    # PyTorch's formula; exp(-x) overflowing to inf gives exactly 0 (the warning is silenced)
    return 1 / (1 + xp.exp(-x))


class Exp(_Unary):
    keep_inputs = True
    fn = staticmethod(lambda xp, x: xp.exp(x))
    deriv = staticmethod(lambda xp, out: out)
    tensor_deriv = staticmethod(lambda x: x.exp())


class Exp2(_Unary):
    differentiable_backward = None
    fn = staticmethod(lambda xp, x: xp.exp2(x))
    deriv = staticmethod(lambda xp, out: out * LN2)


class Expm1(_Unary):
    differentiable_backward = None
    fn = staticmethod(lambda xp, x: xp.expm1(x))
    deriv = staticmethod(lambda xp, out: out + 1)


class Log(_Unary):
    keep_inputs = True
    save = "x"
    fn = staticmethod(lambda xp, x: xp.log(x))
    deriv = staticmethod(lambda xp, x: 1 / x)
    tensor_deriv = staticmethod(lambda x: x.reciprocal())


class Log2(_Unary):
    differentiable_backward = None
    save = "x"
    fn = staticmethod(lambda xp, x: xp.log2(x))
    deriv = staticmethod(lambda xp, x: 1 / (x * LN2))


class Log10(_Unary):
    differentiable_backward = None
    save = "x"
    fn = staticmethod(lambda xp, x: xp.log10(x))
    deriv = staticmethod(lambda xp, x: 1 / (x * LN10))


class Log1p(_Unary):
    differentiable_backward = None
    save = "x"
    fn = staticmethod(lambda xp, x: xp.log1p(x))
    deriv = staticmethod(lambda xp, x: 1 / (1 + x))


class Sqrt(_Unary):
    keep_inputs = True
    fn = staticmethod(lambda xp, x: xp.sqrt(x))
    deriv = staticmethod(lambda xp, out: 0.5 / out)
    tensor_deriv = staticmethod(lambda x: 0.5 / x.sqrt())


class Rsqrt(_Unary):
    differentiable_backward = None
    fn = staticmethod(lambda xp, x: 1 / xp.sqrt(x))
    deriv = staticmethod(lambda xp, out: -0.5 * out * out * out)


class Reciprocal(_Unary):
    differentiable_backward = None
    fn = staticmethod(lambda xp, x: 1 / x)
    deriv = staticmethod(lambda xp, out: -(out * out))


class Square(_Unary):
    keep_inputs = True
    save = "x"
    fn = staticmethod(lambda xp, x: x * x)
    deriv = staticmethod(lambda xp, x: 2 * x)
    tensor_deriv = staticmethod(lambda x: 2 * x)


class Sin(_Unary):
    keep_inputs = True
    save = "x"
    fn = staticmethod(lambda xp, x: xp.sin(x))
    deriv = staticmethod(lambda xp, x: xp.cos(x))
    tensor_deriv = staticmethod(lambda x: x.cos())


class Cos(_Unary):
    keep_inputs = True
    save = "x"
    fn = staticmethod(lambda xp, x: xp.cos(x))
    deriv = staticmethod(lambda xp, x: -xp.sin(x))
    tensor_deriv = staticmethod(lambda x: -x.sin())


class Tan(_Unary):
    differentiable_backward = None
    fn = staticmethod(lambda xp, x: xp.tan(x))
    deriv = staticmethod(lambda xp, out: 1 + out * out)


class Tanh(_Unary):
    keep_inputs = True
    fn = staticmethod(lambda xp, x: xp.tanh(x))
    deriv = staticmethod(lambda xp, out: 1 - out * out)
    tensor_deriv = staticmethod(lambda x: 1 - x.tanh().square())


class Sigmoid(_Unary):
    keep_inputs = True
    fn = staticmethod(_sigmoid_array)
    deriv = staticmethod(lambda xp, out: out * (1 - out))

    @staticmethod
    def tensor_deriv(x):
        s = x.sigmoid()
        return s * (1 - s)


class Asin(_Unary):
    differentiable_backward = None
    save = "x"
    fn = staticmethod(lambda xp, x: xp.arcsin(x))
    deriv = staticmethod(lambda xp, x: 1 / xp.sqrt(1 - x * x))


class Acos(_Unary):
    differentiable_backward = None
    save = "x"
    fn = staticmethod(lambda xp, x: xp.arccos(x))
    deriv = staticmethod(lambda xp, x: -1 / xp.sqrt(1 - x * x))


class Atan(_Unary):
    differentiable_backward = None
    save = "x"
    fn = staticmethod(lambda xp, x: xp.arctan(x))
    deriv = staticmethod(lambda xp, x: 1 / (1 + x * x))


class Frac(_Unary):
    differentiable_backward = None
    save = "x"
    fn = staticmethod(lambda xp, x: x - xp.trunc(x))
    deriv = staticmethod(lambda xp, x: 1)


class Abs(Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return ctx.xp.abs(x)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g * ctx.xp.sign(x)

    @staticmethod
    def differentiable_backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g * _const(ctx.xp.sign(x), g)  # the sign is locally constant


def _float_op(cls: type, name: str, doc: str) -> Any:
    def op(input: Any) -> Any:  # noqa: A002 - PyTorch's argument name
        return cls.apply(_float_input(input, name))

    op.__name__ = op.__qualname__ = name
    op.__doc__ = f"{doc} elementwise; integer and bool inputs give the default float dtype.\n\nExample: ``x.{name}()``."
    return op


exp = _float_op(Exp, "exp", "``e ** x``")
exp2 = _float_op(Exp2, "exp2", "``2 ** x``")
expm1 = _float_op(Expm1, "expm1", "``exp(x) - 1``, accurate near 0,")
log = _float_op(Log, "log", "Natural logarithm")
log2 = _float_op(Log2, "log2", "Base-2 logarithm")
log10 = _float_op(Log10, "log10", "Base-10 logarithm")
log1p = _float_op(Log1p, "log1p", "``log(1 + x)``, accurate near 0,")
sqrt = _float_op(Sqrt, "sqrt", "Square root")
rsqrt = _float_op(Rsqrt, "rsqrt", "``1 / sqrt(x)``")
reciprocal = _float_op(Reciprocal, "reciprocal", "``1 / x``")
sin = _float_op(Sin, "sin", "Sine")
cos = _float_op(Cos, "cos", "Cosine")
tan = _float_op(Tan, "tan", "Tangent")
tanh = _float_op(Tanh, "tanh", "Hyperbolic tangent")
sigmoid = _float_op(Sigmoid, "sigmoid", "The logistic function ``1 / (1 + exp(-x))``")
asin = _float_op(Asin, "asin", "Arcsine")
acos = _float_op(Acos, "acos", "Arccosine")
atan = _float_op(Atan, "atan", "Arctangent")


def square(input: Any) -> Any:  # noqa: A002
    """``x * x``; integer dtypes stay integer (bool gives int64), as in PyTorch."""
    _check_tensor(input, "square")
    if input._dtype.name == "bool":
        input = input.to("int64")
    return Square.apply(input)


def abs(input: Any) -> Any:  # noqa: A001,A002
    """Absolute value; keeps the dtype. Not defined for bool (as in PyTorch)."""
    _check_tensor(input, "abs")
    if input._dtype.name == "bool":
        raise DTypeError("abs: not implemented for bool tensors; use the tensor itself or .int().abs()")
    return Abs.apply(input)


def frac(input: Any) -> Any:  # noqa: A002
    """The fractional part ``x - trunc(x)``; floating tensors only."""
    _check_tensor(input, "frac")
    if not input._dtype.is_floating_point:
        raise DTypeError(f"frac: needs a floating point tensor, got {input._dtype}")
    return Frac.apply(input)


# -- piecewise constant: sign and rounding (zero gradient) --------------------------------------
class _Step(Function):
    """Ops whose derivative is zero almost everywhere; PyTorch returns zeros."""

    @staticmethod
    def forward(ctx, x, kind, decimals):
        xp = ctx.xp
        if kind == "sign":
            return xp.where(x != x, 0, xp.sign(x)).astype(x.dtype, copy=False)  # sign(nan) = 0, as in PyTorch
        if kind == "round":
            if decimals == 0:
                return xp.rint(x)
            with _quiet(xp):
                return xp.round(x, decimals)
        return getattr(xp, kind)(x)

    @staticmethod
    def backward(ctx, g):
        return ctx.xp.zeros_like(g), None, None

    @staticmethod
    def differentiable_backward(ctx, g):
        return _const(ctx.xp.zeros_like(g._data), g), None, None


def _step(x: Any, kind: str, decimals: int = 0) -> Any:
    _check_tensor(x, kind)
    dt = x._dtype
    if dt.name == "bool":
        if kind == "sign":
            return x.clone()
        raise DTypeError(f"{kind}: not implemented for bool tensors; convert with .int() or .float() first")
    if not dt.is_floating_point and kind != "sign":
        if decimals != 0:
            raise DTypeError(f"round: decimals={decimals} needs a floating point tensor, got {dt}")
        return x.clone()  # integers are already whole
    return _Step.apply(x, kind, decimals)


def sign(input: Any) -> Any:  # noqa: A002
    """-1, 0 or 1 by the sign of each element (0 for nan); keeps the dtype."""
    return _step(input, "sign")


def floor(input: Any) -> Any:  # noqa: A002
    """Round down; integer tensors are returned as a copy."""
    return _step(input, "floor")


def ceil(input: Any) -> Any:  # noqa: A002
    """Round up; integer tensors are returned as a copy."""
    return _step(input, "ceil")


def trunc(input: Any) -> Any:  # noqa: A002
    """Round toward zero; integer tensors are returned as a copy."""
    return _step(input, "trunc")


def round(input: Any, decimals: int = 0) -> Any:  # noqa: A001,A002
    """Round half to even (``round(2.5) == 2``), to ``decimals`` places."""
    return _step(input, "round", int(decimals))


# -- in-place variants ---------------------------------------------------------------------------
def _category(dt: Any) -> int:
    return 2 if dt.is_floating_point else 0 if dt.name == "bool" else 1


def _make_inplace(fn: Any, name: str) -> Any:
    def method(self: Any, *args: Any, **kwargs: Any) -> Any:
        _check_tensor(self, name)
        res = fn(self, *args, **kwargs)
        if _category(res._dtype) > _category(self._dtype):
            raise DTypeError(
                f"{name}: the result type {res._dtype} can't be cast to the in-place target's dtype "
                f"{self._dtype}; use the out-of-place {name[:-1]}() or convert the tensor first"
            )
        return self._inplace_result(res, name)

    method.__name__ = method.__qualname__ = name
    method.__doc__ = f"In-place version of ``{name[:-1]}``."
    return method


_INPLACE = {
    name + "_": _make_inplace(fn, name + "_")
    for name, fn in [
        ("exp", exp), ("exp2", exp2), ("expm1", expm1), ("log", log), ("log2", log2), ("log10", log10),
        ("log1p", log1p), ("sqrt", sqrt), ("rsqrt", rsqrt), ("reciprocal", reciprocal), ("square", square),
        ("abs", abs), ("sign", sign), ("sin", sin), ("cos", cos), ("tan", tan), ("tanh", tanh),
        ("sigmoid", sigmoid), ("floor", floor), ("ceil", ceil), ("trunc", trunc), ("round", round),
        ("frac", frac), ("clamp", clamp), ("clip", clamp), ("clamp_min", clamp_min), ("clamp_max", clamp_max),
        ("neg", neg), ("negative", neg), ("lerp", lerp), ("fmod", fmod), ("remainder", remainder),
        ("nan_to_num", nan_to_num),
    ]
}

METHODS = {
    "exp": exp, "exp2": exp2, "expm1": expm1, "log": log, "log2": log2, "log10": log10, "log1p": log1p,
    "sqrt": sqrt, "rsqrt": rsqrt, "reciprocal": reciprocal, "square": square, "abs": abs, "absolute": abs,
    "__abs__": abs, "sign": sign, "sgn": sign, "sin": sin, "cos": cos, "tan": tan, "tanh": tanh,
    "sigmoid": sigmoid, "asin": asin, "arcsin": asin, "acos": acos, "arccos": acos, "atan": atan,
    "arctan": atan, "floor": floor, "ceil": ceil, "round": round, "trunc": trunc, "fix": trunc,
    "frac": frac, "clamp": clamp, "clip": clamp, "clamp_min": clamp_min, "clamp_max": clamp_max,
    "where": _where_method, "maximum": maximum, "minimum": minimum, "fmod": fmod,
    "remainder": remainder, "__mod__": remainder, "__rmod__": _rmod, "lerp": lerp,
    "nan_to_num": nan_to_num, **_INPLACE, **logical.METHODS,
}

__all__ = [
    "exp", "exp2", "expm1", "log", "log2", "log10", "log1p", "sqrt", "rsqrt", "reciprocal", "square",
    "abs", "sign", "sin", "cos", "tan", "tanh", "sigmoid", "asin", "acos", "atan", "floor", "ceil",
    "round", "trunc", "frac", "clamp", "clip", "clamp_min", "clamp_max", "where", "maximum",
    "minimum", "fmod", "remainder", "lerp", "nan_to_num", *logical.__all__,
]
