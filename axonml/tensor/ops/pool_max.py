"""Max pooling's kernel: ``MaxPool2dFn`` (used by ``max_pool1d/2d`` in ``pool.py``).

Note on the method: the max is separable, so the forward takes one ``maximum`` per kernel
row over strided views of x, giving (N, C, OH, W), then one per kernel column, giving
(N, C, OH, OW): no window copies and no padding (each kernel offset only touches the
outputs whose window has that element inside the input), a few output-sized passes.
The backward finds the element each output took by comparing x with the output, offset by
offset in row-major window order, with PyTorch's rules: the first maximum wins a tie (its
scan keeps a value only if strictly greater), and in a window holding NaN the last NaN
(each NaN replaces the running max); windows of all -inf take their first element inside
the input. The gradient is routed there with one multiply per offset (a ``where`` when
the gradient holds inf or NaN, since inf * 0 is NaN). Indices, when asked for, come from
the same choice. This replaced a copy of every window plus ``argmax``, 5-10x slower.
"""

from __future__ import annotations

from typing import Any

from ...autograd.function import Function
from .conv import _acc


def _offset_span(out: int, size: int, s: int, p: int, off: int) -> tuple:
    """Output positions ``[o0, o1)`` whose window element at input offset ``off - p + o * s``
    falls inside the input (0 <= . < size), and the input position of the first one."""
    o0 = max(0, -((off - p) // s))  # ceil((p - off) / s)
    o1 = min(out, (size - 1 + p - off) // s + 1)
    return o0, o1, o0 * s - p + off


def _taps(x_hw: tuple, out_hw: tuple, k: tuple, s: tuple, p: tuple, d: tuple) -> list:
    """For each kernel offset (row-major): (output slices, input slices); the input slices
    pick, for every output position whose window has that element inside the input, the
    element (strided basic slicing, a view); offsets entirely in the padding are left out."""
    taps = []
    for i in range(k[0]):
        r0, r1, ir = _offset_span(out_hw[0], x_hw[0], s[0], p[0], i * d[0])
        for j in range(k[1]):
            c0, c1, ic = _offset_span(out_hw[1], x_hw[1], s[1], p[1], j * d[1])
            if r1 > r0 and c1 > c0:
                osl = (slice(None), slice(None), slice(r0, r1), slice(c0, c1))
                isl = (
                    slice(None),
                    slice(None),
                    slice(ir, ir + s[0] * (r1 - r0 - 1) + 1, s[0]),
                    slice(ic, ic + s[1] * (c1 - c0 - 1) + 1, s[1]),
                )
                taps.append((osl, isl))
    return taps


def _chosen(xp: Any, x: Any, out: Any, taps: list) -> list:
    """``(osl, isl, sel)`` per offset, ``sel`` marking the outputs whose max is taken from
    that offset's element: PyTorch's choice, the first maximum in row-major window order,
    or the last NaN where the window holds NaN (its ``>`` scan lets each NaN win)."""
    seen = xp.zeros(out.shape, dtype=bool)
    sels = []
    for osl, isl in taps:
        hit = x[isl] == out[osl]
        before = seen[osl]
        sels.append(xp.greater(hit, before))  # hit and not seen before
        before |= hit  # in place through the view
    if bool(xp.isnan(out).any()):  # NaN windows got no hit above (NaN != NaN)
        for t in reversed(range(len(taps))):
            osl, isl = taps[t]
            hit = xp.isnan(x[isl])
            before = seen[osl]
            sels[t] |= xp.greater(hit, before)
            before |= hit
    return [(osl, isl, sel) for (osl, isl), sel in zip(taps, sels)]


def _max_along(xp: Any, a: Any, axis: int, out: int, k: int, s: int, p: int, d: int) -> Any:
    """Max over the ``k`` window elements along ``axis`` (2 or 3) of ``a``; -inf where a window
    has no element inside (never for a whole window); NaN propagates, as in PyTorch."""
    lead = (slice(None),) * axis
    parts = []  # (output slice, input view) per kernel element that some window has inside
    for i in range(k):
        o0, o1, start = _offset_span(out, a.shape[axis], s, p, i * d)
        if o1 > o0:
            parts.append((o0, o1, a[lead + (slice(start, start + s * (o1 - o0 - 1) + 1, s),)]))
    full = [src for o0, o1, src in parts if o1 - o0 == out]
    if len(full) >= 2:  # the common case: start from the max of two whole views (one pass)
        res = xp.maximum(full[0], full[1])
        skip = {id(full[0]), id(full[1])}
    elif full:
        res, skip = full[0].copy(), {id(full[0])}
    else:
        shape = list(a.shape)
        shape[axis] = out
        res, skip = xp.full(shape, -xp.inf, dtype=a.dtype), set()
    for o0, o1, src in parts:
        if id(src) not in skip:
            dst = res[lead + (slice(o0, o1),)]
            xp.maximum(dst, src, out=dst)
    return res


class MaxPool2dFn(Function):
    """Max over windows of x (N, C, H, W) with kernel ``k``, stride ``s``, padding ``p``,
    dilation ``d`` and output size ``out_hw``; returns (values, flat input indices, or None
    unless ``want_idx``). The method is in the module docstring."""

    @staticmethod
    def forward(ctx, x, k, s, p, d, out_hw, want_idx):
        xp = ctx.xp
        n, c, h, w = x.shape
        acc = _acc(x.dtype)  # 2-byte floats: exact in float32, where NumPy's kernels are fast
        xa = x.astype(acc, copy=False)
        taps = _taps((h, w), out_hw, k, s, p, d)
        # the max is separable: over the kernel rows (N, C, OH, W), then over the columns
        rmax = _max_along(xp, xa, 2, out_hw[0], k[0], s[0], p[0], d[0])
        out = _max_along(xp, rmax, 3, out_hw[1], k[1], s[1], p[1], d[1])
        idx = None
        if want_idx:
            idx = xp.zeros((n, c, *out_hw), dtype="int64")
            for osl, isl, sel in _chosen(xp, xa, out, taps):
                rows = xp.arange(isl[2].start, isl[2].stop, isl[2].step)
                cols = xp.arange(isl[3].start, isl[3].stop, isl[3].step)
                xp.copyto(idx[osl], rows[:, None] * w + cols[None, :], where=sel)
            ctx.mark_non_differentiable(idx)
        y = out.astype(x.dtype, copy=False)
        if getattr(ctx, "needs_input_grad", None):  # recording: keep what backward needs
            ctx.save_for_backward(x)
            # backward compares with the output: keep a private copy, since the returned one
            # may be changed in place (PyTorch's max pooling backward does not depend on it)
            ctx.out, ctx.taps = (out.copy() if y is out else out), taps
            ctx.overlap = any(ss < dd * (kk - 1) + 1 for kk, ss, dd in zip(k, s, d))
        return y, idx

    @staticmethod
    def backward(ctx, g, _gi):
        xp = ctx.xp
        (x,) = ctx.saved_tensors
        acc = _acc(g.dtype)
        ga = g.astype(acc, copy=False)
        dx = xp.zeros(x.shape, dtype=acc)
        # g * mask is several times faster than where(mask, g, 0) but makes NaN of inf * 0
        exact = not bool(xp.isfinite(ga).all())
        for osl, isl, sel in _chosen(xp, x.astype(acc, copy=False), ctx.out, ctx.taps):
            view = dx[isl]
            if exact:
                part = xp.where(sel, ga[osl], 0)
                if ctx.overlap:  # windows share elements: accumulate
                    view += part
                else:
                    view[...] = part
            elif ctx.overlap:
                view += ga[osl] * sel
            else:
                xp.multiply(ga[osl], sel, out=view)
        return dx.astype(g.dtype, copy=False), None, None, None, None, None, None
