"""Gradient buckets: the size-based assignment, the flat buffers, and the view a
communication hook gets (:class:`GradBucket`).

Note on the assignment (PyTorch's ``compute_bucket_assignment_by_size``): tensors are
taken in the expected ready order; each (dtype, device) has its own open bucket, closed
once it reaches its limit (a small first limit, then ``bucket_cap_mb``); buckets are
sorted by the position of their first tensor, so that they fill in consecutive order.
"""

from __future__ import annotations

import sys
from typing import Any, Callable, Sequence

import numpy as np

from ..autograd.engine import AccumulateGrad
from ..autograd.variable import TensorBase, make_tensor
from ..errors import DDPError
from ..tensor.tensor import Tensor

__all__ = ["DDPError", "FIRST_BUCKET_BYTES", "GradBucket", "compute_bucket_assignment", "reached_leaves"]

#: at most this many buffers per bucket are kept for reuse (see :class:`_Bucket`)
POOL_SLABS = 3

#: the size limit of the first bucket (PyTorch's ``dist._DEFAULT_FIRST_BUCKET_BYTES``)
FIRST_BUCKET_BYTES = 1024 * 1024


def compute_bucket_assignment(nbytes: Sequence[int], keys: Sequence[Any], order: Sequence[int],
                              limits: Sequence[int]) -> list[list[int]]:
    """Group tensors into buckets (PyTorch's ``compute_bucket_assignment_by_size``).

    Tensors are taken in ``order``; each ``keys[i]`` (dtype, device) has its own open
    bucket; a bucket is closed once its size reaches the current limit of its key
    (``limits[0]`` for a key's first bucket, then ``limits[1]``, ... the last one repeats).
    Buckets are returned sorted by the position in ``order`` of their first tensor.

    Example::

        compute_bucket_assignment([4, 4, 4], ["f"] * 3, [2, 1, 0], [4, 8])  # [[2], [1, 0]]
    """
    if not limits or any(lim <= 0 for lim in limits):
        raise ValueError(f"bucket size limits must be positive, got {list(limits)}")
    position = {idx: pos for pos, idx in enumerate(order)}
    open_buckets: dict[Any, list[int]] = {}
    sizes: dict[Any, int] = {}
    limit_pos: dict[Any, int] = {}
    done: list[list[int]] = []
    for i in order:
        key = keys[i]
        bucket = open_buckets.setdefault(key, [])
        bucket.append(i)
        sizes[key] = sizes.get(key, 0) + int(nbytes[i])
        lp = limit_pos.get(key, 0)
        if sizes[key] >= limits[min(lp, len(limits) - 1)]:
            done.append(bucket)
            del open_buckets[key]
            sizes[key] = 0
            limit_pos[key] = lp + 1
    done.extend(b for b in open_buckets.values() if b)
    done.sort(key=lambda b: position[b[0]])
    return done


class _Owner:
    """Owns the memory of one flat buffer, so that every NumPy view of the buffer refers to
    this object: its reference count tells whether a view still lives outside the reducer."""

    __slots__ = ("__array_interface__", "_mem", "__weakref__")

    def __init__(self, mem: np.ndarray) -> None:
        self._mem = mem
        self.__array_interface__ = {"data": (mem.__array_interface__["data"][0], False), "shape": (mem.nbytes,),
                                    "typestr": "|u1", "version": 3}


class _Slab:
    """One flat buffer with a view (array and tensor) per parameter."""

    __slots__ = ("owner", "buffer", "views", "view_tensors", "_counts0")

    def __init__(self, mem: Any, params: list, param_ids: list[int]) -> None:
        dev = params[param_ids[0]].device
        if isinstance(mem, np.ndarray):
            self.owner: _Owner | None = _Owner(mem)
            flat = np.asarray(self.owner).view(mem.dtype)  # its views' base is the owner
        else:  # CuPy: no reference counting of views, so no reuse (see is_free)
            self.owner, flat = None, mem
        self.buffer: Tensor = make_tensor(flat, dev)
        self.views, self.view_tensors = self._make_views(flat, [params[i] for i in param_ids])
        del flat  # the baseline counts only the references the slab itself holds
        self._counts0 = self._counts() if self.owner is not None else None

    def _make_views(self, flat: Any, params: list) -> tuple[list, list]:
        views, tensors = [], []
        off = 0
        for p in params:
            n = int(p._data.size)
            view = flat[off:off + n].reshape(p._data.shape)  # (param shape) view of the flat buffer
            views.append(view)
            tensors.append(make_tensor(view, p.device, base=self.buffer))
            off += n
        return views, tensors

    def _counts(self) -> tuple:
        return (sys.getrefcount(self.owner), tuple(sys.getrefcount(v) for v in self.views),
                tuple(sys.getrefcount(t) for t in self.view_tensors))

    def is_free(self) -> bool:
        """True when nothing outside the reducer refers to this buffer's memory (no gradient,
        no array or tensor view of it), so that writing into it cannot be observed."""
        return self._counts0 is not None and self._counts() == self._counts0


class _Bucket:
    """The parameters of one bucket and its flat buffer(s).

    With ``pooled`` (DDP without ``gradient_as_bucket_view``, on CPU) a bucket keeps up to
    :data:`POOL_SLABS` buffers: after the all-reduce, a gradient that backward created is
    replaced by its slot of the buffer (no copy back), and the next iteration uses a buffer
    that no gradient refers to any more, so no gradient handed out is ever overwritten.
    """

    __slots__ = ("index", "param_ids", "pool", "pooled", "current", "buffer", "views", "view_tensors", "pending",
                 "future", "launch_t", "nbytes", "written", "_params", "_alloc")

    def __init__(self, index: int, params: list, param_ids: list[int], alloc: Callable | None = None,
                 pooled: bool = False) -> None:
        self.index = index
        self.param_ids = param_ids
        self._params = params
        self._alloc = alloc
        self.pooled = pooled
        # shared buffers are allocated collectively, so a pooled bucket gets its two now
        self.pool = [self._new_slab(alloc) for _ in range(2 if pooled and alloc is not None else 1)]
        self._use(0)
        self.pending = len(param_ids)
        self.future: Any = None  # the Future of this iteration's all-reduce
        self.launch_t = 0.0
        self.written: Any = ()  # parameters whose .grad the communication thread already wrote
        self.nbytes = int(self.buffer._data.nbytes)

    def _new_slab(self, alloc: Callable | None) -> _Slab:
        p0 = self._params[self.param_ids[0]]
        total = sum(int(self._params[i]._data.size) for i in self.param_ids)
        if alloc is not None:  # memory the group's collectives read in place (see the reducer note)
            mem = alloc((total,), p0._data.dtype)
            mem.fill(0)
        else:
            mem = p0.device.xp.zeros(total, dtype=p0._data.dtype)
        return _Slab(mem, self._params, self.param_ids)

    def _use(self, slab: _Slab | int) -> None:
        if isinstance(slab, int):
            slab = self.pool[slab]
        self.current = slab
        self.buffer, self.views, self.view_tensors = slab.buffer, slab.views, slab.view_tensors

    def select_free(self) -> None:
        """Before an iteration (pooled): use a buffer that nothing outside refers to."""
        if not self.pooled or self.current.is_free():
            return
        for slab in self.pool:
            if slab.is_free():
                self._use(slab)
                return
        slab = self._new_slab(None)  # private memory: a local allocation needs no collective
        if len(self.pool) < POOL_SLABS:
            self.pool.append(slab)
        self._use(slab)  # beyond the pool: a buffer for this iteration only (its gradients own it)


class GradBucket:
    """What a communication hook gets (``torch.distributed.GradBucket``): one bucket's flat
    gradient buffer and its parameters.

    Example::

        def hook(state, bucket):
            work = dist.all_reduce(bucket.buffer(), async_op=True)
            return Future.from_work(work, bucket.buffer())
    """

    def __init__(self, bucket: _Bucket, params: list, is_last: bool) -> None:
        self._bucket = bucket
        self._params = params
        self._is_last = is_last

    def index(self) -> int:
        """The bucket's position in the launch order (0 is launched first)."""
        return self._bucket.index

    def buffer(self) -> Tensor:
        """The flat 1-D buffer holding the gradients of :meth:`parameters`."""
        return self._bucket.buffer

    def set_buffer(self, buffer: Tensor) -> None:
        """Copy ``buffer`` (same number of elements) into the bucket's buffer."""
        if int(buffer.numel()) != int(self._bucket.buffer.numel()):
            raise ValueError(f"set_buffer: the bucket has {self._bucket.buffer.numel()} elements, got {buffer.numel()}")
        self._bucket.buffer._data[...] = buffer._data.reshape(-1).astype(self._bucket.buffer._data.dtype, copy=False)

    def gradients(self) -> list[Tensor]:
        """The gradients as views of :meth:`buffer`, shaped like their parameters."""
        return list(self._bucket.view_tensors)

    def parameters(self) -> list:
        """The parameters whose gradients are in this bucket, in buffer order."""
        return [self._params[i] for i in self._bucket.param_ids]

    def is_last(self) -> bool:
        """True for the bucket launched last in an iteration."""
        return self._is_last

    def __repr__(self) -> str:
        return f"GradBucket(index={self.index()}, params={len(self._bucket.param_ids)}, bytes={self._bucket.nbytes})"


def reached_leaves(outputs: Any) -> set[int]:
    """``id`` of every leaf tensor reachable backwards from the tensors in ``outputs``."""
    stack: list = []
    leaves: set[int] = set()

    def collect(obj: Any) -> None:
        if isinstance(obj, TensorBase):
            if obj.grad_fn is not None:
                stack.append(obj.grad_fn)
            elif obj._rg:
                leaves.add(id(obj))
        elif isinstance(obj, (list, tuple, set)):
            for o in obj:
                collect(o)
        elif isinstance(obj, dict):
            for o in obj.values():
                collect(o)
        elif hasattr(obj, "__dataclass_fields__"):
            for name in obj.__dataclass_fields__:
                collect(getattr(obj, name, None))

    collect(outputs)
    seen: set[int] = set()
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, AccumulateGrad):
            leaves.add(id(node.variable))
            continue
        for edge in node.next_functions:
            if edge is not None:
                stack.append(edge[0])
    return leaves
