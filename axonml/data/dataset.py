"""Datasets: map-style and iterable datasets, tensors, subsets, concatenation, splits.

A map-style dataset implements ``__getitem__`` (and usually ``__len__``); an iterable
dataset implements ``__iter__``. The names, arguments and behaviour follow
``torch.utils.data``; random choices draw from an explicit
:class:`axonml.tensor.random.Generator` (the default generator when none is given).
"""

from __future__ import annotations

import bisect
import math
import warnings
from typing import Any, Generic, Iterable, Iterator, Sequence, TypeVar

import numpy as np

from ..autograd.variable import TensorBase
from ..errors import ShapeError
from ..tensor.creation import from_numpy
from ..tensor.random import Generator, get_generator

T_co = TypeVar("T_co", covariant=True)

__all__ = [
    "ChainDataset",
    "ConcatDataset",
    "Dataset",
    "IterableDataset",
    "StackDataset",
    "Subset",
    "TensorDataset",
    "random_split",
]


class Dataset(Generic[T_co]):
    """A map-style dataset: ``dataset[i]`` returns sample ``i``.

    Subclasses implement ``__getitem__`` and usually ``__len__`` (samplers and
    :class:`~axonml.data.DataLoader` need it). They may also implement
    ``__getitems__(indices)`` to fetch a whole batch at once. ``a + b`` concatenates.

    Example::

        class Squares(Dataset):
            def __len__(self): return 10
            def __getitem__(self, i): return i * i
    """

    def __getitem__(self, index: Any) -> T_co:
        raise NotImplementedError(f"{type(self).__name__} must implement __getitem__")

    def __add__(self, other: "Dataset") -> "ConcatDataset":
        return ConcatDataset([self, other])


class IterableDataset(Dataset[T_co]):
    """A dataset that is a stream: subclasses implement ``__iter__``.

    With ``num_workers > 0`` every worker iterates its own copy of the dataset; use
    :func:`axonml.data.get_worker_info` inside ``__iter__`` to give each worker a
    disjoint shard, or every sample is produced once per worker. ``a + b`` chains.
    """

    def __iter__(self) -> Iterator[T_co]:
        raise NotImplementedError(f"{type(self).__name__} must implement __iter__")

    def __add__(self, other: "Dataset") -> "ChainDataset":  # type: ignore[override]
        return ChainDataset([self, other])


class TensorDataset(Dataset[tuple]):
    """Samples are ``tuple(t[i] for t in tensors)``: rows of tensors sharing dim 0.

    Args:
        *tensors: tensors (or NumPy arrays) with the same size of the first dimension.

    Example::

        ds = TensorDataset(ax.randn(100, 3), ax.arange(100))
        x, y = ds[0]
    """

    def __init__(self, *tensors: Any) -> None:
        if not tensors:
            raise ValueError("TensorDataset needs at least one tensor")
        sizes = []
        for i, t in enumerate(tensors):
            shape = tuple(getattr(t, "shape", ()))
            if not shape:
                raise ShapeError(
                    f"TensorDataset: tensor {i} is 0-d (shape {shape}); every tensor needs a first dimension to index"
                )
            sizes.append(shape[0])
        if any(s != sizes[0] for s in sizes):
            raise ShapeError(
                f"TensorDataset: size mismatch between tensors: first dimensions are {sizes}; "
                "every tensor must have the same number of rows"
            )
        self.tensors = tensors

    def __getitem__(self, index: Any) -> tuple:
        return tuple(t[index] for t in self.tensors)

    def __len__(self) -> int:
        return int(self.tensors[0].shape[0])

    def _fetch_collated(self, indices: list) -> list | None:
        """``default_collate([self[i] for i in indices])`` with one gather per tensor
        instead of one index op per sample (the data loader's fast path); None when
        a tensor is not on the host."""
        idx = np.asarray(indices, dtype=np.int64)
        columns = []
        for t in self.tensors:
            if isinstance(t, TensorBase) and t.device.type == "cpu":
                arr = np.asarray(t)
            elif isinstance(t, np.ndarray) and t.dtype.kind not in "USO":
                arr = t
            else:
                return None
            columns.append(from_numpy(arr[idx]))  # fancy indexing copies, as stacking would
        return columns


class StackDataset(Dataset):
    """Zip datasets of equal length: samples are tuples (``*args``) or dicts (``**kwargs``).

    Example: ``StackDataset(images, labels)[i] == (images[i], labels[i])``
    """

    def __init__(self, *args: Dataset, **kwargs: Dataset) -> None:
        if args and kwargs:
            raise ValueError(
                "StackDataset takes either positional datasets (tuple samples) or keyword datasets (dict samples), not both"
            )
        if not args and not kwargs:
            raise ValueError("StackDataset needs at least one dataset")
        parts = list(args) if args else list(kwargs.values())
        lengths = [len(d) for d in parts]  # type: ignore[arg-type]
        if any(n != lengths[0] for n in lengths):
            raise ValueError(f"StackDataset: size mismatch between datasets: lengths {lengths}")
        self._length = lengths[0]
        self.datasets: Any = args if args else kwargs

    def __getitem__(self, index: Any) -> Any:
        if isinstance(self.datasets, dict):
            return {k: d[index] for k, d in self.datasets.items()}
        return tuple(d[index] for d in self.datasets)

    def __len__(self) -> int:
        return self._length


class ConcatDataset(Dataset):
    """Several map-style datasets one after the other.

    Example: ``len(ConcatDataset([a, b])) == len(a) + len(b)``
    """

    def __init__(self, datasets: Iterable[Dataset]) -> None:
        self.datasets = list(datasets)
        if not self.datasets:
            raise ValueError("ConcatDataset: datasets should not be an empty iterable")
        for d in self.datasets:
            if isinstance(d, IterableDataset):
                raise TypeError(
                    f"ConcatDataset does not support IterableDataset (got {type(d).__name__}); use ChainDataset for streams"
                )
        self.cumulative_sizes: list[int] = []
        total = 0
        for d in self.datasets:
            total += len(d)  # type: ignore[arg-type]
            self.cumulative_sizes.append(total)

    def __len__(self) -> int:
        return self.cumulative_sizes[-1]

    def __getitem__(self, idx: int) -> Any:
        n = len(self)
        if idx < 0:
            if -idx > n:
                raise IndexError(f"ConcatDataset: index {idx} is out of range for a dataset of length {n}")
            idx += n
        if idx >= n:
            raise IndexError(f"ConcatDataset: index {idx} is out of range for a dataset of length {n}")
        which = bisect.bisect_right(self.cumulative_sizes, idx)
        start = self.cumulative_sizes[which - 1] if which > 0 else 0
        return self.datasets[which][idx - start]


class ChainDataset(IterableDataset):
    """Several iterable datasets chained into one stream."""

    def __init__(self, datasets: Iterable[Dataset]) -> None:
        self.datasets = list(datasets)

    def __iter__(self) -> Iterator:
        for d in self.datasets:
            if not isinstance(d, IterableDataset):
                raise TypeError(f"ChainDataset only supports IterableDataset, got {type(d).__name__}")
            yield from d

    def __len__(self) -> int:
        return sum(len(d) for d in self.datasets)  # type: ignore[arg-type]


class Subset(Dataset[T_co]):
    """The samples of ``dataset`` at ``indices``, in that order.

    Example: ``Subset(ds, [4, 0, 2])[1] is ds[0]``
    """

    def __init__(self, dataset: Dataset[T_co], indices: Sequence[int]) -> None:
        self.dataset = dataset
        self.indices = indices

    def __getitem__(self, idx: Any) -> Any:
        if isinstance(idx, list):
            return self.dataset[[self.indices[i] for i in idx]]
        return self.dataset[self.indices[idx]]

    def _fetch_collated(self, indices: list) -> Any:
        fetch = getattr(self.dataset, "_fetch_collated", None)
        return fetch([self.indices[i] for i in indices]) if callable(fetch) else None

    def __getitems__(self, indices: list) -> list:
        inner = [self.indices[i] for i in indices]
        getitems = getattr(self.dataset, "__getitems__", None)
        if callable(getitems):
            return getitems(inner)
        return [self.dataset[i] for i in inner]

    def __len__(self) -> int:
        return len(self.indices)


def _fraction_lengths(n: int, fractions: Sequence[float]) -> list[int]:
    """PyTorch's rule: floor each share, then hand out the remainder round-robin."""
    lengths = []
    for i, frac in enumerate(fractions):
        if frac < 0 or frac > 1:
            raise ValueError(f"random_split: fraction at index {i} is {frac}, not between 0 and 1")
        lengths.append(math.floor(n * frac))
    for i in range(n - sum(lengths)):
        lengths[i % len(lengths)] += 1
    for i, length in enumerate(lengths):
        if length == 0:
            warnings.warn(f"random_split: length of split at index {i} is 0; this gives an empty dataset", stacklevel=3)
    return lengths


def random_split(dataset: Dataset, lengths: Sequence[int | float], generator: Generator | None = None) -> list[Subset]:
    """Split ``dataset`` into non-overlapping random subsets.

    Args:
        dataset: a sized map-style dataset.
        lengths: the subset lengths (summing to ``len(dataset)``), or fractions summing
            to 1; fractional lengths are floored and the remainder is handed out one by
            one from the first subset on, as PyTorch does.
        generator: the random stream for the permutation (default: the default generator).

    Returns:
        One :class:`Subset` per length.

    Example::

        train, val = random_split(ds, [0.8, 0.2], generator=ax.Generator().manual_seed(0))
    """
    n = len(dataset)  # type: ignore[arg-type]
    lengths = list(lengths)
    total = sum(lengths)
    if math.isclose(total, 1) and total <= 1:
        lengths = _fraction_lengths(n, lengths)
    if any(int(x) != x for x in lengths):
        raise ValueError(f"random_split: lengths must be integers or fractions summing to 1, got {lengths}")
    if any(x < 0 for x in lengths):
        raise ValueError(f"random_split: lengths must be non-negative, got {lengths}")
    if sum(lengths) != n:
        raise ValueError(
            f"random_split: sum of input lengths ({sum(lengths)}) does not equal the length of the input dataset ({n})"
        )
    perm = get_generator(generator).permutation(n).tolist()
    out = []
    offset = 0
    for length in lengths:
        length = int(length)
        out.append(Subset(dataset, perm[offset : offset + length]))
        offset += length
    return out
