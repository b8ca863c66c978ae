"""Device memory whose physical pages can be returned and mapped again at the same address.

Note on why: FSDP frees a unit's unsharded parameters between uses while the autograd graph
still holds views of them (PyTorch resizes the storage to zero bytes and refills it). CuPy
cannot resize an allocation in place, so :class:`ReleasableDeviceMemory` uses the CUDA
driver's virtual memory management: one virtual address range is reserved for the life of
the object, and physical memory is created and mapped into it (``map``) or unmapped and
released (``unmap``). Arrays viewing the range stay valid objects; between ``unmap`` and
``map`` they must not be read (the GPU would fault), which FSDP's all-gather-before-use
ordering guarantees. ``unmap`` first waits for the device, so no queued kernel still
reads the pages. The driver library is loaded with ctypes on first use.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import threading
from typing import Any

from ...errors import DeviceError

_CU_MEM_ALLOCATION_TYPE_PINNED = 1
_CU_MEM_LOCATION_TYPE_DEVICE = 1
_CU_MEM_ACCESS_FLAGS_PROT_READWRITE = 3
_CU_MEM_ALLOC_GRANULARITY_MINIMUM = 0


class _Location(ctypes.Structure):
    _fields_ = [("type", ctypes.c_int), ("id", ctypes.c_int)]


class _AllocFlags(ctypes.Structure):
    _fields_ = [("compressionType", ctypes.c_ubyte), ("gpuDirectRDMACapable", ctypes.c_ubyte),
                ("usage", ctypes.c_ushort), ("reserved", ctypes.c_ubyte * 4)]


class _AllocProp(ctypes.Structure):
    _fields_ = [("type", ctypes.c_int), ("requestedHandleTypes", ctypes.c_int), ("location", _Location),
                ("win32HandleMetaData", ctypes.c_void_p), ("allocFlags", _AllocFlags)]


class _AccessDesc(ctypes.Structure):
    _fields_ = [("location", _Location), ("flags", ctypes.c_int)]


_lib: Any = None
_lock = threading.Lock()
_U64, _SZ = ctypes.c_ulonglong, ctypes.c_size_t


def _driver() -> Any:
    global _lib
    with _lock:
        if _lib is None:
            name = ctypes.util.find_library("cuda") or "libcuda.so.1"
            try:
                lib = ctypes.CDLL(name)
            except OSError as e:
                raise DeviceError(f"the CUDA driver library ({name}) could not be loaded: {e}") from None
            sigs = {
                "cuMemGetAllocationGranularity": [ctypes.POINTER(_SZ), ctypes.POINTER(_AllocProp), ctypes.c_int],
                "cuMemAddressReserve": [ctypes.POINTER(_U64), _SZ, _SZ, _U64, _U64],
                "cuMemAddressFree": [_U64, _SZ],
                "cuMemCreate": [ctypes.POINTER(_U64), _SZ, ctypes.POINTER(_AllocProp), _U64],
                "cuMemRelease": [_U64],
                "cuMemMap": [_U64, _SZ, _SZ, _U64, _U64],
                "cuMemUnmap": [_U64, _SZ],
                "cuMemSetAccess": [_U64, _SZ, ctypes.POINTER(_AccessDesc), _SZ],
            }
            for fn, args in sigs.items():
                f = getattr(lib, fn)
                f.argtypes, f.restype = args, ctypes.c_int
            _lib = lib
    return _lib


def _check(code: int, what: str, nbytes: int) -> None:
    if code != 0:
        hint = " (out of GPU memory: shard more, or use a smaller model or batch)" if code == 2 else ""
        raise DeviceError(f"CUDA driver {what} failed with CUresult {code} for {nbytes} bytes{hint}")


class ReleasableDeviceMemory:
    """``nbytes`` of device memory at a fixed address on GPU ``device_index``; starts unmapped.

    ``array(numel, dtype)`` is a CuPy array over the whole range; ``map()`` backs the range
    with physical memory, ``unmap()`` gives that memory back to the GPU.
    """

    def __init__(self, nbytes: int, device_index: int) -> None:
        import cupy

        self.device_index = int(device_index)
        self.nbytes = int(nbytes)
        self.mapped = False
        self._handle = None
        with cupy.cuda.Device(self.device_index):
            cupy.cuda.runtime.free(0)  # make the device's primary context current for the driver calls
            lib = _driver()
            prop = _AllocProp()
            prop.type = _CU_MEM_ALLOCATION_TYPE_PINNED
            prop.location = _Location(_CU_MEM_LOCATION_TYPE_DEVICE, self.device_index)
            self._prop = prop
            gran = _SZ(0)
            _check(lib.cuMemGetAllocationGranularity(ctypes.byref(gran), ctypes.byref(prop),
                                                     _CU_MEM_ALLOC_GRANULARITY_MINIMUM), "cuMemGetAllocationGranularity", nbytes)
            g = max(int(gran.value), 1)
            self.size = max(g, -(-self.nbytes // g) * g)  # whole granules, at least one
            ptr = _U64(0)
            _check(lib.cuMemAddressReserve(ctypes.byref(ptr), self.size, 0, 0, 0), "cuMemAddressReserve", self.size)
            self.ptr = int(ptr.value)

    def array(self, numel: int, dtype: Any) -> Any:
        """A CuPy array of ``numel`` elements over the range (valid to use only while mapped)."""
        import cupy

        mem = cupy.cuda.UnownedMemory(self.ptr, self.size, self, self.device_index)
        return cupy.ndarray((int(numel),), dtype=dtype, memptr=cupy.cuda.MemoryPointer(mem, 0))

    def map(self) -> None:
        """Back the range with newly created physical memory (contents undefined)."""
        if self.mapped:
            return
        import cupy

        lib = _driver()
        with cupy.cuda.Device(self.device_index):
            handle = _U64(0)
            _check(lib.cuMemCreate(ctypes.byref(handle), self.size, ctypes.byref(self._prop), 0), "cuMemCreate", self.size)
            code = lib.cuMemMap(self.ptr, self.size, 0, handle.value, 0)
            if code != 0:
                lib.cuMemRelease(handle.value)
                _check(code, "cuMemMap", self.size)
            desc = _AccessDesc(_Location(_CU_MEM_LOCATION_TYPE_DEVICE, self.device_index), _CU_MEM_ACCESS_FLAGS_PROT_READWRITE)
            code = lib.cuMemSetAccess(self.ptr, self.size, ctypes.byref(desc), 1)
            if code != 0:
                lib.cuMemUnmap(self.ptr, self.size)
                lib.cuMemRelease(handle.value)
                _check(code, "cuMemSetAccess", self.size)
            self._handle = handle.value
            self.mapped = True

    def unmap(self) -> None:
        """Wait for the device, then give the physical memory back (the address range stays reserved)."""
        if not self.mapped:
            return
        import cupy

        lib = _driver()
        with cupy.cuda.Device(self.device_index) as dev:
            dev.synchronize()
            _check(lib.cuMemUnmap(self.ptr, self.size), "cuMemUnmap", self.size)
            _check(lib.cuMemRelease(self._handle), "cuMemRelease", self.size)
        self._handle = None
        self.mapped = False

    def __del__(self) -> None:
        try:
            if self.mapped:
                self.unmap()
            if getattr(self, "ptr", 0):
                _driver().cuMemAddressFree(self.ptr, self.size)
                self.ptr = 0
        except Exception:  # interpreter shutdown: the driver may already be gone
            pass
