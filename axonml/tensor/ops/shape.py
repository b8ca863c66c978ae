"""Shape ops: squeeze/unsqueeze, flatten/unflatten, narrow/select, movedim/swapaxes,
diagonal/diag, broadcasting helpers, meshgrid, atleast_nd and h/v/dstack; the joining
and splitting ops live in :mod:`.shape_join` and are re-exported here.

Note on views: ``squeeze``, ``unsqueeze``, ``narrow``, ``select`` and ``diagonal``
return views (``view_of = 0``): they share the input's storage and version counter, so a
write through either is seen by the other. ``BasicIndex`` (a view from an index tuple of
ints, slices and None) is the shared building block, also used by ``Tensor.__getitem__``.
Index tuples always end in ``Ellipsis`` so that NumPy returns a 0-d *view* rather than a
scalar copy when every dimension is indexed by an int.
"""

from __future__ import annotations

from typing import Any

from ...autograd.function import Function
from ...autograd.variable import TensorBase
from ...errors import ShapeError
from .._helpers import norm_dim
from .core import expand, permute, reshape, transpose, view
from .shape_join import METHODS as _JOIN_METHODS
from .shape_join import (
    cat,
    chunk,
    concat,
    concatenate,
    flip,
    fliplr,
    flipud,
    repeat_interleave,
    roll,
    split,
    stack,
    tile,
    tril,
    triu,
    unbind,
)


# -- views from an index tuple ------------------------------------------------------------
class BasicIndex(Function):
    """``x[key]`` for a key of ints, slices and None (ending in Ellipsis): a view."""

    view_of = 0

    @staticmethod
    def forward(ctx, x, key):
        ctx.shape, ctx.key = x.shape, key
        return x[key]

    @staticmethod
    def backward(ctx, g):
        gx = ctx.xp.zeros(ctx.shape, dtype=g.dtype)
        gx[ctx.key] = g
        return gx, None

    @staticmethod
    def differentiable_backward(ctx, g):
        return BasicIndexBackward.apply(g, ctx.shape, ctx.key), None


class BasicIndexBackward(Function):
    """The adjoint of :class:`BasicIndex`: zeros of ``shape`` with ``g`` written at ``key``."""

    @staticmethod
    def forward(ctx, g, shape, key):
        ctx.key = key
        gx = ctx.xp.zeros(shape, dtype=g.dtype)
        gx[key] = g
        return gx

    @staticmethod
    def backward(ctx, gg):
        return gg[ctx.key], None, None

    @staticmethod
    def differentiable_backward(ctx, gg):
        return BasicIndex.apply(gg, ctx.key), None, None


def narrow(input: Any, dim: int, start: Any, length: int) -> Any:  # noqa: A002 - PyTorch's name
    """The view ``input[..., start:start + length, ...]`` along ``dim`` (``start`` may be
    negative). Example: ``ax.arange(6).narrow(0, 1, 3)`` is ``[1, 2, 3]``."""
    d = norm_dim(dim, input.ndim, "narrow")
    if input.ndim == 0:
        raise ShapeError("narrow: cannot narrow a 0-d tensor")
    n = input.shape[d]
    start, length = int(start), int(length)
    if not -n <= start <= n:
        raise IndexError(f"narrow: start {start} is out of range for dimension {d} with size {n}")
    if start < 0:
        start += n
    if length < 0 or start + length > n:
        raise IndexError(f"narrow: start ({start}) + length ({length}) exceeds dimension {d} of size {n}")
    return BasicIndex.apply(input, (slice(None),) * d + (slice(start, start + length), Ellipsis))


def select(input: Any, dim: int, index: int) -> Any:  # noqa: A002
    """The view of ``input`` at ``index`` along ``dim``, with that dimension removed."""
    if input.ndim == 0:
        raise IndexError("select: cannot select on a 0-d tensor")
    d = norm_dim(dim, input.ndim, "select")
    n = input.shape[d]
    index = int(index)
    if not -n <= index < n:
        raise IndexError(f"select: index {index} is out of range for dimension {d} with size {n}")
    return BasicIndex.apply(input, (slice(None),) * d + (index, Ellipsis))


# -- squeeze / unsqueeze / flatten ----------------------------------------------------------
class Squeeze(Function):
    view_of = 0

    @staticmethod
    def forward(ctx, x, axes):
        ctx.shape = x.shape
        return ctx.xp.squeeze(x, axis=axes)

    @staticmethod
    def backward(ctx, g):
        return g.reshape(ctx.shape), None

    @staticmethod
    def differentiable_backward(ctx, g):
        return g.reshape(ctx.shape), None


class Unsqueeze(Function):
    view_of = 0

    @staticmethod
    def forward(ctx, x, dim):
        ctx.shape = x.shape
        return ctx.xp.expand_dims(x, dim)

    @staticmethod
    def backward(ctx, g):
        return g.reshape(ctx.shape), None

    @staticmethod
    def differentiable_backward(ctx, g):
        return g.reshape(ctx.shape), None


def squeeze(input: Any, dim: Any = None) -> Any:  # noqa: A002
    """A view without size-1 dimensions: all of them, or those in ``dim`` (an int or a
    tuple; dims whose size is not 1 are left alone, as in PyTorch)."""
    shape = input.shape
    if dim is None:
        axes = tuple(i for i, s in enumerate(shape) if s == 1)
    else:
        dims = (dim,) if isinstance(dim, int) else tuple(dim)
        nd = [norm_dim(d, input.ndim, "squeeze") for d in dims]
        axes = tuple(sorted({d for d in nd if input.ndim and shape[d] == 1}))
    return Squeeze.apply(input, axes)


def unsqueeze(input: Any, dim: int) -> Any:  # noqa: A002
    """A view with a new size-1 dimension at ``dim`` (in ``[-ndim - 1, ndim]``)."""
    return Unsqueeze.apply(input, norm_dim(dim, input.ndim + 1, "unsqueeze"))


def flatten(input: Any, start_dim: int = 0, end_dim: int = -1) -> Any:  # noqa: A002
    """Merge dims ``start_dim..end_dim`` into one (a view when the input is contiguous).
    Example: ``ax.zeros(2, 3, 4).flatten(1)`` has shape (2, 12)."""
    if input.ndim == 0:
        return reshape(input, 1)
    s, e = norm_dim(start_dim, input.ndim, "flatten"), norm_dim(end_dim, input.ndim, "flatten")
    if s > e:
        raise ValueError(f"flatten: start_dim ({start_dim}) cannot come after end_dim ({end_dim})")
    if s == e:
        return input
    shape = tuple(input.shape)
    n = 1
    for v in shape[s : e + 1]:
        n *= v
    return reshape(input, shape[:s] + (n,) + shape[e + 1 :])  # (..., prod(shape[s:e+1]), ...)


def ravel(input: Any) -> Any:  # noqa: A002
    """The flattened 1-D tensor (a view when contiguous)."""
    return reshape(input, -1)


def unflatten(input: Any, dim: int, sizes: Any) -> Any:  # noqa: A002
    """Split dimension ``dim`` into ``sizes`` (one entry may be -1).
    Example: ``ax.zeros(2, 12).unflatten(1, (3, 4))`` has shape (2, 3, 4)."""
    d = norm_dim(dim, input.ndim, "unflatten")
    sizes = tuple(int(s) for s in sizes)
    n = input.shape[d]
    known = 1
    for s in sizes:
        if s != -1:
            known *= s
    if sizes.count(-1) > 1 or (-1 not in sizes and known != n) or (-1 in sizes and (known == 0 or n % known)):
        raise ShapeError(f"unflatten: sizes {sizes} do not multiply up to the size of dimension {d} ({n})")
    if -1 in sizes:
        sizes = tuple(n // known if s == -1 else s for s in sizes)
    shape = tuple(input.shape)
    return reshape(input, shape[:d] + sizes + shape[d + 1 :])


# -- dims reordering / diagonals -------------------------------------------------------------
def movedim(input: Any, source: Any, destination: Any) -> Any:  # noqa: A002
    """Move dims ``source`` to positions ``destination`` (ints or equal-length
    sequences); the other dims keep their order. A view."""
    src = (source,) if isinstance(source, int) else tuple(source)
    dst = (destination,) if isinstance(destination, int) else tuple(destination)
    if len(src) != len(dst):
        raise ValueError(f"movedim: source {src} and destination {dst} must have the same length")
    nd = input.ndim
    src = tuple(norm_dim(d, nd, "movedim") for d in src)
    dst = tuple(norm_dim(d, nd, "movedim") for d in dst)
    if len(set(src)) != len(src) or len(set(dst)) != len(dst):
        raise ValueError(f"movedim: repeated dim in source {src} or destination {dst}")
    if nd == 0:
        return input
    perm = [-1] * nd
    for s, d in zip(src, dst):
        perm[d] = s
    rest = iter(i for i in range(nd) if i not in src)
    perm = [next(rest) if p == -1 else p for p in perm]
    return permute(input, perm)


def swapaxes(input: Any, axis0: int, axis1: int) -> Any:  # noqa: A002
    """``transpose(input, axis0, axis1)``."""
    return transpose(input, axis0, axis1)


def _writable(a: Any) -> Any:
    """NumPy's diagonal views are read-only; PyTorch's are writable."""
    if not getattr(a.flags, "writeable", True):
        try:
            a.flags.writeable = True
        except ValueError:  # the base itself is read-only (e.g. a broadcast view)
            pass
    return a


class Diagonal(Function):
    view_of = 0

    @staticmethod
    def forward(ctx, x, offset, d1, d2):
        ctx.shape, ctx.args = x.shape, (offset, d1, d2)
        return _writable(ctx.xp.diagonal(x, offset, d1, d2))

    @staticmethod
    def backward(ctx, g):
        gx = ctx.xp.zeros(ctx.shape, dtype=g.dtype)
        _writable(ctx.xp.diagonal(gx, *ctx.args))[...] = g
        return gx, None, None, None


def diagonal(input: Any, offset: int = 0, dim1: int = 0, dim2: int = 1) -> Any:  # noqa: A002
    """A view of the diagonal of dims ``dim1``/``dim2`` (``offset`` > 0 above the main
    diagonal), appended as the last dimension."""
    if input.ndim < 2:
        raise ShapeError(f"diagonal: input must have at least 2 dims, got shape {tuple(input.shape)}")
    d1, d2 = norm_dim(dim1, input.ndim, "diagonal"), norm_dim(dim2, input.ndim, "diagonal")
    if d1 == d2:
        raise ValueError(f"diagonal: dim1 and dim2 cannot be the same dimension ({d1})")
    return Diagonal.apply(input, int(offset), d1, d2)


class DiagEmbed(Function):
    @staticmethod
    def forward(ctx, x, k):
        ctx.k = k
        n = x.shape[0] + abs(k)
        out = ctx.xp.zeros((n, n), dtype=x.dtype)
        _writable(ctx.xp.diagonal(out, k))[...] = x
        return out

    @staticmethod
    def backward(ctx, g):
        return ctx.xp.diagonal(g, ctx.k).copy(), None


def diag(input: Any, diagonal: int = 0) -> Any:  # noqa: A002
    """A 1-D input becomes a square matrix with it on the ``diagonal``-th diagonal; a 2-D
    input gives that diagonal as a new 1-D tensor (a copy, unlike ``diagonal``)."""
    if input.ndim == 1:
        return DiagEmbed.apply(input, int(diagonal))
    if input.ndim == 2:
        return Diagonal.apply(input, int(diagonal), 0, 1).clone()
    raise ShapeError(f"diag: input must be 1-D or 2-D, got shape {tuple(input.shape)}")


# -- shapes of others / broadcasting ------------------------------------------------------------
def view_as(input: Any, other: Any) -> Any:  # noqa: A002
    """``input.view(other.shape)``."""
    return view(input, tuple(other.shape))


def reshape_as(input: Any, other: Any) -> Any:  # noqa: A002
    """``input.reshape(other.shape)``."""
    return reshape(input, tuple(other.shape))


def broadcast_shapes(*shapes: Any) -> tuple:
    """The shape that ``shapes`` broadcast to; ShapeError naming them when they cannot."""
    shapes = [(s,) if isinstance(s, int) else tuple(s) for s in shapes]
    nd = max((len(s) for s in shapes), default=0)
    out = [1] * nd
    for s in shapes:
        for i, v in enumerate(s):
            j = nd - len(s) + i
            if v != 1:
                if out[j] != 1 and out[j] != v:
                    raise ShapeError(
                        f"broadcast: shapes {' and '.join(str(x) for x in shapes)} cannot be broadcast together (dimension "
                        f"{j - nd}: {out[j]} vs {v})"
                    )
                out[j] = v
    return tuple(out)


def broadcast_to(input: Any, size: Any) -> Any:  # noqa: A002
    """A broadcast view of ``input`` with shape ``size`` (``expand``; -1 keeps a dim)."""
    return expand(input, *((size,) if isinstance(size, int) else tuple(size)))


def broadcast_tensors(*tensors: Any) -> tuple:
    """Broadcast views of ``tensors`` to their common shape.
    Example: ``a, b = ax.broadcast_tensors(ax.zeros(3, 1), ax.zeros(4))`` gives (3, 4) twice."""
    if len(tensors) == 1 and isinstance(tensors[0], (list, tuple)):
        tensors = tuple(tensors[0])
    shape = broadcast_shapes(*[tuple(t.shape) for t in tensors])
    return tuple(expand(t, *shape) for t in tensors)


def meshgrid(*tensors: Any, indexing: str = "ij") -> tuple:
    """Coordinate grids from 0-d/1-D tensors: with ``indexing='ij'`` output ``i`` varies
    along dim ``i``; ``'xy'`` swaps the first two (Cartesian, as NumPy's default)."""
    if len(tensors) == 1 and isinstance(tensors[0], (list, tuple)):
        tensors = tuple(tensors[0])
    if indexing not in ("ij", "xy"):
        raise ValueError(f"meshgrid: indexing must be 'ij' or 'xy', got {indexing!r}")
    for i, t in enumerate(tensors):
        if not isinstance(t, TensorBase) or t.ndim > 1:
            raise ShapeError(
                f"meshgrid: expected 0-D or 1-D tensors, got {getattr(t, 'shape', type(t).__name__)} at position {i}"
            )
    sizes = [t.numel() for t in tensors]
    pos = list(range(len(tensors)))
    if indexing == "xy" and len(tensors) >= 2:
        pos[0], pos[1] = 1, 0
    shape = [0] * len(tensors)
    for i, p in enumerate(pos):
        shape[p] = sizes[i]
    out = []
    for i, t in enumerate(tensors):
        vshape = [1] * len(tensors)
        vshape[pos[i]] = sizes[i]
        out.append(expand(reshape(t, tuple(vshape)), *shape))
    return tuple(out)


def _atleast(tensors: tuple, fn: Any) -> Any:
    if len(tensors) == 1 and isinstance(tensors[0], (list, tuple)):
        tensors = tuple(tensors[0])
    out = tuple(fn(t) for t in tensors)
    return out[0] if len(out) == 1 else out


def atleast_1d(*tensors: Any) -> Any:
    """Each tensor with at least 1 dim (0-d becomes shape (1,)); one tensor or a tuple."""
    return _atleast(tensors, lambda t: reshape(t, 1) if t.ndim == 0 else t)


def atleast_2d(*tensors: Any) -> Any:
    """Each tensor with at least 2 dims (new dims lead)."""
    return _atleast(tensors, lambda t: reshape(t, 1, 1) if t.ndim == 0 else unsqueeze(t, 0) if t.ndim == 1 else t)


def atleast_3d(*tensors: Any) -> Any:
    """Each tensor with at least 3 dims: () -> (1,1,1), (n,) -> (1,n,1), (m,n) -> (m,n,1)."""

    def f(t: Any) -> Any:
        if t.ndim == 0:
            return reshape(t, 1, 1, 1)
        if t.ndim == 1:
            return reshape(t, 1, t.shape[0], 1)
        return unsqueeze(t, -1) if t.ndim == 2 else t

    return _atleast(tensors, f)


def hstack(tensors: Any) -> Any:
    """Concatenate column-wise: along dim 0 for 1-D tensors, else dim 1."""
    ts = [atleast_1d(t) for t in tensors]
    return cat(ts, 0 if all(t.ndim == 1 for t in ts) else 1)


def vstack(tensors: Any) -> Any:
    """Concatenate row-wise (dim 0) after making every tensor at least 2-D."""
    return cat([atleast_2d(t) for t in tensors], 0)


def dstack(tensors: Any) -> Any:
    """Concatenate depth-wise (dim 2) after making every tensor at least 3-D."""
    return cat([atleast_3d(t) for t in tensors], 2)


METHODS = {
    **_JOIN_METHODS,
    "narrow": narrow,
    "select": select,
    "squeeze": squeeze,
    "unsqueeze": unsqueeze,
    "flatten": flatten,
    "ravel": ravel,
    "unflatten": unflatten,
    "movedim": movedim,
    "moveaxis": movedim,
    "swapaxes": swapaxes,
    "swapdims": swapaxes,
    "diagonal": diagonal,
    "diag": diag,
    "view_as": view_as,
    "reshape_as": reshape_as,
    "broadcast_to": broadcast_to,
}

moveaxis = movedim
swapdims = swapaxes

__all__ = [
    "atleast_1d", "atleast_2d", "atleast_3d", "broadcast_shapes", "broadcast_tensors", "broadcast_to",
    "cat", "chunk", "concat", "concatenate", "diag", "diagonal", "dstack", "flatten", "flip", "fliplr",
    "flipud", "hstack", "meshgrid", "moveaxis", "movedim", "narrow", "ravel", "repeat_interleave",
    "roll", "select", "split", "squeeze", "stack", "swapaxes", "swapdims", "tile", "tril", "triu",
    "unbind", "unflatten", "unsqueeze", "vstack",
]
