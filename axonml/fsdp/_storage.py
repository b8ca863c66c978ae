"""Releasable buffers: the storage of a unit's unsharded parameters.

Note on freeing memory that the autograd graph still points at: after a unit's forward
the graph keeps references to the unsharded parameter arrays (a matmul saves its weight
for backward), so dropping FSDP's own reference would free nothing. PyTorch FSDP solves
this by resizing the storage to zero bytes and refilling the *same* storage before
backward. NumPy cannot resize an array in place, so on CPU the buffer is a private
anonymous memory map: :meth:`ReleasableBuffer.release` hands its physical pages back to
the operating system with ``madvise(MADV_DONTNEED)`` (the addresses stay valid and read
as zeros) and :meth:`ReleasableBuffer.materialize` accounts for them again before the
all-gather writes the values back. Every array that views the buffer (the parameters,
the views that ops saved) sees the refilled values.

Note on accounting: the buffer is one axonml tensor, so ``axonml.memory_stats`` counts it
like any storage; release/materialize move its count down and up with the physical pages.
The adjustment goes through the storage token of ``axonml.runtime.devices.memory``
(``stats``, ``nbytes``), the CPU analogue of ``untyped_storage().resize_(0)``.

On other devices (CUDA) there is no in-place release: the buffer stays allocated
(correct, but a GPU run keeps every unit's unsharded parameters; documented in
:func:`axonml.fsdp.fully_shard`).
"""

from __future__ import annotations

import mmap
from typing import Any

import numpy as np

from ..autograd.variable import make_tensor
from ..runtime.devices.device import Device
from ..runtime.devices.memory import resize_storage
from ..tensor import Tensor

_CAN_RELEASE = hasattr(mmap, "MADV_DONTNEED") and hasattr(mmap, "MAP_PRIVATE") and hasattr(mmap, "MAP_ANONYMOUS")


class ReleasableBuffer:
    """A flat array of ``numel`` elements whose memory can be released and refilled in place.

    Starts released. ``tensor`` is the axonml tensor owning the array; make views of it.
    """

    __slots__ = ("tensor", "nbytes", "materialized", "_map", "releasable")

    def __init__(self, numel: int, dtype: np.dtype, device: Device) -> None:
        dtype = np.dtype(dtype)
        self.nbytes = int(numel) * dtype.itemsize
        self.releasable = device.type == "cpu" and _CAN_RELEASE and self.nbytes > 0
        if self.releasable:
            self._map = mmap.mmap(-1, self.nbytes, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
            array = np.frombuffer(self._map, dtype=dtype, count=int(numel))
        else:
            self._map = None
            array = device.xp.empty(int(numel), dtype=dtype)
        # counted from zero bytes: the buffer starts released (materialize() counts it)
        self.tensor: Tensor = make_tensor(array[:0], device)
        self.tensor._data = array
        self.materialized = not self.releasable
        if not self.releasable:
            self._count(self.nbytes)

    @property
    def array(self) -> Any:
        return self.tensor._data

    def materialize(self) -> None:
        """Count the buffer again (its pages come back as the next writes touch them)."""
        if self.materialized:
            return
        self.materialized = True
        self._count(self.nbytes)

    def release(self) -> None:
        """Give the physical memory back (contents become zeros) and stop counting it."""
        if not self.materialized:
            return
        self.materialized = False
        if self.releasable:
            self._map.madvise(mmap.MADV_DONTNEED)
            self._count(0)

    def _count(self, nbytes: int) -> None:
        """Make the storage token count ``nbytes`` (the memory statistics follow)."""
        resize_storage(self.tensor._storage, nbytes)
