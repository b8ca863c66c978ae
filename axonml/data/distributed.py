"""``DistributedSampler``: each rank visits its own slice of the dataset.

Note on partitioning (identical to PyTorch): with ``n = len(dataset)`` and ``r`` replicas,
each rank gets ``num_samples = ceil(n / r)`` indices, or ``ceil((n - r) / r)`` with
``drop_last`` when ``n`` is not divisible; ``total_size = num_samples * r``. The index
list is padded by repeating indices from its start (as many times as needed) or, with
``drop_last``, cut to ``total_size``; rank ``k`` takes ``indices[k::r]``. With
``shuffle=False`` every rank's indices equal PyTorch's exactly.

Note on shuffling: with ``shuffle=True`` the index list is one permutation drawn from a
:class:`~axonml.tensor.random.Generator` seeded with ``seed + epoch``, so every rank
computes the same permutation without communicating and the ranks' slices partition it.
Call :meth:`DistributedSampler.set_epoch` before each epoch for a new order. The
permutation is not PyTorch's (a different random algorithm), only its structure is.

Note on the world: ``num_replicas`` and ``rank`` default to the world of the running
process group. The data layer sits below the collectives, so the collectives register a
provider with :func:`register_world_provider`; without one (or with no group started)
the ``WORLD_SIZE`` and ``RANK`` environment variables set by ``axonml-launch``,
``torchrun`` or MPI wrappers are used, and a process that has neither is a world of one.
"""

from __future__ import annotations

import math
import os
from typing import Callable, Iterator, Sized

from ..tensor.random import Generator
from .sampler import Sampler

__all__ = ["DistributedSampler", "register_world_provider"]

# Set by the collectives layer: returns (world_size, rank) while a default process group
# is initialized, None otherwise.
_world_provider: Callable[[], tuple[int, int] | None] | None = None


def register_world_provider(provider: Callable[[], tuple[int, int] | None] | None) -> Callable | None:
    """Let a higher layer (the process group) supply the default ``(world_size, rank)``.

    ``provider()`` returns ``(world_size, rank)`` while a default process group exists,
    or ``None``; passing ``None`` unregisters. Returns the provider it replaces, so a
    temporary one can be undone.
    """
    global _world_provider
    previous = _world_provider
    _world_provider = provider
    return previous


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "").strip()
    if not value:
        return default
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"DistributedSampler: environment variable {name}={value!r} is not an integer") from None


def _default_world() -> tuple[int, int]:
    if _world_provider is not None:
        world = _world_provider()
        if world is not None:
            return int(world[0]), int(world[1])
    return _env_int("WORLD_SIZE", 1), _env_int("RANK", 0)


class DistributedSampler(Sampler[int]):
    """Restrict data loading to this rank's share of the dataset.

    Args:
        dataset: a sized dataset.
        num_replicas: how many ranks share the data (default: the world size).
        rank: this rank (default: the process's rank).
        shuffle: a new permutation every epoch (see :meth:`set_epoch`).
        seed: the shuffle seed; it must be the same on every rank.
        drop_last: drop the tail so that every rank gets the same number of distinct
            samples, instead of padding with repeated samples.

    With ``shuffle=False`` the indices are exactly PyTorch's; with ``shuffle=True`` they
    have the same structure, but the permutation comes from AxonML's generator (NumPy's
    PCG64 seeded with ``seed + epoch``), so the numbers differ from PyTorch's.

    Example::

        sampler = DistributedSampler(ds, num_replicas=4, rank=1)
        loader = DataLoader(ds, batch_size=8, sampler=sampler)
        for epoch in range(3):
            sampler.set_epoch(epoch)
            for batch in loader: ...
    """

    def __init__(
        self,
        dataset: Sized,
        num_replicas: int | None = None,
        rank: int | None = None,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
    ) -> None:
        if num_replicas is None or rank is None:
            world, my_rank = _default_world()
            num_replicas = world if num_replicas is None else num_replicas
            rank = my_rank if rank is None else rank
        num_replicas, rank = int(num_replicas), int(rank)
        if num_replicas < 1:
            raise ValueError(f"DistributedSampler: num_replicas must be at least 1, got num_replicas={num_replicas}")
        if rank < 0 or rank >= num_replicas:
            raise ValueError(
                f"DistributedSampler: invalid rank {rank} for num_replicas={num_replicas}; "
                f"rank should be in the interval [0, {num_replicas - 1}]"
            )
        self.dataset = dataset
        self.num_replicas = num_replicas
        self.rank = rank
        self.epoch = 0
        self.shuffle = shuffle
        self.seed = int(seed)
        self.drop_last = drop_last
        n = len(dataset)
        if drop_last and n % num_replicas != 0:
            # drop the tail so that the split is even
            self.num_samples = math.ceil((n - num_replicas) / num_replicas)
        else:
            self.num_samples = math.ceil(n / num_replicas)
        self.total_size = self.num_samples * num_replicas

    def __iter__(self) -> Iterator[int]:
        n = len(self.dataset)
        if self.shuffle:
            indices = Generator().manual_seed(self.seed + self.epoch).numpy.permutation(n).tolist()
        else:
            indices = list(range(n))
        if not self.drop_last:
            padding = self.total_size - len(indices)
            if padding > 0:
                repeats = math.ceil(padding / len(indices))
                indices += (indices * repeats)[:padding]
        else:
            indices = indices[: self.total_size]
        assert len(indices) == self.total_size, (len(indices), self.total_size)
        return iter(indices[self.rank : self.total_size : self.num_replicas])

    def __len__(self) -> int:
        return self.num_samples

    def set_epoch(self, epoch: int) -> None:
        """Set the epoch; with ``shuffle=True`` it selects the permutation (seed + epoch)."""
        self.epoch = int(epoch)
