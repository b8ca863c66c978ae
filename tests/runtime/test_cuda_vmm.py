"""Releasable device memory (CUDA virtual memory management), used by FSDP on GPUs.
Skipped without a GPU."""

import numpy as np
import pytest

import axonml as ax

pytestmark = pytest.mark.skipif(not ax.runtime.cuda_available(), reason="needs a CUDA GPU")


def test_unmap_returns_memory_and_map_restores_the_same_address():
    import cupy

    from axonml.runtime.devices.cuda_vmm import ReleasableDeviceMemory

    n = 64 * 2**20 // 4  # 64 MiB of float32
    mem = ReleasableDeviceMemory(n * 4, 0)
    arr = mem.array(n, np.float32)
    view = arr[10:20]  # a view made while unmapped, used later (as the autograd graph does)
    free = cupy.cuda.runtime.memGetInfo
    # (free memory is the whole GPU's: other processes may allocate meanwhile, so each check
    # compares readings taken right around one call)
    before = free()[0]
    mem.map()
    assert free()[0] <= before - n * 4 + 2**20
    arr[...] = cupy.arange(n, dtype=cupy.float32)
    assert float(view.sum()) == float(np.arange(10, 20).sum())
    before = free()[0]
    mem.unmap()
    assert free()[0] >= before + n * 4 - 2**20  # the 64 MiB went back to the GPU
    mem.map()
    assert arr.data.ptr == mem.ptr and view.data.ptr == mem.ptr + 40
    arr[...] = 2.0
    assert float(view.sum()) == 20.0
    mem.unmap()
    mem.map()  # repeated cycles keep working
    arr.fill(1.0)
    assert float(arr.sum()) == float(n)


def test_fsdp_buffer_memory_follows_release_on_the_gpu():
    import cupy

    from axonml.fsdp._storage import ReleasableBuffer

    n = 32 * 2**20 // 4
    buf = ReleasableBuffer(n, np.float32, ax.Device("cuda"))
    assert buf.releasable and not buf.materialized
    before = ax.memory_stats("cuda")["current_bytes"]
    buf.materialize()
    buf.array[...] = 3.0
    assert ax.memory_stats("cuda")["current_bytes"] == before + n * 4
    assert float(buf.tensor[:4].sum().item()) == 12.0
    free0 = cupy.cuda.runtime.memGetInfo()[0]
    buf.release()
    assert ax.memory_stats("cuda")["current_bytes"] == before
    assert cupy.cuda.runtime.memGetInfo()[0] >= free0 + n * 4 - 2**20
