"""The key/value cache of incremental decoding, shared by every decoder in this package.

Each attention layer stores the keys and values of the positions already seen, so a new
token costs one projection of itself instead of a re-projection of the whole prefix.
Buffers are preallocated and grow by doubling, so appending a token writes only that
token (no copy of the prefix per step); attention reads a view of the filled part.

Protocol (what a model's attention layer does)::

    k_all, v_all = cache.update(layer_idx, k_new, v_new)   # (B, H_kv, T_past + T_new, D)
    ...
    cache.seq_length   # positions stored (after every layer of this step has updated)
"""

from __future__ import annotations

from typing import Any

from ..autograd import is_grad_enabled
from ..errors import ShapeError
from ..tensor import Tensor, cat, empty


class KVCache:
    """Keys and values per layer, of shape (batch, kv_heads, length, head_dim).

    Args:
        num_layers: attention layers of the model.
        capacity: initial positions to reserve (grows by doubling when exceeded).
    """

    def __init__(self, num_layers: int, capacity: int = 64) -> None:
        if num_layers <= 0:
            raise ValueError(f"KVCache: num_layers must be positive, got {num_layers}")
        self.num_layers = num_layers
        self._k: list[Tensor | None] = [None] * num_layers
        self._v: list[Tensor | None] = [None] * num_layers
        self._len = [0] * num_layers
        self._capacity = max(1, int(capacity))

    @property
    def seq_length(self) -> int:
        """Positions stored by layer 0 (the prefix length the next step's tokens follow)."""
        return self._len[0]

    def layer_length(self, layer_idx: int) -> int:
        return self._len[layer_idx]

    def update(self, layer_idx: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Append ``k``/``v`` (B, H, T_new, D) to layer ``layer_idx``; return all keys and values so far."""
        if not 0 <= layer_idx < self.num_layers:
            raise IndexError(f"KVCache.update: layer {layer_idx} outside 0..{self.num_layers - 1}")
        if k.ndim != 4 or tuple(k.shape) != tuple(v.shape):
            raise ShapeError(
                f"KVCache.update: keys and values must be (B, H, T, D) of one shape, got {tuple(k.shape)} and {tuple(v.shape)}"
            )
        n, t_new = self._len[layer_idx], k.shape[2]
        old_k, old_v = self._k[layer_idx], self._v[layer_idx]
        if old_k is not None and (old_k.shape[:2] != k.shape[:2] or old_k.shape[3] != k.shape[3]):
            raise ShapeError(
                f"KVCache.update: layer {layer_idx} holds (B, H, *, D) = {tuple(old_k.shape)} but got {tuple(k.shape)}; "
                f"use a fresh cache for a new batch"
            )
        if is_grad_enabled() and (k.requires_grad or v.requires_grad):
            # differentiable path (rare: training through a cache): plain concatenation
            nk = k if old_k is None else cat([old_k[:, :, :n], k], dim=2)
            nv = v if old_v is None else cat([old_v[:, :, :n], v], dim=2)
            self._k[layer_idx], self._v[layer_idx], self._len[layer_idx] = nk, nv, n + t_new
            return nk, nv
        need = n + t_new
        if old_k is None or old_k.shape[2] < need:
            cap = max(self._capacity, need, 2 * old_k.shape[2] if old_k is not None else 0)  # doubling growth
            b, h, _, d = k.shape
            nk = empty(b, h, cap, d, dtype=k.dtype, device=k.device)
            nv = empty(b, h, cap, d, dtype=v.dtype, device=v.device)
            if n:
                nk[:, :, :n] = old_k[:, :, :n].detach()
                nv[:, :, :n] = old_v[:, :, :n].detach()
            self._k[layer_idx], self._v[layer_idx] = nk, nv
        buf_k, buf_v = self._k[layer_idx], self._v[layer_idx]
        buf_k[:, :, n:need] = k.detach()
        buf_v[:, :, n:need] = v.detach()
        self._len[layer_idx] = need
        return buf_k[:, :, :need], buf_v[:, :, :need]

    def reorder(self, index: Any) -> None:
        """Keep batch rows ``index`` (a list or int64 tensor), e.g. after dropping finished sequences."""
        for i in range(self.num_layers):
            if self._k[i] is not None:
                self._k[i] = self._k[i][index]
                self._v[i] = self._v[i][index]
