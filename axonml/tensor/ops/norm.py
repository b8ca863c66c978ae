"""Normalization kernels: ``layer_norm``, ``rms_norm``, ``group_norm``, ``batch_norm``,
``instance_norm``.

Note on the norms: each is one Function with an analytic backward. They share one
formula: with ``xhat = (x - mean) * rstd`` over the reduced axes and ``dxhat`` the
gradient reaching ``xhat``, ``dx = rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat))``.
Only the input, the weight and the small per-row statistics are saved; ``xhat`` is
recomputed. float16/bfloat16 inputs compute in float32 and return their own dtype; a
float32 weight (or running statistics) with a low-precision input is accepted, as in
PyTorch. Autocast: PyTorch's CPU autocast leaves these norms in the input dtype, so
they do here; on CUDA, layer_norm and group_norm run in float32 (PyTorch's CUDA list).

Note on running statistics: ``batch_norm`` and ``instance_norm`` update
``running_mean``/``running_var`` in place (unbiased variance, as PyTorch) and bump their
version counters; the statistics come out of the Function as non-differentiable outputs.

Convolutions live in ``conv.py``, pooling in ``pool.py``, embedding and padding in
``nn_ops.py``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ...autograd.autocast import upcast_dtype
from ...autograd.function import Function
from ...autograd.variable import TensorBase
from ...errors import DTypeError, ShapeError
from .conv import _acc


def _moments(xp: Any, x: Any, axes: tuple) -> tuple:
    """(x - mean, mean, biased variance) over ``axes``, keeping dims."""
    mean = x.mean(axis=axes, keepdims=True)
    xc = x - mean
    return xc, mean, (xc * xc).mean(axis=axes, keepdims=True)


def _norm_backward(xhat: Any, rstd: Any, dxhat: Any, axes: tuple) -> Any:
    """dx for ``xhat = (x - mean(x)) * rstd`` normalized over ``axes``."""
    m1 = dxhat.mean(axis=axes, keepdims=True)
    m2 = (dxhat * xhat).mean(axis=axes, keepdims=True)
    return rstd * (dxhat - m1 - xhat * m2)


class LayerNormFn(Function):
    """Normalize x over its last ``k`` dims; optional elementwise affine (weight, bias)."""

    @staticmethod
    def forward(ctx, x, w, b, k, eps):
        acc = _acc(x.dtype)
        axes = tuple(range(x.ndim - k, x.ndim))
        xc, mean, var = _moments(ctx.xp, x.astype(acc, copy=False), axes)
        rstd = 1.0 / ctx.xp.sqrt(var + eps)
        y = xc * rstd
        ctx.save_for_backward(x, w)
        ctx.stats = (mean, rstd, axes)
        if w is not None:
            y = y * w.astype(acc, copy=False)
        if b is not None:
            y = y + b.astype(acc, copy=False)
        return y.astype(x.dtype, copy=False)

    @staticmethod
    def backward(ctx, g):
        x, w = ctx.saved_tensors
        mean, rstd, axes = ctx.stats
        need = ctx.needs_input_grad
        acc = _acc(x.dtype)
        g = g.astype(acc, copy=False)
        xhat = (x.astype(acc, copy=False) - mean) * rstd
        lead = tuple(range(x.ndim - len(axes)))
        gx = gw = gb = None
        if need[0]:
            dxhat = g if w is None else g * w.astype(acc, copy=False)
            gx = _norm_backward(xhat, rstd, dxhat, axes).astype(x.dtype, copy=False)
        if need[1]:
            gw = (g * xhat).sum(axis=lead).astype(w.dtype, copy=False)
        if need[2]:
            gb = g.sum(axis=lead).astype(w.dtype if w is not None else x.dtype, copy=False)
        return gx, gw, gb, None, None


class RMSNormFn(Function):
    """x * rsqrt(mean(x^2) + eps) over the last ``k`` dims, times an optional weight."""

    @staticmethod
    def forward(ctx, x, w, k, eps):
        acc = _acc(x.dtype)
        axes = tuple(range(x.ndim - k, x.ndim))
        x32 = x.astype(acc, copy=False)
        rstd = 1.0 / ctx.xp.sqrt((x32 * x32).mean(axis=axes, keepdims=True) + eps)
        ctx.save_for_backward(x, w)
        ctx.stats = (rstd, axes)
        y = x32 * rstd
        if w is not None:
            y = y * w.astype(acc, copy=False)
        return y.astype(x.dtype, copy=False)

    @staticmethod
    def backward(ctx, g):
        x, w = ctx.saved_tensors
        rstd, axes = ctx.stats
        need = ctx.needs_input_grad
        acc = _acc(x.dtype)
        g = g.astype(acc, copy=False)
        xhat = x.astype(acc, copy=False) * rstd
        gx = gw = None
        if need[0]:
            dxhat = g if w is None else g * w.astype(acc, copy=False)
            gx = rstd * (dxhat - xhat * (dxhat * xhat).mean(axis=axes, keepdims=True))
            gx = gx.astype(x.dtype, copy=False)
        if need[1]:
            gw = (g * xhat).sum(axis=tuple(range(x.ndim - len(axes)))).astype(w.dtype, copy=False)
        return gx, gw, None, None


class GroupNormFn(Function):
    """x (N, C, *) normalized over groups of C/G channels; per-channel affine."""

    @staticmethod
    def forward(ctx, x, w, b, groups, eps):
        xp = ctx.xp
        acc = _acc(x.dtype)
        n, c = x.shape[:2]
        xg = x.astype(acc, copy=False).reshape(n, groups, -1)  # (N, G, C/G * spatial)
        xc, mean, var = _moments(xp, xg, (2,))
        rstd = 1.0 / xp.sqrt(var + eps)
        y = (xc * rstd).reshape(n, c, -1)  # (N, C, spatial)
        ctx.save_for_backward(x, w)
        ctx.stats = (mean, rstd, groups)
        if w is not None:
            y = y * w.astype(acc, copy=False)[:, None]
        if b is not None:
            y = y + b.astype(acc, copy=False)[:, None]
        return y.reshape(x.shape).astype(x.dtype, copy=False)

    @staticmethod
    def backward(ctx, g):
        x, w = ctx.saved_tensors
        mean, rstd, groups = ctx.stats
        need = ctx.needs_input_grad
        acc = _acc(x.dtype)
        n, c = x.shape[:2]
        g3 = g.astype(acc, copy=False).reshape(n, c, -1)
        xhat = ((x.astype(acc, copy=False).reshape(n, groups, -1) - mean) * rstd).reshape(n, c, -1)
        gx = gw = gb = None
        if need[0]:
            dxhat = g3 if w is None else g3 * w.astype(acc, copy=False)[:, None]
            gx = _norm_backward(xhat.reshape(n, groups, -1), rstd, dxhat.reshape(n, groups, -1), (2,))
            gx = gx.reshape(x.shape).astype(x.dtype, copy=False)
        if need[1]:
            gw = (g3 * xhat).sum(axis=(0, 2)).astype(w.dtype, copy=False)
        if need[2]:
            gb = g3.sum(axis=(0, 2)).astype(w.dtype if w is not None else x.dtype, copy=False)
        return gx, gw, gb, None, None


class BatchNormFn(Function):
    """x (N, C, *) normalized per channel, with batch statistics (training) or the given
    running statistics. Returns (y, batch mean, batch biased var); the last two carry no
    gradient (None in eval mode)."""

    @staticmethod
    def forward(ctx, x, w, b, rm, rv, training, eps):
        xp = ctx.xp
        acc = _acc(x.dtype)
        axes = (0, *range(2, x.ndim))
        cshape = (1, x.shape[1]) + (1,) * (x.ndim - 2)
        x32 = x.astype(acc, copy=False)
        if training:
            xc, mean, var = _moments(xp, x32, axes)
        else:
            mean, var = rm.astype(acc, copy=False).reshape(cshape), rv.astype(acc, copy=False).reshape(cshape)
            xc = x32 - mean
        rstd = 1.0 / xp.sqrt(var + eps)
        y = xc * rstd
        ctx.save_for_backward(x, w)
        ctx.stats = (mean, rstd, axes, cshape, training)
        if w is not None:
            y = y * w.astype(acc, copy=False).reshape(cshape)
        if b is not None:
            y = y + b.astype(acc, copy=False).reshape(cshape)
        y = y.astype(x.dtype, copy=False)
        if not training:
            return y, None, None
        bm, bv = mean.reshape(-1), var.reshape(-1)
        ctx.mark_non_differentiable(bm, bv)
        return y, bm, bv

    @staticmethod
    def backward(ctx, g, _gm, _gv):
        x, w = ctx.saved_tensors
        mean, rstd, axes, cshape, training = ctx.stats
        need = ctx.needs_input_grad
        acc = _acc(x.dtype)
        g = g.astype(acc, copy=False)
        xhat = (x.astype(acc, copy=False) - mean) * rstd
        gx = gw = gb = None
        if need[0]:
            dxhat = g if w is None else g * w.astype(acc, copy=False).reshape(cshape)
            gx = _norm_backward(xhat, rstd, dxhat, axes) if training else dxhat * rstd
            gx = gx.astype(x.dtype, copy=False)
        if need[1]:
            gw = (g * xhat).sum(axis=axes).astype(w.dtype, copy=False)
        if need[2]:
            gb = g.sum(axis=axes).astype(w.dtype if w is not None else x.dtype, copy=False)
        return gx, gw, gb, None, None, None, None


# -- validation helpers -------------------------------------------------------------------
def _check_input(op: str, x: Any) -> None:
    if not isinstance(x, TensorBase):
        raise TypeError(f"{op}: input must be a Tensor, got {type(x).__name__}")
    if not x._dtype.is_floating_point:
        raise DTypeError(f"{op}: expected a floating point input, got {x._dtype}; convert with .float()")


def _check_param(op: str, name: str, p: Any, x: Any, shape: tuple) -> None:
    """A parameter of ``shape`` whose dtype matches x's (or float32 for a low-precision x)."""
    if p is None:
        return
    if not isinstance(p, TensorBase):
        raise TypeError(f"{op}: {name} must be a Tensor or None, got {type(p).__name__}")
    if tuple(p.shape) != tuple(shape):
        raise ShapeError(f"{op}: expected {name} of shape {tuple(shape)}, got {tuple(p.shape)}")
    if p._dtype is not x._dtype and not (x._dtype.itemsize == 2 and p._dtype.name == "float32"):
        raise DTypeError(f"{op}: {name} dtype {p._dtype} does not match the input dtype {x._dtype}; convert it with .to()")


def _cuda_float32(x: Any, *params: Any) -> tuple:
    """Under CUDA autocast, layer_norm/group_norm run in float32 (PyTorch's CUDA list)."""
    if x._device.type == "cuda":
        up = upcast_dtype("cuda", x._dtype)
        if up is not None:
            return (x.to(up), *(None if p is None else p.to(up) for p in params))
    return (x, *params)


def _normalized_shape(op: str, x: Any, normalized_shape: Any) -> tuple:
    ns = (int(normalized_shape),) if isinstance(normalized_shape, (int, np.integer)) else tuple(int(s) for s in normalized_shape)
    if len(ns) == 0 or len(ns) > x.ndim or tuple(x.shape[x.ndim - len(ns) :]) != ns:
        raise ShapeError(
            f"{op}: given normalized_shape={list(ns)}, expected an input of shape [*, {', '.join(map(str, ns))}], "
            f"but got shape {tuple(x.shape)}"
        )
    return ns


# -- public functions -------------------------------------------------------------------------
def layer_norm(input: Any, normalized_shape: Any, weight: Any = None, bias: Any = None, eps: float = 1e-5) -> Any:
    """Layer normalization over the trailing ``normalized_shape`` dims, as
    ``torch.nn.functional.layer_norm``; biased variance; optional affine of that shape.

    Example::

        y = layer_norm(ax.randn(2, 5, 16), (16,), w, b)  # each row of 16: mean 0, variance 1, then w*y+b
    """
    _check_input("layer_norm", input)
    ns = _normalized_shape("layer_norm", input, normalized_shape)
    _check_param("layer_norm", "weight", weight, input, ns)
    _check_param("layer_norm", "bias", bias, input, ns)
    input, weight, bias = _cuda_float32(input, weight, bias)
    return LayerNormFn.apply(input, weight, bias, len(ns), float(eps))


def rms_norm(input: Any, normalized_shape: Any, weight: Any = None, eps: float | None = None) -> Any:
    """Root-mean-square normalization, as ``torch.nn.functional.rms_norm``:
    ``x / sqrt(mean(x^2) + eps) * weight`` over the trailing ``normalized_shape`` dims.
    ``eps=None`` uses the machine epsilon of the compute dtype (float32 for float16 and
    bfloat16 inputs, else the input's dtype), which is what PyTorch does.

    Example::

        y = rms_norm(ax.randn(2, 5, 16), (16,), ax.ones(16))
    """
    _check_input("rms_norm", input)
    ns = _normalized_shape("rms_norm", input, normalized_shape)
    _check_param("rms_norm", "weight", weight, input, ns)
    if eps is None:
        eps = float(np.finfo(_acc(input._dtype.np)).eps)  # of the compute dtype: float32 for half inputs
    return RMSNormFn.apply(input, weight, len(ns), float(eps))


def group_norm(input: Any, num_groups: int, weight: Any = None, bias: Any = None, eps: float = 1e-5) -> Any:
    """Group normalization of (N, C, *) over groups of C/num_groups channels (and all
    spatial positions), with a per-channel affine, as ``torch.nn.functional.group_norm``.

    Example::

        y = group_norm(ax.randn(2, 6, 4, 4), 3, ax.ones(6), ax.zeros(6))
    """
    _check_input("group_norm", input)
    if input.ndim < 2:
        raise ShapeError(f"group_norm: expected an input of shape (N, C, *), got {tuple(input.shape)}")
    c = input.shape[1]
    if not isinstance(num_groups, (int, np.integer)) or num_groups <= 0 or c % num_groups:
        raise ShapeError(
            f"group_norm: the number of channels {c} (input shape {tuple(input.shape)}) must be divisible "
            f"by num_groups={num_groups}"
        )
    _check_param("group_norm", "weight", weight, input, (c,))
    _check_param("group_norm", "bias", bias, input, (c,))
    input, weight, bias = _cuda_float32(input, weight, bias)
    return GroupNormFn.apply(input, weight, bias, int(num_groups), float(eps))


def _update_running(stat: Any, batch: Any, momentum: float, n: int, unbiased: bool) -> None:
    """``stat = (1 - momentum) * stat + momentum * batch`` in place (bumps the version)."""
    if stat is None:
        return
    data = batch._data.astype(_acc(batch._data.dtype), copy=False)
    if unbiased:
        data = data * (n / (n - 1))
    new = stat._data * (1.0 - momentum) + data * momentum
    stat._data[...] = new.astype(stat._data.dtype, copy=False)
    stat._vc[0] += 1


def _check_stats(op: str, x: Any, rm: Any, rv: Any, c: int) -> None:
    for name, s in (("running_mean", rm), ("running_var", rv)):
        if s is not None:
            _check_param(op, name, s, x, (c,))
            if s.requires_grad:
                raise ValueError(f"{op}: {name} must not require grad (it is updated in place)")


def batch_norm(
    input: Any,
    running_mean: Any,
    running_var: Any,
    weight: Any = None,
    bias: Any = None,
    training: bool = False,
    momentum: float = 0.1,
    eps: float = 1e-5,
) -> Any:
    """Batch normalization of (N, C, *) per channel, as ``torch.nn.functional.batch_norm``.

    In training, normalizes with the batch's statistics and, when given, updates
    ``running_mean``/``running_var`` in place with ``momentum`` (the running variance
    uses the unbiased batch variance). Otherwise normalizes with the running statistics.

    Example::

        rm, rv = ax.zeros(3), ax.ones(3)
        y = batch_norm(ax.randn(8, 3, 4, 4), rm, rv, training=True)  # rm, rv updated
    """
    op = "batch_norm"
    _check_input(op, input)
    if input.ndim < 2:
        raise ShapeError(f"{op}: expected an input of shape (N, C, *), got {tuple(input.shape)}")
    c = input.shape[1]
    _check_param(op, "weight", weight, input, (c,))
    _check_param(op, "bias", bias, input, (c,))
    _check_stats(op, input, running_mean, running_var, c)
    count = input._data.size // max(c, 1)
    if training:
        if count <= 1:
            raise ValueError(
                f"{op}: expected more than 1 value per channel when training, got input of shape {tuple(input.shape)}"
            )
    elif running_mean is None or running_var is None:
        raise ValueError(f"{op}: running_mean and running_var are required when training=False")
    y, bm, bv = BatchNormFn.apply(input, weight, bias, running_mean, running_var, bool(training), float(eps))
    if training:
        _update_running(running_mean, bm, momentum, count, False)
        _update_running(running_var, bv, momentum, count, True)
    return y


def instance_norm(
    input: Any,
    running_mean: Any = None,
    running_var: Any = None,
    weight: Any = None,
    bias: Any = None,
    use_input_stats: bool = True,
    momentum: float = 0.1,
    eps: float = 1e-5,
) -> Any:
    """Instance normalization: each (sample, channel) plane of (N, C, *) normalized over
    its spatial positions, as ``torch.nn.functional.instance_norm``. Running statistics,
    when given, are updated with the per-instance statistics averaged over the batch.

    Example::

        y = instance_norm(ax.randn(2, 3, 8, 8))
    """
    op = "instance_norm"
    _check_input(op, input)
    if input.ndim < 3:
        raise ShapeError(f"{op}: expected an input of shape (N, C, *spatial), got {tuple(input.shape)}")
    n, c = input.shape[:2]
    _check_param(op, "weight", weight, input, (c,))
    _check_param(op, "bias", bias, input, (c,))
    _check_stats(op, input, running_mean, running_var, c)
    if not use_input_stats:
        if running_mean is None or running_var is None:
            raise ValueError(f"{op}: running_mean and running_var are required when use_input_stats=False")
        return BatchNormFn.apply(input, weight, bias, running_mean, running_var, False, float(eps))[0]
    spatial = input._data.size // max(n * c, 1)
    if spatial <= 1:
        raise ValueError(f"{op}: expected more than 1 spatial element when training, got input of shape {tuple(input.shape)}")
    y = GroupNormFn.apply(input, weight, bias, c, float(eps))
    if running_mean is not None or running_var is not None:
        xp = input._device.xp
        x3 = input._data.reshape(n, c, -1).astype(_acc(input._data.dtype), copy=False)
        for stat, val in ((running_mean, x3.mean(axis=2).mean(axis=0)), (running_var, x3.var(axis=2, ddof=1).mean(axis=0))):
            if stat is not None:
                stat._data[...] = (stat._data * (1.0 - momentum) + xp.asarray(val) * momentum).astype(
                    stat._data.dtype, copy=False
                )
                stat._vc[0] += 1
    return y


METHODS: dict = {}

__all__ = ["layer_norm", "rms_norm", "group_norm", "batch_norm", "instance_norm"]
