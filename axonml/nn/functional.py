"""``axonml.nn.functional``: the ``torch.nn.functional`` names, as ``F``.

Note on where things live: every differentiable op is implemented once, in
``axonml/tensor/ops`` (one ``Function`` per op); this module only re-exports them under
``torch.nn.functional``'s names, imported explicitly so a reader sees where each comes
from. A few names that torch has at top level with another meaning or argument order
(``embedding``, ``batch_norm``, ``pad``, ``interpolate``...) are not exported as
``axonml.<name>`` and come straight from their op module here. Attention comes from
:mod:`axonml.nn.attention`.

Note on the composites at the bottom: the distance functions and the less common losses
(``normalize``, ``cosine_similarity``, ``pairwise_distance``, ``soft_margin_loss``,
``margin_ranking_loss``, ``hinge_embedding_loss``, ``poisson_nll_loss``,
``triplet_margin_loss``, ``multilabel_soft_margin_loss``) are written with differentiable
Tensor ops rather than as fused Functions; they follow PyTorch's formulas and reductions.

Example::

    import axonml.nn.functional as F
    loss = F.cross_entropy(F.linear(x, w, b), target, label_smoothing=0.1)
"""

from __future__ import annotations

import math
from typing import Any

from ..errors import ShapeError
from ..tensor import (
    Tensor,
    adaptive_avg_pool1d,
    adaptive_avg_pool2d,
    adaptive_max_pool1d,
    adaptive_max_pool2d,
    alpha_dropout,
    avg_pool1d,
    avg_pool2d,
    bilinear,
    binary_cross_entropy,
    binary_cross_entropy_with_logits,
    celu,
    celu_,
    conv1d,
    conv2d,
    conv_transpose1d,
    conv_transpose2d,
    cosine_embedding_loss,
    cross_entropy,
    dropout,
    dropout1d,
    dropout2d,
    dropout3d,
    elu,
    elu_,
    feature_alpha_dropout,
    gelu,
    glu,
    group_norm,
    hardshrink,
    hardsigmoid,
    hardswish,
    hardtanh,
    hardtanh_,
    huber_loss,
    kl_div,
    l1_loss,
    layer_norm,
    leaky_relu,
    leaky_relu_,
    linear,
    log_softmax,
    logsigmoid,
    max_pool1d,
    max_pool2d,
    mish,
    mse_loss,
    nll_loss,
    one_hot,
    pixel_shuffle,
    pixel_unshuffle,
    prelu,
    relu,
    relu6,
    relu_,
    rms_norm,
    rrelu,
    rrelu_,
    selu,
    selu_,
    sigmoid,
    silu,
    smooth_l1_loss,
    softmax,
    softmin,
    softplus,
    softshrink,
    softsign,
    tanh,
    tanhshrink,
    threshold,
    threshold_,
    where,
)
from ..tensor.ops.nn_ops import embedding, pad
from ..tensor.ops.norm import batch_norm, instance_norm
from ..tensor.ops.spatial import fold, interpolate, unfold
from .attention import scaled_dot_product_attention

_REDUCTIONS = ("none", "mean", "sum")


def _reduce(loss: Tensor, reduction: str, op: str) -> Tensor:
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    if reduction == "none":
        return loss
    raise ValueError(f"{op}: {reduction!r} is not a valid value for reduction; use one of {_REDUCTIONS}")


def _legacy(size_average: bool | None, reduce: bool | None, reduction: str) -> str:
    if size_average is None and reduce is None:
        return reduction
    size_average = True if size_average is None else size_average
    reduce = True if reduce is None else reduce
    return "mean" if (size_average and reduce) else ("sum" if reduce else "none")


# -- pooling with indices --------------------------------------------------------------
def max_pool1d_with_indices(input: Tensor, kernel_size: Any, stride: Any = None, padding: Any = 0, dilation: Any = 1,
                            ceil_mode: bool = False, return_indices: bool = True) -> Any:
    """``max_pool1d`` returning ``(values, indices)``."""
    return max_pool1d(input, kernel_size, stride, padding, dilation, ceil_mode=ceil_mode, return_indices=True)


def max_pool2d_with_indices(input: Tensor, kernel_size: Any, stride: Any = None, padding: Any = 0, dilation: Any = 1,
                            ceil_mode: bool = False, return_indices: bool = True) -> Any:
    """``max_pool2d`` returning ``(values, indices)``."""
    return max_pool2d(input, kernel_size, stride, padding, dilation, ceil_mode=ceil_mode, return_indices=True)


def upsample(
    input: Tensor, size: Any = None, scale_factor: Any = None, mode: str = "nearest", align_corners: bool | None = None
) -> Tensor:
    """Deprecated alias of :func:`interpolate`, as in PyTorch."""
    return interpolate(input, size, scale_factor, mode, align_corners)


def upsample_nearest(input: Tensor, size: Any = None, scale_factor: Any = None) -> Tensor:
    """``interpolate(mode='nearest')``."""
    return interpolate(input, size, scale_factor, mode="nearest")


def upsample_bilinear(input: Tensor, size: Any = None, scale_factor: Any = None) -> Tensor:
    """``interpolate(mode='bilinear', align_corners=True)``, as PyTorch's deprecated helper."""
    return interpolate(input, size, scale_factor, mode="bilinear", align_corners=True)


# -- distances -----------------------------------------------------------------------
def normalize(input: Tensor, p: float = 2.0, dim: int = 1, eps: float = 1e-12, out: Any = None) -> Tensor:
    """``input / max(||input||_p, eps)`` along ``dim``.

    Example: ``F.normalize(ax.randn(4, 3), dim=-1).norm(dim=-1)  # ones``
    """
    if out is not None:
        raise TypeError("normalize: out= is not supported; use the returned tensor")
    denom = input.norm(p, dim, keepdim=True).clamp_min(eps)
    return input / denom


def cosine_similarity(x1: Tensor, x2: Tensor, dim: int = 1, eps: float = 1e-8) -> Tensor:
    """Cosine of the angle between ``x1`` and ``x2`` along ``dim`` (broadcast); each norm is
    clamped below at ``eps``.

    Example: ``F.cosine_similarity(a, b, dim=-1)``
    """
    n1 = x1.norm(2, dim, keepdim=True).clamp_min(eps)
    n2 = x2.norm(2, dim, keepdim=True).clamp_min(eps)
    return ((x1 / n1) * (x2 / n2)).sum(dim)


def pairwise_distance(x1: Tensor, x2: Tensor, p: float = 2.0, eps: float = 1e-6, keepdim: bool = False) -> Tensor:
    """``||x1 - x2 + eps||_p`` over the last dimension."""
    return (x1 - x2 + eps).norm(p, -1, keepdim=keepdim)


# -- less common losses ----------------------------------------------------------------
def soft_margin_loss(
    input: Tensor, target: Tensor, size_average: Any = None, reduce: Any = None, reduction: str = "mean"
) -> Tensor:
    """``log(1 + exp(-target * input))`` with targets in {1, -1}."""
    return _reduce(softplus(-target * input), _legacy(size_average, reduce, reduction), "soft_margin_loss")


def margin_ranking_loss(input1: Tensor, input2: Tensor, target: Tensor, margin: float = 0.0, size_average: Any = None,
                        reduce: Any = None, reduction: str = "mean") -> Tensor:
    """``max(0, -target * (input1 - input2) + margin)``."""
    if input1.dim() != input2.dim() or input1.dim() != target.dim():
        raise ShapeError(
            f"margin_ranking_loss: all inputs should have the same number of dims, got {tuple(input1.shape)}, "
            f"{tuple(input2.shape)} and {tuple(target.shape)}"
        )
    loss = (-target * (input1 - input2) + margin).clamp_min(0)
    return _reduce(loss, _legacy(size_average, reduce, reduction), "margin_ranking_loss")


def hinge_embedding_loss(input: Tensor, target: Tensor, margin: float = 1.0, size_average: Any = None, reduce: Any = None,
                         reduction: str = "mean") -> Tensor:
    """``input`` where ``target == 1``, ``max(0, margin - input)`` where ``target == -1``."""
    zeros = input * 0
    loss = where(target != 1, (margin - input).clamp_min(0), zeros) + where(target != -1, input, zeros)
    return _reduce(loss, _legacy(size_average, reduce, reduction), "hinge_embedding_loss")


def poisson_nll_loss(input: Tensor, target: Tensor, log_input: bool = True, full: bool = False, size_average: Any = None,
                     eps: float = 1e-8, reduce: Any = None, reduction: str = "mean") -> Tensor:
    """Poisson negative log-likelihood: ``exp(input) - target * input`` (``log_input``) or
    ``input - target * log(input + eps)``; ``full`` adds Stirling's term for targets > 1."""
    loss = input.exp() - target * input if log_input else input - target * (input + eps).log()
    if full:
        safe = where(target > 1, target, target * 0 + 1)
        stirling = safe * safe.log() - safe + 0.5 * (2 * math.pi * safe).log()
        loss = loss + where(target > 1, stirling, stirling * 0)
    return _reduce(loss, _legacy(size_average, reduce, reduction), "poisson_nll_loss")


def triplet_margin_loss(anchor: Tensor, positive: Tensor, negative: Tensor, margin: float = 1.0, p: float = 2.0,
                        eps: float = 1e-6, swap: bool = False, size_average: Any = None, reduce: Any = None,
                        reduction: str = "mean") -> Tensor:
    """``max(d(a, p) - d(a, n) + margin, 0)`` with ``d`` the pairwise p-distance; ``swap``
    uses ``min(d(a, n), d(p, n))`` as the negative distance."""
    if not (anchor.dim() == positive.dim() == negative.dim()):
        raise ShapeError(
            f"triplet_margin_loss: anchor, positive and negative must have the same number of dims, got "
            f"{tuple(anchor.shape)}, {tuple(positive.shape)} and {tuple(negative.shape)}"
        )
    d_pos = pairwise_distance(anchor, positive, p, eps)
    d_neg = pairwise_distance(anchor, negative, p, eps)
    if swap:
        d_swap = pairwise_distance(positive, negative, p, eps)
        d_neg = where(d_swap < d_neg, d_swap, d_neg)
    loss = (d_pos - d_neg + margin).clamp_min(0)
    return _reduce(loss, _legacy(size_average, reduce, reduction), "triplet_margin_loss")


def multilabel_soft_margin_loss(input: Tensor, target: Tensor, weight: Tensor | None = None, size_average: Any = None,
                                reduce: Any = None, reduction: str = "mean") -> Tensor:
    """Per-sample mean over classes of the binary cross entropy of ``sigmoid(input)``."""
    loss = -(target * logsigmoid(input) + (1 - target) * logsigmoid(-input))
    if weight is not None:
        loss = loss * weight
    loss = loss.mean(-1)  # (N,)
    return _reduce(loss, _legacy(size_average, reduce, reduction), "multilabel_soft_margin_loss")


__all__ = [
    # convolution, pooling, resampling
    "conv1d", "conv2d", "conv_transpose1d", "conv_transpose2d", "unfold", "fold",
    "avg_pool1d", "avg_pool2d", "max_pool1d", "max_pool2d", "max_pool1d_with_indices", "max_pool2d_with_indices",
    "adaptive_avg_pool1d", "adaptive_avg_pool2d", "adaptive_max_pool1d", "adaptive_max_pool2d",
    "pad", "interpolate", "upsample", "upsample_nearest", "upsample_bilinear", "pixel_shuffle", "pixel_unshuffle",
    # attention
    "scaled_dot_product_attention",
    # activations
    "threshold", "threshold_", "relu", "relu_", "hardtanh", "hardtanh_", "hardswish", "relu6", "elu", "elu_", "selu",
    "selu_", "celu", "celu_", "leaky_relu", "leaky_relu_", "prelu", "rrelu", "rrelu_", "glu", "gelu", "logsigmoid",
    "hardshrink", "tanhshrink", "softsign", "softplus", "softmin", "softmax", "softshrink", "log_softmax", "tanh",
    "sigmoid", "hardsigmoid", "silu", "mish",
    # normalisation
    "batch_norm", "group_norm", "instance_norm", "layer_norm", "rms_norm", "normalize",
    # linear, dropout, sparse
    "linear", "bilinear", "dropout", "alpha_dropout", "feature_alpha_dropout", "dropout1d", "dropout2d", "dropout3d",
    "embedding", "one_hot",
    # distances
    "pairwise_distance", "cosine_similarity",
    # losses
    "binary_cross_entropy", "binary_cross_entropy_with_logits", "cosine_embedding_loss", "cross_entropy", "hinge_embedding_loss",
    "huber_loss", "kl_div", "l1_loss", "margin_ranking_loss", "mse_loss", "multilabel_soft_margin_loss", "nll_loss",
    "poisson_nll_loss", "smooth_l1_loss", "soft_margin_loss", "triplet_margin_loss",
]
