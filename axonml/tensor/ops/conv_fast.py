"""The convolution kernels on raw arrays (NumPy or CuPy): forward, input and weight gradients.

Note on the layout ("channels first, batch folded in"): the input is copied once into a
zero-padded buffer laid out (C, N, Hp, Wb) (padding, transpose and dtype cast in one copy);
one strided view of that buffer gives every window, and one copy lays them out as the
column matrix (groups, C/groups * kh * kw, N * OH * Wc). A single matmul with the weight
(groups, O/groups, C/groups * kh * kw) then gives (O, N*OH*Wc); the bias is added along
its contiguous rows and one copy brings it to (N, O, OH, OW). With the batch folded into
the columns, the weight gradient is also a single matmul (output gradient (O, N*OH*Wc)
times the columns' transpose) rather than N small ones and a sum, and the column
gradients (the weight's transpose times the output gradient) come back in the buffer's
layout, so that ``col2im`` adds each kernel offset's slab into a padded buffer with one
in-place strided add.

Note on the row width ("flat shift"): with a horizontal stride of 1 the output rows are
the buffer's rows, Wc = Wb, and the buffer rows hold only max(left, right) padding
columns (a row's right padding is the next row's left padding; trailing zeros after the
last row): Wb = W + max(left, right) (at least OW). The window of kernel offset (i, j) is
then the buffer shifted by i * Wb + j, so the (OH, Wc) block of each (channel, image) is
one contiguous run, and the im2col copy and the col2im adds move long runs instead of rows
of OW elements (about twice as fast for the benchmark CNN). The Wc - OW extra columns per
row (1 for a 3x3 kernel with padding 1) read the next row's pixels; they are junk: dropped
from the output and zeroed in the output gradient, so they add exact zeros to both
gradients, except where 0 * inf makes a NaN: for an input holding inf or NaN they are
zeroed in the columns before the weight gradient, for such a weight they are left out of
the col2im adds. They cost (Wc - OW) / OW more matmul work, so the flat shift is used only
while that is at most a quarter; otherwise Wb = W + left + right and Wc = OW.

Note on 1x1 convolutions (stride 1, no padding, one group): no im2col at all; the input
(N, C, H*W) is already the column matrix of each image, so forward and both gradients
are batched matmuls straight on the caller's arrays.
"""

from __future__ import annotations

import math
import threading
from typing import Any

# -- work arrays ------------------------------------------------------------------------------
# The kernels' big temporaries (padded input, columns, matmul result, output-gradient rows,
# column gradients, col2im buffer: several times the input each) never leave the kernels,
# so each thread keeps one buffer per role and reuses it. Fresh multi-MB arrays each call
# cost page faults: glibc hands freed heap tops back to the OS and the next call faults
# them in again (for the benchmark CNN's first conv, ~3000 faults per forward+backward,
# more time than its matmuls). The price is holding, per thread, up to WORK_MAX_BYTES for
# each of the six roles (the largest conv's sizes so far) between calls; bigger temporaries
# are allocated fresh, and CuPy, which has its own memory pool, always allocates.
WORK_MAX_BYTES = 32 << 20


class _Work(threading.local):
    def __init__(self) -> None:
        self.bufs: dict = {}


_WORK = _Work()


def _work(xp: Any, role: str, shape: tuple, dtype: Any, zero: bool = False) -> Any:
    """An array of ``shape`` for the temporary ``role`` (never returned to callers)."""
    nbytes = math.prod(shape) * dtype.itemsize
    if xp.__name__ != "numpy" or nbytes > WORK_MAX_BYTES:
        return (xp.zeros if zero else xp.empty)(shape, dtype=dtype)
    buf = _WORK.bufs.get(role)
    if buf is None or buf.nbytes < nbytes:
        buf = _WORK.bufs[role] = xp.empty(nbytes, dtype="uint8")
    arr = buf[:nbytes].view(dtype).reshape(shape)
    if zero:
        arr.fill(0)
    return arr


def _out_size(size: int, k: int, s: int, d: int) -> int:
    return (size - d * (k - 1) - 1) // s + 1


class Geometry:
    """Sizes of one convolution: input (N, C, H, W) padded to (Hp, W + left + right), held in
    buffer rows of width ``wb``; output (OH, OW) laid out on rows of width ``wc`` in the
    column matrix; ``out_hw`` caps the output size."""

    __slots__ = ("n", "c", "h", "w", "hp", "wb", "k", "s", "d", "pad", "oh", "ow", "wc", "slack", "flat")

    def __init__(self, x_shape: tuple, k: tuple, s: tuple, pad: tuple, d: tuple, out_hw: Any = None) -> None:
        self.n, self.c, self.h, self.w = x_shape
        self.k, self.s, self.d, self.pad = k, s, d, pad
        (pl, pr) = pad[1]
        self.hp = self.h + pad[0][0] + pad[0][1]
        self.oh = _out_size(self.hp, k[0], s[0], d[0])
        self.ow = _out_size(self.w + pl + pr, k[1], s[1], d[1])
        if out_hw is not None:
            self.oh, self.ow = min(self.oh, out_hw[0]), min(self.ow, out_hw[1])
        # flat shift: a row's right padding is the next row's left padding (the buffer only
        # needs max(left, right) zero columns per row), and output rows are buffer rows
        wb = max(self.w + max(pl, pr), self.ow)
        self.flat = flat = s[1] == 1 and (wb - self.ow) * 4 <= self.ow
        self.wb = wb if flat else self.w + pl + pr
        self.wc = wb if flat else self.ow
        self.slack = (k[1] - 1) * d[1] if flat else 0  # the last junk columns read past the buffer

    @property
    def junk(self) -> bool:
        return self.wc != self.ow

    @property
    def m(self) -> int:
        """Columns of the column matrix: N * OH * Wc."""
        return self.n * self.oh * self.wc


def _buffer(xp: Any, role: str, geo: Geometry, dtype: Any) -> tuple:
    """A zeroed flat work buffer and its (C, N, Hp, Wb) view (``slack`` spare elements at the end)."""
    size = geo.c * geo.n * geo.hp * geo.wb
    flat = _work(xp, role, (size + geo.slack,), dtype, zero=True)
    return flat, flat[:size].reshape(geo.c, geo.n, geo.hp, geo.wb)


def _interior(buf4: Any, geo: Geometry) -> Any:
    (pt, _), (pl, _) = geo.pad
    return buf4[:, :, pt : pt + geo.h, pl : pl + geo.w]


def _slab_view(xp: Any, flat: Any, geo: Geometry, i: int, j: int, wc: int) -> Any:
    """(C, N, OH, wc) view of the padded buffer under kernel offset (i, j)."""
    it = flat.itemsize
    off = i * geo.d[0] * geo.wb + j * geo.d[1]
    plane = geo.hp * geo.wb
    shape = (geo.c, geo.n, geo.oh, wc)
    strides = (geo.n * plane * it, plane * it, geo.s[0] * geo.wb * it, geo.s[1] * it)
    return xp.lib.stride_tricks.as_strided(flat[off:], shape=shape, strides=strides)


def im2col(xp: Any, x: Any, geo: Geometry, groups: int, dtype: Any) -> Any:
    """The column matrix (groups, C/groups * kh * kw, N * OH * Wc) of x (N, C, H, W), in ``dtype``."""
    flat, buf4 = _buffer(xp, "pad", geo, dtype)
    _interior(buf4, geo)[...] = x.transpose(1, 0, 2, 3)  # pads, transposes and casts in one copy
    kh, kw = geo.k
    it = flat.itemsize
    plane = geo.hp * geo.wb
    shape = (geo.c, kh, kw, geo.n, geo.oh, geo.wc)
    strides = (geo.n * plane * it, geo.d[0] * geo.wb * it, geo.d[1] * it, plane * it, geo.s[0] * geo.wb * it, geo.s[1] * it)
    cols = _work(xp, "cols", shape, flat.dtype)
    cols[...] = xp.lib.stride_tricks.as_strided(flat, shape=shape, strides=strides)
    return cols.reshape(groups, (geo.c // groups) * kh * kw, geo.m)


def grad_rows(xp: Any, gy: Any, geo: Geometry, groups: int, dtype: Any) -> Any:
    """Output gradient (N, O, OH, OW) as (groups, O/groups, N * OH * Wc), junk columns zero."""
    o = gy.shape[1]
    g = _work(xp, "rows", (o, geo.n, geo.oh, geo.wc), dtype, zero=geo.junk)
    g[..., : geo.ow] = gy.transpose(1, 0, 2, 3)
    return g.reshape(groups, o // groups, geo.m)


def is_1x1(w_shape: tuple, geo: Geometry, groups: int) -> bool:
    no_pad = not any(geo.pad[0]) and not any(geo.pad[1])
    return groups == 1 and w_shape[2:] == (1, 1) and geo.s == (1, 1) and no_pad


def conv_forward(xp: Any, x: Any, w: Any, b: Any, geo: Geometry, groups: int, dtype: Any) -> Any:
    """y = conv(x, w) + b (N, O, OH, OW), computed in ``dtype``; ``b`` may be None."""
    o = w.shape[0]
    if is_1x1(w.shape, geo, groups):
        x3 = x.reshape(geo.n, geo.c, geo.h * geo.w).astype(dtype, copy=False)
        y = xp.matmul(w.reshape(o, geo.c).astype(dtype, copy=False), x3)
        if b is not None:
            y += b.astype(dtype, copy=False)[:, None]
        return y.reshape(geo.n, o, geo.h, geo.w)
    cols = im2col(xp, x, geo, groups, dtype)
    wm = w.reshape(groups, o // groups, -1).astype(dtype, copy=False)
    out = xp.matmul(wm, cols, out=_work(xp, "out", (groups, o // groups, geo.m), cols.dtype)).reshape(o, -1)
    if b is not None:
        out += b.astype(dtype, copy=False)[:, None]  # along contiguous rows: cheaper than after the transpose
    y = xp.empty((geo.n, o, geo.oh, geo.ow), dtype=dtype)
    y[...] = out.reshape(o, geo.n, geo.oh, geo.wc)[..., : geo.ow].transpose(1, 0, 2, 3)
    return y


def conv_input_grad(xp: Any, gy: Any, w: Any, geo: Geometry, groups: int, dtype: Any, rows: Any = None) -> Any:
    """The gradient (N, C, H, W) of ``conv(x, w)`` with respect to x, for ``gy`` (N, O, OH, OW);
    ``rows`` is ``grad_rows(gy)`` when the caller has it already."""
    o, cg, kh, kw = w.shape
    w = w.astype(dtype, copy=False)
    if is_1x1(w.shape, geo, groups):
        g3 = gy.reshape(geo.n, o, geo.h * geo.w).astype(dtype, copy=False)
        return xp.matmul(w.reshape(o, cg).T, g3).reshape(geo.n, cg, geo.h, geo.w)
    wm = w.reshape(groups, o // groups, cg * kh * kw)
    if rows is None:
        rows = grad_rows(xp, gy, geo, groups, dtype)
    dcols = _work(xp, "dcols", (groups, cg * kh * kw, geo.m), rows.dtype)
    xp.matmul(wm.transpose(0, 2, 1), rows, out=dcols)
    dcols = dcols.reshape(geo.c, kh, kw, geo.n, geo.oh, geo.wc)
    # junk columns of dcols are W^T @ 0: exact zeros unless W holds inf or NaN
    wc = geo.wc if bool(xp.isfinite(w).all()) else geo.ow
    flat, buf4 = _buffer(xp, "dpad", geo, dtype)
    for i in range(kh):
        for j in range(kw):
            view = _slab_view(xp, flat, geo, i, j, wc)
            view += dcols[:, i, j, :, :, :wc]  # in place into the strided view, no temporary
    gx = xp.empty((geo.n, geo.c, geo.h, geo.w), dtype=dtype)
    gx[...] = _interior(buf4, geo).transpose(1, 0, 2, 3)
    return gx


def conv_weight_grad(xp: Any, x: Any, gy: Any, w_shape: tuple, geo: Geometry, groups: int, dtype: Any, rows: Any = None) -> Any:
    """The gradient (w_shape) of ``conv(x, w)`` with respect to w, for ``gy``; ``rows`` is
    ``grad_rows(gy)`` when the caller has it already."""
    o = w_shape[0]
    if is_1x1(w_shape, geo, groups):
        g3 = gy.reshape(geo.n, o, geo.h * geo.w).astype(dtype, copy=False)
        x3 = x.reshape(geo.n, geo.c, geo.h * geo.w).astype(dtype, copy=False)
        return xp.matmul(g3, x3.transpose(0, 2, 1)).sum(axis=0).reshape(w_shape)
    cols = im2col(xp, x, geo, groups, dtype)
    if geo.junk and not bool(xp.isfinite(x.sum(dtype=dtype))):
        # junk columns hold real pixels; with inf or NaN among them, 0 * inf would reach dw.
        # (a finite sum proves every pixel finite; the check costs a fraction of zeroing)
        cols.reshape(-1, geo.n, geo.oh, geo.wc)[..., geo.ow :] = 0
    if rows is None:
        rows = grad_rows(xp, gy, geo, groups, dtype)
    dw = xp.matmul(rows, cols.transpose(0, 2, 1))  # (g, O/g, Cg*kh*kw)
    return dw.reshape(w_shape)
