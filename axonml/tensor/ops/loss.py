"""Loss functions: cross_entropy and nll_loss (class indices or probabilities), and the
regression/binary losses (mse, l1, smooth_l1, huber, binary cross-entropy, KL divergence).

Note on cross_entropy: one fused ``Function`` computes log_softmax and the negative log
likelihood, and its backward writes ``softmax * s - a`` in one pass (``a`` holds the
per-class coefficients of each sample, ``s`` their sum), so no (N, C) one-hot or
intermediate graph is built. Inputs ``(N, C, d1, ...)`` are viewed as ``(N, C, D)``.

Note on reductions (PyTorch's rules): 'mean' over class indices divides by the summed
weight of the non-ignored targets (their count without ``weight``), so an all-ignored
batch gives NaN; over class probabilities it divides by the number of samples
(``numel / C``). Under autocast every loss computes in float32.
"""

from __future__ import annotations

import warnings
from typing import Any, Callable

import numpy as np

from ...autograd.function import Function
from ...autograd.variable import TensorBase
from ...errors import DeviceError, DTypeError, ShapeError
from ...runtime.dtypes import promote_types
from .._helpers import sum_to_shape
from .activation_dim import up
from .loss_class import (
    ClassLoss,  # noqa: F401  (the cross_entropy/nll Function)
    check_reduction,
    cross_entropy,
    float32_under_autocast,
    legacy_reduction,
    nll_loss,
    reduce_loss,
)


def _check_pair(input: Any, target: Any, op: str, same_shape: bool) -> tuple:
    for name, t in (("input", input), ("target", target)):
        if not isinstance(t, TensorBase):
            raise TypeError(f"{op}: {name} must be a Tensor, got {type(t).__name__}")
    if input._device is not target._device:
        raise DeviceError(f"{op}: input is on {input._device} but target is on {target._device}; move them to one device")
    if not input._dtype.is_floating_point:
        raise DTypeError(f"{op}: expected a floating point input, got {input._dtype}")
    if tuple(input.shape) != tuple(target.shape):
        if same_shape:
            raise ShapeError(f"{op}: target size {tuple(target.shape)} must be the same as input size {tuple(input.shape)}")
        try:
            np.broadcast_shapes(tuple(input.shape), tuple(target.shape))
        except ValueError:
            raise ShapeError(
                f"{op}: target of shape {tuple(target.shape)} cannot be "
                f"broadcast to the input's shape {tuple(input.shape)}"
            ) from None
        warnings.warn(
            f"{op}: using a target size ({tuple(target.shape)}) that is different to the input size ({tuple(input.shape)}). "
            "This will likely lead to incorrect results due to broadcasting. Please ensure they have the same size.",
            UserWarning,
            stacklevel=3,
        )
    input, target = float32_under_autocast(input, target)
    if target._dtype is not input._dtype:
        dt = promote_types(input._dtype, target._dtype)
        input, target = input.to(dt), target.to(dt)
    return input, target


# -- elementwise losses ------------------------------------------------------------------------
def _pair_loss(name: str, fwd: Callable, bwd_x: Callable, bwd_y: Callable | None) -> type:
    """A Function ``name`` for an unreduced loss ``fwd(xp, x, y, *params)`` of broadcast
    operands; ``bwd_x``/``bwd_y`` give ``g * dloss/dx`` and ``g * dloss/dy`` (``bwd_y`` None:
    the loss depends on ``x - y`` only, so ``dy = -dx``). Params may hold constant arrays
    (weights)."""

    def forward(ctx, x, y, *params):
        ctx.save_for_backward(x, y)
        ctx.params = params
        return fwd(ctx.xp, up(x), up(y), *params).astype(x.dtype, copy=False)

    def backward(ctx, g):
        x, y = ctx.saved_tensors
        xp = ctx.xp
        need = ctx.needs_input_grad
        xc, yc, gc = up(x), up(y), up(g)
        gx = gy = None
        dx = bwd_x(xp, xc, yc, gc, *ctx.params) if need[0] or (need[1] and bwd_y is None) else None
        if need[0]:
            gx = sum_to_shape(xp, dx, x.shape).astype(x.dtype, copy=False)
        if need[1]:
            dy = -dx if bwd_y is None else bwd_y(xp, xc, yc, gc, *ctx.params)
            gy = sum_to_shape(xp, dy, y.shape).astype(y.dtype, copy=False)
        return (gx, gy, *([None] * len(ctx.params)))

    ns = {"forward": staticmethod(forward), "backward": staticmethod(backward), "__doc__": f"Elementwise {name}."}
    return type(name, (Function,), ns)


MseLoss = _pair_loss("MseLoss", lambda xp, x, y: (x - y) ** 2, lambda xp, x, y, g: 2.0 * (x - y) * g, None)
L1Loss = _pair_loss("L1Loss", lambda xp, x, y: xp.abs(x - y), lambda xp, x, y, g: xp.sign(x - y) * g, None)


def _smooth_l1_f(xp: Any, x: Any, y: Any, beta: float) -> Any:
    d = xp.abs(x - y)
    return d if beta == 0 else xp.where(d < beta, 0.5 * d * d / beta, d - 0.5 * beta)


def _smooth_l1_b(xp: Any, x: Any, y: Any, g: Any, beta: float) -> Any:
    d = x - y
    return g * (xp.sign(d) if beta == 0 else xp.clip(d / beta, -1.0, 1.0))


def _huber_f(xp: Any, x: Any, y: Any, delta: float) -> Any:
    d = xp.abs(x - y)
    return xp.where(d < delta, 0.5 * d * d, delta * (d - 0.5 * delta))


SmoothL1Loss = _pair_loss("SmoothL1Loss", _smooth_l1_f, _smooth_l1_b, None)
HuberLoss = _pair_loss("HuberLoss", _huber_f, lambda xp, x, y, g, delta: g * xp.clip(x - y, -delta, delta), None)


def _log_clamped(xp: Any, v: Any) -> Any:
    """``max(log(v), -100)``: PyTorch clamps BCE's logs so a confident wrong answer stays finite."""
    return xp.maximum(xp.where(v > 0, xp.log(xp.where(v > 0, v, 1.0)), -100.0), -100.0)


def _bce_f(xp: Any, x: Any, y: Any, w: Any) -> Any:
    loss = -(y * _log_clamped(xp, x) + (1.0 - y) * _log_clamped(xp, 1.0 - x))
    return loss if w is None else loss * w


def _bce_bx(xp: Any, x: Any, y: Any, g: Any, w: Any) -> Any:
    d = g * (x - y) / xp.maximum((1.0 - x) * x, 1e-12)
    return d if w is None else d * w


def _bce_by(xp: Any, x: Any, y: Any, g: Any, w: Any) -> Any:
    d = g * (_log_clamped(xp, 1.0 - x) - _log_clamped(xp, x))
    return d if w is None else d * w


BceLoss = _pair_loss("BceLoss", _bce_f, _bce_bx, _bce_by)


def _softplus(xp: Any, x: Any) -> Any:
    return xp.maximum(x, 0) + xp.log1p(xp.exp(-xp.abs(x)))


def _sigmoid(xp: Any, x: Any) -> Any:
    e = xp.exp(-xp.abs(x))
    return xp.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def _bcel_f(xp: Any, x: Any, y: Any, w: Any, pw: Any) -> Any:
    # -[pw*y*log(sig(x)) + (1-y)*log(1-sig(x))] = (1-y)*x + (1 + (pw-1)*y) * softplus(-x)
    coef = 1.0 if pw is None else 1.0 + (pw - 1.0) * y
    loss = (1.0 - y) * x + coef * _softplus(xp, -x)
    return loss if w is None else loss * w


def _bcel_bx(xp: Any, x: Any, y: Any, g: Any, w: Any, pw: Any) -> Any:
    if pw is None:
        d = g * (_sigmoid(xp, x) - y)
    else:
        d = g * ((1.0 - y) - (1.0 + (pw - 1.0) * y) * _sigmoid(xp, -x))
    return d if w is None else d * w


def _bcel_by(xp: Any, x: Any, y: Any, g: Any, w: Any, pw: Any) -> Any:
    d = -x if pw is None else -x + (pw - 1.0) * _softplus(xp, -x)
    d = g * d
    return d if w is None else d * w


BceWithLogitsLoss = _pair_loss("BceWithLogitsLoss", _bcel_f, _bcel_bx, _bcel_by)


def _xlogy(xp: Any, y: Any) -> Any:
    """``y * log(y)`` with 0 at ``y = 0``."""
    return xp.where(y > 0, y * xp.log(xp.where(y > 0, y, 1.0)), xp.where(y == 0, 0.0, xp.nan))


KlDiv = _pair_loss(
    "KlDiv",
    lambda xp, x, y: _xlogy(xp, y) - y * x,
    lambda xp, x, y, g: -y * g,
    lambda xp, x, y, g: g * (xp.log(y) + 1.0 - x),
)
KlDivLogTarget = _pair_loss(
    "KlDivLogTarget",
    lambda xp, x, y: xp.exp(y) * (y - x),
    lambda xp, x, y, g: -xp.exp(y) * g,
    lambda xp, x, y, g: g * xp.exp(y) * (y - x + 1.0),
)


def _weighted(loss: Any, weight: Any, reduction: str, input: Any, op: str, mean_by_weight: bool) -> Any:
    if weight is None:
        return reduce_loss(loss, reduction)
    if not isinstance(weight, TensorBase):
        raise TypeError(f"{op}: weight must be a Tensor, got {type(weight).__name__}")
    if tuple(weight.shape) != tuple(input.shape):
        raise ShapeError(
            f"{op}: weights and input must have the same size, got weight "
            f"{tuple(weight.shape)} and input {tuple(input.shape)}"
        )
    loss = loss * weight
    if reduction == "none":
        return loss
    if reduction == "sum":
        return loss.sum()
    return loss.sum() / weight.sum() if mean_by_weight else loss.mean()


def mse_loss(
    input: Any, target: Any, size_average: Any = None, reduce: Any = None, reduction: str = "mean", weight: Any = None
) -> Any:
    """Mean squared error ``(input - target)^2``; with ``weight`` (input's shape), 'mean'
    is ``sum(w * l) / sum(w)``.

    Example: ``ax.mse_loss(pred, y)``
    """
    reduction = legacy_reduction(size_average, reduce, reduction, "mse_loss")
    check_reduction(reduction, "mse_loss")
    input, target = _check_pair(input, target, "mse_loss", False)
    return _weighted(MseLoss.apply(input, target), weight, reduction, input, "mse_loss", True)


def l1_loss(
    input: Any, target: Any, size_average: Any = None, reduce: Any = None, reduction: str = "mean", weight: Any = None
) -> Any:
    """Mean absolute error ``|input - target|`` (weighted like :func:`mse_loss`)."""
    reduction = legacy_reduction(size_average, reduce, reduction, "l1_loss")
    check_reduction(reduction, "l1_loss")
    input, target = _check_pair(input, target, "l1_loss", False)
    return _weighted(L1Loss.apply(input, target), weight, reduction, input, "l1_loss", True)


def smooth_l1_loss(
    input: Any, target: Any, size_average: Any = None, reduce: Any = None, reduction: str = "mean", beta: float = 1.0
) -> Any:
    """``0.5 d^2 / beta`` where ``|d| < beta``, else ``|d| - 0.5 beta`` (``d = input - target``)."""
    reduction = legacy_reduction(size_average, reduce, reduction, "smooth_l1_loss")
    check_reduction(reduction, "smooth_l1_loss")
    if beta < 0:
        raise ValueError(f"smooth_l1_loss: beta must be >= 0, got {beta}")
    input, target = _check_pair(input, target, "smooth_l1_loss", False)
    return reduce_loss(SmoothL1Loss.apply(input, target, float(beta)), reduction)


def huber_loss(input: Any, target: Any, reduction: str = "mean", delta: float = 1.0, weight: Any = None) -> Any:
    """``0.5 d^2`` where ``|d| < delta``, else ``delta (|d| - 0.5 delta)``; with ``weight``
    'mean' is the plain mean of the weighted losses (as in PyTorch)."""
    check_reduction(reduction, "huber_loss")
    if delta <= 0:
        raise ValueError(f"huber_loss: delta must be > 0, got {delta}")
    input, target = _check_pair(input, target, "huber_loss", False)
    return _weighted(HuberLoss.apply(input, target, float(delta)), weight, reduction, input, "huber_loss", False)


def _const_weight(w: Any, input: Any, op: str, name: str) -> Any:
    """A weight as a raw array broadcastable to ``input`` (weights get no gradient)."""
    if w is None:
        return None
    if not isinstance(w, TensorBase):
        raise TypeError(f"{op}: {name} must be a Tensor, got {type(w).__name__}")
    try:
        shape = np.broadcast_shapes(tuple(w.shape), tuple(input.shape))
    except ValueError:
        shape = None
    if shape != tuple(input.shape):
        raise ShapeError(f"{op}: {name} of shape {tuple(w.shape)} cannot be broadcast to the input's shape {tuple(input.shape)}")
    if w._device is not input._device:
        raise DeviceError(f"{op}: {name} is on {w._device} but input is on {input._device}")
    return up(w._data.astype(input._dtype.np, copy=False))


def binary_cross_entropy(
    input: Any, target: Any, weight: Any = None, size_average: Any = None, reduce: Any = None, reduction: str = "mean"
) -> Any:
    """``-w (y log(x) + (1 - y) log(1 - x))`` for probabilities ``x`` in [0, 1] (each log
    clamped at -100, as PyTorch does).

    Example: ``ax.binary_cross_entropy(ax.sigmoid(logits), y)``
    """
    reduction = legacy_reduction(size_average, reduce, reduction, "binary_cross_entropy")
    check_reduction(reduction, "binary_cross_entropy")
    input, target = _check_pair(input, target, "binary_cross_entropy", True)
    xp = input._device.xp
    data = input._data
    if data.size and bool(xp.any((data < 0) | (data > 1))):
        raise ValueError(
            "binary_cross_entropy: all elements of input should be between 0 and "
            "1 (apply sigmoid first, or use binary_cross_entropy_with_logits)"
        )
    w = _const_weight(weight, input, "binary_cross_entropy", "weight")
    return reduce_loss(BceLoss.apply(input, target, w), reduction)


def binary_cross_entropy_with_logits(
    input: Any,
    target: Any,
    weight: Any = None,
    size_average: Any = None,
    reduce: Any = None,
    reduction: str = "mean",
    pos_weight: Any = None,
) -> Any:
    """Sigmoid + binary cross-entropy in one stable step, on logits ``input``.
    ``pos_weight`` (broadcast along the last dim) weights the positive term.

    Example: ``ax.binary_cross_entropy_with_logits(logits, y, pos_weight=ax.tensor([3.0]))``
    """
    reduction = legacy_reduction(size_average, reduce, reduction, "binary_cross_entropy_with_logits")
    check_reduction(reduction, "binary_cross_entropy_with_logits")
    input, target = _check_pair(input, target, "binary_cross_entropy_with_logits", True)
    w = _const_weight(weight, input, "binary_cross_entropy_with_logits", "weight")
    pw = _const_weight(pos_weight, input, "binary_cross_entropy_with_logits", "pos_weight")
    return reduce_loss(BceWithLogitsLoss.apply(input, target, w, pw), reduction)


def kl_div(
    input: Any, target: Any, size_average: Any = None, reduce: Any = None, reduction: str = "mean", log_target: bool = False
) -> Any:
    """KL divergence with ``input`` as log-probabilities: ``target * (log(target) - input)``
    (``log_target=True``: target holds log-probabilities too). ``reduction='batchmean'``
    divides the sum by the batch size (the mathematical KL); 'mean' averages over all
    elements (PyTorch warns about it, so do we).

    Example: ``ax.kl_div(ax.log_softmax(s, -1), ax.softmax(t, -1), reduction='batchmean')``
    """
    if size_average is not None or reduce is not None:
        reduction = legacy_reduction(size_average, reduce, reduction, "kl_div")
    elif reduction == "mean":
        warnings.warn(
            "kl_div: reduction='mean' divides the total loss by both the batch size and the support size; "
            "'batchmean' divides only by the batch size, and aligns with the KL div math definition.",
            UserWarning,
            stacklevel=2,
        )
    check_reduction(reduction, "kl_div", ("batchmean",))
    input, target = _check_pair(input, target, "kl_div", False)
    loss = (KlDivLogTarget if log_target else KlDiv).apply(input, target)
    if reduction == "batchmean":
        total = loss.sum()
        return total / input.shape[0] if input.ndim else total
    return reduce_loss(loss, reduction)


class CosineEmbeddingLoss(Function):
    """``1 - cos(x1, x2)`` for ``y = 1``, ``max(0, cos(x1, x2) - margin)`` for ``y = -1``."""

    @staticmethod
    def forward(ctx, x1, x2, y, margin, eps):
        xp = ctx.xp
        a, b = up(x1), up(x2)
        dot = (a * b).sum(axis=-1)
        n1 = (a * a).sum(axis=-1) + eps
        n2 = (b * b).sum(axis=-1) + eps
        cos = dot / xp.sqrt(n1 * n2)
        loss = xp.where(y == 1, 1.0 - cos, xp.maximum(cos - margin, 0.0))
        loss = xp.where((y == 1) | (y == -1), loss, 0.0)
        ctx.save_for_backward(x1, x2, y)
        ctx.margin, ctx.eps = margin, eps
        return loss.astype(x1.dtype, copy=False)

    @staticmethod
    def backward(ctx, g):
        x1, x2, y = ctx.saved_tensors
        xp = ctx.xp
        a, b, g = up(x1), up(x2), up(g)
        dot = (a * b).sum(axis=-1, keepdims=True)
        n1 = (a * a).sum(axis=-1, keepdims=True) + ctx.eps
        n2 = (b * b).sum(axis=-1, keepdims=True) + ctx.eps
        r = xp.sqrt(n1 * n2)
        cos = dot / r
        yk = y[..., None]
        # d loss / d cos: -1 (positive pairs), 1 where cos > margin (negative pairs)
        dcos = xp.where(yk == 1, -1.0, xp.where((yk == -1) & (cos > ctx.margin), 1.0, 0.0)) * g[..., None]
        ga = dcos * (b / r - cos * a / n1)
        gb = dcos * (a / r - cos * b / n2)
        return ga.astype(x1.dtype, copy=False), gb.astype(x2.dtype, copy=False), None, None, None


def cosine_embedding_loss(
    input1: Any,
    input2: Any,
    target: Any,
    margin: float = 0,
    size_average: Any = None,
    reduce: Any = None,
    reduction: str = "mean",
) -> Any:
    """Cosine-similarity loss of pairs ``(N, D)`` (or ``(D,)``) labelled 1 (similar) or -1."""
    reduction = legacy_reduction(size_average, reduce, reduction, "cosine_embedding_loss")
    check_reduction(reduction, "cosine_embedding_loss")
    if tuple(input1.shape) != tuple(input2.shape) or input1.ndim not in (1, 2):
        raise ShapeError(
            "cosine_embedding_loss: expected two (N, D) or (D,) inputs of "
            f"one shape, got {tuple(input1.shape)} and {tuple(input2.shape)}"
        )
    if tuple(target.shape) != tuple(input1.shape[:-1]):
        raise ShapeError(
            f"cosine_embedding_loss: target of shape {tuple(target.shape)} does "
            f"not match the inputs' batch shape {tuple(input1.shape[:-1])}"
        )
    input1, input2 = float32_under_autocast(input1, input2)
    if input2._dtype is not input1._dtype:
        input2 = input2.to(input1._dtype)
    return reduce_loss(CosineEmbeddingLoss.apply(input1, input2, target.detach(), float(margin), 1e-12), reduction)


__all__ = [
    "cross_entropy", "nll_loss", "mse_loss", "l1_loss", "smooth_l1_loss", "huber_loss",
    "binary_cross_entropy", "binary_cross_entropy_with_logits", "kl_div", "cosine_embedding_loss",
]

METHODS: dict = {}
