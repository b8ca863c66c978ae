"""Layer 1: devices, dtypes and promotion, memory statistics."""

from . import dtypes
from .devices import (
    Device,
    as_device,
    cpu,
    cuda_available,
    cuda_device_count,
    get_array_module,
    get_default_device,
    memory_stats,
    reset_peak_memory_stats,
    resize_storage,
    set_default_device,
)
from .dtypes import DType, get_default_dtype, get_dtype, promote_types, result_type, set_default_dtype

__all__ = [
    "DType",
    "Device",
    "as_device",
    "cpu",
    "cuda_available",
    "cuda_device_count",
    "dtypes",
    "get_array_module",
    "get_default_device",
    "get_default_dtype",
    "get_dtype",
    "memory_stats",
    "promote_types",
    "reset_peak_memory_stats",
    "resize_storage",
    "result_type",
    "set_default_device",
    "set_default_dtype",
]
