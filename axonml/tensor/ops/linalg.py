"""Products beyond ``matmul``: bmm, dot, outer, the ``add*`` fused forms, ``linear`` and
``bilinear``, trace, cross, kron. (``mm``/``matmul`` live in core; einsum and tensordot in
:mod:`.linalg_einsum`, split for length and re-exported here.)

Note on autocast: mirroring PyTorch's CPU policy, bmm, baddbmm, addmm, addbmm, linear,
einsum/tensordot with two or more operands and N-d inner compute in the autocast dtype
(float32/float16/bfloat16 inputs only; float64 is left alone); dot, mv, outer, kron and
bilinear keep the input dtype; trace runs in float32.

Note on precision: matrix products go through ``runtime.devices.kernels.matmul`` (float16/
bfloat16 accumulate in float32 on the CPU); dot and einsum compute half types in float32
and round once.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from ...autograd.autocast import upcast_dtype
from ...autograd.engine import claim_grad_buffer
from ...autograd.function import Function
from ...errors import ShapeError
from ...runtime.devices.kernels import _is_low_float
from ...runtime.devices.kernels import matmul as _mm
from .._helpers import norm_dim, sum_to_shape
from .linalg_einsum import check_tensors as _check_tensors
from .linalg_einsum import common as _common
from .linalg_einsum import einsum, einsum_impl, tensordot
from .linalg_einsum import up as _up


# -- batched matrix products -------------------------------------------------------------------
class Bmm(Function):
    """``a @ b`` for operands of equal rank (2 or 3) and equal batch size."""

    keep_inputs = True

    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return _mm(ctx.xp, a, b)

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.saved_tensors
        xp = ctx.xp
        need = ctx.needs_input_grad
        ga = _mm(xp, g, xp.swapaxes(b, -1, -2)) if need[0] else None
        gb = _mm(xp, xp.swapaxes(a, -1, -2), g) if need[1] else None
        return ga, gb

    @staticmethod
    def differentiable_backward(ctx, g):
        a, b = ctx.inputs
        need = ctx.needs_input_grad
        ga = Bmm.apply(g, b.transpose(-1, -2)) if need[0] else None
        gb = Bmm.apply(a.transpose(-1, -2), g) if need[1] else None
        return ga, gb


def bmm(input: Any, mat2: Any) -> Any:
    """Batched matrix product of ``(b, n, m)`` and ``(b, m, p)`` tensors -> ``(b, n, p)``.

    No broadcasting (use ``matmul`` for that). Example: ``ax.bmm(q, k.transpose(1, 2))``
    """
    _check_tensors("bmm", input, mat2)
    if input.ndim != 3 or mat2.ndim != 3:
        raise ShapeError(f"bmm: expected two 3-D tensors, got shapes {tuple(input.shape)} and {tuple(mat2.shape)}")
    if input.shape[0] != mat2.shape[0] or input.shape[2] != mat2.shape[1]:
        raise ShapeError(
            f"bmm: shapes {tuple(input.shape)} and {tuple(mat2.shape)} do not fit: need (b, n, m) and "
            f"(b, m, p) with equal batch sizes and the middle sizes matching"
        )
    return Bmm.apply(*_common([input, mat2], True))


def _matrix_product(a: Any, b: Any, op: str) -> Any:
    if a.ndim != 2 or b.ndim != 2:
        raise ShapeError(f"{op}: expected 2-D matrices, got shapes {tuple(a.shape)} and {tuple(b.shape)}")
    if a.shape[1] != b.shape[0]:
        raise ShapeError(
            f"{op}: shapes {tuple(a.shape)} and {tuple(b.shape)} "
            f"cannot be multiplied ({a.shape[1]} != {b.shape[0]})"
        )
    return Bmm.apply(a, b)


def _add_scaled(prod: Any, input: Any, beta: Any, alpha: Any, op: str) -> Any:
    """``beta * input + alpha * prod``; ``input`` must broadcast to ``prod``'s shape."""
    try:
        shape = np.broadcast_shapes(tuple(input.shape), tuple(prod.shape))
    except ValueError:
        shape = None
    if shape != tuple(prod.shape):
        raise ShapeError(
            f"{op}: input of shape {tuple(input.shape)} cannot be "
            f"broadcast to the product's shape {tuple(prod.shape)}"
        )
    if alpha != 1:
        prod = prod * alpha
    if beta == 0:  # PyTorch: input is ignored (its NaN/inf are not propagated) and gets a zero gradient
        return _IgnoreSecond.apply(prod, input)
    return prod + (input if beta == 1 else input * beta)


class _IgnoreSecond(Function):
    """Returns (a copy of) its first input; the second gets a zero gradient."""

    @staticmethod
    def forward(ctx, a, b):
        ctx.b_shape, ctx.b_dtype = b.shape, b.dtype
        return a.copy()

    @staticmethod
    def backward(ctx, g):
        return g, ctx.xp.zeros(ctx.b_shape, dtype=ctx.b_dtype)


def baddbmm(input: Any, batch1: Any, batch2: Any, *, beta: Any = 1, alpha: Any = 1) -> Any:
    """``beta * input + alpha * bmm(batch1, batch2)``.

    Example: ``ax.baddbmm(bias, q, kt, alpha=scale)``
    """
    _check_tensors("baddbmm", input, batch1, batch2)
    input, batch1, batch2 = _common([input, batch1, batch2], True)
    return _add_scaled(bmm(batch1, batch2), input, beta, alpha, "baddbmm")


def addmm(input: Any, mat1: Any, mat2: Any, *, beta: Any = 1, alpha: Any = 1) -> Any:
    """``beta * input + alpha * (mat1 @ mat2)`` for 2-D ``mat1``, ``mat2``."""
    _check_tensors("addmm", input, mat1, mat2)
    input, mat1, mat2 = _common([input, mat1, mat2], True)
    return _add_scaled(_matrix_product(mat1, mat2, "addmm"), input, beta, alpha, "addmm")


def addbmm(input: Any, batch1: Any, batch2: Any, *, beta: Any = 1, alpha: Any = 1) -> Any:
    """``beta * input + alpha * sum_b(batch1[b] @ batch2[b])``."""
    _check_tensors("addbmm", input, batch1, batch2)
    input, batch1, batch2 = _common([input, batch1, batch2], True)
    if batch1.ndim != 3 or batch2.ndim != 3:
        raise ShapeError(f"addbmm: expected 3-D batch1 and batch2, got shapes {tuple(batch1.shape)} and {tuple(batch2.shape)}")
    return _add_scaled(einsum_impl("bij,bjk->ik", [batch1, batch2], False), input, beta, alpha, "addbmm")


def mv(input: Any, vec: Any) -> Any:
    """Matrix-vector product of a ``(n, m)`` matrix and a ``(m,)`` vector."""
    _check_tensors("mv", input, vec)
    if input.ndim != 2 or vec.ndim != 1 or input.shape[1] != vec.shape[0]:
        raise ShapeError(
            "mv: expected a (n, m) matrix and a (m,) vector, got "
            f"shapes {tuple(input.shape)} and {tuple(vec.shape)}"
        )
    input, vec = _common([input, vec], False)
    return Bmm.apply(input, vec.reshape(-1, 1)).reshape(-1)


def addmv(input: Any, mat: Any, vec: Any, *, beta: Any = 1, alpha: Any = 1) -> Any:
    """``beta * input + alpha * mv(mat, vec)``."""
    _check_tensors("addmv", input, mat, vec)
    input, mat, vec = _common([input, mat, vec], False)
    return _add_scaled(mv(mat, vec), input, beta, alpha, "addmv")


# -- vector products ------------------------------------------------------------------------------
class Dot(Function):
    keep_inputs = True

    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return ctx.xp.asarray(ctx.xp.dot(_up(a), _up(b))).astype(a.dtype, copy=False)

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.saved_tensors
        need = ctx.needs_input_grad
        return (g * b if need[0] else None), (g * a if need[1] else None)

    @staticmethod
    def differentiable_backward(ctx, g):
        a, b = ctx.inputs
        need = ctx.needs_input_grad
        return (g * b if need[0] else None), (g * a if need[1] else None)


def dot(input: Any, other: Any) -> Any:
    """Inner product of two 1-D tensors of equal length (a 0-d tensor).

    Example: ``ax.dot(ax.tensor([1.0, 2.0]), ax.tensor([3.0, 4.0]))`` -> ``tensor(11.)``
    """
    _check_tensors("dot", input, other)
    if input.ndim != 1 or other.ndim != 1:
        raise ShapeError(f"dot: expected two 1-D tensors, got shapes {tuple(input.shape)} and {tuple(other.shape)}")
    if input.shape[0] != other.shape[0]:
        raise ShapeError(
            f"dot: inconsistent tensor sizes {input.shape[0]} and {other.shape[0]} "
            f"(shapes {tuple(input.shape)}, {tuple(other.shape)})"
        )
    return Dot.apply(*_common([input, other], False))


def vdot(input: Any, other: Any) -> Any:
    """:func:`dot`; the first argument's conjugate is itself for real tensors."""
    return dot(input, other)


def outer(input: Any, vec2: Any) -> Any:
    """Outer product ``input[:, None] * vec2[None, :]`` of two 1-D tensors."""
    _check_tensors("outer", input, vec2)
    if input.ndim != 1 or vec2.ndim != 1:
        raise ShapeError(f"outer: expected two 1-D tensors, got shapes {tuple(input.shape)} and {tuple(vec2.shape)}")
    return input.reshape(-1, 1) * vec2.reshape(1, -1)


def ger(input: Any, vec2: Any) -> Any:
    """Alias of :func:`outer`."""
    return outer(input, vec2)


def inner(input: Any, other: Any) -> Any:
    """Sum of products over the last dimensions (0-d operands multiply)."""
    _check_tensors("inner", input, other)
    if input.ndim == 0 or other.ndim == 0:
        return input * other
    if input.ndim == 1 and other.ndim == 1:
        return dot(input, other)
    return tensordot(input, other, dims=([-1], [-1]))


def kron(input: Any, other: Any) -> Any:
    """Kronecker product: block ``(i, j)`` of the result is ``input[i, j] * other``."""
    _check_tensors("kron", input, other)
    nd = max(input.ndim, other.ndim)
    sa = (1,) * (nd - input.ndim) + tuple(input.shape)
    sb = (1,) * (nd - other.ndim) + tuple(other.shape)
    a = input.reshape(tuple(x for s in sa for x in (s, 1)))  # (a0, 1, a1, 1, ...)
    b = other.reshape(tuple(x for s in sb for x in (1, s)))  # (1, b0, 1, b1, ...)
    return (a * b).reshape(tuple(x * y for x, y in zip(sa, sb)))


# -- linear layers ----------------------------------------------------------------------------------
class Linear(Function):
    """``x @ w.T + b`` over the last dimension of ``x``; ``w`` is ``(out, in)``."""

    keep_inputs = True

    @staticmethod
    def forward(ctx, x, w, b):
        xp = ctx.xp
        ctx.save_for_backward(x, w)
        ctx.has_b = b is not None
        y = _mm(xp, x.reshape(-1, x.shape[-1]), w.T)  # (M, in) @ (in, out)
        if b is not None:
            y += b
        return y.reshape(x.shape[:-1] + (w.shape[0],))

    @staticmethod
    def backward(ctx, g):
        x, w = ctx.saved_tensors
        xp = ctx.xp
        need = ctx.needs_input_grad
        g2 = g.reshape(-1, w.shape[0])  # (M, out)
        gx = _mm(xp, g2, w).reshape(x.shape) if need[0] else None
        gw = None
        if need[1]:
            x2 = x.reshape(-1, x.shape[-1])
            # straight into the weight's gradient storage when one is offered (DDP's bucket slot)
            plain = w.ndim == 2 and not _is_low_float(w.dtype) and x.dtype == w.dtype == g2.dtype
            out = claim_grad_buffer(ctx, 1, w.shape, w.dtype) if plain else None
            gw = _mm(xp, g2.T, x2) if out is None else xp.matmul(g2.T, x2, out=out)
        gb = None
        if ctx.has_b and need[2]:  # low-precision sums accumulate in float32
            gb = _up(g2).sum(axis=0).astype(w.dtype, copy=False)
        return gx, gw, gb

    @staticmethod
    def differentiable_backward(ctx, g):
        x, w, b = ctx.inputs
        need = ctx.needs_input_grad
        g2 = g.reshape(-1, w.shape[0])
        gx = Bmm.apply(g2, w).reshape(tuple(x.shape)) if need[0] else None
        gw = Bmm.apply(g2.t(), x.reshape(-1, x.shape[-1])) if need[1] else None
        gb = g2.sum(0) if b is not None and need[2] else None
        return gx, gw, gb


def linear(input: Any, weight: Any, bias: Any = None) -> Any:
    """``input @ weight.T + bias``: ``input`` is ``(*, in)``, ``weight`` is ``(out, in)``
    (or ``(in,)``), ``bias`` is ``(out,)``. Under autocast it computes in the autocast dtype.

    Example: ``ax.linear(x, w, b)`` is what ``nn.Linear`` calls.
    """
    _check_tensors("linear", input, weight, *([] if bias is None else [bias]))
    if input.ndim == 0 or weight.ndim not in (1, 2):
        raise ShapeError(
            "linear: expected input with >= 1 dim and a 1-D or 2-D weight, "
            f"got shapes {tuple(input.shape)} and {tuple(weight.shape)}"
        )
    if input.shape[-1] != weight.shape[-1]:
        raise ShapeError(
            f"linear: input of shape {tuple(input.shape)} has {input.shape[-1]} features but weight of shape "
            f"{tuple(weight.shape)} expects {weight.shape[-1]} (weight is (out_features, in_features))"
        )
    n_out = weight.shape[0] if weight.ndim == 2 else 1
    if bias is not None and (bias.ndim > 1 or bias._data.size not in (1, n_out)):
        raise ShapeError(f"linear: bias of shape {tuple(bias.shape)} does not match out_features={n_out}")
    ts = _common([input, weight] + ([] if bias is None else [bias]), True)
    x, w = ts[0], ts[1]
    b = ts[2] if bias is not None else None
    if w.ndim == 1:
        w = w.reshape(1, -1)
    if b is not None and tuple(b.shape) != (n_out,):
        b = b.reshape(1).expand(n_out)
    y = Linear.apply(x, w, b)
    return y.reshape(tuple(input.shape[:-1])) if weight.ndim == 1 else y


def bilinear(input1: Any, input2: Any, weight: Any, bias: Any = None) -> Any:
    """``y[..., o] = sum_ij input1[..., i] * weight[o, i, j] * input2[..., j] + bias[o]``."""
    _check_tensors("bilinear", input1, input2, weight)
    if weight.ndim != 3 or input1.shape[-1] != weight.shape[1] or input2.shape[-1] != weight.shape[2]:
        raise ShapeError(
            f"bilinear: shapes {tuple(input1.shape)}, {tuple(input2.shape)} and weight {tuple(weight.shape)} do not "
            "fit: need (*, in1), (*, in2) and (out, in1, in2)"
        )
    y = einsum_impl("...i,oij,...j->...o", [input1, weight, input2], False)
    return y if bias is None else y + bias


# -- trace and cross ------------------------------------------------------------------------------------
class Trace(Function):
    @staticmethod
    def forward(ctx, x):
        ctx.shape, ctx.dtype = x.shape, x.dtype
        res = ctx.xp.trace(_up(x))
        floating = x.dtype.kind == "f" or (x.dtype.itemsize == 2 and x.dtype.kind not in "iu")  # bfloat16 is kind 'V'
        return ctx.xp.asarray(res).astype(x.dtype if floating else np.int64, copy=False)

    @staticmethod
    def backward(ctx, g):
        xp = ctx.xp
        gx = xp.zeros(ctx.shape, dtype=ctx.dtype)
        n = min(ctx.shape)
        idx = xp.arange(n)
        gx[idx, idx] = g
        return gx


def trace(input: Any) -> Any:
    """Sum of the main diagonal of a 2-D tensor (integer inputs give int64)."""
    _check_tensors("trace", input)
    if input.ndim != 2:
        raise ShapeError(f"trace: expected a 2-D tensor, got shape {tuple(input.shape)}")
    upc = upcast_dtype(input._device.type, input._dtype)
    if upc is not None:
        input = input.to(upc)
    return Trace.apply(input)


class Cross(Function):
    @staticmethod
    def forward(ctx, a, b, axis):
        ctx.save_for_backward(a, b)
        ctx.axis = axis
        return ctx.xp.cross(a, b, axis=axis)

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.saved_tensors
        xp = ctx.xp
        need = ctx.needs_input_grad
        ga = sum_to_shape(xp, xp.cross(b, g, axis=ctx.axis), a.shape) if need[0] else None
        gb = sum_to_shape(xp, xp.cross(g, a, axis=ctx.axis), b.shape) if need[1] else None
        return ga, gb, None


def cross(input: Any, other: Any, dim: int | None = None) -> Any:
    """3-D cross product along ``dim`` (operands broadcast). ``dim=None`` picks the first
    dimension of size 3, as ``torch.cross`` does (with a warning; prefer an explicit dim)."""
    _check_tensors("cross", input, other)
    try:
        shape = np.broadcast_shapes(tuple(input.shape), tuple(other.shape))
    except ValueError:
        raise ShapeError(f"cross: shapes {tuple(input.shape)} and {tuple(other.shape)} cannot be broadcast together") from None
    if dim is None:
        sizes3 = [i for i, s in enumerate(shape) if s == 3]
        if not sizes3:
            raise ShapeError(f"cross: no dimension of size 3 in the broadcast shape {shape}")
        warnings.warn("cross: dim=None picks the first dimension of size 3; pass dim explicitly", UserWarning, stacklevel=2)
        axis = sizes3[0]
    else:
        axis = norm_dim(dim, len(shape), "cross")
    input, other = _common([input, other], False)
    # (1, ..., 1, *shape): both operands get the broadcast rank
    if input.ndim != len(shape):
        input = input.reshape((1,) * (len(shape) - input.ndim) + tuple(input.shape))
    if other.ndim != len(shape):
        other = other.reshape((1,) * (len(shape) - other.ndim) + tuple(other.shape))
    if input.shape[axis] != 3 or other.shape[axis] != 3:
        raise ShapeError(
            f"cross: dimension {dim if dim is not None else axis} must have size 3 in both inputs, got shapes "
            f"{tuple(input.shape)} and {tuple(other.shape)}"
        )
    return Cross.apply(input, other, axis)


def _baddbmm_(self: Any, batch1: Any, batch2: Any, *, beta: Any = 1, alpha: Any = 1) -> Any:
    return self._inplace_result(baddbmm(self, batch1, batch2, beta=beta, alpha=alpha), "baddbmm_")


def _addmm_(self: Any, mat1: Any, mat2: Any, *, beta: Any = 1, alpha: Any = 1) -> Any:
    return self._inplace_result(addmm(self, mat1, mat2, beta=beta, alpha=alpha), "addmm_")


def _addmv_(self: Any, mat: Any, vec: Any, *, beta: Any = 1, alpha: Any = 1) -> Any:
    return self._inplace_result(addmv(self, mat, vec, beta=beta, alpha=alpha), "addmv_")


METHODS = {
    "bmm": bmm,
    "dot": dot,
    "vdot": vdot,
    "outer": outer,
    "ger": ger,
    "inner": inner,
    "kron": kron,
    "mv": mv,
    "baddbmm": baddbmm,
    "baddbmm_": _baddbmm_,
    "addmm": addmm,
    "addmm_": _addmm_,
    "addbmm": addbmm,
    "addmv": addmv,
    "addmv_": _addmv_,
    "trace": trace,
    "cross": cross,
}

__all__ = [
    "bmm", "dot", "vdot", "outer", "ger", "inner", "kron", "mv", "addmv", "baddbmm", "addmm",
    "addbmm", "einsum", "tensordot", "linear", "bilinear", "trace", "cross",
]
