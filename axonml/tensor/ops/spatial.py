"""Spatial resampling and rearrangement: ``interpolate`` (nearest, nearest-exact, linear,
bilinear, area), ``pixel_shuffle``/``pixel_unshuffle`` and ``unfold``/``fold``.

Note on ``interpolate``: nearest and (bi)linear resampling are separable, so each is
``A_h @ x @ A_w^T`` with a small (out, in) interpolation matrix per spatial dim, run by
``pool.SeparableFn`` (two matmuls forward and backward). Source positions follow
PyTorch's formulas, computed in the same precision (float32 for float32 and lower).

Note on ``unfold``/``fold``: they are conv.py's im2col and col2im exposed (a strided
window view copied to columns; a sum back over kh*kw strided slices), each the other's
gradient. ``pixel_shuffle`` is a reshape/permute/reshape of core views.
"""

from __future__ import annotations

import math
from functools import partial
from typing import Any

from ...autograd.function import Function
from ...autograd.variable import TensorBase
from ...errors import DTypeError, ShapeError
from .conv import _check_positive, _col2im, _out_size, _pad2, _tuple, _windows
from .core import permute, reshape
from .pool import SeparableFn, _finish, _prep, adaptive_avg_pool1d, adaptive_avg_pool2d


# -- interpolate ------------------------------------------------------------------------------
def _interp_matrix(xp: Any, dtype: Any, size: int, out: int, mode: str, align_corners: bool, scale: float | None) -> Any:
    """(out, size) matrix mapping an input line to the resampled line, by PyTorch's rules."""
    dst = xp.arange(out, dtype=dtype)
    if align_corners:
        step = (size - 1) / (out - 1) if out > 1 else 0.0
    else:
        step = 1.0 / scale if scale is not None and scale > 0 else size / out
    step = xp.asarray(step, dtype=dtype)
    pos = xp.arange(size)[None, :]
    if mode in ("nearest", "nearest-exact"):
        src = xp.floor((dst + 0.5) * step if mode == "nearest-exact" else dst * step).astype("int64")
        src = xp.minimum(src, size - 1)
        return (pos == src[:, None]).astype(dtype)
    src = dst * step if align_corners else xp.maximum((dst + 0.5) * step - 0.5, 0)
    i0 = xp.floor(src).astype("int64")
    i1 = xp.minimum(i0 + 1, size - 1)
    lam = (src - i0).astype(dtype)[:, None]
    return ((pos == i0[:, None]) * (1 - lam) + (pos == i1[:, None]) * lam).astype(dtype)


_INTERP_DIMS = {"nearest": (1, 2), "nearest-exact": (1, 2), "area": (1, 2), "linear": (1,), "bilinear": (2,)}


def interpolate(
    input: Any,
    size: Any = None,
    scale_factor: Any = None,
    mode: str = "nearest",
    align_corners: bool | None = None,
    recompute_scale_factor: bool | None = None,
    antialias: bool = False,
) -> Any:
    """Resample (N, C, L) or (N, C, H, W) to ``size`` or by ``scale_factor``, as
    ``torch.nn.functional.interpolate``.

    Modes: 'nearest', 'nearest-exact', 'area' (adaptive average), 'linear' (3-D input),
    'bilinear' (4-D input) with ``align_corners``. With ``scale_factor`` the output size is
    ``floor(in * scale_factor)`` and the source positions use ``1/scale_factor`` unless
    ``recompute_scale_factor=True``.

    Example::

        y = interpolate(ax.randn(1, 3, 8, 8), scale_factor=2, mode="bilinear")  # (1, 3, 16, 16)
    """
    op = "interpolate"
    if not isinstance(input, TensorBase):
        raise TypeError(f"{op}: input must be a Tensor, got {type(input).__name__}")
    if mode not in _INTERP_DIMS:
        raise NotImplementedError(f"{op}: mode {mode!r} is not supported; use one of {sorted(_INTERP_DIMS)}")
    nd = input.ndim - 2
    if nd not in _INTERP_DIMS[mode]:
        raise NotImplementedError(
            f"{op}: got a {input.ndim}-D input, but mode {mode!r} needs {[d + 2 for d in _INTERP_DIMS[mode]]}-D input"
        )
    if antialias:
        raise NotImplementedError(f"{op}: antialias=True is not supported")
    linear = mode in ("linear", "bilinear")
    if align_corners is not None and not linear:
        raise ValueError(f"{op}: align_corners can only be set with the interpolating modes linear | bilinear, not {mode!r}")
    if (size is None) == (scale_factor is None):
        raise ValueError(f"{op}: give exactly one of size and scale_factor (got size={size}, scale_factor={scale_factor})")
    spatial = tuple(input.shape[2:])
    scales: tuple = (None,) * nd
    if size is not None:
        out = tuple(int(v) for v in ((size,) * nd if isinstance(size, int) else size))
    else:
        sf = tuple(float(v) for v in ((scale_factor,) * nd if isinstance(scale_factor, (int, float)) else scale_factor))
        out = tuple(math.floor(n * f) for n, f in zip(spatial, sf))
        scales = (None,) * nd if recompute_scale_factor else sf
    if len(out) != nd or any(o <= 0 for o in out):
        raise ValueError(f"{op}: the output size {out} must have {nd} positive entries (input shape {tuple(input.shape)})")
    if mode == "area":
        return (adaptive_avg_pool1d if nd == 1 else adaptive_avg_pool2d)(input, out)
    if not input._dtype.is_floating_point:
        raise DTypeError(f"{op}: expected a floating point input, got {input._dtype}")
    x4, shape = _prep(op, nd, input)
    ac = bool(align_corners)
    hw, ohw, sc = (1, *spatial) if nd == 1 else spatial, (1, *out) if nd == 1 else out, (None, *scales) if nd == 1 else scales
    rows = partial(_interp_matrix, size=hw[0], out=ohw[0], mode=mode, align_corners=ac, scale=sc[0])
    cols = partial(_interp_matrix, size=hw[1], out=ohw[1], mode=mode, align_corners=ac, scale=sc[1])
    return _finish(SeparableFn.apply(x4, rows, cols), shape, nd)


# -- pixel shuffle ------------------------------------------------------------------------------
def pixel_shuffle(input: Any, upscale_factor: int) -> Any:
    """(*, C*r*r, H, W) -> (*, C, H*r, W*r), as ``torch.nn.functional.pixel_shuffle``.

    Example::

        y = pixel_shuffle(ax.randn(1, 8, 3, 3), 2)  # (1, 2, 6, 6)
    """
    r = int(upscale_factor)
    if input.ndim < 3 or r <= 0 or input.shape[-3] % (r * r):
        raise ShapeError(
            f"pixel_shuffle: expected an input of shape (*, C*r*r, H, W) with r=upscale_factor={upscale_factor}, "
            f"got {tuple(input.shape)} (the channel count must be divisible by r*r)"
        )
    *lead, c, h, w = input.shape
    nl = len(lead)
    x = reshape(input, (*lead, c // (r * r), r, r, h, w))  # (*, C, r, r, H, W)
    x = permute(x, (*range(nl), nl, nl + 3, nl + 1, nl + 4, nl + 2))  # (*, C, H, r, W, r)
    return reshape(x, (*lead, c // (r * r), h * r, w * r))


def pixel_unshuffle(input: Any, downscale_factor: int) -> Any:
    """(*, C, H*r, W*r) -> (*, C*r*r, H, W), the inverse of :func:`pixel_shuffle`.

    Example::

        y = pixel_unshuffle(ax.randn(1, 2, 6, 6), 2)  # (1, 8, 3, 3)
    """
    r = int(downscale_factor)
    if input.ndim < 3 or r <= 0 or input.shape[-1] % r or input.shape[-2] % r:
        raise ShapeError(
            f"pixel_unshuffle: expected an input of shape (*, C, H*r, W*r) with r=downscale_factor={downscale_factor}, "
            f"got {tuple(input.shape)}"
        )
    *lead, c, h, w = input.shape
    nl = len(lead)
    x = reshape(input, (*lead, c, h // r, r, w // r, r))  # (*, C, H, r, W, r)
    x = permute(x, (*range(nl), nl, nl + 2, nl + 4, nl + 1, nl + 3))  # (*, C, r, r, H, W)
    return reshape(x, (*lead, c * r * r, h // r, w // r))


# -- unfold / fold (im2col and col2im themselves) ------------------------------------------
def _unfold(xp: Any, x: Any, k: tuple, d: tuple, p: tuple, s: tuple) -> tuple:
    """(N, C, H, W) -> ((N, C*kh*kw, L) blocks, (OH, OW))."""
    n, c = x.shape[:2]
    xpad = _pad2(xp, x, ((p[0], p[0]), (p[1], p[1])))
    ohw = (_out_size(xpad.shape[2], k[0], s[0], d[0]), _out_size(xpad.shape[3], k[1], s[1], d[1]))
    win = _windows(xp, xpad, ohw, k, s, d)  # (N, C, OH, OW, kh, kw)
    return xp.ascontiguousarray(win.transpose(0, 1, 4, 5, 2, 3)).reshape(n, c * k[0] * k[1], ohw[0] * ohw[1]), ohw


class UnfoldFn(Function):
    """(N, C, H, W) -> (N, C*kh*kw, L): every sliding block as a column."""

    @staticmethod
    def forward(ctx, x, k, d, p, s):
        out, ohw = _unfold(ctx.xp, x, k, d, p, s)
        ctx.conf = (x.shape, k, d, p, s, ohw)
        return out

    @staticmethod
    def backward(ctx, g):
        shape, k, d, p, s, ohw = ctx.conf
        return _fold(ctx.xp, g, shape, k, d, p, s, ohw), None, None, None, None


def _fold(xp: Any, cols: Any, shape: tuple, k: tuple, d: tuple, p: tuple, s: tuple, ohw: tuple) -> Any:
    """Sum the blocks of ``cols`` (N, C*kh*kw, L) into (N, C, H, W) = ``shape``."""
    n, c, h, w = shape
    blocks = cols.reshape(n, c, k[0], k[1], *ohw).transpose(2, 3, 0, 1, 4, 5)  # (kh, kw, N, C, OH, OW)
    out = _col2im(xp, blocks, (n, c, h + 2 * p[0], w + 2 * p[1]), s, d)
    return xp.ascontiguousarray(out[:, :, p[0] : p[0] + h, p[1] : p[1] + w])


class FoldFn(Function):
    """(N, C*kh*kw, L) -> (N, C, H, W): blocks summed back into place (the adjoint of unfold)."""

    @staticmethod
    def forward(ctx, cols, shape, k, d, p, s, ohw):
        ctx.conf = (k, d, p, s)
        return _fold(ctx.xp, cols, shape, k, d, p, s, ohw)

    @staticmethod
    def backward(ctx, g):
        return _unfold(ctx.xp, g, *ctx.conf)[0], None, None, None, None, None, None


def _block_args(op: str, kernel_size: Any, dilation: Any, padding: Any, stride: Any) -> tuple:
    k, d = _tuple(kernel_size, 2, "kernel_size", op), _tuple(dilation, 2, "dilation", op)
    p, s = _tuple(padding, 2, "padding", op), _tuple(stride, 2, "stride", op)
    _check_positive(op, kernel_size=k, dilation=d, stride=s)
    if any(i < 0 for i in p):
        raise ValueError(f"{op}: padding must be non-negative, got {p}")
    return k, d, p, s


def unfold(input: Any, kernel_size: Any, dilation: Any = 1, padding: Any = 0, stride: Any = 1) -> Any:
    """Extract sliding blocks (im2col), as ``torch.nn.functional.unfold``: (N, C, H, W) or
    (C, H, W) -> (N, C*kh*kw, L), L the number of block positions.

    Example::

        cols = unfold(ax.randn(2, 3, 5, 5), 3, padding=1)  # (2, 27, 25)
    """
    op = "unfold"
    k, d, p, s = _block_args(op, kernel_size, dilation, padding, stride)
    if not isinstance(input, TensorBase) or input.ndim not in (3, 4):
        raise ShapeError(f"{op}: expected a 3-D (unbatched) or 4-D (batched) Tensor, got {getattr(input, 'shape', input)!r}")
    x = input if input.ndim == 4 else reshape(input, (1, *input.shape))
    for size, kk, dd, pp in zip(x.shape[2:], k, d, p):
        if size + 2 * pp < dd * (kk - 1) + 1:
            raise ShapeError(
                f"{op}: input of shape {tuple(input.shape)} padded by {p} is smaller than the kernel {k} (dilation {d})"
            )
    out = UnfoldFn.apply(x, k, d, p, s)
    return out if input.ndim == 4 else reshape(out, tuple(out.shape[1:]))


def fold(input: Any, output_size: Any, kernel_size: Any, dilation: Any = 1, padding: Any = 0, stride: Any = 1) -> Any:
    """Sum sliding blocks back into an image (col2im), as ``torch.nn.functional.fold``:
    (N, C*kh*kw, L) or (C*kh*kw, L) -> (N, C, *output_size).

    Example::

        x = fold(unfold(img, 2, stride=2), img.shape[-2:], 2, stride=2)  # == img
    """
    op = "fold"
    k, d, p, s = _block_args(op, kernel_size, dilation, padding, stride)
    hw = _tuple(output_size, 2, "output_size", op)
    if not isinstance(input, TensorBase) or input.ndim not in (2, 3):
        raise ShapeError(f"{op}: expected a 2-D (unbatched) or 3-D (batched) Tensor, got {getattr(input, 'shape', input)!r}")
    x = input if input.ndim == 3 else reshape(input, (1, *input.shape))
    ohw = tuple(_out_size(i + 2 * pp, kk, ss, dd) for i, pp, kk, ss, dd in zip(hw, p, k, s, d))
    kk = k[0] * k[1]
    if x.shape[1] % kk or ohw[0] <= 0 or ohw[1] <= 0 or x.shape[2] != ohw[0] * ohw[1]:
        raise ShapeError(
            f"{op}: input of shape {tuple(input.shape)} does not fit output_size {hw} with kernel {k}, dilation {d}, "
            f"padding {p}, stride {s}: expected (N, C*{kk}, {max(ohw[0], 0) * max(ohw[1], 0)})"
        )
    out = FoldFn.apply(x, (x.shape[0], x.shape[1] // kk, *hw), k, d, p, s, ohw)
    return out if input.ndim == 3 else reshape(out, tuple(out.shape[1:]))


METHODS: dict = {}

__all__ = ["interpolate", "pixel_shuffle", "pixel_unshuffle", "unfold", "fold"]
