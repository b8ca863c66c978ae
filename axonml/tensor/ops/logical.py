"""Comparisons, logical and bitwise ops, ``isnan``/``isinf``/``isfinite``, ``isclose``,
``allclose``, ``equal``: the elementwise ops whose results carry no gradient.

This module is part of :mod:`.pointwise` (split off to keep modules short): pointwise
re-exports its functions and merges its ``METHODS``.

Note on ``==``: comparison operators return bool tensors, as in PyTorch. Comparing with
something that is neither a tensor nor a number (``t == None``, ``t == "x"``) returns
``NotImplemented``, so Python answers False for ``==`` and True for ``!=`` instead of
raising. ``Tensor.__hash__`` stays identity-based (the operators are bound after the
class is created), so tensors still work as dict keys and set members.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ...autograd.function import Function
from ...autograd.variable import TensorBase
from ...errors import DTypeError
from .._helpers import SCALARS, broadcast_error, promote


class _quiet:
    """Silence NumPy's floating point warnings (results follow IEEE, as in PyTorch)."""

    __slots__ = ("cm",)

    def __init__(self, xp: Any) -> None:
        self.cm = xp.errstate(all="ignore") if hasattr(xp, "errstate") else None

    def __enter__(self) -> None:
        if self.cm is not None:
            self.cm.__enter__()

    def __exit__(self, *a: Any) -> None:
        if self.cm is not None:
            self.cm.__exit__(*a)


def _check_tensor(x: Any, op: str) -> None:
    if not isinstance(x, TensorBase):
        raise TypeError(f"{op}: expected a Tensor, got {type(x).__name__}")


class Binary(Function):
    """A non-differentiable elementwise ufunc of two operands (``xp.<name>``)."""

    @staticmethod
    def forward(ctx, a, b, name):
        try:
            return getattr(ctx.xp, name)(a, b)
        except ValueError:
            raise broadcast_error(name, getattr(a, "shape", ()), getattr(b, "shape", ())) from None

    @staticmethod
    def backward(ctx, g):  # outputs are bool/integer: never called by the engine
        return None, None, None


class Unary(Function):
    """A non-differentiable elementwise ufunc of one operand (``xp.<name>``)."""

    @staticmethod
    def forward(ctx, x, name):
        return getattr(ctx.xp, name)(x)

    @staticmethod
    def backward(ctx, g):
        return None, None


class NonzeroTuple(Function):
    """``where(condition)``: one int64 index tensor per dimension."""

    @staticmethod
    def forward(ctx, x):
        return tuple(i.astype("int64", copy=False) for i in ctx.xp.nonzero(x))

    @staticmethod
    def backward(ctx, *g):
        return None


# -- comparisons --------------------------------------------------------------------------
def _compare(a: Any, b: Any, name: str, ufunc: str) -> Any:
    _check_tensor(a, name)
    a, b = promote(a, b)  # compare in the promoted dtype: int_t < 1.5 compares as floats
    return Binary.apply(a, b, ufunc)


def eq(input: Any, other: Any) -> Any:  # noqa: A002 - PyTorch's argument name
    """Elementwise ``input == other`` as a bool tensor (broadcasting)."""
    return _compare(input, other, "eq", "equal")


def ne(input: Any, other: Any) -> Any:  # noqa: A002
    """Elementwise ``input != other`` as a bool tensor."""
    return _compare(input, other, "ne", "not_equal")


def lt(input: Any, other: Any) -> Any:  # noqa: A002
    """Elementwise ``input < other`` as a bool tensor."""
    return _compare(input, other, "lt", "less")


def le(input: Any, other: Any) -> Any:  # noqa: A002
    """Elementwise ``input <= other`` as a bool tensor."""
    return _compare(input, other, "le", "less_equal")


def gt(input: Any, other: Any) -> Any:  # noqa: A002
    """Elementwise ``input > other`` as a bool tensor."""
    return _compare(input, other, "gt", "greater")


def ge(input: Any, other: Any) -> Any:  # noqa: A002
    """Elementwise ``input >= other`` as a bool tensor."""
    return _compare(input, other, "ge", "greater_equal")


def _comparable(other: Any) -> bool:
    return isinstance(other, (TensorBase, *SCALARS, np.generic))


def _operator(fn: Any, name: str) -> Any:
    def op(self: Any, other: Any) -> Any:
        if not _comparable(other):
            return NotImplemented
        return fn(self, other)

    op.__name__ = op.__qualname__ = name
    op.__doc__ = f"``{name}``: see :func:`{fn.__name__}`."
    return op


# -- logical --------------------------------------------------------------------------------
def _logical(a: Any, b: Any, name: str) -> Any:
    _check_tensor(a, name)
    _check_tensor(b, name)
    return Binary.apply(a, b, name)


def logical_and(input: Any, other: Any) -> Any:  # noqa: A002
    """Elementwise truth-value AND of two tensors of any dtypes (bool result)."""
    return _logical(input, other, "logical_and")


def logical_or(input: Any, other: Any) -> Any:  # noqa: A002
    """Elementwise truth-value OR (bool result)."""
    return _logical(input, other, "logical_or")


def logical_xor(input: Any, other: Any) -> Any:  # noqa: A002
    """Elementwise truth-value XOR (bool result)."""
    return _logical(input, other, "logical_xor")


def logical_not(input: Any) -> Any:  # noqa: A002
    """Elementwise truth-value NOT (bool result)."""
    _check_tensor(input, "logical_not")
    return Unary.apply(input, "logical_not")


# -- bitwise ------------------------------------------------------------------------------------
def _bitwise(a: Any, b: Any, name: str) -> Any:
    _check_tensor(a, name)
    a, b = promote(a, b)
    if a._dtype.is_floating_point:
        raise DTypeError(
            f"{name}: only integer and bool tensors are supported, got {a._dtype}; "
            "for masks use logical_and/logical_or or compare first"
        )
    return Binary.apply(a, b, name)


def bitwise_and(input: Any, other: Any) -> Any:  # noqa: A002
    """Bitwise AND of integer/bool tensors (``a & b``); bool & bool stays bool."""
    return _bitwise(input, other, "bitwise_and")


def bitwise_or(input: Any, other: Any) -> Any:  # noqa: A002
    """Bitwise OR of integer/bool tensors (``a | b``)."""
    return _bitwise(input, other, "bitwise_or")


def bitwise_xor(input: Any, other: Any) -> Any:  # noqa: A002
    """Bitwise XOR of integer/bool tensors (``a ^ b``)."""
    return _bitwise(input, other, "bitwise_xor")


def bitwise_not(input: Any) -> Any:  # noqa: A002
    """Bitwise NOT (``~a``): logical NOT for bool tensors, two's complement for integers."""
    _check_tensor(input, "bitwise_not")
    if input._dtype.is_floating_point:
        raise DTypeError(f"bitwise_not (~): only integer and bool tensors are supported, got {input._dtype}")
    return Unary.apply(input, "invert")


# -- value tests ----------------------------------------------------------------------------------
class _Const(Function):
    """A bool tensor of ``value`` shaped like ``x``."""

    @staticmethod
    def forward(ctx, x, value):
        return ctx.xp.full(x.shape, value, dtype=bool)

    @staticmethod
    def backward(ctx, g):
        return None, None


def _test(x: Any, name: str) -> Any:
    _check_tensor(x, name)
    if not x._dtype.is_floating_point:
        return _Const.apply(x, name == "isfinite")  # integers are never nan or infinite
    return Unary.apply(x, name)


def isnan(input: Any) -> Any:  # noqa: A002
    """True where the element is nan."""
    return _test(input, "isnan")


def isinf(input: Any) -> Any:  # noqa: A002
    """True where the element is +inf or -inf."""
    return _test(input, "isinf")


def isfinite(input: Any) -> Any:  # noqa: A002
    """True where the element is neither nan nor infinite."""
    return _test(input, "isfinite")


class IsClose(Function):
    @staticmethod
    def forward(ctx, a, b, rtol, atol, equal_nan):
        xp = ctx.xp
        try:
            if a.dtype == bool:
                return xp.equal(a, b)
            return xp.isclose(a, b, rtol=rtol, atol=atol, equal_nan=equal_nan)
        except ValueError:
            raise broadcast_error("isclose", a.shape, b.shape) from None

    @staticmethod
    def backward(ctx, g):
        return (None,) * 5


def isclose(input: Any, other: Any, rtol: float = 1e-05, atol: float = 1e-08, equal_nan: bool = False) -> Any:  # noqa: A002
    """Elementwise ``|input - other| <= atol + rtol * |other|`` (infinities equal only
    to themselves; nans equal only with ``equal_nan``). Returns a bool tensor."""
    _check_tensor(input, "isclose")
    _check_tensor(other, "isclose")
    a, b = promote(input, other)
    return IsClose.apply(a, b, rtol, atol, equal_nan)


def allclose(input: Any, other: Any, rtol: float = 1e-05, atol: float = 1e-08, equal_nan: bool = False) -> bool:  # noqa: A002
    """True if :func:`isclose` holds everywhere (with broadcasting). Returns a Python bool.

    Example: ``ax.allclose(a, b, atol=1e-6)``.
    """
    c = isclose(input, other, rtol, atol, equal_nan)
    return bool(c._device.xp.all(c._data))


def equal(input: Any, other: Any) -> bool:  # noqa: A002
    """True if both tensors have the same shape and equal elements (nan is never equal).
    Returns a Python bool."""
    _check_tensor(input, "equal")
    _check_tensor(other, "equal")
    if tuple(input.shape) != tuple(other.shape):
        return False
    return bool(input._device.xp.all(eq(input, other)._data))


METHODS = {
    "eq": eq, "ne": ne, "lt": lt, "le": le, "gt": gt, "ge": ge,
    "not_equal": ne, "less": lt, "less_equal": le, "greater": gt, "greater_equal": ge,
    "__eq__": _operator(eq, "__eq__"), "__ne__": _operator(ne, "__ne__"),
    "__lt__": _operator(lt, "__lt__"), "__le__": _operator(le, "__le__"),
    "__gt__": _operator(gt, "__gt__"), "__ge__": _operator(ge, "__ge__"),
    "logical_and": logical_and, "logical_or": logical_or, "logical_xor": logical_xor, "logical_not": logical_not,
    "bitwise_and": bitwise_and, "bitwise_or": bitwise_or, "bitwise_xor": bitwise_xor, "bitwise_not": bitwise_not,
    "__and__": _operator(bitwise_and, "__and__"),
    "__or__": _operator(bitwise_or, "__or__"),
    "__xor__": _operator(bitwise_xor, "__xor__"),
    "__rand__": _operator(bitwise_and, "__rand__"),
    "__ror__": _operator(bitwise_or, "__ror__"),
    "__rxor__": _operator(bitwise_xor, "__rxor__"),
    "__invert__": bitwise_not,
    "isnan": isnan, "isinf": isinf, "isfinite": isfinite, "isclose": isclose, "allclose": allclose, "equal": equal,
}

__all__ = [
    "eq", "ne", "lt", "le", "gt", "ge", "logical_and", "logical_or", "logical_xor", "logical_not",
    "bitwise_and", "bitwise_or", "bitwise_xor", "bitwise_not", "isnan", "isinf", "isfinite",
    "isclose", "allclose", "equal",
]
