"""Core ops: arithmetic with broadcasting, and the in-place arithmetic family
(matmul, sum/mean and the basic views are in :mod:`.basic`).

Note on the pattern every op module follows: one ``Function`` subclass per op with
``forward``/``backward`` on raw arrays (``ctx.xp`` is NumPy or CuPy), a public function
that validates and promotes its operands, and a ``METHODS`` table binding Tensor methods
and operators (see ``axonml/tensor/methods.py``). Ops that support second order define
``differentiable_backward`` with Tensor ops.
"""

from __future__ import annotations

from typing import Any

from ...autograd.function import Function
from ...autograd.grad_mode import state as _grad_state
from ...autograd.variable import TensorBase
from ...errors import ShapeError
from ...runtime.dtypes import get_default_dtype
from .._helpers import broadcast_error, promote, promote_scalar_first, sum_to_shape
from .basic import expand, permute, reshape, transpose, view  # noqa: F401  (siblings import these from core)


def _shape_of(x: Any) -> tuple | None:
    return x.shape if hasattr(x, "shape") else None


def _reduce_t(g: Any, shape: tuple | None) -> Any:
    """Tensor-level sum_to_shape for differentiable backwards."""
    if shape is None:
        return None
    return g.sum_to_size(shape) if tuple(g.shape) != tuple(shape) else g


# -- arithmetic ------------------------------------------------------------------------
class Add(Function):
    @staticmethod
    def forward(ctx, a, b):
        ctx.sa = a.shape  # add() always puts the tensor first
        ctx.sb = getattr(b, "shape", None)
        try:
            return a + b
        except ValueError:
            raise broadcast_error("add", ctx.sa, ctx.sb) from None

    @staticmethod
    def backward(ctx, g):
        xp = ctx.xp
        return sum_to_shape(xp, g, ctx.sa), (None if ctx.sb is None else sum_to_shape(xp, g, ctx.sb))

    @staticmethod
    def differentiable_backward(ctx, g):
        return _reduce_t(g, ctx.sa), _reduce_t(g, ctx.sb)


class Sub(Function):
    @staticmethod
    def forward(ctx, a, b):
        ctx.sa, ctx.sb = _shape_of(a), _shape_of(b)
        try:
            return a - b
        except ValueError:
            raise broadcast_error("sub", ctx.sa, ctx.sb) from None

    @staticmethod
    def backward(ctx, g):
        xp = ctx.xp
        return (
            None if ctx.sa is None else sum_to_shape(xp, g, ctx.sa),
            None if ctx.sb is None else sum_to_shape(xp, -g, ctx.sb),
        )

    @staticmethod
    def differentiable_backward(ctx, g):
        return _reduce_t(g, ctx.sa), _reduce_t(-g, ctx.sb)


class Mul(Function):
    keep_inputs = True

    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        try:
            return a * b
        except ValueError:
            raise broadcast_error("mul", _shape_of(a), _shape_of(b)) from None

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.saved_tensors
        xp = ctx.xp
        need = ctx.needs_input_grad
        ga = sum_to_shape(xp, g * b, a.shape) if need[0] else None
        gb = sum_to_shape(xp, g * a, b.shape) if need[1] else None
        return ga, gb

    @staticmethod
    def differentiable_backward(ctx, g):
        a, b = ctx.inputs
        ga = _reduce_t(g * b, a.shape) if ctx.needs_input_grad[0] else None
        gb = _reduce_t(g * a, b.shape) if ctx.needs_input_grad[1] else None
        return ga, gb


class Div(Function):
    keep_inputs = True

    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        try:
            return a / b
        except ValueError:
            raise broadcast_error("div", _shape_of(a), _shape_of(b)) from None

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.saved_tensors
        xp = ctx.xp
        need = ctx.needs_input_grad
        ga = sum_to_shape(xp, g / b, a.shape) if need[0] else None
        gb = sum_to_shape(xp, -g * a / (b * b), b.shape) if need[1] else None
        return ga, gb

    @staticmethod
    def differentiable_backward(ctx, g):
        a, b = ctx.inputs
        ga = _reduce_t(g / b, a.shape) if ctx.needs_input_grad[0] else None
        gb = _reduce_t(-g * a / (b * b), b.shape) if ctx.needs_input_grad[1] else None
        return ga, gb


class Neg(Function):
    @staticmethod
    def forward(ctx, a):
        return -a

    @staticmethod
    def backward(ctx, g):
        return -g

    @staticmethod
    def differentiable_backward(ctx, g):
        return -g


class Pow(Function):
    keep_inputs = True

    @staticmethod
    def forward(ctx, a, b):
        out = a**b
        ctx.save_for_backward(a, b, out)
        return out

    @staticmethod
    def backward(ctx, g):
        a, b, out = ctx.saved_tensors
        xp = ctx.xp
        need = ctx.needs_input_grad
        ga = gb = None
        if need[0]:
            if isinstance(b, (int, float)) and b == 0:
                ga = xp.zeros_like(a)
            else:
                ga = sum_to_shape(xp, g * b * a ** (b - 1), a.shape)
        if need[1]:
            with _errstate(xp):
                lg = xp.where(a > 0, xp.log(xp.where(a > 0, a, 1)), 0 if not hasattr(a, "shape") else xp.nan * (a != 0))
            gb = sum_to_shape(xp, g * out * lg, b.shape)
        return ga, gb

    @staticmethod
    def differentiable_backward(ctx, g):
        a, b = ctx.inputs
        need = ctx.needs_input_grad
        ga = gb = None
        if need[0]:
            ga = _reduce_t(g * b * a ** (b - 1), a.shape)
        if need[1]:
            gb = _reduce_t(g * (a**b) * a.log(), b.shape)
        return ga, gb


class _errstate:
    def __init__(self, xp: Any) -> None:
        self.cm = xp.errstate(divide="ignore", invalid="ignore") if hasattr(xp, "errstate") else None

    def __enter__(self) -> None:
        if self.cm is not None:
            self.cm.__enter__()

    def __exit__(self, *a: Any) -> None:
        if self.cm is not None:
            self.cm.__exit__(*a)


def add(a: Any, b: Any, alpha: Any = 1) -> Any:
    """``a + alpha * b`` with broadcasting and PyTorch type promotion."""
    if alpha != 1:
        b = mul(b, alpha)
    if not isinstance(a, TensorBase):
        a, b = promote_scalar_first(a, b)
        return Add.apply(b, a)
    a, b = promote(a, b)
    return Add.apply(a, b)


def sub(a: Any, b: Any, alpha: Any = 1) -> Any:
    """``a - alpha * b``."""
    if alpha != 1:
        b = mul(b, alpha)
    if not isinstance(a, TensorBase):
        a, b = promote_scalar_first(a, b)
    else:
        a, b = promote(a, b)
    return Sub.apply(a, b)


def mul(a: Any, b: Any) -> Any:
    if not isinstance(a, TensorBase):
        a, b = promote_scalar_first(a, b)
        return Mul.apply(b, a)
    a, b = promote(a, b)
    return Mul.apply(a, b)


def div(a: Any, b: Any, rounding_mode: str | None = None) -> Any:
    """True division (integers give the default float dtype), or ``rounding_mode`` in
    ('trunc', 'floor') for integer-style division (not differentiable)."""
    if not isinstance(a, TensorBase):
        a, b = promote_scalar_first(a, b)
    else:
        a, b = promote(a, b)
    if rounding_mode is not None:
        if rounding_mode not in ("trunc", "floor"):
            raise ValueError(f"rounding_mode must be None, 'trunc' or 'floor', got {rounding_mode!r}")
        return _RoundDiv.apply(a, b, rounding_mode)
    t = a if isinstance(a, TensorBase) else b
    if not t._dtype.is_floating_point:
        fd = get_default_dtype()
        a = a.to(fd) if isinstance(a, TensorBase) else a
        b = b.to(fd) if isinstance(b, TensorBase) else b
    return Div.apply(a, b)


class _RoundDiv(Function):
    """Division rounded toward zero or down; its gradient is zero almost everywhere."""

    @staticmethod
    def forward(ctx, a, b, mode):
        xp = ctx.xp
        ctx.sa, ctx.sb = _shape_of(a), _shape_of(b)
        q = a / b
        out = xp.floor(q) if mode == "floor" else xp.trunc(q)
        dt = getattr(a, "dtype", None) or b.dtype
        return out.astype(dt) if dt.kind in "iub" else out

    @staticmethod
    def backward(ctx, g):
        xp = ctx.xp
        z = xp.zeros_like(g)
        return (
            (None if ctx.sa is None else sum_to_shape(xp, z, ctx.sa)),
            (None if ctx.sb is None else sum_to_shape(xp, z, ctx.sb)),
            None,
        )


def floor_divide(a: Any, b: Any) -> Any:
    """``a // b`` (rounded down)."""
    return div(a, b, rounding_mode="floor")


def _rfloordiv(a: Any, b: Any) -> Any:
    return floor_divide(b, a)


def neg(a: Any) -> Any:
    return Neg.apply(a)


def pow(a: Any, b: Any) -> Any:  # noqa: A001 - PyTorch's name
    """``a ** b`` elementwise."""
    if not isinstance(a, TensorBase):
        a, b = promote_scalar_first(a, b)
    else:
        a, b = promote(a, b)
    return Pow.apply(a, b)


# Operator entry points: the common case (two tensors of one dtype) goes straight to the
# Function; everything else takes the general path with promotion.
def _op_add(a: Any, b: Any) -> Any:
    if isinstance(b, TensorBase) and b._dtype is a._dtype:
        return Add.apply(a, b)
    return add(a, b)


def _op_sub(a: Any, b: Any) -> Any:
    if isinstance(b, TensorBase) and b._dtype is a._dtype:
        return Sub.apply(a, b)
    return sub(a, b)


def _op_mul(a: Any, b: Any) -> Any:
    if isinstance(b, TensorBase) and b._dtype is a._dtype:
        return Mul.apply(a, b)
    return mul(a, b)


def _rsub(a: Any, b: Any) -> Any:
    return sub(b, a)


def _rdiv(a: Any, b: Any) -> Any:
    return div(b, a)


def _rpow(a: Any, b: Any) -> Any:
    return pow(b, a)


# -- in-place arithmetic -------------------------------------------------------------------
def _inplace(op: Any, name: str) -> Any:
    def method(self: Any, other: Any, *args: Any, **kwargs: Any) -> Any:
        if not isinstance(self, TensorBase):
            raise TypeError(f"{name} needs a Tensor target")
        if not (self._rg and _grad_enabled()) and not (isinstance(other, TensorBase) and other._rg and _grad_enabled()):
            fast = _fast_inplace(self, other, name, args, kwargs)
            if fast is not None:
                return fast
        return self._inplace_result(op(self, other, *args, **kwargs), name)

    method.__name__ = name
    method.__doc__ = f"In-place version of ``{name[:-1]}``."
    return method


def _grad_enabled() -> bool:
    return _grad_state.enabled


def _fast_inplace(self: Any, other: Any, name: str, args: tuple, kwargs: dict) -> Any:
    """Without autograd, write straight into the storage with the ufunc's ``out=``."""
    xp = self._device.xp
    ufunc = {"add_": xp.add, "sub_": xp.subtract, "mul_": xp.multiply, "div_": xp.true_divide}.get(name)
    if ufunc is None or kwargs or (args and name not in ("add_", "sub_")):
        return None
    if not self._dtype.is_floating_point and name == "div_":
        return None
    o = other._data if isinstance(other, TensorBase) else other
    if args:
        o = o * args[0]
    if isinstance(other, TensorBase) and other._device is not self._device:
        return None
    try:
        ufunc(self._data, o, out=self._data, casting="same_kind")
    except ValueError:
        raise ShapeError(
            f"{name}: operand of shape {tuple(getattr(o, 'shape', ()))} cannot be broadcast to the "
            f"in-place target's shape {tuple(self.shape)}"
        ) from None
    except TypeError:
        return None  # e.g. float into int: fall back to the checked path
    self._vc[0] += 1
    return self


add_ = _inplace(add, "add_")
sub_ = _inplace(sub, "sub_")
mul_ = _inplace(mul, "mul_")
div_ = _inplace(div, "div_")
pow_ = _inplace(pow, "pow_")


def zero_(x: Any) -> Any:
    x._check_inplace("zero_")
    x._data[...] = 0
    x._vc[0] += 1
    return x


def fill_(x: Any, value: Any) -> Any:
    x._check_inplace("fill_")
    x._data[...] = value.item() if isinstance(value, TensorBase) else value
    x._vc[0] += 1
    return x


def copy_(x: Any, src: Any) -> Any:
    """Copy ``src`` (broadcast to ``x``'s shape, cast to its dtype/device) into ``x``."""
    if not isinstance(src, TensorBase):
        raise TypeError(f"copy_ expects a Tensor source, got {type(src).__name__}")
    if src._rg and _grad_enabled() or (x._rg and _grad_enabled()):
        return x._inplace_result(expand(src.to(x._device, x._dtype), *x.shape), "copy_")
    data = src._data if src._device is x._device else x._device.from_host(src._device.to_host(src._data))
    try:
        x._data[...] = data
    except ValueError:
        raise ShapeError(f"copy_: source of shape {tuple(src.shape)} cannot be broadcast to {tuple(x.shape)}") from None
    x._vc[0] += 1
    return x


METHODS = {
    "__add__": _op_add,
    "__radd__": add,
    "__sub__": _op_sub,
    "__rsub__": _rsub,
    "__mul__": _op_mul,
    "__rmul__": mul,
    "__truediv__": div,
    "__rtruediv__": _rdiv,
    "__neg__": neg,
    "__floordiv__": floor_divide,
    "__rfloordiv__": _rfloordiv,
    "floor_divide": floor_divide,
    "__pow__": pow,
    "__rpow__": _rpow,
    "__iadd__": add_,
    "__isub__": sub_,
    "__imul__": mul_,
    "__itruediv__": div_,
    "add": add,
    "sub": sub,
    "subtract": sub,
    "mul": mul,
    "multiply": mul,
    "div": div,
    "divide": div,
    "true_divide": div,
    "neg": neg,
    "negative": neg,
    "pow": pow,
    "add_": add_,
    "sub_": sub_,
    "mul_": mul_,
    "div_": div_,
    "pow_": pow_,
    "zero_": zero_,
    "fill_": fill_,
    "copy_": copy_,
}

__all__ = ["add", "sub", "mul", "div", "neg", "pow", "floor_divide"]
