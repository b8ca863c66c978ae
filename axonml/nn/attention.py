"""Attention: ``scaled_dot_product_attention`` and ``MultiheadAttention``.

Note on the softmax: both entry points end in one fused op, ``_MaskedSoftmax``, which
scales the scores, adds the (already additive, float) mask, applies the causal triangle and normalises, in
one graph node whose backward needs only the probabilities. It has two modes because
PyTorch has two: ``scaled_dot_product_attention`` (and ``MultiheadAttention`` with
``need_weights=False``, which PyTorch routes through it) uses a *safe* softmax where a
row whose every key is masked gives zeros; ``MultiheadAttention`` with
``need_weights=True`` uses a plain softmax, where such a row gives NaN. float16 and
bfloat16 scores are normalised in float32.

Note on masks: PyTorch's conventions differ by entry point and are kept. For
``scaled_dot_product_attention`` a bool mask is True where a query *may* attend; for
``MultiheadAttention`` a bool ``attn_mask`` or ``key_padding_mask`` is True where it
*may not*. Float masks are added to the scores everywhere. Masks are turned into one
additive float mask (``-inf`` for blocked positions) before the softmax.

Layout: ``MultiheadAttention`` works in PyTorch's (L, N*H, head_dim) layout internally so
that a 3-D ``attn_mask`` of shape (N*num_heads, L, S) means what it means in PyTorch.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..autograd.function import Function
from ..errors import DTypeError, ShapeError
from ..tensor import Tensor, cat, chunk, dropout, full, linear, squeeze, unsqueeze, zeros
from ..tensor._helpers import sum_to_shape
from . import init
from .linear import Linear
from .module import Module
from .parameter import Parameter

_LOW_PRECISION = ("float16", "bfloat16")


class _MaskedSoftmax(Function):
    """softmax(scores * scale + mask, dim=-1) with an optional top-left causal triangle.

    ``safe=True``: rows where every entry is -inf give 0 (PyTorch's SDPA); otherwise NaN.
    Half-precision scores are normalised in float32 and cast back.
    """

    @staticmethod
    def forward(ctx, scores, mask, causal, safe, scale):
        xp = ctx.xp
        ctx.out_dtype, ctx.scale = scores.dtype, scale
        ctx.mask_shape = None if mask is None else mask.shape
        low = scores.dtype.name in _LOW_PRECISION
        z = (scores.astype(np.float32) if low else scores) * scale
        if mask is not None:
            z = z + (mask.astype(np.float32) if low else mask)
        if causal:
            L, S = z.shape[-2], z.shape[-1]
            keep = xp.tril(xp.ones((L, S), dtype=bool))
            z = xp.where(keep, z, -xp.inf)
        m = z.max(axis=-1, keepdims=True)
        if safe:
            m = xp.where(m == -xp.inf, 0, m)
        with np.errstate(invalid="ignore"):  # fully masked rows in plain mode: NaN, as in PyTorch
            e = xp.exp(z - m)
            s = e.sum(axis=-1, keepdims=True)
            if safe:
                s = xp.where(s == 0, 1, s)
            y = e / s
        ctx.y = y
        return y.astype(scores.dtype, copy=False)

    @staticmethod
    def backward(ctx, g):
        xp = ctx.xp
        y = ctx.y
        g = g.astype(y.dtype, copy=False)
        gz = y * (g - (g * y).sum(axis=-1, keepdims=True))
        g_scores = (gz * ctx.scale).astype(ctx.out_dtype, copy=False) if ctx.needs_input_grad[0] else None
        g_mask = sum_to_shape(xp, gz, ctx.mask_shape) if ctx.mask_shape is not None and ctx.needs_input_grad[1] else None
        return g_scores, g_mask, None, None, None


def _masked_softmax(scores: Tensor, mask: Tensor | None, causal: bool, safe: bool, scale: float = 1.0) -> Tensor:
    if mask is not None:
        try:
            full_shape = np.broadcast_shapes(tuple(mask.shape), tuple(scores.shape))
        except ValueError:
            full_shape = None
        if full_shape != tuple(scores.shape):
            raise ShapeError(
                f"attention: the mask of shape {tuple(mask.shape)} cannot be broadcast to the attention "
                f"scores of shape {tuple(scores.shape)} (batch..., L, S); give a mask of shape (L, S) or one "
                "that broadcasts to it"
            )
    return _MaskedSoftmax.apply(scores, mask, bool(causal), bool(safe), float(scale))


def _check_float_mask(mask: Tensor, name: str, dtype: Any, op: str) -> None:
    if mask.dtype.is_floating_point:
        if mask.dtype is not dtype:
            raise DTypeError(
                f"{op}: a float {name} must have the query's dtype {dtype}, got {mask.dtype}; "
                f"cast it with {name}.to(query.dtype) or pass a bool mask"
            )
    elif mask.dtype.name != "bool":
        raise DTypeError(f"{op}: only bool and floating {name} are supported, got dtype {mask.dtype}")


def _additive(mask: Tensor, blocked_when: bool, dtype: Any) -> Tensor:
    """A float mask with ``-inf`` where ``mask == blocked_when`` and 0 elsewhere."""
    if blocked_when:
        return zeros(*mask.shape, dtype=dtype, device=mask.device).masked_fill(mask, -math.inf)
    return full(tuple(mask.shape), -math.inf, dtype=dtype, device=mask.device).masked_fill(mask, 0.0)


def scaled_dot_product_attention(
    query: Tensor,
    key: Tensor,
    value: Tensor,
    attn_mask: Tensor | None = None,
    dropout_p: float = 0.0,
    is_causal: bool = False,
    scale: float | None = None,
    enable_gqa: bool = False,
) -> Tensor:
    """softmax(query @ key^T * scale + mask) @ value, as ``torch.nn.functional.scaled_dot_product_attention``.

    Args:
        query: (..., L, E); key: (..., S, E); value: (..., S, Ev).
        attn_mask: bool (True = may attend) or float (added to the scores), broadcastable
            to (..., L, S).
        dropout_p: dropout on the attention probabilities (always applied when > 0, as in
            PyTorch; pass 0.0 in evaluation).
        is_causal: mask out keys after each query (top-left aligned triangle); as in
            PyTorch, giving both ``is_causal`` and ``attn_mask`` is an error.
        scale: defaults to 1/sqrt(E).
        enable_gqa: grouped-query attention: key/value heads (dim -3) are repeated to
            match the query's heads.
    Returns:
        (..., L, Ev). A query whose every key is masked gives zeros.

    Example::

        q = k = v = ax.randn(2, 4, 8, 16)
        out = scaled_dot_product_attention(q, k, v, is_causal=True)   # (2, 4, 8, 16)
    """
    op = "scaled_dot_product_attention"
    if query.ndim < 2 or key.ndim < 2 or value.ndim < 2:
        raise ShapeError(
            f"{op}: query, key and value need at least 2 dims (..., L, E); got shapes "
            f"{tuple(query.shape)}, {tuple(key.shape)}, {tuple(value.shape)}"
        )
    if query.shape[-1] != key.shape[-1] or key.shape[-2] != value.shape[-2]:
        raise ShapeError(
            f"{op}: query (..., L, E) and key (..., S, E) must share E, and key and value (..., S, Ev) must "
            f"share S; got shapes {tuple(query.shape)}, {tuple(key.shape)}, {tuple(value.shape)}"
        )
    if not (query.dtype is key.dtype is value.dtype) or not query.dtype.is_floating_point:
        raise DTypeError(
            f"{op}: query, key and value must have one floating dtype, got {query.dtype}, {key.dtype}, {value.dtype}"
        )
    if is_causal and attn_mask is not None:
        raise ValueError(
            f"{op}: explicit attn_mask should not be set when is_causal=True; fold the causal triangle into the mask"
        )
    if enable_gqa:
        key, value = _repeat_kv_heads(query, key, op), _repeat_kv_heads(query, value, op)
    if scale is None:
        scale = 1.0 / math.sqrt(query.shape[-1])
    scores = query @ key.transpose(-2, -1)  # (..., L, S); the softmax op applies the scale
    mask = None
    if attn_mask is not None:
        _check_float_mask(attn_mask, "attn_mask", query.dtype, op)
        mask = attn_mask if attn_mask.dtype.is_floating_point else _additive(attn_mask, False, query.dtype)
    probs = _masked_softmax(scores, mask, is_causal, True, scale)
    if dropout_p > 0.0:
        probs = dropout(probs, dropout_p, True)
    return probs @ value


def _repeat_kv_heads(query: Tensor, kv: Tensor, op: str) -> Tensor:
    """Repeat each key/value head (dim -3) so the head counts match the query's."""
    if query.ndim < 3 or kv.ndim < 3:
        raise ShapeError(f"{op}: enable_gqa needs a heads dim (..., H, L, E); got query {tuple(query.shape)}, {tuple(kv.shape)}")
    hq, hk = query.shape[-3], kv.shape[-3]
    if hk == 0 or hq % hk:
        raise ShapeError(f"{op}: enable_gqa needs the query heads ({hq}) to be a multiple of the key/value heads ({hk})")
    if hq == hk:
        return kv
    groups = hq // hk
    lead = tuple(kv.shape[:-3])
    s, e = kv.shape[-2], kv.shape[-1]
    x = unsqueeze(kv, -3).expand(*lead, hk, groups, s, e)  # (..., Hk, groups, S, E)
    return x.reshape(*lead, hk * groups, s, e)


class MultiheadAttention(Module):
    """Multi-head attention, as ``torch.nn.MultiheadAttention`` (same parameter names).

    Args:
        embed_dim: model width E; num_heads: heads H (E must be divisible by H).
        dropout: dropout on the attention weights in training.
        bias: biases on the input and output projections.
        add_bias_kv: learnable ``bias_k``/``bias_v`` appended to the key/value sequence.
        add_zero_attn: append a zero key/value to the sequence.
        kdim, vdim: key/value widths (default E); when they differ from E the projections
            are ``q_proj_weight``/``k_proj_weight``/``v_proj_weight`` instead of ``in_proj_weight``.
        batch_first: inputs are (N, L, E) instead of (L, N, E).

    Example::

        mha = MultiheadAttention(16, 4, batch_first=True)
        x = ax.randn(2, 5, 16)
        out, weights = mha(x, x, x)        # (2, 5, 16), (2, 5, 5)
    """

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        dropout: float = 0.0,
        bias: bool = True,
        add_bias_kv: bool = False,
        add_zero_attn: bool = False,
        kdim: int | None = None,
        vdim: int | None = None,
        batch_first: bool = False,
        device: Any = None,
        dtype: Any = None,
    ) -> None:
        super().__init__()
        if embed_dim <= 0 or num_heads <= 0:
            raise ValueError(f"MultiheadAttention: embed_dim and num_heads must be > 0, got {embed_dim} and {num_heads}")
        if embed_dim % num_heads:
            raise ValueError(f"MultiheadAttention: embed_dim ({embed_dim}) must be divisible by num_heads ({num_heads})")
        if not 0.0 <= dropout <= 1.0:
            raise ValueError(f"MultiheadAttention: dropout must be in [0, 1], got {dropout}")
        fk = {"device": device, "dtype": dtype}
        self.embed_dim = embed_dim
        self.kdim = kdim if kdim is not None else embed_dim
        self.vdim = vdim if vdim is not None else embed_dim
        self._qkv_same_embed_dim = self.kdim == embed_dim and self.vdim == embed_dim
        self.num_heads = num_heads
        self.dropout = float(dropout)
        self.batch_first = batch_first
        self.head_dim = embed_dim // num_heads
        if self._qkv_same_embed_dim:
            self.in_proj_weight = Parameter(zeros(3 * embed_dim, embed_dim, **fk))
            self.register_parameter("q_proj_weight", None)
            self.register_parameter("k_proj_weight", None)
            self.register_parameter("v_proj_weight", None)
        else:
            self.q_proj_weight = Parameter(zeros(embed_dim, embed_dim, **fk))
            self.k_proj_weight = Parameter(zeros(embed_dim, self.kdim, **fk))
            self.v_proj_weight = Parameter(zeros(embed_dim, self.vdim, **fk))
            self.register_parameter("in_proj_weight", None)
        if bias:
            self.in_proj_bias = Parameter(zeros(3 * embed_dim, **fk))
        else:
            self.register_parameter("in_proj_bias", None)
        self.out_proj = Linear(embed_dim, embed_dim, bias=bias, **fk)
        if add_bias_kv:
            self.bias_k = Parameter(zeros(1, 1, embed_dim, **fk))
            self.bias_v = Parameter(zeros(1, 1, embed_dim, **fk))
        else:
            self.bias_k = self.bias_v = None
        self.add_zero_attn = add_zero_attn
        self._reset_parameters()

    def _reset_parameters(self) -> None:
        if self._qkv_same_embed_dim:
            init.xavier_uniform_(self.in_proj_weight)
        else:
            init.xavier_uniform_(self.q_proj_weight)
            init.xavier_uniform_(self.k_proj_weight)
            init.xavier_uniform_(self.v_proj_weight)
        if self.in_proj_bias is not None:
            init.constant_(self.in_proj_bias, 0.0)
            init.constant_(self.out_proj.bias, 0.0)
        if self.bias_k is not None:
            init.xavier_normal_(self.bias_k)
            init.xavier_normal_(self.bias_v)

    def extra_repr(self) -> str:
        return f"embed_dim={self.embed_dim}, num_heads={self.num_heads}, dropout={self.dropout}, batch_first={self.batch_first}"

    def forward(
        self,
        query: Tensor,
        key: Tensor,
        value: Tensor,
        key_padding_mask: Tensor | None = None,
        need_weights: bool = True,
        attn_mask: Tensor | None = None,
        average_attn_weights: bool = True,
        is_causal: bool = False,
    ) -> tuple[Tensor, Tensor | None]:
        """Attend from ``query`` to ``key``/``value``.

        Args:
            query: (L, N, E), or (N, L, E) with ``batch_first``, or unbatched (L, E).
            key, value: (S, N, kdim/vdim) likewise.
            key_padding_mask: (N, S); bool True (or float -inf) marks keys to ignore.
            need_weights: also return the attention weights.
            attn_mask: (L, S) or (N*num_heads, L, S); bool True blocks, float is added.
            average_attn_weights: average the returned weights over heads.
            is_causal: a hint that ``attn_mask`` is the causal mask; as in PyTorch it is
                required with an ``attn_mask``, and when no key padding mask is given and
                weights are not needed the causal triangle is used in its place.
        Returns:
            ``(output, weights)``: output shaped like ``query`` (E wide); weights
            (N, L, S), or (N, H, L, S) without averaging, or None.
        """
        op = "MultiheadAttention"
        batched = query.ndim == 3
        if query.ndim not in (2, 3) or key.ndim != query.ndim or value.ndim != query.ndim:
            raise ShapeError(
                f"{op}: query, key and value must all be 3-D (batched) or 2-D (unbatched); got shapes "
                f"{tuple(query.shape)}, {tuple(key.shape)}, {tuple(value.shape)}"
            )
        if self.batch_first and batched:
            query, key, value = _transpose_same(query, key, value)
        if not batched:
            query, key, value = _unsqueeze_same(query, key, value)
            if key_padding_mask is not None:
                key_padding_mask = unsqueeze(key_padding_mask, 0)
        L, N, E = query.shape
        S = key.shape[0]
        if E != self.embed_dim:
            raise ShapeError(f"{op}: query has width {E}, expected embed_dim={self.embed_dim}")
        if tuple(key.shape[:2]) != tuple(value.shape[:2]) or key.shape[1] != N:
            raise ShapeError(
                f"{op}: key {tuple(key.shape)} and value {tuple(value.shape)} must share sequence length "
                f"and batch size with each other, and batch size with query {tuple(query.shape)}"
            )
        if key.shape[2] != self.kdim or value.shape[2] != self.vdim:
            raise ShapeError(
                f"{op}: key/value widths {key.shape[2]}/{value.shape[2]} do not match kdim={self.kdim}/vdim={self.vdim}"
            )
        if is_causal and attn_mask is None:
            raise ValueError(
                f"{op}: is_causal=True needs attn_mask (as in PyTorch); pass "
                "attn_mask=Transformer.generate_square_subsequent_mask(L)"
            )
        causal = bool(is_causal and key_padding_mask is None and not need_weights)
        if causal:
            attn_mask = None
        q, k, v = self._project(query, key, value)
        H, hd = self.num_heads, self.head_dim
        mask = self._attn_mask(attn_mask, query.dtype, N, L, S)
        kpm = None
        if key_padding_mask is not None:
            _check_float_mask(key_padding_mask, "key_padding_mask", query.dtype, op)
            if tuple(key_padding_mask.shape) != (N, S):
                raise ShapeError(f"{op}: key_padding_mask must have shape (N, S) = {(N, S)}, got {tuple(key_padding_mask.shape)}")
            kpm = key_padding_mask if key_padding_mask.dtype.is_floating_point else _additive(key_padding_mask, True, query.dtype)
        if self.bias_k is not None:
            k = cat([k, self.bias_k.expand(1, N, E)], 0)
            v = cat([v, self.bias_v.expand(1, N, E)], 0)
            mask, kpm = _pad_last(mask), _pad_last(kpm)
        q = q.reshape(L, N * H, hd).transpose(0, 1)  # (N*H, L, hd)
        k = k.reshape(k.shape[0], N * H, hd).transpose(0, 1)  # (N*H, S', hd)
        v = v.reshape(v.shape[0], N * H, hd).transpose(0, 1)
        if self.add_zero_attn:
            k = cat([k, zeros(N * H, 1, hd, dtype=k.dtype, device=k.device)], 1)
            v = cat([v, zeros(N * H, 1, hd, dtype=v.dtype, device=v.device)], 1)
            mask, kpm = _pad_last(mask), _pad_last(kpm)
        S = k.shape[1]
        if kpm is not None:
            kpm = kpm.reshape(N, 1, 1, S).expand(N, H, 1, S).reshape(N * H, 1, S)
            mask = kpm if mask is None else mask + kpm
        scores = q @ k.transpose(1, 2)  # (N*H, L, S), scaled by 1/sqrt(head_dim) in the softmax op
        weights = _masked_softmax(scores, mask, causal, not need_weights, 1.0 / math.sqrt(hd))
        if self.training and self.dropout > 0.0:
            weights = dropout(weights, self.dropout, True)
        out = (weights @ v).transpose(0, 1).reshape(L * N, E)  # (L*N, E)
        out = linear(out, self.out_proj.weight, self.out_proj.bias).reshape(L, N, E)
        if self.batch_first and batched:
            out = out.transpose(0, 1)
        if not batched:
            out = squeeze(out, 1)
        if not need_weights:
            return out, None
        weights = weights.reshape(N, H, L, S)
        if average_attn_weights:
            weights = weights.mean(1)
        if not batched:
            weights = squeeze(weights, 0)
        return out, weights

    def _project(self, query: Tensor, key: Tensor, value: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        b = self.in_proj_bias
        bq, bk, bv = (None, None, None) if b is None else chunk(b, 3)
        if not self._qkv_same_embed_dim:
            return (
                linear(query, self.q_proj_weight, bq),
                linear(key, self.k_proj_weight, bk),
                linear(value, self.v_proj_weight, bv),
            )
        w = self.in_proj_weight
        if query is key and key is value:  # self-attention: one matmul
            q, k, v = chunk(linear(query, w, b), 3, -1)
            return q, k, v
        wq, wk, wv = chunk(w, 3)
        return linear(query, wq, bq), linear(key, wk, bk), linear(value, wv, bv)

    def _attn_mask(self, attn_mask: Tensor | None, dtype: Any, N: int, L: int, S: int) -> Tensor | None:
        if attn_mask is None:
            return None
        _check_float_mask(attn_mask, "attn_mask", dtype, "MultiheadAttention")
        mask = attn_mask if attn_mask.dtype.is_floating_point else _additive(attn_mask, True, dtype)
        if mask.ndim == 2:
            if tuple(mask.shape) != (L, S):
                raise ShapeError(
                    f"MultiheadAttention: a 2-D attn_mask must have shape (L, S) = {(L, S)}, got {tuple(mask.shape)}"
                )
            return unsqueeze(mask, 0)
        if mask.ndim == 3:
            want = (N * self.num_heads, L, S)
            if tuple(mask.shape) != want:
                raise ShapeError(
                    f"MultiheadAttention: a 3-D attn_mask must have shape (N*num_heads, L, S) = {want}, got {tuple(mask.shape)}"
                )
            return mask
        raise ShapeError(f"MultiheadAttention: attn_mask must be 2-D or 3-D, got shape {tuple(mask.shape)}")


def _transpose_same(query: Tensor, key: Tensor, value: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Swap dims 0 and 1 of each input, keeping shared inputs shared (self-attention)."""
    q = query.transpose(0, 1)
    k = q if key is query else key.transpose(0, 1)
    v = k if value is key else (q if value is query else value.transpose(0, 1))
    return q, k, v


def _unsqueeze_same(query: Tensor, key: Tensor, value: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    q = unsqueeze(query, 1)
    k = q if key is query else unsqueeze(key, 1)
    v = k if value is key else (q if value is query else unsqueeze(value, 1))
    return q, k, v


def _pad_last(mask: Tensor | None) -> Tensor | None:
    """Append one zero (= attend) column to a float mask, for an appended key."""
    if mask is None:
        return None
    pad = zeros(*mask.shape[:-1], 1, dtype=mask.dtype, device=mask.device)
    return cat([mask, pad], -1)


__all__ = ["MultiheadAttention", "scaled_dot_product_attention"]
