"""Joining, splitting and rearranging ops: cat/stack, split/chunk/unbind,
repeat/tile/repeat_interleave, flip/roll, tril/triu.

Part of :mod:`axonml.tensor.ops.shape` (split out to keep modules short): ``shape``
re-exports every public name and merges ``METHODS``.

Note on views: the pieces of ``split``/``chunk``/``unbind`` are views of the input (one
multi-output node with ``view_of = 0``, so all pieces share the input's storage and
version counter); its backward concatenates the pieces' gradients, with zeros for
pieces that got none. ``flip`` copies, as in PyTorch, although NumPy could return a
negatively-strided view: an output that aliases its input must be tracked as a view.
"""

from __future__ import annotations

import math
import operator
from typing import Any

from ...autograd.function import Function
from ...autograd.variable import TensorBase
from ...errors import ShapeError
from ...runtime.dtypes import result_type
from .._helpers import norm_dim, wrap
from .selection import add_at


def _check_tensors(tensors: Any, op: str) -> list:
    if isinstance(tensors, TensorBase):
        raise TypeError(f"{op}: expected a sequence of tensors, got a single Tensor; wrap it in a list")
    tensors = list(tensors)
    if not tensors:
        raise ValueError(f"{op}: expected a non-empty sequence of tensors")
    for i, t in enumerate(tensors):
        if not isinstance(t, TensorBase):
            raise TypeError(f"{op}: element {i} is a {type(t).__name__}, expected a Tensor")
    return tensors


def _cast_all(tensors: list) -> list:
    dt = result_type(*tensors) if len({t._dtype for t in tensors}) > 1 else tensors[0]._dtype
    return [t if t._dtype is dt else t.to(dt) for t in tensors]


def _along(dim: int, key: Any) -> tuple:
    """An index tuple applying ``key`` at ``dim`` (a view for slices and ints)."""
    return (slice(None),) * dim + (key, Ellipsis)


# -- cat / stack -------------------------------------------------------------------------
class Cat(Function):
    """Concatenation; inputs flagged in ``skip`` (PyTorch's legacy 1-D empties) are left
    out of the result and get an empty gradient."""

    @staticmethod
    def forward(ctx, dim, skip, *xs):
        ctx.dim, ctx.skip = dim, skip
        ctx.sizes = [x.shape[dim] if i not in skip else None for i, x in enumerate(xs)]
        return ctx.xp.concatenate([x for i, x in enumerate(xs) if i not in skip], axis=dim)

    @staticmethod
    def backward(ctx, g):
        out, start = [None, None], 0
        for s in ctx.sizes:
            if s is None:
                out.append(ctx.xp.zeros((0,), dtype=g.dtype))
                continue
            out.append(g[_along(ctx.dim, slice(start, start + s))])
            start += s
        return tuple(out)

    @staticmethod
    def differentiable_backward(ctx, g):
        out, start = [None, None], 0
        for s in ctx.sizes:
            if s is None:
                out.append(g.reshape(-1).narrow(0, 0, 0))
                continue
            out.append(g.narrow(ctx.dim, start, s))
            start += s
        return tuple(out)


def cat(tensors: Any, dim: int = 0) -> Any:
    """Concatenate tensors along an existing ``dim``; dtypes promote as in PyTorch, and
    1-D empty tensors are skipped (PyTorch's legacy rule).

    Example: ``ax.cat([ax.zeros(2, 3), ax.ones(1, 3)])`` has shape (3, 3).
    """
    tensors = _check_tensors(tensors, "cat")
    for i, t in enumerate(tensors):
        if t.ndim == 0:
            raise ShapeError(
                f"cat: zero-dimensional tensor (at position {i}) cannot be concatenated; use stack or unsqueeze it first"
            )
    tensors = _cast_all(tensors)
    keep = [(i, t) for i, t in enumerate(tensors) if tuple(t.shape) != (0,)] or list(enumerate(tensors))
    r, ref = keep[0]
    d = norm_dim(dim, ref.ndim, "cat")
    for i, t in keep[1:]:
        if t.ndim != ref.ndim:
            raise ShapeError(
                f"cat: tensor {i} has {t.ndim} dims (shape {tuple(t.shape)}) but tensor {r} has {ref.ndim} "
                f"(shape {tuple(ref.shape)}); all tensors need the same number of dims"
            )
        for k in range(ref.ndim):
            if k != d and t.shape[k] != ref.shape[k]:
                raise ShapeError(
                    f"cat: sizes must match except in dimension {d}: tensor {i} has shape {tuple(t.shape)} "
                    f"but tensor {r} has shape {tuple(ref.shape)} (they differ in dimension {k})"
                )
    skip = frozenset(range(len(tensors))) - {i for i, _ in keep}
    return Cat.apply(d, skip, *tensors)


concat = cat
concatenate = cat


class Stack(Function):
    @staticmethod
    def forward(ctx, dim, *xs):
        ctx.dim, ctx.n = dim, len(xs)
        return ctx.xp.stack(xs, axis=dim)

    @staticmethod
    def backward(ctx, g):
        return (None,) + tuple(g[_along(ctx.dim, i)] for i in range(ctx.n))

    @staticmethod
    def differentiable_backward(ctx, g):
        return (None,) + tuple(g.select(ctx.dim, i) for i in range(ctx.n))


def stack(tensors: Any, dim: int = 0) -> Any:
    """Join equally-shaped tensors along a new dimension ``dim``.

    Example: ``ax.stack([a, b], dim=1)`` for ``a, b`` of shape (3,) has shape (3, 2).
    """
    tensors = _check_tensors(tensors, "stack")
    ref = tensors[0]
    for i, t in enumerate(tensors[1:], 1):
        if tuple(t.shape) != tuple(ref.shape):
            raise ShapeError(
                f"stack: expects each tensor to be of equal size, but got {tuple(ref.shape)} at entry 0 and {tuple(t.shape)} "
                f"at entry {i}"
            )
    d = norm_dim(dim, ref.ndim + 1, "stack")
    return Stack.apply(d, *_cast_all(tensors))


# -- split / chunk / unbind ----------------------------------------------------------------
class Split(Function):
    view_of = 0

    @staticmethod
    def forward(ctx, x, dim, sizes):
        ctx.dim = dim
        out, start = [], 0
        for s in sizes:
            out.append(x[_along(dim, slice(start, start + s))])
            start += s
        return tuple(out)

    @staticmethod
    def backward(ctx, *grads):
        return ctx.xp.concatenate(grads, axis=ctx.dim), None, None

    @staticmethod
    def differentiable_backward(ctx, *grads):
        return cat(list(grads), ctx.dim), None, None


def split(tensor: Any, split_size_or_sections: Any, dim: int = 0) -> tuple:
    """Views of consecutive pieces along ``dim``: of ``split_size`` each (the last may be
    smaller), or of the given list of sizes (which must sum to the dimension's size).

    Example: ``ax.arange(5).split([2, 3])`` gives pieces of sizes 2 and 3.
    """
    d = norm_dim(dim, tensor.ndim, "split")
    if tensor.ndim == 0:
        raise ShapeError("split: cannot split a 0-d tensor")
    n = tensor.shape[d]
    try:
        s = operator.index(split_size_or_sections)  # an int (Python, NumPy or 0-d tensor)
    except (TypeError, ValueError):
        s = None
    if s is not None:
        if s < 0 or (s == 0 and n > 0):
            raise ValueError(f"split: split_size must be a positive integer, got {s} (dimension {d} has size {n})")
        sizes = [s] * (n // s) + ([n % s] if n % s else []) if n else [0]
    else:
        sizes = [int(s) for s in split_size_or_sections]
        if any(s < 0 for s in sizes) or sum(sizes) != n:
            raise ShapeError(
                f"split: sizes {sizes} must be non-negative and sum to the size of dimension {d} ({n}), they sum to "
                f"{sum(sizes)}"
            )
    return Split.apply(tensor, d, tuple(sizes))


def chunk(input: Any, chunks: int, dim: int = 0) -> tuple:  # noqa: A002 - PyTorch's name
    """Split into ``chunks`` views of size ``ceil(n / chunks)`` (the last may be smaller,
    and fewer chunks may come back, as in PyTorch)."""
    if chunks <= 0:
        raise ValueError(f"chunk: chunks must be a positive integer, got {chunks}")
    if input.ndim == 0:
        raise ShapeError("chunk: expects at least a 1-dimensional tensor, got a 0-d one")
    d = norm_dim(dim, input.ndim, "chunk")
    n = input.shape[d]
    size = math.ceil(n / chunks) if n else 0
    if n == 0:
        return Split.apply(input, d, tuple([0] * chunks))
    return split(input, size, d)


class Unbind(Function):
    view_of = 0

    @staticmethod
    def forward(ctx, x, dim):
        ctx.dim = dim
        return tuple(x[_along(dim, i)] for i in range(x.shape[dim]))

    @staticmethod
    def backward(ctx, *grads):
        return ctx.xp.stack(grads, axis=ctx.dim), None

    @staticmethod
    def differentiable_backward(ctx, *grads):
        return stack(list(grads), ctx.dim), None


def unbind(input: Any, dim: int = 0) -> tuple:  # noqa: A002
    """The slices along ``dim``, as a tuple of views with that dimension removed."""
    if input.ndim == 0:
        raise ShapeError("unbind: cannot unbind a 0-d tensor")
    d = norm_dim(dim, input.ndim, "unbind")
    if input.shape[d] == 0:
        return ()
    return Unbind.apply(input, d)


# -- repeat / tile / repeat_interleave ---------------------------------------------------
class Repeat(Function):
    @staticmethod
    def forward(ctx, x, reps):
        ctx.shape = x.shape
        padded = (1,) * (len(reps) - x.ndim) + tuple(x.shape)
        ctx.padded, ctx.reps = padded, reps
        return ctx.xp.tile(x.reshape(padded), reps)

    @staticmethod
    def backward(ctx, g):
        inter = []  # (r0, p0, r1, p1, ...): each output dim split into (repeat, size)
        for r, p in zip(ctx.reps, ctx.padded):
            inter += [r, p]
        g = g.reshape(inter).sum(axis=tuple(range(0, 2 * len(ctx.reps), 2)))
        return g.reshape(ctx.shape), None


def _sizes(sizes: tuple) -> tuple:
    if len(sizes) == 1 and isinstance(sizes[0], (tuple, list)):
        sizes = tuple(sizes[0])
    return tuple(int(s) for s in sizes)


def repeat(input: Any, *sizes: Any) -> Any:  # noqa: A002
    """Tile ``input`` ``sizes[i]`` times along each dim (``len(sizes) >= input.ndim``;
    extra leading sizes add dims). Example: ``ax.tensor([1, 2]).repeat(2, 2)`` has shape (2, 4)."""
    reps = _sizes(sizes)
    if len(reps) < input.ndim:
        raise ShapeError(
            f"repeat: the number of repeat dims ({len(reps)}) cannot be smaller than the number of tensor dims ({input.ndim})"
        )
    if any(r < 0 for r in reps):
        raise ValueError(f"repeat: repeats must be non-negative, got {reps}")
    return Repeat.apply(input, reps)


def tile(input: Any, dims: Any) -> Any:  # noqa: A002
    """Like ``repeat``, but fewer ``dims`` than tensor dims are padded with leading 1s."""
    reps = _sizes((dims,)) if isinstance(dims, (tuple, list)) else (int(dims),)
    reps = (1,) * (input.ndim - len(reps)) + reps
    return repeat(input, reps)


class RepeatInterleave(Function):
    @staticmethod
    def forward(ctx, x, reps, dim):
        ctx.shape, ctx.reps, ctx.dim = x.shape, reps, dim
        return ctx.xp.repeat(x, reps, axis=dim)

    @staticmethod
    def backward(ctx, g):
        xp, d, shape = ctx.xp, ctx.dim, ctx.shape
        if isinstance(ctx.reps, int):  # else a list of counts
            g = g.reshape(shape[:d] + (shape[d], ctx.reps) + shape[d + 1 :]).sum(axis=d + 1)
            return g, None, None
        gx = xp.zeros(shape, dtype=g.dtype)
        add_at(xp, gx, _along(d, xp.repeat(xp.arange(shape[d]), ctx.reps)), g)
        return gx, None, None


def repeat_interleave(input: Any, repeats: Any = None, dim: int | None = None, *, output_size: int | None = None) -> Any:  # noqa: A002
    """Repeat each element ``repeats`` times along ``dim`` (flattened when None);
    ``repeats`` is an int or a 1-D tensor with one count per element. With only a
    tensor of counts, returns ``arange(n)`` repeated by them.

    Example: ``ax.tensor([1, 2]).repeat_interleave(2)`` is ``[1, 1, 2, 2]``.
    """
    if repeats is None:
        counts = input._device.to_host(input._data)
        if input.ndim != 1 or counts.dtype.kind not in "iu":
            raise ShapeError(
                f"repeat_interleave: the counts must be a 1-D integer tensor, got shape {tuple(input.shape)} {input._dtype}"
            )
        if counts.size and int(counts.min()) < 0:
            raise ValueError("repeat_interleave: repeats must be non-negative")
        xp = input._device.xp
        return wrap(xp.repeat(xp.arange(counts.shape[0], dtype="int64"), counts.tolist()), input)
    if dim is None:
        input, d = input.reshape(-1), 0
    else:
        d = norm_dim(dim, input.ndim, "repeat_interleave")
        if input.ndim == 0:
            input = input.reshape(1)
    n = input.shape[d]
    if isinstance(repeats, TensorBase):
        if repeats.ndim == 0 or repeats.numel() == 1:
            repeats = int(repeats.item())
        else:
            if tuple(repeats.shape) != (n,):
                raise ShapeError(
                    f"repeat_interleave: repeats must have shape ({n},) to match dimension {d}, got {tuple(repeats.shape)}"
                )
            reps = repeats._device.to_host(repeats._data).tolist()  # a list: CuPy's repeat takes no array
            if n and min(reps) < 0:
                raise ValueError("repeat_interleave: repeats must be non-negative")
            return RepeatInterleave.apply(input, reps, d)
    repeats = int(repeats)
    if repeats < 0:
        raise ValueError(f"repeat_interleave: repeats must be non-negative, got {repeats}")
    return RepeatInterleave.apply(input, repeats, d)


# -- flip / roll / tril / triu ---------------------------------------------------------------
class Flip(Function):
    @staticmethod
    def forward(ctx, x, dims):
        ctx.dims = dims
        return ctx.xp.ascontiguousarray(ctx.xp.flip(x, axis=dims)) if dims else x.copy()

    @staticmethod
    def backward(ctx, g):
        return (ctx.xp.flip(g, axis=ctx.dims) if ctx.dims else g), None

    @staticmethod
    def differentiable_backward(ctx, g):
        return (Flip.apply(g, ctx.dims) if ctx.dims else g), None


def _dims(dims: Any, ndim: int, op: str) -> tuple:
    dims = (dims,) if isinstance(dims, int) else tuple(dims)
    nd = tuple(norm_dim(d, ndim, op) for d in dims)
    if len(set(nd)) != len(nd):
        raise ValueError(f"{op}: dims {dims} contain a repeated dimension")
    return nd if ndim else ()


def flip(input: Any, dims: Any) -> Any:  # noqa: A002
    """Reverse the order of elements along ``dims`` (a copy, as in PyTorch)."""
    return Flip.apply(input, _dims(dims, input.ndim, "flip"))


def fliplr(input: Any) -> Any:  # noqa: A002
    """Flip along dim 1 (needs at least 2 dims)."""
    if input.ndim < 2:
        raise ShapeError(f"fliplr: input must have at least 2 dims, got shape {tuple(input.shape)}")
    return flip(input, 1)


def flipud(input: Any) -> Any:  # noqa: A002
    """Flip along dim 0 (needs at least 1 dim)."""
    if input.ndim < 1:
        raise ShapeError("flipud: input must have at least 1 dim")
    return flip(input, 0)


class Roll(Function):
    @staticmethod
    def forward(ctx, x, shifts, dims):
        ctx.shifts, ctx.dims = shifts, dims
        return ctx.xp.roll(x, shifts, axis=dims)

    @staticmethod
    def backward(ctx, g):
        neg = tuple(-s for s in ctx.shifts) if isinstance(ctx.shifts, tuple) else -ctx.shifts
        return ctx.xp.roll(g, neg, axis=ctx.dims), None, None


def roll(input: Any, shifts: Any, dims: Any = None) -> Any:  # noqa: A002
    """Rotate elements along ``dims`` by ``shifts`` (ints or matching tuples); with
    ``dims=None`` the flattened tensor is rolled and the shape restored."""
    if dims is None:
        if not isinstance(shifts, int):
            shifts = tuple(shifts)
            if len(shifts) != 1:
                raise ValueError(f"roll: with dims=None, shifts must be a single int, got {shifts}")
            shifts = shifts[0]
        return Roll.apply(input, int(shifts), None)
    sh = (shifts,) if isinstance(shifts, int) else tuple(int(s) for s in shifts)
    dm = (dims,) if isinstance(dims, int) else tuple(dims)
    if len(sh) != len(dm):
        raise ValueError(f"roll: shifts {sh} and dims {dm} must have the same length")
    dm = tuple(norm_dim(d, input.ndim, "roll") for d in dm)
    return Roll.apply(input, sh, dm)


class _Tri(Function):
    @staticmethod
    def forward(ctx, x, diagonal, upper):
        xp = ctx.xp
        n, m = x.shape[-2:]
        keep = xp.tri(n, m, k=diagonal - 1 if upper else diagonal, dtype=bool)
        if upper:
            keep = ~keep
        ctx.keep, ctx.diagonal, ctx.upper = keep, diagonal, upper
        return xp.where(keep, x, xp.zeros((), dtype=x.dtype))

    @staticmethod
    def backward(ctx, g):
        return ctx.xp.where(ctx.keep, g, ctx.xp.zeros((), dtype=g.dtype)), None, None

    @staticmethod
    def differentiable_backward(ctx, g):
        return _Tri.apply(g, ctx.diagonal, ctx.upper), None, None


def _tri(x: Any, diagonal: int, upper: bool) -> Any:
    op = "triu" if upper else "tril"
    if x.ndim < 2:
        raise ShapeError(f"{op}: input must have at least 2 dims, got shape {tuple(x.shape)}")
    return _Tri.apply(x, int(diagonal), upper)


def tril(input: Any, diagonal: int = 0) -> Any:  # noqa: A002
    """The lower triangle of the last two dims (entries with ``j - i <= diagonal``); the rest 0."""
    return _tri(input, diagonal, False)


def triu(input: Any, diagonal: int = 0) -> Any:  # noqa: A002
    """The upper triangle of the last two dims (entries with ``j - i >= diagonal``); the rest 0."""
    return _tri(input, diagonal, True)


def tril_(input: Any, diagonal: int = 0) -> Any:  # noqa: A002
    """In-place :func:`tril`; returns ``input``."""
    return input._inplace_result(tril(input, diagonal), "tril_")


def triu_(input: Any, diagonal: int = 0) -> Any:  # noqa: A002
    """In-place :func:`triu`; returns ``input``."""
    return input._inplace_result(triu(input, diagonal), "triu_")


METHODS = {
    "tril_": tril_,
    "triu_": triu_,
    "split": split,
    "chunk": chunk,
    "unbind": unbind,
    "repeat": repeat,
    "tile": tile,
    "repeat_interleave": repeat_interleave,
    "flip": flip,
    "fliplr": fliplr,
    "flipud": flipud,
    "roll": roll,
    "tril": tril,
    "triu": triu,
}

__all__ = [
    "cat", "chunk", "concat", "concatenate", "flip", "fliplr", "flipud", "repeat_interleave", "roll",
    "split", "stack", "tile", "tril", "triu", "unbind",
]
