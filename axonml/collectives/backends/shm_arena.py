"""Buffers that live in shared memory, which the ``tcp`` backend's collectives read in place.

Note on arenas: :func:`axonml.collectives.shared_empty` is collective: every rank of the
group asks for the same shape and dtype, rank 0 creates one segment (an *arena*) with one
region per rank, every rank maps all of it (and the file is unlinked at once, as for
the group's own segment), and each rank gets a tensor over its own region. Arenas are
numbered in creation order, so an arena's number means the same arena on every rank.
A collective on a large tensor then publishes (arena number, byte offset) in the entry
phase, and when every rank's tensor lives in an arena, ranks read each other's tensors
through their own mappings (see :mod:`.shm_collectives`). A view of such a tensor (a
contiguous slice, a reshape) lives there too.

Note on lifetime: an arena's first page holds one *alive* flag per rank. A rank's flag
drops when its tensor (and every view of it) is garbage collected; a rank keeps its
mapping of the whole arena until every flag has dropped (checked when the group creates
the next arena and when it is destroyed), so a peer's region that a collective names is
always mapped here. Destroying the group drops its mappings; tensors still alive keep
their own region mapped and become ordinary memory (collectives of other groups stage
them).
"""

from __future__ import annotations

import logging
import mmap
import weakref
from typing import Callable

import numpy as np

from ...errors import CollectiveError
from .shm import map_segment, stagger

__all__ = ["Arena", "Arenas"]

logger = logging.getLogger(__name__)

_HEADER = 4096  # the alive flags (one int64 per rank)


class _Exported:
    """The owner of a tensor's memory in an arena: NumPy keeps it alive as long as any view of
    the tensor lives, and its death (a ``weakref.finalize``) drops this rank's alive flag."""

    __slots__ = ("__array_interface__", "_region", "__weakref__")

    def __init__(self, region: np.ndarray) -> None:
        self._region = region  # keeps the mapping alive
        self.__array_interface__ = {"data": (region.__array_interface__["data"][0], False), "shape": (region.size,),
                                    "typestr": "|u1", "version": 3}


class Arena:
    """One shared segment with a region of ``size`` bytes per rank (see the module docstring)."""

    def __init__(self, ident: int, mm: mmap.mmap, n: int, rank: int, size: int, offsets: list[int]) -> None:
        self.ident, self.mm, self.n, self.rank, self.size, self.offsets = ident, mm, n, rank, size, offsets
        self.flags = np.ndarray((n,), dtype=np.int64, buffer=mm)
        self.u8 = np.ndarray((len(mm),), dtype=np.uint8, buffer=mm)
        base = self.u8.__array_interface__["data"][0]
        self.start = base + offsets[rank]  # this rank's region, as an address range
        self.end = self.start + size

    def export(self) -> np.ndarray:
        """This rank's region as a uint8 array whose death releases it (call once)."""
        owner = _Exported(self.u8[self.offsets[self.rank]:self.offsets[self.rank] + self.size])
        weakref.finalize(owner, self._release)
        return np.asarray(owner)

    def _release(self) -> None:
        try:
            self.flags[self.rank] = 0
        except (ValueError, TypeError):
            pass  # the mapping is gone already

    def alive(self) -> bool:
        """Whether some rank still holds its tensor."""
        return bool(self.flags.any())


class Arenas:
    """The arenas of one group on one rank: creation (collective), lookup, release."""

    def __init__(self, n: int, rank: int) -> None:
        self.n, self.rank = n, rank
        #: arenas created so far (the same on every rank: creation is collective)
        self.created = 0
        self._live: dict[int, Arena] = {}

    def create(self, nbytes: int, exchange: Callable[[bytes], list[bytes]], create: Callable[[int], str] | None = None
               ) -> np.ndarray:
        """Collectively create an arena with ``nbytes`` per rank; return this rank's region
        (a uint8 array). Raises :class:`.shm.ShmUnavailable` on every rank when any failed."""
        self.sweep()
        n = self.n
        size = -(-max(nbytes, 1) // 64) * 64
        offsets, off = [], _HEADER
        for r in range(n):
            off = stagger(off, r + 1)  # regions at different offsets modulo 4 KiB (see .shm)
            offsets.append(off)
            off += size

        def init(mm: mmap.mmap) -> None:
            np.ndarray((n,), dtype=np.int64, buffer=mm)[:] = 1

        kw = {"create": create} if create is not None else {}
        mm, _ = map_segment(off, self.rank, exchange, init=init, **kw)
        self.created += 1
        arena = self._live[self.created] = Arena(self.created, mm, n, self.rank, size, offsets)
        logger.debug("rank=%d shared arena %d: %d bytes per rank", self.rank, arena.ident, nbytes)
        return arena.export()[:nbytes]

    def locate(self, a: np.ndarray) -> tuple[int, int]:
        """``(arena id, byte offset in this rank's region)`` of the contiguous array ``a``, or ``(-1, 0)``."""
        if a.nbytes == 0 or not a.flags.c_contiguous:
            return -1, 0
        addr = a.__array_interface__["data"][0]
        end = addr + a.nbytes
        for arena in tuple(self._live.values()):  # a snapshot: the communication thread may add or drop one
            if arena.start <= addr and end <= arena.end:
                return arena.ident, addr - arena.start
        return -1, 0

    def view(self, r: int, loc: tuple[int, int], nbytes: int, what: object = None) -> np.ndarray:
        """Rank ``r``'s ``nbytes`` at ``loc`` (as it published it), as uint8, through this rank's mapping."""
        ident, off = loc
        arena = self._live.get(ident)
        if arena is None or not 0 <= off <= arena.size - nbytes:
            raise CollectiveError(f"{what or 'collective'}: rank {r} named shared arena {ident} at offset {off} "
                                  f"({nbytes} bytes), which rank {self.rank} does not hold; the group's shared state "
                                  "is corrupt")
        start = arena.offsets[r] + off
        return arena.u8[start:start + nbytes]

    def sweep(self) -> None:
        """Drop the arenas that no rank holds a tensor of any more."""
        for ident in [i for i, a in tuple(self._live.items()) if not a.alive()]:
            self._live.pop(ident, None)

    def close(self) -> None:
        """Drop every mapping this group holds (live tensors keep their own regions mapped)."""
        self._live.clear()
