"""Tensors that live in the shared memory of a process group: ``shared_empty`` and ``is_shared``.

Note on semantics: ``shared_empty(*size, dtype=None, group=None)`` is a *collective*
allocation, like PyTorch's symmetric memory (``torch.distributed._symmetric_memory.empty``
followed by ``rendezvous``): every rank of ``group`` calls it in the same order with the
same shape and dtype (the divergence check compares them), and each rank gets its own
tensor, in a segment that every rank of the group maps. When every rank passes such a
tensor (or a contiguous view of one) to a large ``all_reduce``, ``all_gather_into_tensor``
(input), ``reduce_scatter_tensor`` (input) or ``broadcast`` (the source's tensor), the
``tcp`` backend reads the peers' tensors in place instead of copying them through its
staging buffers: about half the memory traffic. DDP buckets and FSDP flat parameters are
the intended users: allocate the flat buffer once with ``shared_empty(numel)``.

Everything else is ordinary: the tensor is a normal CPU tensor (any op, autograd, views),
its contents start unspecified (as ``torch.empty``), and collectives on it stay correct
in every case; only the speed differs. Where the group has no shared memory (another
backend, ranks on several hosts, ``AXONML_SHM=0``, a world of one) ``shared_empty``
returns an ordinary tensor without communicating; where ``/dev/shm`` has no room it logs a
warning and does the same on every rank. Float16/bfloat16 reductions go through float32
copies, so they do not read in place.

Lifetime and cost: each call takes ``world_size`` times the tensor's bytes of ``/dev/shm``
(one region per rank, every rank maps all of them), released when the tensor and all its
views are gone on every rank (checked at the group's next ``shared_empty`` and when it is
destroyed). A tensor that outlives its group (``destroy_process_group``) stays valid
memory. A group that has shared tensors runs one more short phase in each large
collective (where the ranks say where their tensors live).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..runtime.dtypes import get_default_dtype, get_dtype
from ..tensor.creation import from_numpy
from ..tensor.tensor import Tensor
from .api import resolve_group

__all__ = ["shared_empty", "is_shared"]


def _size(size: tuple) -> tuple[int, ...]:
    if len(size) == 1 and isinstance(size[0], (tuple, list)):
        size = tuple(size[0])
    out = []
    for s in size:
        if isinstance(s, bool) or not isinstance(s, (int, np.integer)):
            raise TypeError(f"shared_empty: sizes must be ints, got {s!r} in {size!r}")
        if s < 0:
            raise ValueError(f"shared_empty: negative dimension {int(s)} in size {tuple(int(x) for x in size)}")
        out.append(int(s))
    return tuple(out)


def shared_empty(*size: Any, dtype: Any = None, group: Any = None, requires_grad: bool = False) -> Tensor:
    """A CPU tensor of ``size`` whose memory the ranks of ``group`` share (a collective).

    Args:
        size: the shape, as ints or one tuple (as ``axonml.empty``).
        dtype: the dtype (default: the default float dtype).
        group: the process group (default: the world).
        requires_grad: whether autograd records operations on it.

    Returns:
        A tensor with unspecified contents. Every rank of the group must make the same call
        (same shape and dtype, same order relative to other collectives).

    Example::

        bucket = dist.shared_empty(25 * 2**20 // 4)     # a flat float32 buffer
        bucket.numpy()[:] = grads                          # fill it
        dist.all_reduce(bucket)                            # reads the peers' buckets in place
    """
    shape = _size(size)
    dt = get_default_dtype() if dtype is None else get_dtype(dtype)
    pg = resolve_group(group, "shared_empty")
    alloc = getattr(pg, "alloc_shared", None)
    arr = alloc(shape, dt.np) if alloc is not None else np.empty(shape, dt.np)
    t = from_numpy(arr)
    if requires_grad:
        t.requires_grad_(True)
    return t


def is_shared(tensor: Tensor, group: Any = None) -> bool:
    """Whether ``tensor``'s memory lies in a shared segment of ``group`` (so that collectives
    of that group read it in place); False on backends without shared memory.

    Example::

        t = dist.shared_empty(1024)
        assert dist.is_shared(t) == (dist.get_world_size() > 1)   # on one host, tcp backend
    """
    if not isinstance(tensor, Tensor):
        raise TypeError(f"is_shared: expected an axonml Tensor, got {type(tensor).__name__}")
    pg = resolve_group(group, "is_shared")
    shm = getattr(pg, "shm", None)
    arenas = getattr(shm, "arenas", None)
    data = tensor._data
    if arenas is None or not isinstance(data, np.ndarray):
        return False
    return arenas.locate(data)[0] >= 0
