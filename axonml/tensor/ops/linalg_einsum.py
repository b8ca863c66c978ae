"""einsum and tensordot, and the operand helpers the product ops share. Split from
:mod:`.linalg` for length; that module re-exports the public names.

Note on einsum gradients: the gradient of operand k is itself an einsum of the output
gradient with the other operands, written to k's subscripts. Two cases need help: a
subscript of k found nowhere else (it was summed out) gets a ones vector, and a subscript
repeated in k (a diagonal, ``'ii->i'``) gets an identity matrix tying the copies. Size-1
dimensions broadcast against larger ones (as in PyTorch) and their gradients are summed.
Ellipses are expanded into unused letters first, so the plans only see letters.

Note on autocast: with two or more operands einsum/tensordot compute in the autocast
dtype, as PyTorch's CPU autocast does (they decompose into bmm there).
"""

from __future__ import annotations

import string
from typing import Any

import numpy as np

from ...autograd.autocast import lower_dtype
from ...autograd.function import Function
from ...autograd.variable import TensorBase
from ...errors import ShapeError
from ...runtime.dtypes import promote_types
from .._helpers import norm_dim, sum_to_shape, wrap


def up(x: Any) -> Any:
    return x.astype(np.float32) if x.dtype.itemsize == 2 and x.dtype.kind not in "iu" else x


def check_tensors(op: str, *ts: Any) -> None:
    for t in ts:
        if not isinstance(t, TensorBase):
            raise TypeError(f"{op}: expected Tensor arguments, got {type(t).__name__}")


def common(tensors: list, autocast: bool) -> list:
    """Cast to one dtype: the autocast dtype (float32/16/bf16 inputs) or the promoted one."""
    low = lower_dtype(tensors[0]._device.type) if autocast else None
    if low is not None:
        tensors = [t.to(low) if t._dtype.is_floating_point and t._dtype.name != "float64" else t for t in tensors]
    dt = tensors[0]._dtype
    for t in tensors[1:]:
        dt = promote_types(dt, t._dtype)
    return [t if t._dtype is dt else t.to(dt) for t in tensors]


# -- einsum ------------------------------------------------------------------------------------------
_LETTERS = string.ascii_uppercase + string.ascii_lowercase


def _split_term(term: str, where: str) -> tuple:
    """(letters before '...', letters after, has_ellipsis) with validation."""
    if term.count("...") > 1 or term.replace("...", "").count("."):
        raise ValueError(f"einsum(): {where} subscript {term!r} has an invalid ellipsis (use '...' at most once)")
    for c in term.replace("...", ""):
        if c not in _LETTERS:
            raise ValueError(f"einsum(): invalid subscript {c!r} in {where} {term!r}; subscripts must be letters a-z, A-Z")
    if "..." in term:
        pre, post = term.split("...")
        return pre, post, True
    return term, "", False


def _parse_einsum(equation: str, shapes: list) -> tuple:
    """Expand ellipses into fresh letters; returns (terms, out, sizes, free letters)."""
    eq = equation.replace(" ", "")
    if eq.count("->") > 1:
        raise ValueError(f"einsum(): equation {equation!r} has more than one '->'")
    lhs, rhs = eq.split("->") if "->" in eq else (eq, None)
    raw = lhs.split(",")
    if len(raw) != len(shapes):
        raise ValueError(f"einsum(): the equation {equation!r} names {len(raw)} operand(s) but {len(shapes)} were given")
    used = {c for c in eq if c in _LETTERS}
    free = [c for c in _LETTERS if c not in used]
    parts = [_split_term(t, f"operand {k}") for k, t in enumerate(raw)]
    n_ell = []
    for k, ((pre, post, ell), shape) in enumerate(zip(parts, shapes)):
        named = len(pre) + len(post)
        if (ell and named > len(shape)) or (not ell and named != len(shape)):
            raise ShapeError(
                f"einsum(): operand {k} has {len(shape)} dim(s) (shape "
                f"{tuple(shape)}) but its subscript {raw[k]!r} names {named}"
            )
        n_ell.append(len(shape) - named if ell else 0)
    m = max(n_ell, default=0)
    if m > len(free):
        raise ValueError("einsum(): too many dimensions: every dimension needs its own letter (52 at most)")
    ell_letters, free = "".join(free[:m]), free[m:]
    terms = [pre + ell_letters[m - n:] + post for (pre, post, _), n in zip(parts, n_ell)]
    if rhs is None:
        counts: dict = {}
        for t in raw:
            for c in t.replace("...", ""):
                counts[c] = counts.get(c, 0) + 1
        out = ell_letters + "".join(sorted(c for c, n in counts.items() if n == 1))
    else:
        pre, post, ell = _split_term(rhs, "output")
        out = pre + (ell_letters if ell else "") + post
        for c in out:
            if out.count(c) > 1:
                raise ValueError(f"einsum(): output subscript {c} appears more than once in the output {rhs!r}")
            if not any(c in t for t in terms):
                raise ValueError(f"einsum(): output subscript {c} does not appear in any operand of {equation!r}")
    sizes: dict = {}
    for k, (t, shape) in enumerate(zip(terms, shapes)):
        mine: dict = {}
        for c, s in zip(t, shape):
            if c in mine and mine[c] != s:
                raise ShapeError(
                    f"einsum(): subscript {c} is repeated for operand "
                    f"{k} but the sizes don't match, {mine[c]} != {s}"
                )
            mine[c] = s
            prev = sizes.get(c)
            if prev is None or prev == 1:
                sizes[c] = s
            elif s != 1 and s != prev:
                raise ShapeError(
                    f"einsum(): subscript {c} has size {s} for operand {k} (shape {tuple(shape)}) which does not "
                    f"broadcast with previously seen size {prev}"
                )
    return terms, out, sizes, free


def _grad_plan(k: int, terms: list, out: str, sizes: dict, free: list) -> tuple:
    """(equation, sources) giving operand k's gradient; sources name the operands:
    'g', ('in', j), ('ones', n) or ('eye', n)."""
    src_terms, sources = [out], ["g"]
    for j, t in enumerate(terms):
        if j != k:
            src_terms.append(t)
            sources.append(("in", j))
    present = set("".join(src_terms))
    fresh = iter(free)
    target, seen = [], set()
    for c in terms[k]:
        if c in seen:  # a diagonal: a new letter tied to c by an identity matrix
            c2 = next(fresh)
            src_terms.append(c + c2)
            sources.append(("eye", sizes[c]))
            target.append(c2)
            continue
        seen.add(c)
        if c not in present:  # summed out of operand k only: broadcast back with ones
            src_terms.append(c)
            sources.append(("ones", sizes[c]))
        target.append(c)
    return ",".join(src_terms) + "->" + "".join(target), sources


class Einsum(Function):
    keep_inputs = True

    @staticmethod
    def forward(ctx, spec, *arrays):
        terms, out, sizes, free = spec
        xp = ctx.xp
        ctx.spec = spec
        ctx.save_for_backward(*arrays)
        ops = [_expand(xp, up(a), t, sizes) for a, t in zip(arrays, terms)]
        res = xp.einsum(",".join(terms) + "->" + out, *ops, optimize=len(ops) > 1)
        return xp.asarray(res).astype(arrays[0].dtype, copy=False)

    @staticmethod
    def backward(ctx, g):
        terms, out, sizes, free = ctx.spec
        arrays = ctx.saved_tensors
        xp = ctx.xp
        ops = [_expand(xp, up(a), t, sizes) for a, t in zip(arrays, terms)]
        g = up(g)
        grads = [None]
        for k, a in enumerate(arrays):
            if not ctx.needs_input_grad[k + 1]:
                grads.append(None)
                continue
            eq, sources = _grad_plan(k, terms, out, sizes, free)
            const = {"ones": lambda n: xp.ones(n, g.dtype), "eye": lambda n: xp.eye(n, dtype=g.dtype)}
            vals = [g if s == "g" else ops[s[1]] if s[0] == "in" else const[s[0]](s[1]) for s in sources]
            r = xp.asarray(xp.einsum(eq, *vals, optimize=len(vals) > 1))
            grads.append(sum_to_shape(xp, r, a.shape).astype(a.dtype, copy=False))
        return tuple(grads)

    @staticmethod
    def differentiable_backward(ctx, g):
        terms, out, sizes, free = ctx.spec
        inputs = ctx.inputs[1:]
        xp = ctx.xp
        grads = [None]
        for k, a in enumerate(inputs):
            if not ctx.needs_input_grad[k + 1]:
                grads.append(None)
                continue
            eq, sources = _grad_plan(k, terms, out, sizes, free)
            dt = a._dtype.np
            vals = []
            for s in sources:
                if s == "g":
                    vals.append(g)
                elif s[0] == "in":  # broadcast size-1 dims as the forward did
                    t = inputs[s[1]]
                    full = tuple(sizes[c] for c in terms[s[1]])
                    vals.append(t if tuple(t.shape) == full else t.expand(*full))
                else:
                    vals.append(wrap(xp.ones(s[1], dt) if s[0] == "ones" else xp.eye(s[1], dtype=dt), g))
            grads.append(einsum_impl(eq, vals, False).sum_to_size(tuple(a.shape)))
        return tuple(grads)


def _expand(xp: Any, a: Any, term: str, sizes: dict) -> Any:
    """Broadcast size-1 dims to the subscript's size (a view)."""
    shape = tuple(sizes[c] for c in term)
    return a if a.shape == shape else xp.broadcast_to(a, shape)


def einsum_impl(equation: str, operands: list, autocast: bool) -> Any:
    check_tensors("einsum", *operands)
    if not operands:
        raise ValueError("einsum(): must provide at least one operand")
    operands = common(list(operands), autocast and len(operands) > 1)
    spec = _parse_einsum(equation, [tuple(t.shape) for t in operands])
    return Einsum.apply(spec, *operands)


def einsum(equation: str, *operands: Any) -> Any:
    """Einstein summation: ``einsum('bij,bjk->bik', a, b)``; operands may also be given
    as one list. Supports '...', implicit output (letters used once, sorted),
    repeated subscripts (diagonals, ``'ii->i'``) and size-1 broadcasting.

    Example: ``ax.einsum('ij,ij->i', a, b)`` (row-wise dot products)
    """
    if not isinstance(equation, str):
        raise TypeError("einsum(): the first argument must be the equation string (the sublist format is not supported)")
    if len(operands) == 1 and isinstance(operands[0], (list, tuple)):
        operands = tuple(operands[0])
    return einsum_impl(equation, list(operands), True)


def tensordot(a: Any, b: Any, dims: Any = 2, out: Any = None) -> Any:
    """Contract the last ``dims`` dims of ``a`` with the first ``dims`` of ``b``, or the
    dims listed in ``dims = ([a dims], [b dims])``."""
    check_tensors("tensordot", a, b)
    if out is not None:
        raise TypeError("tensordot: out= is not supported; use the returned tensor")
    if isinstance(dims, TensorBase):
        dims = dims.tolist()
    if isinstance(dims, int):
        if dims < 0 or dims > min(a.ndim, b.ndim):
            raise ShapeError(f"tensordot: dims={dims} is out of range for shapes {tuple(a.shape)} and {tuple(b.shape)}")
        da, db = list(range(a.ndim - dims, a.ndim)), list(range(dims))
    else:
        da, db = ([d] if isinstance(d, int) else list(d) for d in dims)
    if len(da) != len(db):
        raise ShapeError(f"tensordot: both dims lists must have the same length, got {da} and {db}")
    da = [norm_dim(d, a.ndim, "tensordot") for d in da]
    db = [norm_dim(d, b.ndim, "tensordot") for d in db]
    for i, j in zip(da, db):
        if a.shape[i] != b.shape[j]:
            raise ShapeError(
                f"tensordot: contracted dimension {i} of a (size {a.shape[i]}) "
                f"does not match dimension {j} of b (size {b.shape[j]})"
            )
    if a.ndim + b.ndim - len(da) > len(_LETTERS):
        raise ValueError("tensordot: too many dimensions")
    la = _LETTERS[: a.ndim]
    lb = list(_LETTERS[a.ndim : a.ndim + b.ndim])
    for i, j in zip(da, db):
        lb[j] = la[i]
    lb = "".join(lb)
    out_s = "".join(c for i, c in enumerate(la) if i not in da) + "".join(c for j, c in enumerate(lb) if j not in db)
    return einsum_impl(f"{la},{lb}->{out_s}", [a, b], True)
