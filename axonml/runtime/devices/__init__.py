"""Devices: the array module registry (``cpu`` = NumPy, ``cuda`` = CuPy, lazily).

Every op dispatches through ``device.xp``; no code outside this package special-cases
NumPy versus CuPy.
"""

from .device import (
    Device,
    as_device,
    cpu,
    creation_device,
    cuda_available,
    cuda_device_count,
    get_array_module,
    get_default_device,
    set_default_device,
)
from .memory import memory_stats, reset_peak_memory_stats, resize_storage

__all__ = [
    "Device",
    "as_device",
    "cpu",
    "cuda_available",
    "creation_device",
    "cuda_device_count",
    "get_default_device",
    "set_default_device",
    "get_array_module",
    "memory_stats",
    "reset_peak_memory_stats",
    "resize_storage",
]
