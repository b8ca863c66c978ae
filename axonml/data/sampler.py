"""Samplers: the order in which a map-style dataset is visited.

A sampler yields dataset indices (Python ints); :class:`BatchSampler` groups them into
lists. Names, arguments and validation follow ``torch.utils.data``.

Note on randomness: random samplers draw from an explicit
:class:`axonml.tensor.random.Generator` (``.numpy`` is its NumPy generator), or from the
default generator when none is given. Each pass draws the whole order at the first
``next()``, so a seeded generator gives the same sequence of epochs every run. The
numbers differ from PyTorch's (a different random algorithm); the distributions and the
shapes of the results are the same.
"""

from __future__ import annotations

from typing import Any, Generic, Iterable, Iterator, Sequence, Sized, TypeVar

import numpy as np

from ..tensor.random import Generator, get_generator

T_co = TypeVar("T_co", covariant=True)

__all__ = [
    "BatchSampler",
    "RandomSampler",
    "Sampler",
    "SequentialSampler",
    "SubsetRandomSampler",
    "WeightedRandomSampler",
]


def _is_positive_int(x: Any) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, (bool, np.bool_)) and x > 0


class Sampler(Generic[T_co]):
    """Base class: subclasses implement ``__iter__`` (and ``__len__`` when known)."""

    def __init__(self, data_source: Sized | None = None) -> None:
        pass

    def __iter__(self) -> Iterator[T_co]:
        raise NotImplementedError(f"{type(self).__name__} must implement __iter__")


class SequentialSampler(Sampler[int]):
    """Indices ``0, 1, ..., len(data_source) - 1`` in order."""

    def __init__(self, data_source: Sized) -> None:
        self.data_source = data_source

    def __iter__(self) -> Iterator[int]:
        return iter(range(len(self.data_source)))

    def __len__(self) -> int:
        return len(self.data_source)


class RandomSampler(Sampler[int]):
    """Random indices: a permutation (or ``num_samples`` draws with replacement).

    Args:
        data_source: the dataset (only its length is used).
        replacement: draw with replacement.
        num_samples: how many indices per pass (default ``len(data_source)``); without
            replacement, more than the length means several concatenated permutations.
        generator: the random stream (default: the default generator).

    Example::

        list(RandomSampler(range(5), generator=ax.Generator().manual_seed(0)))
    """

    def __init__(
        self,
        data_source: Sized,
        replacement: bool = False,
        num_samples: int | None = None,
        generator: Generator | None = None,
    ) -> None:
        if not isinstance(replacement, bool):
            raise TypeError(f"RandomSampler: replacement should be a boolean value, but got replacement={replacement!r}")
        self.data_source = data_source
        self.replacement = replacement
        self._num_samples = num_samples
        self.generator = generator
        if not _is_positive_int(self.num_samples):
            raise ValueError(
                f"RandomSampler: num_samples should be a positive integer value, but got num_samples={self.num_samples!r}"
            )

    @property
    def num_samples(self) -> int:
        return len(self.data_source) if self._num_samples is None else self._num_samples

    def __iter__(self) -> Iterator[int]:
        n = len(self.data_source)
        rng = get_generator(self.generator)
        if self.replacement:
            order = rng.integers(0, n, size=self.num_samples)
        else:
            full, rest = divmod(self.num_samples, n)
            parts = [rng.permutation(n) for _ in range(full)]
            if rest:
                parts.append(rng.permutation(n)[:rest])
            order = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
        yield from order.tolist()

    def __len__(self) -> int:
        return self.num_samples


class SubsetRandomSampler(Sampler[int]):
    """The given indices in a random order (a fresh permutation each pass).

    Example: ``SubsetRandomSampler([10, 11, 12], generator=g)`` yields those three, shuffled.
    """

    def __init__(self, indices: Sequence[int], generator: Generator | None = None) -> None:
        self.indices = indices
        self.generator = generator

    def __iter__(self) -> Iterator[int]:
        perm = get_generator(self.generator).permutation(len(self.indices))
        for i in perm.tolist():
            yield self.indices[i]

    def __len__(self) -> int:
        return len(self.indices)


class WeightedRandomSampler(Sampler[int]):
    """Indices ``0..len(weights)-1`` drawn with probabilities proportional to ``weights``.

    Args:
        weights: a 1-D sequence (list, NumPy array or tensor) of non-negative weights,
            not necessarily summing to one.
        num_samples: how many indices per pass.
        replacement: with replacement (default); without, ``num_samples`` may not exceed
            the number of non-zero weights.
        generator: the random stream (default: the default generator).

    Example: ``WeightedRandomSampler([0.1, 0.9], 100)`` yields mostly 1s.
    """

    def __init__(
        self,
        weights: Sequence[float] | Any,
        num_samples: int,
        replacement: bool = True,
        generator: Generator | None = None,
    ) -> None:
        if not _is_positive_int(num_samples):
            raise ValueError(
                f"WeightedRandomSampler: num_samples should be a positive integer value, but got num_samples={num_samples!r}"
            )
        if not isinstance(replacement, bool):
            raise ValueError(
                f"WeightedRandomSampler: replacement should be a boolean value, but got replacement={replacement!r}"
            )
        w = np.asarray(weights, dtype=np.float64)
        if w.ndim != 1:
            raise ValueError(f"WeightedRandomSampler: weights should be a 1d sequence but given weights have shape {w.shape}")
        if w.size == 0 or not np.all(np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
            raise ValueError(
                "WeightedRandomSampler: weights must be finite, non-negative and have a positive sum, "
                f"got {w.size} weights with sum {w.sum() if w.size else 0}"
            )
        if not replacement and num_samples > int(np.count_nonzero(w)):
            raise ValueError(
                f"WeightedRandomSampler: cannot draw num_samples={num_samples} without replacement from "
                f"{int(np.count_nonzero(w))} non-zero weights; use replacement=True or fewer samples"
            )
        self.weights = w
        self.num_samples = int(num_samples)
        self.replacement = replacement
        self.generator = generator

    def __iter__(self) -> Iterator[int]:
        rng = get_generator(self.generator)
        p = self.weights / self.weights.sum()
        yield from rng.choice(len(p), size=self.num_samples, replace=self.replacement, p=p).tolist()

    def __len__(self) -> int:
        return self.num_samples


class BatchSampler(Sampler[list]):
    """Group the indices of ``sampler`` into lists of ``batch_size``.

    Args:
        sampler: any iterable of indices.
        batch_size: indices per batch.
        drop_last: drop the final batch when it is shorter than ``batch_size``.

    Example::

        list(BatchSampler(SequentialSampler(range(5)), 2, drop_last=False))  # [[0, 1], [2, 3], [4]]
    """

    def __init__(self, sampler: Sampler[int] | Iterable[int], batch_size: int, drop_last: bool) -> None:
        if not _is_positive_int(batch_size):
            raise ValueError(f"BatchSampler: batch_size should be a positive integer value, but got batch_size={batch_size!r}")
        if not isinstance(drop_last, bool):
            raise ValueError(f"BatchSampler: drop_last should be a boolean value, but got drop_last={drop_last!r}")
        self.sampler = sampler
        self.batch_size = int(batch_size)
        self.drop_last = drop_last

    def __iter__(self) -> Iterator[list[int]]:
        batch: list = []
        for idx in self.sampler:
            batch.append(idx)
            if len(batch) == self.batch_size:
                yield batch
                batch = []
        if batch and not self.drop_last:
            yield batch

    def __len__(self) -> int:
        n = len(self.sampler)  # type: ignore[arg-type]
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)
