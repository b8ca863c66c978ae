"""Activations along a dimension (softmax, log_softmax, softmin, GLU, PReLU's per-channel
slopes) and random-mask ones (the dropout family, rrelu). Split from :mod:`.activation` for length; that module
re-exports everything here.

Note on softmax: the max along ``dim`` is subtracted before ``exp`` (no overflow), and
half-precision inputs are computed in float32. The backward works from the saved output
only: ``dx = y * (g - sum(g * y))`` for softmax, ``dx = g - exp(y) * sum(g)`` for
log_softmax. Under autocast, PyTorch's CPU policy keeps softmax in the input dtype and its
CUDA policy computes it in float32; this module does the same. Over the last dim of a
C-contiguous float32/float64 CPU array, forward and backward run compiled numba kernels
(:mod:`axonml.runtime.devices.cpu_kernels`); the NumPy code here is the reference and runs
everywhere else (and with ``AXONML_NUMBA=0``).

Note on randomness: masks are drawn on the host from an :class:`axonml.Generator` (the
default one unless ``generator=`` is given) and copied to the device, so ``ax.manual_seed``
reproduces them on every device.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from ...autograd.autocast import lower_dtype, upcast_dtype
from ...autograd.function import Function
from ...autograd.variable import TensorBase
from ...errors import DTypeError, ShapeError
from ...runtime.devices import cpu_kernels
from ...runtime.dtypes import get_dtype
from .._helpers import norm_dim, sum_to_shape, wrap
from ..random import Generator, get_generator


def up(x: Any) -> Any:
    """float16/bfloat16 arrays as float32; other arrays unchanged."""
    return x.astype(np.float32) if x.dtype.itemsize == 2 and x.dtype.kind not in "iu" else x


def sigmoid_array(xp: Any, x: Any) -> Any:
    """``1 / (1 + exp(-x))`` without overflow for large ``|x|``."""
    e = xp.exp(-xp.abs(x))
    return xp.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def softplus_array(xp: Any, x: Any) -> Any:
    """``log(1 + exp(x))`` without overflow."""
    return xp.maximum(x, 0) + xp.log1p(xp.exp(-xp.abs(x)))


# -- softmax family ---------------------------------------------------------------------------
class Softmax(Function):
    """``exp(x) / sum(exp(x))`` along ``axis`` (``log=True``: its logarithm)."""

    @staticmethod
    def forward(ctx, x, axis, log):
        xp = ctx.xp
        ctx.axis, ctx.log = axis, log
        if axis == x.ndim - 1:  # the compiled CPU kernel, where it applies
            y = cpu_kernels.softmax(xp, x, log)
            if y is not None:
                ctx.save_for_backward(y)
                return y
        shape = x.shape
        if x.ndim == 0:
            x = x.reshape(1)  # a 0-d tensor is a one-element distribution
        if x.shape[axis] == 0:
            y = x.copy()
        else:
            z = up(x) - up(x).max(axis=axis, keepdims=True)
            if log:
                y = z - xp.log(xp.exp(z).sum(axis=axis, keepdims=True))
            else:
                y = xp.exp(z, out=z)
                y /= y.sum(axis=axis, keepdims=True)
            y = y.astype(x.dtype, copy=False).reshape(shape)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, g):
        (y,) = ctx.saved_tensors
        xp = ctx.xp
        if ctx.axis == y.ndim - 1:
            gx = cpu_kernels.softmax_backward(xp, y, g, ctx.log)
            if gx is not None:
                return gx, None, None
        shape = y.shape
        yc, gc = up(y), up(g)
        if y.ndim == 0:
            yc, gc = yc.reshape(1), gc.reshape(1)
        if ctx.log:
            gx = gc - xp.exp(yc) * gc.sum(axis=ctx.axis, keepdims=True)
        else:
            gx = yc * gc
            gx -= yc * gx.sum(axis=ctx.axis, keepdims=True)
        return gx.astype(y.dtype, copy=False).reshape(shape), None, None


def _softmax_dim(ndim: int, name: str, stacklevel: int) -> int:
    warnings.warn(
        f"Implicit dimension choice for {name} has been deprecated. Change the call to include dim=X as an argument.",
        UserWarning,
        stacklevel=stacklevel,
    )
    return 0 if ndim in (0, 1, 3) else 1


def _softmax_impl(input: Any, dim: Any, stacklevel: int, dtype: Any, log: bool, name: str) -> Any:
    if not isinstance(input, TensorBase):
        raise TypeError(f"{name}: expected a Tensor input, got {type(input).__name__}")
    nd = input._data.ndim
    if dim is None:
        dim = _softmax_dim(nd, name, stacklevel + 1)
    axis = nd - 1 if dim == -1 and nd else norm_dim(dim, nd, name)  # the common case first
    if dtype is not None:
        input = input.to(get_dtype(dtype))
    elif input._device.type == "cuda":
        upc = upcast_dtype("cuda", input._dtype)  # PyTorch's CUDA autocast runs softmax in float32
        if upc is not None:
            input = input.to(upc)
    if not input._dtype.is_floating_point:
        raise DTypeError(f"{name}: expected a floating point input, got {input._dtype}; pass dtype=ax.float32 or call .float()")
    return Softmax.apply(input, axis, log)


def softmax(input: Any, dim: int | None = None, _stacklevel: int = 3, dtype: Any = None) -> Any:
    """``exp(x) / exp(x).sum(dim, keepdim=True)``, computed stably.

    Args: ``dim``, the dimension that sums to 1; ``dtype``, cast the input to it first.
    Example: ``ax.softmax(ax.tensor([1.0, 2.0]), dim=0)`` -> ``tensor([0.2689, 0.7311])``
    """
    return _softmax_impl(input, dim, _stacklevel, dtype, False, "softmax")


def log_softmax(input: Any, dim: int | None = None, _stacklevel: int = 3, dtype: Any = None) -> Any:
    """``x - logsumexp(x, dim)``, computed stably (never ``log(softmax(x))``).

    Example: ``ax.log_softmax(logits, dim=-1)``
    """
    return _softmax_impl(input, dim, _stacklevel, dtype, True, "log_softmax")


def softmin(input: Any, dim: int | None = None, _stacklevel: int = 3, dtype: Any = None) -> Any:
    """``softmax(-x, dim)``."""
    if not isinstance(input, TensorBase):
        raise TypeError(f"softmin: expected a Tensor input, got {type(input).__name__}")
    if dim is None:
        dim = _softmax_dim(input.ndim, "softmin", _stacklevel)
    if dtype is not None:
        input = input.to(get_dtype(dtype))
    return _softmax_impl(-input, dim, _stacklevel, None, False, "softmin")


def _softmax_method(self: Any, dim: int, dtype: Any = None) -> Any:
    return softmax(self, dim, dtype=dtype)


def _log_softmax_method(self: Any, dim: int, dtype: Any = None) -> Any:
    return log_softmax(self, dim, dtype=dtype)


_softmax_method.__doc__ = softmax.__doc__
_log_softmax_method.__doc__ = log_softmax.__doc__


# -- masks ------------------------------------------------------------------------------------------
class MaskAffine(Function):
    """``x * m (+ b)`` with constant arrays ``m`` (broadcast to ``x``) and ``b``."""

    @staticmethod
    def forward(ctx, x, m, b):
        ctx.save_for_backward(m)
        ctx.shape = x.shape
        out = x * m
        if b is not None:
            out += b
        return out

    @staticmethod
    def backward(ctx, g):
        (m,) = ctx.saved_tensors
        gx = g * m
        if gx.shape != ctx.shape:  # never: masks are no larger than the input
            raise ShapeError(f"mask of shape {m.shape} is larger than the input {ctx.shape}")
        return gx, None, None

    @staticmethod
    def differentiable_backward(ctx, g):
        (m,) = ctx.saved_tensors
        return g * wrap(m, g), None, None


class Rrelu(Function):
    """``x`` where ``x >= 0``, else ``x * u`` with a random slope ``u`` per element."""

    @staticmethod
    def forward(ctx, x, u):
        noise = ctx.xp.where(x >= 0, 1, u).astype(x.dtype, copy=False)
        ctx.save_for_backward(noise)
        return x * noise

    @staticmethod
    def backward(ctx, g):
        (noise,) = ctx.saved_tensors
        return g * noise, None


def _check_p(p: Any, name: str) -> float:
    if isinstance(p, bool) or not isinstance(p, (int, float, np.floating)) or not 0.0 <= p <= 1.0:
        raise ValueError(f"{name}: dropout probability p has to be between 0 and 1, but got {p!r}")
    return float(p)


def _check_input(input: Any, name: str) -> None:
    if not isinstance(input, TensorBase):
        raise TypeError(f"{name}: expected a Tensor input, got {type(input).__name__}")
    if not input._dtype.is_floating_point:
        raise DTypeError(f"{name}: expected a floating point input, got {input._dtype}")


def _keep_mask(shape: tuple, p: float, generator: Generator | None) -> np.ndarray:
    """A host boolean array, True with probability ``1 - p``."""
    return get_generator(generator).random(shape, dtype=np.float32) >= np.float32(p)


def _dropout_masked(input: Any, p: float, mask_shape: tuple, inplace: bool, name: str, generator: Any) -> Any:
    keep = _keep_mask(mask_shape, p, generator)
    scale = 0.0 if p == 1.0 else 1.0 / (1.0 - p)
    m = input._device.from_host((keep * scale).astype(input._dtype.np))
    out = MaskAffine.apply(input, m, None)
    return input._inplace_result(out, name + "_") if inplace else out


def dropout(input: Any, p: float = 0.5, training: bool = True, inplace: bool = False, generator: Generator | None = None) -> Any:
    """Zero each element with probability ``p`` and scale the rest by ``1 / (1 - p)``.

    Returns ``input`` itself when ``training`` is False or ``p`` is 0; ``p = 1`` gives
    zeros. Masks come from ``generator`` (default: the one ``ax.manual_seed`` seeds).
    Example: ``ax.manual_seed(0); y = ax.dropout(x, 0.1)``
    """
    p = _check_p(p, "dropout")
    _check_input(input, "dropout")
    if not training or p == 0.0:
        return input
    return _dropout_masked(input, p, tuple(input.shape), inplace, "dropout", generator)


def dropout_(input: Any, p: float = 0.5, training: bool = True, generator: Generator | None = None) -> Any:
    """In-place :func:`dropout`."""
    return dropout(input, p, training, True, generator)


def _feature_dropout(input: Any, p: float, training: bool, inplace: bool, generator: Any, name: str, spatial: int) -> Any:
    p = _check_p(p, name)
    _check_input(input, name)
    if input.ndim not in (spatial + 1, spatial + 2):
        raise ShapeError(
            f"{name}: expected a {spatial + 1}-D (unbatched) or {spatial + 2}-D (batched) input, but got "
            f"shape {tuple(input.shape)}; {name} zeroes whole channels of inputs with {spatial} spatial dim(s)"
        )
    if not training or p == 0.0:
        return input
    lead = input.ndim - spatial  # (N, C) or (C,)
    mask_shape = tuple(input.shape[:lead]) + (1,) * spatial
    return _dropout_masked(input, p, mask_shape, inplace, name, generator)


def dropout1d(
    input: Any, p: float = 0.5, training: bool = True, inplace: bool = False, generator: Generator | None = None
) -> Any:
    """Zero whole channels of ``(N, C, L)`` / ``(C, L)`` inputs with probability ``p``."""
    return _feature_dropout(input, p, training, inplace, generator, "dropout1d", 1)


def dropout2d(
    input: Any, p: float = 0.5, training: bool = True, inplace: bool = False, generator: Generator | None = None
) -> Any:
    """Zero whole channels of ``(N, C, H, W)`` / ``(C, H, W)`` inputs with probability ``p``."""
    return _feature_dropout(input, p, training, inplace, generator, "dropout2d", 2)


def dropout3d(
    input: Any, p: float = 0.5, training: bool = True, inplace: bool = False, generator: Generator | None = None
) -> Any:
    """Zero whole channels of ``(N, C, D, H, W)`` / ``(C, D, H, W)`` inputs with probability ``p``."""
    return _feature_dropout(input, p, training, inplace, generator, "dropout3d", 3)


_SELU_NEG = 1.7580993408473766  # selu's scale * alpha: the value selu saturates to is its negative


def _alpha_dropout(input: Any, p: float, training: bool, inplace: bool, generator: Any, name: str, feature: bool) -> Any:
    p = _check_p(p, name)
    _check_input(input, name)
    if not training or p == 0.0 or input._data.size == 0:
        return input
    if feature and input.ndim < 2:
        raise ShapeError(f"{name}: needs an input with at least 2 dims (N, C, ...), got shape {tuple(input.shape)}")
    shape = tuple(input.shape[:2]) + (1,) * (input.ndim - 2) if feature else tuple(input.shape)
    if p == 1.0:
        keep = np.zeros(shape, dtype=bool)
        a, b_keep, b_drop = 0.0, 0.0, 0.0
    else:
        keep = _keep_mask(shape, p, generator)
        # keeps zero mean and unit variance for SELU activations: kept a*x + c, dropped c - alpha*a
        a = 1.0 / np.sqrt((_SELU_NEG * _SELU_NEG * p + 1.0) * (1.0 - p))
        b_keep = _SELU_NEG * a * p
        b_drop = b_keep - _SELU_NEG * a
    dt = input._dtype.np
    m = input._device.from_host((keep * a).astype(dt))
    b = input._device.from_host(np.where(keep, b_keep, b_drop).astype(dt))
    if feature:
        b = input._device.xp.broadcast_to(b, tuple(input.shape))
    out = MaskAffine.apply(input, m, b)
    return input._inplace_result(out, name + "_") if inplace else out


def alpha_dropout(
    input: Any, p: float = 0.5, training: bool = False, inplace: bool = False, generator: Generator | None = None
) -> Any:
    """Dropout that keeps SELU's self-normalising mean and variance (dropped values go to
    SELU's negative saturation, then an affine map restores the statistics)."""
    return _alpha_dropout(input, p, training, inplace, generator, "alpha_dropout", False)


def feature_alpha_dropout(
    input: Any, p: float = 0.5, training: bool = False, inplace: bool = False, generator: Generator | None = None
) -> Any:
    """:func:`alpha_dropout` on whole channels (dim 1) of an ``(N, C, ...)`` input."""
    return _alpha_dropout(input, p, training, inplace, generator, "feature_alpha_dropout", True)


def rrelu(
    input: Any,
    lower: float = 1.0 / 8,
    upper: float = 1.0 / 3,
    training: bool = False,
    inplace: bool = False,
    generator: Generator | None = None,
) -> Any:
    """Randomized leaky ReLU: in training, negative inputs are scaled by a slope drawn
    uniformly from ``[lower, upper]`` per element; in eval by ``(lower + upper) / 2``."""
    _check_input(input, "rrelu")
    if lower > upper:
        raise ValueError(f"rrelu: lower bound ({lower}) must be <= upper bound ({upper})")
    if not training:
        out = Rrelu.apply(input, input._dtype.np.type((lower + upper) / 2))
    else:
        u = get_generator(generator).uniform(lower, upper, size=tuple(input.shape)).astype(input._dtype.np)
        out = Rrelu.apply(input, input._device.from_host(u))
    return input._inplace_result(out, "rrelu_") if inplace else out


def rrelu_(
    input: Any, lower: float = 1.0 / 8, upper: float = 1.0 / 3, training: bool = False, generator: Generator | None = None
) -> Any:
    """In-place :func:`rrelu`."""
    return rrelu(input, lower, upper, training, True, generator)


# -- GLU and PReLU -------------------------------------------------------------------------------
class Glu(Function):
    """``a * sigmoid(b)`` for the two halves ``a, b`` of ``dim``."""

    @staticmethod
    def forward(ctx, x, axis):
        xp = ctx.xp
        half = x.shape[axis] // 2
        a, b = xp.split(up(x), [half], axis=axis)
        s = sigmoid_array(xp, b)
        ctx.axis = axis
        ctx.save_for_backward(x)
        return (a * s).astype(x.dtype, copy=False)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        xp = ctx.xp
        a, b = xp.split(up(x), [x.shape[ctx.axis] // 2], axis=ctx.axis)
        s = sigmoid_array(xp, b)
        g = up(g)
        ga = g * s
        gb = ga * a * (1.0 - s)
        return xp.concatenate([ga, gb], axis=ctx.axis).astype(x.dtype, copy=False), None


def glu(input: Any, dim: int = -1) -> Any:
    """Gated linear unit: split ``dim`` into halves ``a, b``; returns ``a * sigmoid(b)``.

    Example: ``ax.glu(ax.randn(4, 6), dim=-1).shape`` -> ``(4, 3)``
    """
    _check_input(input, "glu")
    if input.ndim == 0:
        raise ShapeError("glu: does not support 0-d (scalar) tensors; give at least one dimension")
    axis = norm_dim(dim, input.ndim, "glu")
    if input.shape[axis] % 2:
        raise ShapeError(
            f"glu: halving dimension must be even, but dimension {dim} "
            f"of shape {tuple(input.shape)} is size {input.shape[axis]}"
        )
    return Glu.apply(input, axis)


class Prelu(Function):
    """``x`` for ``x > 0``, else ``w * x`` with one learned slope per channel (dim 1)."""

    @staticmethod
    def forward(ctx, x, w, wshape):
        xp = ctx.xp
        ctx.save_for_backward(x, w)
        ctx.wshape = wshape
        wb = up(w).reshape(wshape)  # (C, 1, ..., 1) aligned with dim 1, or (1,)
        xc = up(x)
        return xp.where(xc > 0, xc, wb * xc).astype(x.dtype, copy=False)

    @staticmethod
    def backward(ctx, g):
        x, w = ctx.saved_tensors
        xp = ctx.xp
        xc, gc = up(x), up(g)
        pos = xc > 0
        need = ctx.needs_input_grad
        gx = gw = None
        if need[0]:
            gx = xp.where(pos, gc, gc * up(w).reshape(ctx.wshape)).astype(x.dtype, copy=False)
        if need[1]:
            gw = sum_to_shape(xp, xp.where(pos, 0, xc * gc), ctx.wshape).reshape(w.shape).astype(w.dtype, copy=False)
        return gx, gw, None


def prelu(input: Any, weight: Any) -> Any:
    """Parametric ReLU: ``weight`` has 1 element or one per channel (``input.shape[1]``).

    Example: ``ax.prelu(x, ax.full((x.shape[1],), 0.25))``
    """
    _check_input(input, "prelu")
    if not isinstance(weight, TensorBase):
        raise TypeError(f"prelu: weight must be a Tensor, got {type(weight).__name__}")
    channels = input.shape[1] if input.ndim >= 2 else 1
    n = weight._data.size
    if n != 1 and n != channels:
        raise ShapeError(
            f"prelu: weight has {n} elements but the input of shape {tuple(input.shape)} has {channels} "
            "channel(s) (dim 1); give 1 or as many slopes as channels"
        )
    wshape = (n,) + (1,) * (input.ndim - 2) if n > 1 else (1,) * input.ndim
    low = lower_dtype(input._device.type)
    if low is not None:  # PyTorch's CPU autocast runs prelu in the lower precision
        input = input.to(low) if input._dtype.name == "float32" else input
        weight = weight.to(low) if weight._dtype.name == "float32" else weight
    if weight._dtype is not input._dtype:
        weight = weight.to(input._dtype)
    return Prelu.apply(input, weight, wshape)


METHODS = {
    "prelu": prelu,
    "softmax": _softmax_method,
    "log_softmax": _log_softmax_method,
}

__all__ = [
    "softmax", "log_softmax", "softmin", "dropout", "dropout_", "dropout1d", "dropout2d", "dropout3d",
    "alpha_dropout", "feature_alpha_dropout", "rrelu", "rrelu_", "glu", "prelu",
]
