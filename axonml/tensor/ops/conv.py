"""Convolutions: ``conv1d``, ``conv2d``, ``conv_transpose1d``, ``conv_transpose2d``.

Note on the method (im2col): the kernels live in ``conv_fast.py``: one copy pads and
transposes the input into a (C, N, Hp, Wp) buffer, one copy of a strided view lays the
windows out as columns (groups, C/groups * kh * kw, N * OH * Wc), and one batched matmul
with the weight (groups, O/groups, C/groups * kh * kw) gives every output pixel. Backward
uses the same pieces: the weight gradient is one matmul of the output gradient with the
columns (rebuilt, so only the input and the weight are saved, as in PyTorch); the input
gradient is one matmul to column gradients, then ``col2im`` adds them back into the
padded buffer with one in-place strided add per kernel offset (kh * kw iterations, never
a loop over pixels). A transposed convolution is the input gradient of a convolution,
so ``conv_transpose*`` reuses the same three kernels with the roles swapped.

Note on 1-d: ``conv1d`` runs as ``conv2d`` on (N, C, 1, L); one implementation serves
both. Average pooling (``pool.py``) and ``fold``/``unfold`` share ``_windows`` and ``_col2im``.

Note on precision: float16/bfloat16 are computed in float32 and cast back (PyTorch
accumulates in float32 too). Under autocast, conv inputs are cast to the autocast
dtype first, like matmul; float64 inputs are left alone, as in PyTorch.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ...autograd.autocast import lower_dtype
from ...autograd.function import Function
from ...autograd.variable import TensorBase
from ...errors import DTypeError, ShapeError
from .conv_fast import (
    Geometry,
    _out_size,  # noqa: F401 - shared with spatial.py
    conv_forward,
    conv_input_grad,
    conv_weight_grad,
    grad_rows,
    is_1x1,
)
from .core import reshape

_F32 = np.dtype("float32")


# -- shared helpers (also used by pool.py, spatial.py)------------------------------------------
def _tuple(v: Any, n: int, name: str, op: str) -> tuple:
    """An int or a sequence of ``n`` ints as an ``n``-tuple of ints."""
    if isinstance(v, (int, np.integer)):
        return (int(v),) * n
    try:
        t = tuple(int(i) for i in v)
    except TypeError:
        raise TypeError(f"{op}: {name} must be an int or a tuple of {n} ints, got {v!r}") from None
    if len(t) == 1:
        t = t * n
    if len(t) != n:
        raise ValueError(f"{op}: {name} must be an int or a tuple of {n} ints, got {v!r}")
    return t


def _acc(dtype: Any) -> Any:
    """The dtype to compute in: float32 for the 2-byte floats, else the dtype itself."""
    return _F32 if dtype.itemsize == 2 and dtype.kind in "fV" else dtype


def _pad2(xp: Any, x: Any, pad: tuple, value: float = 0.0) -> Any:
    """Pad the last two dims of ``x`` by ``pad = ((top, bottom), (left, right))``."""
    if not any(pad[0]) and not any(pad[1]):
        return x
    return xp.pad(x, ((0, 0), (0, 0), pad[0], pad[1]), mode="constant", constant_values=value)


def _windows(xp: Any, x: Any, out_hw: tuple, k: tuple, s: tuple, d: tuple) -> Any:
    """A strided view (N, C, OH, OW, kh, kw) of the windows of ``x`` (N, C, H, W)."""
    n, c = x.shape[:2]
    sn, sc, sh, sw = x.strides
    shape = (n, c, out_hw[0], out_hw[1], k[0], k[1])
    strides = (sn, sc, sh * s[0], sw * s[1], sh * d[0], sw * d[1])
    return xp.lib.stride_tricks.as_strided(x, shape=shape, strides=strides)


def _col2im(xp: Any, cols: Any, shape: tuple, s: tuple, d: tuple) -> Any:
    """Sum window values back into an array of ``shape`` (N, C, Hp, Wp).

    ``cols`` is (kh, kw, N, C, OH, OW): the value each window position contributes.
    """
    kh, kw, _, _, oh, ow = cols.shape
    out = xp.zeros(shape, dtype=cols.dtype)
    for i in range(kh):
        r0 = i * d[0]
        rows = slice(r0, r0 + s[0] * (oh - 1) + 1, s[0])
        for j in range(kw):
            c0 = j * d[1]
            view = out[:, :, rows, c0 : c0 + s[1] * (ow - 1) + 1 : s[1]]
            view += cols[i, j]  # in place into the view (``out[...] += v`` would copy it back too)
    return out


def _bias_grad(g: Any, rows: Any) -> Any:
    """Sum of the output gradient over (N, OH, OW); from ``rows`` (O, N*OH*Wc, junk zero) when given."""
    if rows is not None:
        return rows.reshape(g.shape[1], -1).sum(axis=1).astype(g.dtype, copy=False)
    return g.sum(axis=(0, 2, 3), dtype=_acc(g.dtype)).astype(g.dtype, copy=False)


# The weight gradient rebuilds the column matrix from the saved input rather than keeping
# the forward's, as PyTorch saves only the input: rebuilding costs one copy (0.15-0.3 ms
# for the benchmark CNN's convs), while keeping it holds kh*kw times the input from forward
# to backward in a fresh array per call, which measured slower overall (the extra ~9 MB
# made glibc return heap pages to the OS and fault them back in every step: ~1300 page
# faults, 2-3 ms), besides the memory.


class Conv2dFn(Function):
    """2-d convolution of x (N, C, H, W) with w (O, C/groups, kh, kw) and optional bias (O,)."""

    @staticmethod
    def forward(ctx, x, w, b, stride, pad, dil, groups):
        xp = ctx.xp
        ctx.save_for_backward(x, w)
        geo = Geometry(x.shape, w.shape[2:], stride, pad, dil)
        ctx.conf = (geo, groups)
        y = conv_forward(xp, x, w, b, geo, groups, _acc(x.dtype))
        return y.astype(x.dtype, copy=False)

    @staticmethod
    def backward(ctx, g):
        x, w = ctx.saved_tensors
        xp = ctx.xp
        geo, groups = ctx.conf
        need = ctx.needs_input_grad
        acc = _acc(x.dtype)
        rows = None if is_1x1(w.shape, geo, groups) else grad_rows(xp, g, geo, groups, acc)
        gx = gw = None
        if need[0]:
            gx = conv_input_grad(xp, g, w, geo, groups, acc, rows).astype(x.dtype, copy=False)
        if need[1]:
            gw = conv_weight_grad(xp, x, g, w.shape, geo, groups, acc, rows).astype(w.dtype, copy=False)
        gb = _bias_grad(g, rows) if need[2] else None
        return gx, gw, gb, None, None, None, None


class ConvTranspose2dFn(Function):
    """Transposed 2-d convolution: x (N, Cin, H, W), w (Cin, Cout/groups, kh, kw) gives
    (N, Cout, H_out, W_out) with H_out given in ``out_hw`` (output_padding included).
    It is the input gradient of the convolution of an (N, Cout, H_out, W_out) input with w,
    whose output (capped at x's size: output_padding can add a window) has x's shape."""

    @staticmethod
    def forward(ctx, x, w, b, stride, pad, dil, groups, out_hw):
        xp = ctx.xp
        ctx.save_for_backward(x, w)
        geo = Geometry((x.shape[0], w.shape[1] * groups, *out_hw), w.shape[2:], stride, pad, dil, x.shape[2:])
        ctx.conf = (geo, groups)
        acc = _acc(x.dtype)
        out = conv_input_grad(xp, x, w, geo, groups, acc)
        if b is not None:
            out += b.astype(acc, copy=False)[:, None, None]
        return out.astype(x.dtype, copy=False)

    @staticmethod
    def backward(ctx, g):
        x, w = ctx.saved_tensors
        xp = ctx.xp
        geo, groups = ctx.conf
        need = ctx.needs_input_grad
        acc = _acc(x.dtype)
        gx = gw = None
        if need[0]:
            gx = conv_forward(xp, g, w, None, geo, groups, acc).astype(x.dtype, copy=False)
        if need[1]:
            # roles swapped: the transposed output is the conv input, x is the conv output gradient
            gw = conv_weight_grad(xp, g, x, w.shape, geo, groups, acc).astype(w.dtype, copy=False)
        gb = _bias_grad(g, None) if need[2] else None
        return gx, gw, gb, None, None, None, None, None


# -- validation and the public functions --------------------------------------------------
def _prepare(op: str, nd: int, x: Any, w: Any, b: Any) -> tuple:
    """Check types and dims, apply autocast and dtype rules; returns (x, w, b, batched)."""
    for name, t in (("input", x), ("weight", w)):
        if not isinstance(t, TensorBase):
            raise TypeError(f"{op}: {name} must be a Tensor, got {type(t).__name__}")
    if b is not None and not isinstance(b, TensorBase):
        raise TypeError(f"{op}: bias must be a Tensor or None, got {type(b).__name__}")
    if x.ndim not in (nd + 1, nd + 2):
        raise ShapeError(f"{op}: expected a {nd + 1}-D (unbatched) or {nd + 2}-D (batched) input, got shape {tuple(x.shape)}")
    if w.ndim != nd + 2:
        raise ShapeError(f"{op}: expected a {nd + 2}-D weight, got shape {tuple(w.shape)}")
    batched = x.ndim == nd + 2
    if not batched:
        x = reshape(x, (1, *x.shape))
    low = lower_dtype(x._device.type)
    if low is not None and x._dtype.is_floating_point and x._dtype.name != "float64":
        x, w = x.to(low), w.to(low)
        b = None if b is None else b.to(low)
    if not x._dtype.is_floating_point:
        raise DTypeError(f"{op}: expected a floating point input, got {x._dtype}; convert with .float()")
    for name, t in (("weight", w), ("bias", b)):
        if t is not None and t._dtype is not x._dtype:
            raise DTypeError(f"{op}: input dtype {x._dtype} and {name} dtype {t._dtype} differ; convert them to one dtype")
    return x, w, b, batched


def _check_groups_value(op: str, groups: Any) -> int:
    if isinstance(groups, bool) or not isinstance(groups, (int, np.integer)) or groups <= 0:
        raise ValueError(f"{op}: groups must be a positive int, got {groups!r}")
    return int(groups)


def _check_groups(op: str, groups: int, c_in: int, c_out: int, w_shape: tuple, x_shape: tuple, w_cin: int) -> None:
    if c_in % groups or c_out % groups:
        raise ShapeError(
            f"{op}: in_channels ({c_in}) and out_channels ({c_out}) must both be divisible by groups={groups} "
            f"(weight shape {tuple(w_shape)})"
        )
    if w_cin != c_in:
        raise ShapeError(
            f"{op}: input of shape {tuple(x_shape)} has {c_in} channels, but weight of shape {tuple(w_shape)} with "
            f"groups={groups} expects in_channels={w_cin}; check in_channels/groups or the weight"
        )


def _check_positive(op: str, **kw: tuple) -> None:
    for name, v in kw.items():
        if any(i <= 0 for i in v):
            raise ValueError(f"{op}: {name} must be positive, got {v}")


def _check_bias(op: str, b: Any, c_out: int) -> None:
    if b is not None and tuple(b.shape) != (c_out,):
        raise ShapeError(f"{op}: bias must have shape ({c_out},) (out_channels), got {tuple(b.shape)}")


def _conv(op: str, nd: int, x: Any, w: Any, b: Any, stride: Any, padding: Any, dilation: Any, groups: int) -> Any:
    x, w, b, batched = _prepare(op, nd, x, w, b)
    stride, dilation = _tuple(stride, nd, "stride", op), _tuple(dilation, nd, "dilation", op)
    _check_positive(op, stride=stride, dilation=dilation)
    ks = tuple(w.shape[2:])
    c_out = w.shape[0]
    groups = _check_groups_value(op, groups)
    _check_groups(op, groups, x.shape[1], c_out, w.shape, x.shape, w.shape[1] * groups)
    _check_bias(op, b, c_out)
    if isinstance(padding, str):
        if padding == "valid":
            pad = ((0, 0),) * nd
        elif padding == "same":
            if any(s != 1 for s in stride):
                raise ValueError(f"{op}: padding='same' is not supported for strided convolutions (stride={stride})")
            pad = tuple((dl * (k - 1) // 2, dl * (k - 1) - dl * (k - 1) // 2) for k, dl in zip(ks, dilation))
        else:
            raise ValueError(f"{op}: padding must be 'valid', 'same', an int or a tuple of ints, got {padding!r}")
    else:
        p = _tuple(padding, nd, "padding", op)
        if any(i < 0 for i in p):
            raise ValueError(f"{op}: padding must be non-negative, got {p}")
        pad = tuple((i, i) for i in p)
    spatial = tuple(x.shape[2:])
    for size, k, dl, (lo, hi) in zip(spatial, ks, dilation, pad):
        if size + lo + hi < dl * (k - 1) + 1:
            raise ShapeError(
                f"{op}: the padded input size per channel {tuple(s + a + c for s, (a, c) in zip(spatial, pad))} is "
                f"smaller than the (dilated) kernel size {tuple(d * (kk - 1) + 1 for kk, d in zip(ks, dilation))} "
                f"(input shape {tuple(x.shape)}, weight shape {tuple(w.shape)}); pad the input or use a smaller kernel"
            )
    if nd == 1:
        n, c, length = x.shape
        x = reshape(x, (n, c, 1, length))
        w = reshape(w, (w.shape[0], w.shape[1], 1, w.shape[2]))
        stride, dilation, pad = (1, *stride), (1, *dilation), ((0, 0), *pad)
    out = Conv2dFn.apply(x, w, b, stride, pad, dilation, groups)
    if nd == 1:
        out = reshape(out, (out.shape[0], out.shape[1], out.shape[3]))
    return out if batched else reshape(out, tuple(out.shape[1:]))


def conv1d(
    input: Any, weight: Any, bias: Any = None, stride: Any = 1, padding: Any = 0, dilation: Any = 1, groups: int = 1
) -> Any:
    """1-d convolution (cross-correlation), as ``torch.nn.functional.conv1d``.

    Args: input (N, C_in, L) or unbatched (C_in, L); weight (C_out, C_in/groups, k);
    bias (C_out,) or None; stride, padding (int, 'valid' or 'same'), dilation, groups.
    Returns (N, C_out, L_out) (or (C_out, L_out)).

    Example::

        y = conv1d(ax.randn(8, 4, 100), ax.randn(16, 4, 5), padding="same")  # (8, 16, 100)
    """
    return _conv("conv1d", 1, input, weight, bias, stride, padding, dilation, groups)


def conv2d(
    input: Any, weight: Any, bias: Any = None, stride: Any = 1, padding: Any = 0, dilation: Any = 1, groups: int = 1
) -> Any:
    """2-d convolution (cross-correlation), as ``torch.nn.functional.conv2d``.

    Args: input (N, C_in, H, W) or unbatched (C_in, H, W); weight (C_out, C_in/groups, kh, kw);
    bias (C_out,) or None; stride, padding (int, pair, 'valid' or 'same'), dilation (int or
    pair), groups (C_in and C_out divisible by it; groups=C_in is a depthwise conv).
    Returns (N, C_out, H_out, W_out) (or (C_out, H_out, W_out)).

    Example::

        y = conv2d(ax.randn(2, 3, 32, 32), ax.randn(8, 3, 3, 3), stride=2, padding=1)  # (2, 8, 16, 16)
    """
    return _conv("conv2d", 2, input, weight, bias, stride, padding, dilation, groups)


def _conv_transpose(
    op: str, nd: int, x: Any, w: Any, b: Any, stride: Any, padding: Any, output_padding: Any, groups: int, dilation: Any
) -> Any:
    x, w, b, batched = _prepare(op, nd, x, w, b)
    stride, dilation = _tuple(stride, nd, "stride", op), _tuple(dilation, nd, "dilation", op)
    _check_positive(op, stride=stride, dilation=dilation)
    if isinstance(padding, str):
        raise ValueError(f"{op}: padding must be an int or a tuple of ints, got {padding!r}")
    pad, opad = _tuple(padding, nd, "padding", op), _tuple(output_padding, nd, "output_padding", op)
    if any(i < 0 for i in pad + opad):
        raise ValueError(f"{op}: padding and output_padding must be non-negative, got {pad} and {opad}")
    for o, s, d in zip(opad, stride, dilation):
        if o >= s and o >= d:
            raise ValueError(f"{op}: output_padding {opad} must be smaller than either stride {stride} or dilation {dilation}")
    groups = _check_groups_value(op, groups)
    c_in, c_out = w.shape[0], w.shape[1] * groups
    _check_groups(op, groups, x.shape[1], c_out, w.shape, x.shape, c_in)
    _check_bias(op, b, c_out)
    ks = tuple(w.shape[2:])
    out_sz = tuple(
        (i - 1) * s - 2 * p + d * (k - 1) + o + 1 for i, s, p, d, k, o in zip(x.shape[2:], stride, pad, dilation, ks, opad)
    )
    if any(i <= 0 for i in out_sz):
        raise ShapeError(
            f"{op}: input of shape {tuple(x.shape)} with weight {tuple(w.shape)} gives a non-positive output size {out_sz}"
        )
    pad = tuple((p, p) for p in pad)
    if nd == 1:
        n, c, length = x.shape
        x = reshape(x, (n, c, 1, length))
        w = reshape(w, (w.shape[0], w.shape[1], 1, w.shape[2]))
        stride, dilation, pad, out_sz = (1, *stride), (1, *dilation), ((0, 0), *pad), (1, *out_sz)
    out = ConvTranspose2dFn.apply(x, w, b, stride, pad, dilation, groups, out_sz)
    if nd == 1:
        out = reshape(out, (out.shape[0], out.shape[1], out.shape[3]))
    return out if batched else reshape(out, tuple(out.shape[1:]))


def conv_transpose1d(
    input: Any,
    weight: Any,
    bias: Any = None,
    stride: Any = 1,
    padding: Any = 0,
    output_padding: Any = 0,
    groups: int = 1,
    dilation: Any = 1,
) -> Any:
    """1-d transposed convolution, as ``torch.nn.functional.conv_transpose1d``.

    weight is (C_in, C_out/groups, k); L_out = (L-1)*stride - 2*padding + dilation*(k-1) + output_padding + 1.

    Example::

        y = conv_transpose1d(ax.randn(2, 4, 10), ax.randn(4, 3, 3), stride=2)  # (2, 3, 21)
    """
    return _conv_transpose("conv_transpose1d", 1, input, weight, bias, stride, padding, output_padding, groups, dilation)


def conv_transpose2d(
    input: Any,
    weight: Any,
    bias: Any = None,
    stride: Any = 1,
    padding: Any = 0,
    output_padding: Any = 0,
    groups: int = 1,
    dilation: Any = 1,
) -> Any:
    """2-d transposed convolution ("deconvolution"), as ``torch.nn.functional.conv_transpose2d``.

    weight is (C_in, C_out/groups, kh, kw); note the argument order (groups before dilation),
    which follows PyTorch.

    Example::

        y = conv_transpose2d(ax.randn(2, 8, 16, 16), ax.randn(8, 3, 4, 4), stride=2, padding=1)  # (2, 3, 32, 32)
    """
    return _conv_transpose("conv_transpose2d", 2, input, weight, bias, stride, padding, output_padding, groups, dilation)


METHODS: dict = {}

__all__ = ["conv1d", "conv2d", "conv_transpose1d", "conv_transpose2d"]
