"""Elementwise activations: the ReLU family, GELU (exact and tanh), SiLU, Mish, softplus...

Softmax-like ops, GLU, PReLU and the dropout family live in :mod:`.activation_dim` (split
for length); this module re-exports them, so ``activation.__all__``/``METHODS`` cover both.

Note on the factory: most activations are ``y = f(x; params)`` with ``dx = g * f'(x)``.
:func:`_elementwise` builds one ``Function`` subclass per activation (so ``grad_fn`` names
the op, e.g. ``<Gelu>``) from a forward and a backward written on raw arrays with ``xp``.
Each saves only what its backward needs: the input, or the output where the derivative is
cheaper from it (ReLU).

Note on precision: float16/bfloat16 inputs are computed in float32 and rounded once at
the end, as PyTorch's kernels do; NumPy math in half types would round at every step.

Note on erf: NumPy has no erf, and exact GELU needs one. :func:`erf_array` evaluates a
table of Taylor expansions of erf around centres ``k * h`` (coefficients from the ODE
``f' = -2x f`` of ``exp(-x^2)``, computed once at import in float64, see
:func:`axonml.runtime.devices.cpu_kernels.erf_taylor_table`). It is accurate to about 1 ulp
in float64 (so the analytic GELU derivative agrees with finite differences) and to about
6e-8 in float32, with a lower degree.

Note on speed: GELU and SiLU on C-contiguous float32/float64 CPU arrays run compiled numba
kernels (:mod:`axonml.runtime.devices.cpu_kernels`, about 10x faster than the NumPy code
for exact GELU); every other case, and ``AXONML_NUMBA=0``, runs the NumPy code here, which
stays the reference.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np

from ...autograd.function import Function
from ...autograd.variable import TensorBase
from ...errors import DTypeError
from ...runtime.devices import cpu_kernels
from ...runtime.devices.cpu_kernels import erf_taylor_table
from .._helpers import wrap
from .activation_dim import METHODS as _DIM_METHODS
from .activation_dim import __all__ as _DIM_ALL
from .activation_dim import (  # noqa: F401  (re-exported)
    alpha_dropout,
    dropout,
    dropout1d,
    dropout2d,
    dropout3d,
    dropout_,
    feature_alpha_dropout,
    glu,
    log_softmax,
    prelu,
    rrelu,
    rrelu_,
    sigmoid_array,
    softmax,
    softmin,
    softplus_array,
    up,
)


# -- shared helpers -------------------------------------------------------------------------
def erf_array(xp: Any, x: Any) -> Any:
    """The error function of a float32/float64 array (see the module note)."""
    h, x_max, coef = erf_taylor_table(x.dtype)
    dt = x.dtype
    coef = xp.asarray(coef, dtype=dt)
    a = xp.fmin(xp.abs(x), dt.type(x_max + h))  # NaN -> x_max + h; sign() restores it below
    k = (a * dt.type(1.0 / h) + dt.type(0.5)).astype(np.int32)  # nearest centre k*h
    t = k.astype(dt)
    t *= dt.type(-h)
    t += a  # a - k*h, in [-h/2, h/2]
    r = xp.take(coef[-1], k)
    for j in range(coef.shape[0] - 2, -1, -1):  # Horner, in place
        r *= t
        r += xp.take(coef[j], k)
    r *= xp.sign(x)
    return r


def _float_only(x: Any, op: str) -> None:
    if not isinstance(x, TensorBase):
        raise TypeError(f"{op}: expected a Tensor input, got {type(x).__name__}")
    if not x._dtype.is_floating_point:
        raise DTypeError(f"{op}: expected a floating point input, got {x._dtype}; convert with .float() first")


def _tensor_only(x: Any, op: str) -> None:
    if not isinstance(x, TensorBase):
        raise TypeError(f"{op}: expected a Tensor input, got {type(x).__name__}")


def _inplace_or(x: Any, out: Any, inplace: bool, name: str) -> Any:
    return x._inplace_result(out, name + "_") if inplace else out


# -- the factory -------------------------------------------------------------------------------
def _elementwise(
    name: str,
    fwd: Callable,
    bwd: Callable,
    save: str = "x",
    linear_pieces: bool = False,
    fast: tuple[Callable, Callable] | None = None,
) -> type:
    """A Function subclass ``name`` computing ``fwd(xp, x, *params)``; its backward is
    ``bwd(xp, s, g, *params)`` where ``s`` is the saved input (``save='x'``) or output
    (``save='y'``). ``linear_pieces``: the derivative is piecewise constant, so the op
    also supports second order (``g * f'(x)`` with ``f'`` a constant). ``fast``: compiled
    CPU versions of both, same arguments, returning None where they do not apply."""
    fast_fwd, fast_bwd = fast if fast is not None else (None, None)

    def forward(ctx, x, *params):
        ctx.params = params
        y = None if fast_fwd is None else fast_fwd(ctx.xp, x, *params)
        if y is None:
            y = fwd(ctx.xp, up(x), *params)
            if y.dtype != x.dtype:
                y = y.astype(x.dtype)
        ctx.save_for_backward(x if save == "x" else y)
        return y

    def backward(ctx, g):
        (s,) = ctx.saved_tensors
        gx = None if fast_bwd is None else fast_bwd(ctx.xp, s, g, *ctx.params)
        if gx is None:
            gx = bwd(ctx.xp, up(s), up(g), *ctx.params)
        return (gx.astype(g.dtype, copy=False), *([None] * len(ctx.params)))

    ns: dict = {"forward": staticmethod(forward), "backward": staticmethod(backward), "__doc__": f"Elementwise {name}."}
    if linear_pieces:

        def differentiable_backward(ctx, g):
            (s,) = ctx.saved_tensors
            slope = bwd(ctx.xp, up(s), ctx.xp.ones(s.shape, dtype=up(s).dtype), *ctx.params)
            return (g * wrap(slope.astype(s.dtype, copy=False), g), *([None] * len(ctx.params)))

        ns["differentiable_backward"] = staticmethod(differentiable_backward)
    return type(name, (Function,), ns)


Relu = _elementwise("Relu", lambda xp, x: xp.maximum(x, 0), lambda xp, y, g: g * (y > 0), save="y", linear_pieces=True)
Hardtanh = _elementwise(
    "Hardtanh", lambda xp, x, lo, hi: xp.clip(x, lo, hi), lambda xp, x, g, lo, hi: g * ((x > lo) & (x < hi)), linear_pieces=True
)
LeakyRelu = _elementwise(
    "LeakyRelu",
    lambda xp, x, slope: xp.where(x > 0, x, x * slope),
    lambda xp, x, g, slope: xp.where(x > 0, g, g * slope),
    linear_pieces=True,
)
Threshold = _elementwise(
    "Threshold", lambda xp, x, th, v: xp.where(x > th, x, v), lambda xp, x, g, th, v: g * (x > th), linear_pieces=True
)
Hardshrink = _elementwise(
    "Hardshrink",
    lambda xp, x, lam: xp.where((x > lam) | (x < -lam), x, 0),
    lambda xp, x, g, lam: g * ((x > lam) | (x < -lam)),
    linear_pieces=True,
)
Softshrink = _elementwise(
    "Softshrink",
    lambda xp, x, lam: xp.where(x > lam, x - lam, xp.where(x < -lam, x + lam, 0)),
    lambda xp, x, g, lam: g * ((x > lam) | (x < -lam)),
    linear_pieces=True,
)
Hardsigmoid = _elementwise(
    "Hardsigmoid",
    lambda xp, x: xp.clip(x + 3, 0, 6) / 6,
    lambda xp, x, g: xp.where((x > -3) & (x < 3), g / 6, 0),
    linear_pieces=True,
)
Hardswish = _elementwise(
    "Hardswish",
    lambda xp, x: x * xp.clip(x + 3, 0, 6) / 6,
    lambda xp, x, g: xp.where(x < -3, 0, xp.where(x <= 3, g * (x / 3 + 0.5), g)),
)


def _elu_f(xp: Any, x: Any, alpha: float, scale: float, in_scale: float) -> Any:
    return xp.where(x > 0, x * scale, (alpha * scale) * xp.expm1(xp.minimum(x, 0) * in_scale))


def _elu_b(xp: Any, x: Any, g: Any, alpha: float, scale: float, in_scale: float) -> Any:
    return xp.where(x > 0, g * scale, g * (alpha * scale * in_scale) * xp.exp(xp.minimum(x, 0) * in_scale))


Elu = _elementwise("Elu", _elu_f, _elu_b)

_SQRT1_2 = 1.0 / math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
_TANH_K = math.sqrt(2.0 / math.pi)


def _gelu_f(xp: Any, x: Any, approximate: str) -> Any:
    if approximate == "tanh":
        return 0.5 * x * (1.0 + xp.tanh(_TANH_K * (x + 0.044715 * x * x * x)))
    return 0.5 * x * (1.0 + erf_array(xp, x * _SQRT1_2))


def _gelu_b(xp: Any, x: Any, g: Any, approximate: str) -> Any:
    if approximate == "tanh":
        t = xp.tanh(_TANH_K * (x + 0.044715 * x * x * x))
        return g * (0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * _TANH_K * (1.0 + 3 * 0.044715 * x * x))
    cdf = 0.5 * (1.0 + erf_array(xp, x * _SQRT1_2))
    return g * (cdf + x * (_INV_SQRT_2PI * xp.exp(-0.5 * x * x)))


Gelu = _elementwise("Gelu", _gelu_f, _gelu_b, fast=(cpu_kernels.gelu, cpu_kernels.gelu_backward))


def _silu_b(xp: Any, x: Any, g: Any) -> Any:
    s = sigmoid_array(xp, x)
    return g * s * (1.0 + x * (1.0 - s))


Silu = _elementwise("Silu", lambda xp, x: x * sigmoid_array(xp, x), _silu_b, fast=(cpu_kernels.silu, cpu_kernels.silu_backward))


def _mish_b(xp: Any, x: Any, g: Any) -> Any:
    t = xp.tanh(softplus_array(xp, x))
    return g * (t + x * (1.0 - t * t) * sigmoid_array(xp, x))


Mish = _elementwise("Mish", lambda xp, x: x * xp.tanh(softplus_array(xp, x)), _mish_b)
Softplus = _elementwise(
    "Softplus",
    lambda xp, x, beta, th: xp.where(x * beta > th, x, softplus_array(xp, x * beta) / beta),
    lambda xp, x, g, beta, th: xp.where(x * beta > th, g, g * sigmoid_array(xp, x * beta)),
)
Softsign = _elementwise("Softsign", lambda xp, x: x / (1.0 + xp.abs(x)), lambda xp, x, g: g / (1.0 + xp.abs(x)) ** 2)
LogSigmoid = _elementwise(
    "LogSigmoid",
    lambda xp, x: xp.minimum(x, 0) - xp.log1p(xp.exp(-xp.abs(x))),
    lambda xp, x, g: g * sigmoid_array(xp, -x),
)
Tanhshrink = _elementwise("Tanhshrink", lambda xp, x: x - xp.tanh(x), lambda xp, x, g: g * xp.tanh(x) ** 2)


# -- public functions -----------------------------------------------------------------------
def relu(input: Any, inplace: bool = False) -> Any:
    """``max(x, 0)`` elementwise (integer tensors too).

    Example: ``ax.relu(ax.tensor([-1.0, 2.0]))`` -> ``tensor([0., 2.])``
    """
    _tensor_only(input, "relu")
    return _inplace_or(input, Relu.apply(input), inplace, "relu")


def relu_(input: Any) -> Any:
    """In-place :func:`relu`."""
    return relu(input, inplace=True)


def hardtanh(input: Any, min_val: float = -1.0, max_val: float = 1.0, inplace: bool = False) -> Any:
    """Clamp to ``[min_val, max_val]``; the gradient is 1 strictly inside, else 0."""
    _tensor_only(input, "hardtanh")
    if min_val > max_val:
        raise ValueError(f"hardtanh: min_val ({min_val}) cannot be greater than max_val ({max_val})")
    return _inplace_or(input, Hardtanh.apply(input, min_val, max_val), inplace, "hardtanh")


def hardtanh_(input: Any, min_val: float = -1.0, max_val: float = 1.0) -> Any:
    """In-place :func:`hardtanh`."""
    return hardtanh(input, min_val, max_val, inplace=True)


def relu6(input: Any, inplace: bool = False) -> Any:
    """``min(max(x, 0), 6)``."""
    return hardtanh(input, 0.0, 6.0, inplace)


def leaky_relu(input: Any, negative_slope: float = 0.01, inplace: bool = False) -> Any:
    """``x`` for ``x > 0``, else ``negative_slope * x``."""
    _float_only(input, "leaky_relu")
    return _inplace_or(input, LeakyRelu.apply(input, negative_slope), inplace, "leaky_relu")


def leaky_relu_(input: Any, negative_slope: float = 0.01) -> Any:
    """In-place :func:`leaky_relu`."""
    return leaky_relu(input, negative_slope, inplace=True)


def threshold(input: Any, threshold: float, value: float, inplace: bool = False) -> Any:
    """``x`` where ``x > threshold``, else ``value``."""
    _tensor_only(input, "threshold")
    return _inplace_or(input, Threshold.apply(input, threshold, value), inplace, "threshold")


_threshold = threshold  # the in-place variant's argument shadows the name


def threshold_(input: Any, threshold: float, value: float) -> Any:
    """In-place :func:`threshold`."""
    return _threshold(input, threshold, value, inplace=True)


def hardshrink(input: Any, lambd: float = 0.5) -> Any:
    """``x`` where ``|x| > lambd``, else 0."""
    _float_only(input, "hardshrink")
    return Hardshrink.apply(input, lambd)


def softshrink(input: Any, lambd: float = 0.5) -> Any:
    """``x - lambd`` above ``lambd``, ``x + lambd`` below ``-lambd``, else 0."""
    _float_only(input, "softshrink")
    if lambd < 0:
        raise ValueError(f"softshrink: lambd must be >= 0, but got {lambd}")
    return Softshrink.apply(input, lambd)


def hardsigmoid(input: Any, inplace: bool = False) -> Any:
    """``relu6(x + 3) / 6``."""
    _float_only(input, "hardsigmoid")
    return _inplace_or(input, Hardsigmoid.apply(input), inplace, "hardsigmoid")


def hardswish(input: Any, inplace: bool = False) -> Any:
    """``x * relu6(x + 3) / 6`` (MobileNetV3)."""
    _float_only(input, "hardswish")
    return _inplace_or(input, Hardswish.apply(input), inplace, "hardswish")


def elu(input: Any, alpha: float = 1.0, inplace: bool = False) -> Any:
    """``x`` for ``x > 0``, else ``alpha * (exp(x) - 1)``."""
    _float_only(input, "elu")
    return _inplace_or(input, Elu.apply(input, alpha, 1.0, 1.0), inplace, "elu")


def elu_(input: Any, alpha: float = 1.0) -> Any:
    """In-place :func:`elu`."""
    return elu(input, alpha, inplace=True)


_SELU_ALPHA = 1.6732632423543772848170429916717
_SELU_SCALE = 1.0507009873554804934193349852946


def selu(input: Any, inplace: bool = False) -> Any:
    """``scale * elu(x, alpha)`` with the self-normalising constants."""
    _float_only(input, "selu")
    return _inplace_or(input, Elu.apply(input, _SELU_ALPHA, _SELU_SCALE, 1.0), inplace, "selu")


def selu_(input: Any) -> Any:
    """In-place :func:`selu`."""
    return selu(input, inplace=True)


def celu(input: Any, alpha: float = 1.0, inplace: bool = False) -> Any:
    """``max(0, x) + min(0, alpha * (exp(x / alpha) - 1))``."""
    _float_only(input, "celu")
    if alpha == 0:
        raise ValueError("celu: alpha must not be 0 (it divides the input)")
    return _inplace_or(input, Elu.apply(input, alpha, 1.0, 1.0 / alpha), inplace, "celu")


def celu_(input: Any, alpha: float = 1.0) -> Any:
    """In-place :func:`celu`."""
    return celu(input, alpha, inplace=True)


def gelu(input: Any, approximate: str = "none") -> Any:
    """Gaussian error linear unit ``x * Phi(x)``; ``approximate='tanh'`` uses
    ``0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))``.

    Example: ``ax.gelu(x, approximate="tanh")`` (GPT-2's activation)
    """
    _float_only(input, "gelu")
    if approximate not in ("none", "tanh"):
        raise ValueError(f"gelu: approximate argument must be either 'none' or 'tanh', got {approximate!r}")
    return Gelu.apply(input, approximate)


def silu(input: Any, inplace: bool = False) -> Any:
    """``x * sigmoid(x)`` (swish)."""
    _float_only(input, "silu")
    return _inplace_or(input, Silu.apply(input), inplace, "silu")


def mish(input: Any, inplace: bool = False) -> Any:
    """``x * tanh(softplus(x))``."""
    _float_only(input, "mish")
    return _inplace_or(input, Mish.apply(input), inplace, "mish")


def softplus(input: Any, beta: float = 1.0, threshold: float = 20.0) -> Any:
    """``log(1 + exp(beta * x)) / beta``, and ``x`` where ``beta * x > threshold``."""
    _float_only(input, "softplus")
    if beta == 0:
        raise ValueError("softplus: beta must not be 0")
    return Softplus.apply(input, beta, threshold)


def softsign(input: Any) -> Any:
    """``x / (1 + |x|)``."""
    _float_only(input, "softsign")
    return Softsign.apply(input)


def logsigmoid(input: Any) -> Any:
    """``log(sigmoid(x))``, computed without overflow."""
    _float_only(input, "logsigmoid")
    return LogSigmoid.apply(input)


def tanhshrink(input: Any) -> Any:
    """``x - tanh(x)``."""
    _float_only(input, "tanhshrink")
    return Tanhshrink.apply(input)


METHODS = {
    "relu": relu,
    "relu_": relu_,
    "hardshrink": hardshrink,
    **_DIM_METHODS,
}

__all__ = [
    "relu", "relu_", "relu6", "hardtanh", "hardtanh_", "leaky_relu", "leaky_relu_", "threshold",
    "threshold_", "hardshrink", "softshrink", "hardsigmoid", "hardswish", "elu", "elu_", "selu",
    "selu_", "celu", "celu_", "gelu", "silu", "mish", "softplus", "softsign", "logsigmoid",
    "tanhshrink", *_DIM_ALL,
]
