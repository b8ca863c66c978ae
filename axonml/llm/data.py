"""Token datasets for language-model training: contiguous blocks of a token stream.

A corpus is tokenized once into one long stream of ids; a :class:`TokenBlockDataset`
cuts it into blocks of ``block_size`` tokens. Item ``i`` is the pair ``(x, y)`` with
``y`` the block shifted by one token, so the model predicts ``y[t]`` from ``x[:t + 1]``
at every position (``block_size`` predictions per block, none wasted).

Note on the split: :func:`train_val_split` keeps the *tail* of the stream for validation.
A contiguous split is deterministic (no seed, the same on every rank and every run) and
no validation token appears inside a training block, which a random split of overlapping
windows cannot promise.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ..data import Dataset
from ..errors import ShapeError
from ..tensor import Tensor, tensor

__all__ = ["TokenBlockDataset", "train_val_split"]


def _as_ids(ids: Sequence[int] | np.ndarray, where: str) -> np.ndarray:
    arr = np.asarray(ids)
    if arr.ndim != 1:
        raise ShapeError(f"{where}: token ids must be a 1-D sequence, got an array of shape {arr.shape}; "
                         "concatenate the documents into one stream first")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f"{where}: token ids must be integers, got dtype {arr.dtype}")
    return arr.astype(np.int64, copy=False)


def train_val_split(ids: Sequence[int] | np.ndarray, val_fraction: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """Split a token stream into (train, validation): the last ``val_fraction`` of it is validation.

    Example::

        train_ids, val_ids = train_val_split(tokenizer.encode(text), val_fraction=0.1)
        train = TokenBlockDataset(train_ids, block_size=128)
    """
    arr = _as_ids(ids, "train_val_split")
    if not 0.0 <= float(val_fraction) < 1.0:
        raise ValueError(f"train_val_split: val_fraction must be in [0, 1), got {val_fraction!r}")
    n_val = int(round(len(arr) * float(val_fraction)))
    cut = len(arr) - n_val
    return arr[:cut], arr[cut:]


class TokenBlockDataset(Dataset):
    """Contiguous blocks of a token stream as (input, next-token target) pairs.

    Args:
        ids: the token stream (1-D integers).
        block_size: tokens per block (the model's context length during training).
        stride: distance between the starts of consecutive blocks (default ``block_size``:
            non-overlapping blocks).

    Block ``i`` starts at ``i * stride``; ``x = ids[s:s + block_size]`` and
    ``y = ids[s + 1:s + block_size + 1]``, both int64 tensors of shape ``(block_size,)``.
    :meth:`batch` gathers many blocks at once (one NumPy fancy index, no per-item collate).

    Example::

        ds = TokenBlockDataset(np.arange(100), block_size=8)
        x, y = ds[0]          # x = 0..7, y = 1..8
        xb, yb = ds.batch([0, 3])   # (2, 8) each
    """

    def __init__(self, ids: Sequence[int] | np.ndarray, block_size: int, stride: int | None = None) -> None:
        self.ids = _as_ids(ids, "TokenBlockDataset")
        if isinstance(block_size, bool) or not isinstance(block_size, (int, np.integer)) or block_size < 1:
            raise ValueError(f"TokenBlockDataset: block_size must be a positive int, got {block_size!r}")
        stride = block_size if stride is None else stride
        if isinstance(stride, bool) or not isinstance(stride, (int, np.integer)) or stride < 1:
            raise ValueError(f"TokenBlockDataset: stride must be a positive int, got {stride!r}")
        self.block_size, self.stride = int(block_size), int(stride)
        if len(self.ids) < self.block_size + 1:
            raise ValueError(
                f"TokenBlockDataset: {len(self.ids)} tokens cannot fill one block of {self.block_size} (+1 for the "
                f"shifted target); use a smaller block_size or more text"
            )
        self._n = (len(self.ids) - 1 - self.block_size) // self.stride + 1
        # (n, block_size) row offsets, reused by every batch
        self._cols = np.arange(self.block_size, dtype=np.int64)

    def __len__(self) -> int:
        return self._n

    @property
    def num_tokens(self) -> int:
        """Tokens in the stream."""
        return len(self.ids)

    def _rows(self, indices: np.ndarray) -> np.ndarray:
        if indices.size and (indices.min() < -self._n or indices.max() >= self._n):
            bad = indices[(indices < -self._n) | (indices >= self._n)][0]
            raise IndexError(f"TokenBlockDataset: block index {int(bad)} is out of range for {self._n} blocks")
        starts = (indices % self._n) * self.stride
        return starts[:, None] + self._cols[None, :]  # (B, block_size) positions in the stream

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)):
            raise TypeError(f"TokenBlockDataset: index must be an int, got {type(index).__name__}")
        pos = self._rows(np.array([int(index)], dtype=np.int64))[0]
        return tensor(self.ids[pos]), tensor(self.ids[pos + 1])

    def batch(self, indices: Sequence[int] | np.ndarray) -> tuple[Tensor, Tensor]:
        """Blocks ``indices`` stacked: ``(x, y)``, each int64 of shape (len(indices), block_size)."""
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        pos = self._rows(idx)
        return tensor(self.ids[pos]), tensor(self.ids[pos + 1])

    def __repr__(self) -> str:
        return f"TokenBlockDataset({self._n} blocks of {self.block_size}, stride {self.stride}, {len(self.ids)} tokens)"
