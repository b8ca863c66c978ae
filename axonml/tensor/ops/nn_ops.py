"""Embedding and padding: ``embedding`` and ``pad`` (constant, reflect, replicate, circular).

Note on ``embedding``: forward gathers rows; backward adds each output row's gradient
into its weight row with ``xp.add.at`` (NumPy and CuPy both have it), so repeated
indices accumulate. Rows at ``padding_idx`` get no gradient. ``max_norm`` renormalizes
the referenced rows of the weight in place before the lookup (as PyTorch, outside
autograd, bumping the weight's version).

Note on ``pad``: PyTorch's pad tuple names the last dimension first:
``(left, right, top, bottom, ...)``. Negative amounts crop; cropping happens first and
the mode then pads the cropped tensor (what PyTorch computes). The non-constant modes
pad one dimension at a time with ``concatenate``; their backward folds the gradient of
the padded borders back onto the rows they copied (reversed for reflect, onto the edge
row for replicate, wrapped for circular). Under CPU autocast, reflect and replicate run
in float32, as PyTorch's CPU autocast lists them.

Normalizations live in ``norm.py``, convolutions in ``conv.py``, pooling in ``pool.py``,
interpolate/pixel_shuffle/unfold/fold in ``spatial.py``.
"""

from __future__ import annotations

from typing import Any

from ...autograd.autocast import upcast_dtype
from ...autograd.function import Function
from ...autograd.variable import TensorBase
from ...errors import DTypeError, ShapeError
from .conv import _acc


# -- embedding ------------------------------------------------------------------------------
class EmbeddingFn(Function):
    """Rows of ``w`` (num, dim) at integer ``idx`` (any shape): (*idx.shape, dim)."""

    @staticmethod
    def forward(ctx, w, idx, padding_idx, scale_grad_by_freq):
        ctx.save_for_backward(idx)
        ctx.conf = (w.shape, w.dtype, padding_idx, scale_grad_by_freq)
        return ctx.xp.take(w, idx, axis=0)

    @staticmethod
    def backward(ctx, g):
        xp = ctx.xp
        (num, dim), dtype, padding_idx, by_freq = ctx.conf
        acc = _acc(g.dtype)
        (idx,) = ctx.saved_tensors
        flat = idx.reshape(-1)
        rows = g.reshape(-1, dim).astype(acc)
        if by_freq:
            counts = xp.bincount(flat, minlength=num)
            rows = rows / counts[flat][:, None].astype(acc)
        gw = xp.zeros((num, dim), dtype=acc)
        xp.add.at(gw, flat, rows)
        if padding_idx is not None:
            gw[padding_idx] = 0
        return gw.astype(dtype, copy=False), None, None, None


def _renorm_rows(weight: Any, idx: Any, max_norm: float, norm_type: float) -> None:
    """Scale the rows of ``weight`` used by ``idx`` whose ``norm_type``-norm exceeds
    ``max_norm`` down to ``max_norm`` (in place, no autograd, as torch.embedding_renorm_)."""
    xp = weight._device.xp
    w = weight._data
    rows = xp.unique(idx.reshape(-1))
    sel = w[rows].astype(_acc(w.dtype))
    norms = (xp.abs(sel) ** norm_type).sum(axis=1) ** (1.0 / norm_type)
    scale = xp.where(norms > max_norm, max_norm / (norms + 1e-7), 1.0)
    w[rows] = (sel * scale[:, None]).astype(w.dtype)
    weight._vc[0] += 1


def embedding(
    input: Any,
    weight: Any,
    padding_idx: int | None = None,
    max_norm: float | None = None,
    norm_type: float = 2.0,
    scale_grad_by_freq: bool = False,
    sparse: bool = False,
) -> Any:
    """Look up rows of ``weight`` (num_embeddings, dim) at the integer ``input``, as
    ``torch.nn.functional.embedding``. Returns (*input.shape, dim).

    ``padding_idx`` rows get no gradient; ``scale_grad_by_freq`` divides each row's
    gradient by how often it occurs in ``input``; ``max_norm`` renormalizes the used rows
    in place. ``sparse=True`` is not supported (gradients are dense).

    Example::

        w = ax.randn(10, 4, requires_grad=True)
        y = embedding(ax.tensor([[1, 2], [1, 9]]), w)  # (2, 2, 4); w.grad row 1 gets two contributions
    """
    op = "embedding"
    if not isinstance(input, TensorBase) or not isinstance(weight, TensorBase):
        raise TypeError(f"{op}: input and weight must be Tensors, got {type(input).__name__} and {type(weight).__name__}")
    if input._dtype.name not in ("int64", "int32"):
        raise DTypeError(f"{op}: indices must be int64 or int32, got {input._dtype}; convert them with .long()")
    if weight.ndim != 2:
        raise ShapeError(f"{op}: weight must be 2-D (num_embeddings, embedding_dim), got shape {tuple(weight.shape)}")
    if sparse:
        raise NotImplementedError(f"{op}: sparse gradients are not supported; use sparse=False (the gradient is dense)")
    num = weight.shape[0]
    if padding_idx is not None:
        if not -num <= padding_idx < num:
            raise ValueError(f"{op}: padding_idx={padding_idx} must be within [-{num}, {num - 1}] (num_embeddings={num})")
        padding_idx = int(padding_idx) % num
    idx = input._data
    if idx.size:
        lo, hi = int(idx.min()), int(idx.max())
        if lo < 0 or hi >= num:
            bad = lo if lo < 0 else hi
            raise IndexError(f"{op}: index {bad} is out of range for {num} embeddings (valid indices are 0..{num - 1})")
    if max_norm is not None:
        _renorm_rows(weight, idx, float(max_norm), float(norm_type))
    return EmbeddingFn.apply(weight, input, padding_idx, bool(scale_grad_by_freq))


# -- pad ------------------------------------------------------------------------------------
def _pad_axis(xp: Any, x: Any, axis: int, lo: int, hi: int, mode: str) -> Any:
    """Pad one axis of ``x`` by (lo, hi) >= 0 with a non-constant ``mode``."""
    if lo == 0 and hi == 0:
        return x
    n = x.shape[axis]

    def sl(a: int | None, b: int | None, step: int | None = None) -> tuple:
        s = [slice(None)] * x.ndim
        s[axis] = slice(a, b, step)
        return tuple(s)

    if mode == "reflect":
        stop = n - 2 - hi
        left, right = x[sl(lo, 0, -1)], x[sl(n - 2, stop if stop >= 0 else None, -1)]
    elif mode == "replicate":
        left = xp.repeat(x[sl(0, 1)], lo, axis=axis)
        right = xp.repeat(x[sl(n - 1, n)], hi, axis=axis)
    else:  # circular
        left, right = x[sl(n - lo, n)], x[sl(0, hi)]
    return xp.concatenate([left, x, right], axis=axis)


def _unpad_axis(xp: Any, g: Any, axis: int, lo: int, hi: int, n: int, mode: str) -> Any:
    """The gradient of :func:`_pad_axis` for an axis of original size ``n``."""
    if lo == 0 and hi == 0:
        return g
    idx = [slice(None)] * g.ndim

    def take(a: int, b: int) -> Any:
        idx[axis] = slice(a, b)
        return g[tuple(idx)]

    def at(a: int, b: int) -> tuple:
        idx[axis] = slice(a, b)
        return tuple(idx)

    dx = take(lo, lo + n).copy()
    left, right = take(0, lo), take(lo + n, lo + n + hi)
    if mode == "reflect":
        dx[at(1, lo + 1)] += xp.flip(left, axis=axis)
        dx[at(n - 1 - hi, n - 1)] += xp.flip(right, axis=axis)
    elif mode == "replicate":
        dx[at(0, 1)] += left.sum(axis=axis, keepdims=True)
        dx[at(n - 1, n)] += right.sum(axis=axis, keepdims=True)
    else:  # circular
        dx[at(n - lo, n)] += left
        dx[at(0, hi)] += right
    return dx


class PadFn(Function):
    """Pad x by ``pads`` ((lo, hi) per axis, all axes, non-negative) after cropping by
    ``crop`` (slices per axis)."""

    @staticmethod
    def forward(ctx, x, crop, pads, mode, value):
        xp = ctx.xp
        ctx.conf = (x.shape, x.dtype, crop, pads, mode)
        xc = x[crop]
        ctx.cropped = xc.shape
        if mode == "constant":
            shape = tuple(n + lo + hi for n, (lo, hi) in zip(xc.shape, pads))
            out = xp.full(shape, value, dtype=x.dtype)
            out[tuple(slice(lo, lo + n) for n, (lo, _) in zip(xc.shape, pads))] = xc
            return out
        for axis, (lo, hi) in enumerate(pads):
            xc = _pad_axis(xp, xc, axis, lo, hi, mode)
        return xp.ascontiguousarray(xc)

    @staticmethod
    def backward(ctx, g):
        xp = ctx.xp
        shape, dtype, crop, pads, mode = ctx.conf
        if mode == "constant":
            g = g[tuple(slice(lo, lo + n) for n, (lo, _) in zip(ctx.cropped, pads))]
        else:
            for axis in reversed(range(len(pads))):
                lo, hi = pads[axis]
                g = _unpad_axis(xp, g, axis, lo, hi, ctx.cropped[axis], mode)
        if tuple(g.shape) == tuple(shape):
            return xp.ascontiguousarray(g), None, None, None, None
        dx = xp.zeros(shape, dtype=g.dtype)
        dx[crop] = g
        return dx, None, None, None, None


_MODES = ("constant", "reflect", "replicate", "circular")


def pad(input: Any, pad: Any, mode: str = "constant", value: float | None = None) -> Any:
    """Pad (or, with negative amounts, crop) the trailing dims of ``input``, as
    ``torch.nn.functional.pad``.

    ``pad`` is ``(left, right)`` for the last dim, then ``(top, bottom)`` for the one
    before, and so on. ``mode``: 'constant' (fill with ``value``, default 0), 'reflect'
    (mirror without the edge; each amount < the dim's size), 'replicate' (repeat the edge),
    'circular' (wrap around; each amount <= the dim's size). The non-constant modes pad
    the last 1, 2 or 3 dims of a 2-5 dim input, as in PyTorch.

    Example::

        y = pad(ax.randn(1, 3, 4, 4), (1, 1, 2, 0), mode="reflect")  # (1, 3, 6, 6)
    """
    op = "pad"
    if not isinstance(input, TensorBase):
        raise TypeError(f"{op}: input must be a Tensor, got {type(input).__name__}")
    if mode not in _MODES:
        raise ValueError(f"{op}: mode must be one of {_MODES}, got {mode!r}")
    amounts = [int(p) for p in pad]
    if len(amounts) % 2 or len(amounts) // 2 > input.ndim:
        raise ValueError(
            f"{op}: the pad tuple must have an even length of at most 2 * input.dim() = {2 * input.ndim}, got {tuple(amounts)}"
        )
    npad = len(amounts) // 2
    if mode != "constant":
        if value not in (None, 0, 0.0):
            raise ValueError(f"{op}: padding mode {mode!r} does not take a fill value (got value={value})")
        if not (npad <= 3 and npad + 1 <= input.ndim <= npad + 2):
            raise NotImplementedError(
                f"{op}: {mode} padding of {npad} dim(s) needs a {npad + 1}-D or {npad + 2}-D input, got shape "
                f"{tuple(input.shape)}; supported: a pad of 2 values for 2-3 D, 4 for 3-4 D, 6 for 4-5 D inputs"
            )
    per_axis = [(0, 0)] * input.ndim
    for i in range(npad):
        per_axis[input.ndim - 1 - i] = (amounts[2 * i], amounts[2 * i + 1])
    crop, pads = [], []
    for axis, (lo, hi) in enumerate(per_axis):
        n = input.shape[axis]
        a, b = max(-lo, 0), n - max(-hi, 0)
        if b - a < 0 or (b - a == 0 and mode != "constant" and (lo or hi)):
            raise ShapeError(
                f"{op}: padding ({lo}, {hi}) of dim {axis} (size {n}) of input {tuple(input.shape)} leaves no elements"
            )
        m, plo, phi = b - a, max(lo, 0), max(hi, 0)
        if mode == "reflect" and (plo >= m or phi >= m):
            raise ShapeError(
                f"{op}: reflect padding ({lo}, {hi}) must be smaller than the size {m} of dim {axis} "
                f"of input {tuple(input.shape)}"
            )
        if mode == "circular" and (plo > m or phi > m):
            raise ShapeError(
                f"{op}: circular padding ({lo}, {hi}) wraps around dim {axis} (size {m}) more than once; use amounts <= {m}"
            )
        crop.append(slice(a, b))
        pads.append((plo, phi))
    if mode in ("reflect", "replicate") and input._device.type == "cpu":
        up = upcast_dtype("cpu", input._dtype)
        if up is not None:
            input = input.to(up)
    fill = 0 if value is None else value
    if mode == "constant" and not input._dtype.is_floating_point and isinstance(fill, float) and fill != int(fill):
        raise DTypeError(f"{op}: cannot fill an {input._dtype} tensor with the non-integer value {fill}")
    return PadFn.apply(input, tuple(crop), tuple(pads), mode, fill)


METHODS: dict = {}

__all__ = ["embedding", "pad"]
