"""Pooling: ``max_pool1d/2d``, ``avg_pool1d/2d``, ``adaptive_avg_pool1d/2d``,
``adaptive_max_pool1d/2d``.

Note on the method: max pooling (``pool_max.py``) takes one ``maximum`` per kernel row,
then one per kernel column, over strided views of the input, and its backward finds the
element each output took by comparing the input with the output. Average pooling views
the padded input through the strided window view of ``conv.py`` (N, C, OH, OW, kh, kw)
and sums over the last two axes; its backward adds a constant per window back with
``_col2im`` (one strided slice per kernel offset). ``ceil_mode`` windows may run past the
right edge (zeros that the divisor does not count for average). Adaptive average pooling
is separable: it is ``A_h @ x @ A_w^T`` with averaging matrices, two matmuls forward and
backward (``SeparableFn``, which ``interpolate`` also uses with interpolation matrices).
Adaptive max pooling loops over output cells (their count is small: the output size).

Note on 1-d: the 1-d pools run as 2-d pools on (N, C, 1, L); max-pool indices index the
flattened spatial dims of the input, as in PyTorch.
"""

from __future__ import annotations

from functools import partial
from typing import Any

from ...autograd.function import Function
from ...autograd.variable import TensorBase
from ...errors import DTypeError, ShapeError
from .conv import _acc, _col2im, _pad2, _tuple, _windows
from .core import reshape
from .pool_max import MaxPool2dFn


def _pool_out(op: str, size: int, k: int, p: int, s: int, d: int, ceil_mode: bool) -> int:
    """PyTorch's pooling output size (the last window must start inside input or left pad)."""
    span = size + 2 * p - d * (k - 1) - 1
    out = (span + (s - 1 if ceil_mode else 0)) // s + 1
    if ceil_mode and (out - 1) * s >= size + p:
        out -= 1
    return out


def _right_pads(size: tuple, out: tuple, k: tuple, s: tuple, d: tuple, p: tuple) -> tuple:
    """((top, bottom), (left, right)) so that every window fits inside the padded input."""
    res = []
    for n, o, kk, ss, dd, pp in zip(size, out, k, s, d, p):
        need = (o - 1) * ss + dd * (kk - 1) + 1
        res.append((pp, max(need - n - pp, 0)))
    return tuple(res)


def _divisors(xp: Any, size: int, out: int, k: int, s: int, p: int, include_pad: bool) -> Any:
    """Per output position along one dim: the window length PyTorch divides by."""
    start = xp.arange(out) * s - p  # in input coordinates
    end = xp.minimum(start + k, size + p)
    if include_pad:
        return end - start
    return xp.minimum(end, size) - xp.maximum(start, 0)


class AvgPool2dFn(Function):
    """Average over windows of x (N, C, H, W) (no dilation, as in PyTorch)."""

    @staticmethod
    def forward(ctx, x, k, s, p, out_hw, count_include_pad, divisor_override):
        xp = ctx.xp
        h, w = x.shape[2:]
        acc = _acc(x.dtype)
        one = (1, 1)
        pads = _right_pads((h, w), out_hw, k, s, one, p)
        win = _windows(xp, _pad2(xp, x.astype(acc, copy=False), pads), out_hw, k, s, one)
        if divisor_override:
            div = xp.asarray(float(divisor_override), dtype=acc)
        else:
            dh = _divisors(xp, h, out_hw[0], k[0], s[0], p[0], count_include_pad)
            dw = _divisors(xp, w, out_hw[1], k[1], s[1], p[1], count_include_pad)
            div = (dh[:, None] * dw[None, :]).astype(acc)
        ctx.div = div
        ctx.conf = (x.shape, k, s, pads)
        return (win.sum(axis=(-2, -1)) / div).astype(x.dtype, copy=False)

    @staticmethod
    def backward(ctx, g):
        xp = ctx.xp
        (n, c, h, w), k, s, pads = ctx.conf
        gd = g.astype(_acc(g.dtype)) / ctx.div
        dcols = xp.broadcast_to(gd, (k[0], k[1], *gd.shape))
        dx = _col2im(xp, dcols, (n, c, h + sum(pads[0]), w + sum(pads[1])), s, (1, 1))
        (pt, _), (pl, _) = pads
        return dx[:, :, pt : pt + h, pl : pl + w].astype(g.dtype), None, None, None, None, None, None


def _avg_matrix(xp: Any, dtype: Any, size: int, out: int) -> Any:
    """(out, size): row i averages input positions floor(i*size/out) .. ceil((i+1)*size/out)-1."""
    i = xp.arange(out)
    start = (i * size) // out
    end = ((i + 1) * size + out - 1) // out
    pos = xp.arange(size)
    inside = (pos[None, :] >= start[:, None]) & (pos[None, :] < end[:, None])
    return (inside / (end - start)[:, None]).astype(dtype)


class SeparableFn(Function):
    """``y = A_h @ x @ A_w^T`` for x (N, C, H, W), with A_h (OH, H) and A_w (OW, W) made by
    ``rows(xp, dtype)`` and ``cols(xp, dtype)``: adaptive average pooling and the linear
    and nearest interpolations are all of this form."""

    @staticmethod
    def forward(ctx, x, rows, cols):
        xp = ctx.xp
        acc = _acc(x.dtype)
        ah, aw = rows(xp, acc), cols(xp, acc)
        ctx.mats = (ah, aw)
        y = xp.matmul(ah, xp.matmul(x.astype(acc, copy=False), aw.T))  # (N, C, OH, OW)
        return y.astype(x.dtype, copy=False)

    @staticmethod
    def backward(ctx, g):
        xp = ctx.xp
        ah, aw = ctx.mats
        return xp.matmul(ah.T, xp.matmul(g.astype(ah.dtype, copy=False), aw)).astype(g.dtype, copy=False), None, None


def _bounds(size: int, out: int) -> list:
    return [((i * size) // out, -((-(i + 1) * size) // out)) for i in range(out)]


class AdaptiveMaxPool2dFn(Function):
    @staticmethod
    def forward(ctx, x, out_hw):
        xp = ctx.xp
        n, c, h, w = x.shape
        out = xp.empty((n, c, *out_hw), dtype=x.dtype)
        idx = xp.empty((n, c, *out_hw), dtype="int64")
        for i, (h0, h1) in enumerate(_bounds(h, out_hw[0])):
            for j, (w0, w1) in enumerate(_bounds(w, out_hw[1])):
                region = x[:, :, h0:h1, w0:w1].reshape(n, c, -1)
                am = region.argmax(axis=-1)
                out[:, :, i, j] = xp.take_along_axis(region, am[..., None], axis=-1)[..., 0]
                idx[:, :, i, j] = (h0 + am // (w1 - w0)) * w + w0 + am % (w1 - w0)
        ctx.idx = idx
        ctx.shape = x.shape
        ctx.mark_non_differentiable(idx)
        return out, idx

    @staticmethod
    def backward(ctx, g, _gi):
        xp = ctx.xp
        n, c, h, w = ctx.shape
        acc = _acc(g.dtype)
        flat = ctx.idx.reshape(n * c, -1)
        dx = xp.zeros((n * c, h * w), dtype=acc)
        rows = xp.arange(n * c)[:, None]
        xp.add.at(dx, (xp.broadcast_to(rows, flat.shape), flat), g.reshape(n * c, -1).astype(acc))
        return dx.reshape(n, c, h, w).astype(g.dtype), None


# -- public functions ----------------------------------------------------------------------
def _prep(op: str, nd: int, x: Any) -> tuple:
    """(x as (N, C, H, W), original shape) after type and dim checks."""
    if not isinstance(x, TensorBase):
        raise TypeError(f"{op}: input must be a Tensor, got {type(x).__name__}")
    if x.ndim not in (nd + 1, nd + 2):
        raise ShapeError(f"{op}: expected a {nd + 1}-D (unbatched) or {nd + 2}-D (batched) input, got shape {tuple(x.shape)}")
    if not x._dtype.is_floating_point:
        raise DTypeError(f"{op}: expected a floating point input, got {x._dtype}; convert with .float()")
    shape = tuple(x.shape)
    lead = (1,) * (nd + 2 - x.ndim)
    x4 = reshape(x, (*lead, *shape[:-nd], *((1,) if nd == 1 else ()), *shape[-nd:]))
    return x4, shape


def _finish(y: Any, shape: tuple, nd: int) -> Any:
    """Back from (N, C, OH, OW) to the caller's layout (1-d, unbatched)."""
    out_sp = tuple(y.shape[-nd:])
    return reshape(y, (*shape[:-nd], *out_sp))


def _pool_args(op: str, nd: int, kernel_size: Any, stride: Any, padding: Any, dilation: Any) -> tuple:
    k = _tuple(kernel_size, nd, "kernel_size", op)
    s = k if stride is None or (not isinstance(stride, int) and len(stride) == 0) else _tuple(stride, nd, "stride", op)
    p = _tuple(padding, nd, "padding", op)
    d = _tuple(dilation, nd, "dilation", op)
    for name, v in (("kernel_size", k), ("stride", s), ("dilation", d)):
        if any(i <= 0 for i in v):
            raise ValueError(f"{op}: {name} must be positive, got {v}")
    if any(i < 0 for i in p):
        raise ValueError(f"{op}: padding must be non-negative, got {p}")
    if nd == 1:
        k, s, p, d = (1, *k), (1, *s), (0, *p), (1, *d)
    return k, s, p, d


def _out_hw(op: str, x4: Any, k: tuple, s: tuple, p: tuple, d: tuple, ceil_mode: bool, max_pool: bool) -> tuple:
    for kk, pp, dd in zip(k, p, d):
        eff = dd * (kk - 1) + 1 if max_pool else kk
        if pp * 2 > eff:
            raise ValueError(
                f"{op}: padding {pp} should be at most half of the {'effective ' if max_pool else ''}kernel size {eff}"
            )
    out = tuple(_pool_out(op, n, kk, pp, ss, dd, ceil_mode) for n, kk, pp, ss, dd in zip(x4.shape[2:], k, p, s, d))
    if any(o <= 0 for o in out) or x4.shape[1] == 0:
        raise ShapeError(
            f"{op}: input of shape {tuple(x4.shape)} (as N, C, H, W) with kernel {k}, stride {s}, padding {p}, "
            f"dilation {d} gives output size {out}, which is too small; use a smaller kernel or more padding"
        )
    return out


def _max_pool(
    op: str, nd: int, x: Any, kernel_size: Any, stride: Any, padding: Any, dilation: Any, ceil_mode: bool, return_indices: bool
) -> Any:
    x4, shape = _prep(op, nd, x)
    k, s, p, d = _pool_args(op, nd, kernel_size, stride, padding, dilation)
    out_hw = _out_hw(op, x4, k, s, p, d, ceil_mode, True)
    y, idx = MaxPool2dFn.apply(x4, k, s, p, d, out_hw, bool(return_indices))
    y = _finish(y, shape, nd)
    return (y, _finish(idx, shape, nd)) if return_indices else y


def max_pool1d(
    input: Any,
    kernel_size: Any,
    stride: Any = None,
    padding: Any = 0,
    dilation: Any = 1,
    ceil_mode: bool = False,
    return_indices: bool = False,
) -> Any:
    """1-d max pooling over (N, C, L) or (C, L), as ``torch.nn.functional.max_pool1d``.

    ``stride`` defaults to ``kernel_size``; padding is implicit -inf. With
    ``return_indices`` also returns the int64 positions of the maxima along L.

    Example::

        y = max_pool1d(ax.randn(2, 3, 10), 2)  # (2, 3, 5)
    """
    return _max_pool("max_pool1d", 1, input, kernel_size, stride, padding, dilation, ceil_mode, return_indices)


def max_pool2d(
    input: Any,
    kernel_size: Any,
    stride: Any = None,
    padding: Any = 0,
    dilation: Any = 1,
    ceil_mode: bool = False,
    return_indices: bool = False,
) -> Any:
    """2-d max pooling over (N, C, H, W) or (C, H, W), as ``torch.nn.functional.max_pool2d``.

    With ``return_indices`` also returns int64 indices into each flattened H*W plane.

    Example::

        y = max_pool2d(ax.randn(2, 3, 8, 8), 3, stride=2, padding=1)  # (2, 3, 4, 4)
    """
    return _max_pool("max_pool2d", 2, input, kernel_size, stride, padding, dilation, ceil_mode, return_indices)


def _avg_pool(
    op: str,
    nd: int,
    x: Any,
    kernel_size: Any,
    stride: Any,
    padding: Any,
    ceil_mode: bool,
    count_include_pad: bool,
    divisor_override: Any,
) -> Any:
    x4, shape = _prep(op, nd, x)
    k, s, p, d = _pool_args(op, nd, kernel_size, stride, padding, 1)
    if divisor_override is not None and divisor_override == 0:
        raise ValueError(f"{op}: divisor_override must be non-zero")
    out_hw = _out_hw(op, x4, k, s, p, d, ceil_mode, False)
    y = AvgPool2dFn.apply(x4, k, s, p, out_hw, bool(count_include_pad), divisor_override)
    return _finish(y, shape, nd)


def avg_pool1d(
    input: Any, kernel_size: Any, stride: Any = None, padding: Any = 0, ceil_mode: bool = False, count_include_pad: bool = True
) -> Any:
    """1-d average pooling, as ``torch.nn.functional.avg_pool1d``.

    Example::

        y = avg_pool1d(ax.randn(2, 3, 10), 3, stride=2, padding=1)  # (2, 3, 5)
    """
    return _avg_pool("avg_pool1d", 1, input, kernel_size, stride, padding, ceil_mode, count_include_pad, None)


def avg_pool2d(
    input: Any,
    kernel_size: Any,
    stride: Any = None,
    padding: Any = 0,
    ceil_mode: bool = False,
    count_include_pad: bool = True,
    divisor_override: Any = None,
) -> Any:
    """2-d average pooling, as ``torch.nn.functional.avg_pool2d``.

    ``count_include_pad`` counts the zero padding in the divisor; ``divisor_override``
    replaces the divisor altogether.

    Example::

        y = avg_pool2d(ax.randn(2, 3, 8, 8), 2)  # (2, 3, 4, 4)
    """
    return _avg_pool("avg_pool2d", 2, input, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override)


def _adaptive_size(op: str, nd: int, output_size: Any, x4: Any) -> tuple:
    if nd == 2 and not isinstance(output_size, int):
        output_size = tuple(x4.shape[2 + i] if o is None else o for i, o in enumerate(output_size))
    out = _tuple(output_size, nd, "output_size", op)
    if any(o <= 0 for o in out):
        raise ValueError(f"{op}: output_size must be positive, got {out}")
    if any(n == 0 for n in x4.shape[2:]):
        raise ShapeError(f"{op}: input of shape {tuple(x4.shape)} has an empty spatial dim")
    return (1, *out) if nd == 1 else out


def _adaptive(op: str, nd: int, fn: Any, x: Any, output_size: Any) -> Any:
    x4, shape = _prep(op, nd, x)
    (oh, ow), (h, w) = _adaptive_size(op, nd, output_size, x4), x4.shape[2:]
    if fn is SeparableFn:
        return SeparableFn.apply(x4, partial(_avg_matrix, size=h, out=oh), partial(_avg_matrix, size=w, out=ow)), shape
    return fn.apply(x4, (oh, ow)), shape


def adaptive_avg_pool1d(input: Any, output_size: Any) -> Any:
    """Average pooling to a fixed length, as ``torch.nn.functional.adaptive_avg_pool1d``.

    Example::

        y = adaptive_avg_pool1d(ax.randn(2, 3, 10), 4)  # (2, 3, 4)
    """
    y, shape = _adaptive("adaptive_avg_pool1d", 1, SeparableFn, input, output_size)
    return _finish(y, shape, 1)


def adaptive_avg_pool2d(input: Any, output_size: Any) -> Any:
    """Average pooling to a fixed (H, W) (None keeps a dim), as ``torch.nn.functional.adaptive_avg_pool2d``.

    Example::

        y = adaptive_avg_pool2d(ax.randn(2, 3, 7, 9), 1)  # (2, 3, 1, 1): global average pool
    """
    y, shape = _adaptive("adaptive_avg_pool2d", 2, SeparableFn, input, output_size)
    return _finish(y, shape, 2)


def adaptive_max_pool1d(input: Any, output_size: Any, return_indices: bool = False) -> Any:
    """Max pooling to a fixed length, as ``torch.nn.functional.adaptive_max_pool1d``.

    Example::

        y = adaptive_max_pool1d(ax.randn(2, 3, 10), 4)  # (2, 3, 4)
    """
    (y, idx), shape = _adaptive("adaptive_max_pool1d", 1, AdaptiveMaxPool2dFn, input, output_size)
    y, idx = _finish(y, shape, 1), _finish(idx, shape, 1)
    return (y, idx) if return_indices else y


def adaptive_max_pool2d(input: Any, output_size: Any, return_indices: bool = False) -> Any:
    """Max pooling to a fixed (H, W), as ``torch.nn.functional.adaptive_max_pool2d``.

    Example::

        y = adaptive_max_pool2d(ax.randn(2, 3, 7, 9), (2, 3))  # (2, 3, 2, 3)
    """
    (y, idx), shape = _adaptive("adaptive_max_pool2d", 2, AdaptiveMaxPool2dFn, input, output_size)
    y, idx = _finish(y, shape, 2), _finish(idx, shape, 2)
    return (y, idx) if return_indices else y


METHODS: dict = {}

__all__ = [
    "max_pool1d",
    "max_pool2d",
    "avg_pool1d",
    "avg_pool2d",
    "adaptive_avg_pool1d",
    "adaptive_avg_pool2d",
    "adaptive_max_pool1d",
    "adaptive_max_pool2d",
]
