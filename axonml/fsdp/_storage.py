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

On a CUDA GPU the buffer is a fixed virtual address range whose physical memory is
mapped by :meth:`materialize` and unmapped by :meth:`release`
(:mod:`axonml.runtime.devices.cuda_vmm`, the driver's virtual memory management): the same
contract, except that a released buffer must not be read at all (CPU pages read as
zeros). Where the driver refuses it, the buffer is an ordinary allocation that stays
(correct, but the run keeps every unit's unsharded parameters) and a warning says so.
"""

from __future__ import annotations

import logging
import mmap
from typing import Any

import numpy as np

from ..autograd.variable import make_tensor
from ..errors import DeviceError
from ..runtime.devices.cuda_vmm import ReleasableDeviceMemory
from ..runtime.devices.device import Device
from ..runtime.devices.memory import resize_storage
from ..tensor import Tensor

logger = logging.getLogger("axonml.fsdp")
_CAN_RELEASE = hasattr(mmap, "MADV_DONTNEED") and hasattr(mmap, "MAP_PRIVATE") and hasattr(mmap, "MAP_ANONYMOUS")


_vmm_ok = [True]  # False once the driver refused: later buffers do not retry


class ReleasableBuffer:
    """A flat array of ``numel`` elements whose memory can be released and refilled in place.

    Starts released. ``tensor`` is the axonml tensor owning the array; make views of it.
    """

    __slots__ = ("tensor", "nbytes", "materialized", "_map", "_vmm", "releasable")

    def __init__(self, numel: int, dtype: np.dtype, device: Device) -> None:
        dtype = np.dtype(dtype)
        self.nbytes = int(numel) * dtype.itemsize
        self.releasable = device.type == "cpu" and _CAN_RELEASE and self.nbytes > 0
        self._map = self._vmm = None
        if self.releasable:
            self._map = mmap.mmap(-1, self.nbytes, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
            array = np.frombuffer(self._map, dtype=dtype, count=int(numel))
        elif device.type == "cuda" and self.nbytes > 0 and _vmm_ok[0]:
            try:
                self._vmm = ReleasableDeviceMemory(self.nbytes, device.index or 0)
            except (DeviceError, AttributeError, OSError) as e:
                _vmm_ok[0] = False
                logger.warning("FSDP: unsharded parameters stay allocated on %s between uses: %s", device, e)
        if self._vmm is not None:
            self.releasable = True
            array = self._vmm.array(int(numel), dtype)
        elif not self.releasable:
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
        if self._vmm is not None:
            self._vmm.map()
        self._count(self.nbytes)

    def release(self) -> None:
        """Give the physical memory back (contents become zeros) and stop counting it."""
        if not self.materialized:
            return
        self.materialized = False
        if self._vmm is not None:
            self._vmm.unmap()
            self._count(0)
        elif self.releasable:
            self._map.madvise(mmap.MADV_DONTNEED)
            self._count(0)

    def _count(self, nbytes: int) -> None:
        """Make the storage token count ``nbytes`` (the memory statistics follow)."""
        resize_storage(self.tensor._storage, nbytes)
