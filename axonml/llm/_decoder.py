"""Helpers shared by the decoder models: GPT-2, LLaMA (default position ids, the additive
attention mask, the causal language-modelling loss)."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import DTypeError, ShapeError
from ..nn import functional as F
from ..tensor import Tensor, tensor


def decoder_position_ids(mask: np.ndarray | None, batch: int, past: int, length: int) -> np.ndarray:
    """Default position ids (``batch`` or 1, T) of ``length`` new tokens after ``past`` cached ones:
    ``cumsum(mask) - 1`` clipped at 0 when a (B, past+T) 0/1 mask is given, else ``arange`` (one row
    that broadcasts over the batch). Shared by the decoders of this package."""
    if mask is None:
        return np.arange(past, past + length, dtype=np.int64)[None, :]
    pos = np.cumsum(mask.astype(np.int64), axis=1) - 1
    return np.maximum(pos[:, -length:], 0)


def decoder_attention_mask(mask: np.ndarray | None, past: int, length: int, dtype: Any, device: Any) -> Tensor | None:
    """The additive mask (B or 1, 1, T, past+T) for ``length`` queries after ``past`` cached keys,
    or None when plain causal attention (or, for one query, no mask at all) is exact. Shared by the
    decoders of this package; cast it to the query's dtype under autocast."""
    padded = mask is not None and not bool(mask.all())
    if not padded and (past == 0 or length == 1):
        return None
    total = past + length
    # query i (at position past + i) may see keys 0..past+i: a bottom-right aligned triangle
    allowed = np.arange(total)[None, :] <= (past + np.arange(length))[:, None]  # (T, S)
    allowed = allowed[None, None]  # (1, 1, T, S)
    if padded:
        allowed = allowed & (mask[:, None, None, :] != 0)  # (B, 1, T, S)
    return tensor(np.where(allowed, 0.0, -np.inf).astype(np.float32), dtype=dtype, device=device)


def causal_lm_loss(logits: Tensor, labels: Any) -> Tensor:
    """Mean next-token cross-entropy: position t predicts ``labels[:, t+1]``; -100 labels are ignored.

    The labels are shifted (not the logits), so the (B*T, V) logits need no copy.
    """
    b, t, v = logits.shape
    lab = labels.numpy() if isinstance(labels, Tensor) else np.asarray(labels)
    if lab.shape != (b, t):
        raise ShapeError(f"causal LM loss: labels must be (batch, seq_len) = ({b}, {t}) like input_ids, got {lab.shape}")
    if lab.dtype.kind not in "iu":
        raise DTypeError(f"causal LM loss: labels must be integers (int64, -100 = ignore), got dtype {lab.dtype}")
    shifted = np.full((b, t), -100, dtype=np.int64)
    shifted[:, :-1] = lab[:, 1:]
    target = tensor(shifted.reshape(-1), device=logits.device)
    return F.cross_entropy(logits.reshape(b * t, v), target, ignore_index=-100)
