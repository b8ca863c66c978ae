"""Classification losses: ``cross_entropy`` (log_softmax fused in) and ``nll_loss``, plus
the reduction helpers every loss shares. Split from :mod:`.loss` for length; that module
re-exports everything public here.

Note on the fused Function: ``ClassLoss`` views the input as ``(N, C, D)`` (class dim 1;
a 1-D input is one sample, trailing dims are flattened into D) and computes, per sample,
``loss = -sum_c a_c * logp_c`` where the coefficients ``a`` are ``(1 - eps) w[t]`` at the
target class plus ``eps / C * w_c`` everywhere (label smoothing), or ``w_c * y_c`` for
probability targets. Its gradient is ``softmax * sum_c(a_c) - a`` (cross_entropy) or
``-a`` (nll_loss), built in place without a one-hot matrix: the target entries are
updated through flat indices.
"""

from __future__ import annotations

import warnings
from typing import Any

from ...autograd.autocast import upcast_dtype
from ...autograd.function import Function
from ...autograd.variable import TensorBase
from ...errors import DeviceError, DTypeError, ShapeError
from .activation_dim import up


# -- shared reduction helpers -------------------------------------------------------------------
def legacy_reduction(size_average: Any, reduce: Any, reduction: str, op: str) -> str:
    """Map the deprecated ``size_average``/``reduce`` pair onto ``reduction``."""
    if size_average is None and reduce is None:
        return reduction
    msg = f"{op}: size_average and reduce args are deprecated, please use reduction='...' instead."
    warnings.warn(msg, UserWarning, stacklevel=3)
    size_average = True if size_average is None else size_average
    reduce = True if reduce is None else reduce
    return "none" if not reduce else "mean" if size_average else "sum"


def check_reduction(reduction: str, op: str, extra: tuple = ()) -> None:
    allowed = ("none", "mean", "sum") + extra
    if reduction not in allowed:
        raise ValueError(f"{op}: reduction must be one of {', '.join(repr(r) for r in allowed)}, got {reduction!r}")


def reduce_loss(loss: Any, reduction: str) -> Any:
    """Apply 'none' / 'sum' / 'mean' (an empty 'mean' is NaN, as in PyTorch)."""
    if reduction == "none":
        return loss
    return loss.sum() if reduction == "sum" else loss.mean()


def float32_under_autocast(*ts: Any) -> list:
    """Low-precision floating tensors go to float32 under autocast (PyTorch's loss policy)."""
    out = []
    for t in ts:
        if isinstance(t, TensorBase):
            upc = upcast_dtype(t._device.type, t._dtype)
            if upc is not None:
                t = t.to(upc)
        out.append(t)
    return out


# -- the fused Function -------------------------------------------------------------------------
def _ncd(shape: tuple) -> tuple:
    """(N, C, D) of an input with the class dim at 1 (a 1-D input is one sample)."""
    if len(shape) == 1:
        return 1, shape[0], 1
    d = 1
    for s in shape[2:]:
        d *= s
    return shape[0], shape[1], d


def _safe_div(xp: Any, num: Any, den: Any) -> Any:
    """``num / den`` with NaN (no warning) where ``den`` is 0."""
    zero = den == 0
    return xp.where(zero, xp.nan, num / xp.where(zero, 1, den))


class ClassLoss(Function):
    """cross_entropy (``fused``: log_softmax first) or nll_loss; see the module note."""

    @staticmethod
    def forward(ctx, x, target, weight, ignore_index, reduction, eps, fused):
        xp = ctx.xp
        n, c, d = _ncd(x.shape)
        x3 = xp.ascontiguousarray(up(x).reshape(n, c, d))  # C order: backward writes through flat views
        if fused:
            z = x3 - x3.max(axis=1, keepdims=True) if c else x3.copy()
            z -= xp.log(xp.exp(z).sum(axis=1, keepdims=True))
            logp = z  # (N, C, D)
        else:
            logp = x3
        w = None if weight is None else up(weight).astype(logp.dtype, copy=False)
        wb = None if w is None else w.reshape(1, c, 1)
        probs = target.dtype.kind == "f" or (target.dtype.itemsize == 2 and target.dtype.kind not in "iu")
        if probs:
            y = up(target).reshape(n, c, d)
            if eps:
                y = y * (1.0 - eps) + eps / c
            a = y if wb is None else y * wb
            per = -(a * logp).sum(axis=1)  # (N, D)
            den = xp.asarray(float(n * d), dtype=logp.dtype)
            ctx.out_shape = x.shape[:1] + x.shape[2:] if x.ndim > 1 else ()
            valid = t_safe = wt = None
        else:
            t = target.reshape(n, d)
            valid = t != ignore_index
            t_safe = xp.where(valid, t, 0)
            picked = xp.take_along_axis(logp, t_safe[:, None, :], axis=1)[:, 0, :]  # (N, D)
            wt = valid.astype(logp.dtype) if w is None else xp.where(valid, w[t_safe], 0).astype(logp.dtype, copy=False)
            per = -wt * picked
            if eps:
                smooth = -(logp.sum(axis=1) if wb is None else (logp * wb).sum(axis=1))
                per = (1.0 - eps) * per + (eps / c) * xp.where(valid, smooth, 0)
            den = wt.sum()
            ctx.out_shape = target.shape
        ctx.saved = (logp, y if probs else None, w, valid, t_safe, wt, den)
        ctx.probs, ctx.fused, ctx.eps, ctx.reduction = probs, fused, eps, reduction
        ctx.shape, ctx.dtype, ctx.tdtype = x.shape, x.dtype, target.dtype
        if probs:
            ctx.save_for_backward(target)  # y may alias it: detect in-place changes before backward
        if reduction == "none":
            out = per.reshape(ctx.out_shape)
        elif reduction == "sum":
            out = per.sum()
        else:
            out = _safe_div(xp, per.sum(), den)
        return xp.asarray(out).astype(x.dtype, copy=False)

    @staticmethod
    def backward(ctx, g):
        ctx.saved_tensors  # noqa: B018 - raises if a probability target changed in place
        logp, y, w, valid, t_safe, wt, den = ctx.saved
        xp = ctx.xp
        n, c, d = logp.shape
        g = up(g).astype(logp.dtype, copy=False)
        if ctx.reduction == "none":
            coef = g.reshape(n, d)
        elif ctx.reduction == "sum":
            coef = g
        else:
            coef = g / xp.where(den == 0, 1, den)
        wb = None if w is None else w.reshape(1, c, 1)
        need = ctx.needs_input_grad
        gx = gy = None
        if ctx.probs:
            a = coef[..., None, :] * y if xp.ndim(coef) else coef * y
            if wb is not None:
                a = a * wb
            if need[0]:
                gx = xp.exp(logp) * a.sum(axis=1, keepdims=True) - a if ctx.fused else -a
            if need[1]:
                cy = coef[..., None, :] if xp.ndim(coef) else coef
                gy = -(1.0 - ctx.eps) * cy * logp * (1.0 if wb is None else wb)
                gy = gy.reshape(ctx.shape).astype(ctx.tdtype, copy=False)
        elif need[0]:
            at = coef * wt  # coefficient at each target entry, (N, D)
            cv = coef * valid if ctx.eps else None
            if ctx.fused:
                s = (1.0 - ctx.eps) * at
                if ctx.eps:
                    s = s + (ctx.eps / c) * cv * (c if w is None else w.sum())
                gx = xp.exp(logp)
                gx *= s[:, None, :]
            else:
                gx = xp.zeros(logp.shape, dtype=logp.dtype)
            if ctx.eps:
                gx -= (ctx.eps / c) * cv[:, None, :] * (1.0 if wb is None else wb)
            # gx[i, t_i, j] -= (1 - eps) * at[i, j] via flat indices (unique per (i, j))
            pos = (xp.arange(n)[:, None] * c + t_safe) * d + xp.arange(d)[None, :]
            flat = gx.reshape(-1)
            flat[pos.reshape(-1)] -= ((1.0 - ctx.eps) * at).reshape(-1)
        if gx is not None:
            gx = gx.reshape(ctx.shape).astype(ctx.dtype, copy=False)
        return gx, gy, None, None, None, None, None


# -- public functions ---------------------------------------------------------------------------------
def _validate(input: Any, target: Any, weight: Any, op: str, allow_probs: bool) -> bool:
    """Shape/dtype/device checks; returns True for class-probability targets."""
    for name, t in (("input", input), ("target", target)):
        if not isinstance(t, TensorBase):
            raise TypeError(f"{op}: {name} must be a Tensor, got {type(t).__name__}")
    if target._device is not input._device:
        raise DeviceError(f"{op}: input is on {input._device} but target is on {target._device}; move them to one device")
    if not input._dtype.is_floating_point:
        raise DTypeError(f"{op}: expected a floating point input (logits or log-probabilities), got {input._dtype}")
    if input.ndim == 0:
        raise ShapeError(f"{op}: input must have at least 1 dim ((C,), (N, C) or (N, C, d1, ...)), got a 0-d tensor")
    x_shape, t_shape = tuple(input.shape), tuple(target.shape)
    idx_shape = x_shape[:1] + x_shape[2:] if input.ndim > 1 else ()
    c = x_shape[1] if input.ndim > 1 else x_shape[0]
    probs = target._dtype.is_floating_point
    if probs:
        if not allow_probs:
            raise DTypeError(f"{op}: expected an integer (int64) class-index target, got {target._dtype}")
        if t_shape != x_shape:
            raise DTypeError(
                f"{op}: a {target._dtype} target is read as class probabilities and must have the input's shape "
                f"{x_shape}, got {t_shape}; class-index targets must be integer (int64) with shape {idx_shape}"
            )
    else:
        if target._dtype.name == "bool":
            raise DTypeError(f"{op}: expected an integer (int64) class-index target, got bool")
        if t_shape != idx_shape:
            if input.ndim > 1 and (t_shape[:1] != x_shape[:1]):
                raise ShapeError(
                    f"{op}: expected input batch_size ({x_shape[0]}) to match target batch_size "
                    f"({t_shape[0] if t_shape else 'none'}); input {x_shape}, target {t_shape}"
                )
            raise ShapeError(
                f"{op}: target of shape {t_shape} does not fit input of shape "
                f"{x_shape}: expected class indices of shape {idx_shape}"
            )
    if weight is not None:
        if not isinstance(weight, TensorBase):
            raise TypeError(f"{op}: weight must be a Tensor, got {type(weight).__name__}")
        if tuple(weight.shape) != (c,):
            raise ShapeError(f"{op}: weight must be a 1-D tensor with one entry per class ({c}), got shape {tuple(weight.shape)}")
        if weight._device is not input._device:
            raise DeviceError(f"{op}: weight is on {weight._device} but input is on {input._device}")
    return probs


def _check_range(target: Any, c: int, ignore_index: int, op: str) -> None:
    t = target._data
    if not t.size:
        return
    xp = target._device.xp
    bad = ((t < 0) | (t >= c)) & (t != ignore_index)
    if bool(xp.any(bad)):
        value = int(t[bad].reshape(-1)[0])
        raise IndexError(
            f"{op}: target {value} is out of bounds for {c} classes "
            f"(valid: 0..{c - 1}, or ignore_index={ignore_index})"
        )


def _class_loss(input: Any, target: Any, weight: Any, ignore_index: int, reduction: str, eps: float, fused: bool, op: str) -> Any:
    check_reduction(reduction, op)
    probs = _validate(input, target, weight, op, fused)
    if not 0.0 <= eps <= 1.0:
        raise ValueError(f"{op}: label_smoothing must be between 0.0 and 1.0, got {eps}")
    (input,) = float32_under_autocast(input)
    c = input.shape[1] if input.ndim > 1 else input.shape[0]
    if not probs:
        _check_range(target, c, ignore_index, op)
    elif target._dtype is not input._dtype:
        target = target.to(input._dtype)
    w = None if weight is None else weight.detach().to(input._dtype)
    return ClassLoss.apply(input, target, w, int(ignore_index), reduction, float(eps), fused)


def cross_entropy(
    input: Any,
    target: Any,
    weight: Any = None,
    size_average: Any = None,
    ignore_index: int = -100,
    reduce: Any = None,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
) -> Any:
    """Cross-entropy of unnormalized logits ``input`` ``(N, C)``, ``(C,)`` or ``(N, C, d1, ...)``
    against class indices (integer, shape without the class dim) or class probabilities
    (floating, the input's shape).

    Args: ``weight`` (C,) rescales each class; targets equal to ``ignore_index`` count for
    nothing (class indices only); ``label_smoothing`` mixes the target with uniform.
    Returns: the reduced loss, or per-sample losses for ``reduction='none'``.
    Example: ``ax.cross_entropy(logits, labels, label_smoothing=0.1)``
    """
    reduction = legacy_reduction(size_average, reduce, reduction, "cross_entropy")
    return _class_loss(input, target, weight, ignore_index, reduction, label_smoothing, True, "cross_entropy")


def nll_loss(
    input: Any,
    target: Any,
    weight: Any = None,
    size_average: Any = None,
    ignore_index: int = -100,
    reduce: Any = None,
    reduction: str = "mean",
) -> Any:
    """Negative log likelihood ``-input[i, target[i]]`` of log-probabilities ``input``
    (e.g. from :func:`log_softmax`), with the same shapes and options as cross_entropy.

    Example: ``ax.nll_loss(ax.log_softmax(logits, 1), labels)``
    """
    reduction = legacy_reduction(size_average, reduce, reduction, "nll_loss")
    return _class_loss(input, target, weight, ignore_index, reduction, 0.0, False, "nll_loss")

