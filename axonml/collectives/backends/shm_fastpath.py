"""The ``tcp`` backend's fast paths on shared memory: synchronous small collectives in the
caller's thread, and the allocation of shared-resident buffers.

Note on synchronous small collectives: a blocking all-reduce of one small array, a
blocking all-gather, reduce-scatter or broadcast of one small array, and a blocking
barrier on shared memory (the latency-bound cases) skip the generic submission path of
:class:`ProcessGroup`: when the group's communication thread is idle (nothing
queued, nothing running) they claim its turn, run right here in the caller's thread with
the same sequence number, divergence digest and failure handling as the generic path,
and return a completed ``Work`` (and report to the metrics observer themselves, when one is
set). Otherwise they queue like any collective, so that
collectives keep their order. Each moves its data in one phase (see ``ShmChannel.*_small``)
with the layout of the staged algorithm's single chunk, so a rank that runs the generic
path (it had async work queued) and one that runs the fast path interoperate. The
all-reduce goes one step further (it is the one latency benchmarks and small-gradient loops
hit): the first call with a given meta builds a runner with everything bound (rows, ufunc,
digest), which :func:`..functional.all_reduce` then calls directly, skipping this class's
entry and the ``Work`` (measured here: 4 KiB between two ranks from about 7 to 5
microseconds). These paths rely on :class:`CommWorker`'s ``_lock``, ``_jobs``, ``_busy``
and ``_cv``.

Note on shared buffers: :meth:`ShmFastPaths.alloc_shared` is a collective (checked like
any other) that creates an arena (:mod:`.shm_arena`) on the communication thread.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Sequence

import numpy as np

from ..types import CollectiveDesc, CompletedWork, ReduceOp, Work, check_counts
from .shm import Diverged, ShmUnavailable
from .shm_arena import Arenas
from .shm_collectives import UFUNCS

__all__ = ["ShmFastPaths", "SyncWhat"]

logger = logging.getLogger(__name__)

_OP_EXTRA = {op._value_: (("op", op.name),) for op in ReduceOp}  # as ProcessGroup.allreduce builds it


class SyncWhat:
    """Names the running synchronous small collective in messages; one per group, updated per
    call (cheaper than a CollectiveDesc, which is built only when a message needs it)."""

    __slots__ = ("group", "key", "seq", "gather")

    def __init__(self, group: str) -> None:
        self.group, self.key, self.seq = group, ("all_reduce", (), "", ()), 0
        #: an all-gather's (shapes, local element count, counts): its key leaves the shapes out (they may differ)
        self.gather: tuple | None = None

    def desc(self) -> CollectiveDesc:
        op, shapes, dtype, extra = self.key
        if self.gather is not None:  # as ProcessGroup.allgather describes it
            shapes, local, counts = self.gather
            return CollectiveDesc(op, self.group, self.seq, shapes, dtype, extra, True, local,
                                  check_counts("input", list(counts)), sync=True, fused=True)
        return CollectiveDesc(op, self.group, self.seq, shapes, dtype, extra, sync=True, fused=True)

    def __str__(self) -> str:
        return self.desc().summary()


class ShmFastPaths:
    """A mixin of :class:`.tcp.TcpProcessGroup` (before :class:`ProcessGroup` in its bases)."""

    # -- synchronous small collectives in the caller's thread -------------------------------------------------
    def _enter_inline(self) -> bool:
        """Claim the communication thread's turn when it is idle (else False: the caller queues
        its collective, so that collectives keep their order); pair with :meth:`_leave_inline`."""
        worker = self._worker
        lock = worker._lock
        lock.acquire()
        if worker._jobs or worker._busy or self._error is not None or self._closed:
            lock.release()
            return False
        worker._busy = True
        lock.release()
        return True

    def _leave_inline(self) -> None:
        worker = self._worker
        lock = worker._lock
        lock.acquire()
        worker._busy = False
        if worker._jobs:  # queued meanwhile from another thread: wake the worker
            worker._cv.notify_all()
        lock.release()

    def allreduce(self, arrays: Sequence[Any], op: ReduceOp = ReduceOp.SUM, meta: dict | None = None,
                  post: Any = None) -> Work:
        """As :meth:`ProcessGroup.allreduce`; a synchronous all-reduce of one small array on
        shared memory runs at once in the caller's thread (see the module docstring)."""
        shm = self.shm
        if shm is None or post is not None or meta is None or len(arrays) != 1 or not meta.get("sync"):
            return super().allreduce(arrays, op, meta, post)
        a = arrays[0]
        run = meta.get("_run")  # built by an earlier call with this meta: see _allreduce_runner
        if (run is not None and run[0] is op and type(a) is np.ndarray and a.shape == run[2] and a.dtype is run[3]
                and a.flags.c_contiguous):
            return self._done_work if run[1](a) else super().allreduce(arrays, op, meta, post)
        extra = _OP_EXTRA.get(getattr(op, "_value_", None)) if isinstance(op, ReduceOp) else None
        if extra is None or type(a) is not np.ndarray or not 0 < a.nbytes <= shm.small_bytes or not a.flags.c_contiguous:
            return super().allreduce(arrays, op, meta, post)
        # == CollectiveDesc.static_key() of the description the generic path builds
        key = (meta.get("op", "all_reduce"), meta.get("shapes") or (a.shape,), meta.get("dtype") or a.dtype.name, extra)
        h = self._digests.get(key)
        if h is None and self.check:
            named = SyncWhat(self.name)
            named.key = key
            h = self._digest(named.desc())[0]
        runner = self._allreduce_runner(op, key, h, a)
        if meta.get("shapes"):  # a meta that names its shapes is reused (functional.all_reduce caches it)
            meta["_run"] = (op, runner, a.shape, a.dtype)
        if runner(a):
            return self._done_work
        return super().allreduce(arrays, op, meta, post)

    def _allreduce_runner(self, op: ReduceOp, key: tuple, h: int | None, like: np.ndarray) -> Any:
        """A function ``run(a) -> bool`` that all-reduces ``a`` (the caller checked: a C-contiguous
        NumPy array of ``like``'s shape and dtype) as the collective ``key`` in the caller's
        thread, or returns False (and does nothing) when the communication thread is not idle: the latency path, one call from
        :func:`functional.all_reduce` with everything that does not change bound here.

        One phase (the layout of ``ShmChannel.allreduce_small``): this rank's data into its
        row of the slot, the phase (with the divergence digest ``h``), then every row combined
        in rank order (the same bits on every rank).

        Note: it repeats :meth:`_enter_inline`, :meth:`_leave_inline` and the body of
        ``allreduce_small`` on purpose. Calling them instead measured about 0.3 us slower of
        the 5 us a 4 KiB all-reduce takes here; keep the copies in step with those methods.
        """
        shm, worker, what, seq, n = self.shm, self._worker, self._sync_what, self._seq, self._size
        lock, step, perf = worker._lock, shm.step, time.perf_counter
        rows = tuple(shm._rows((s, like.dtype.num, like.size), like.dtype) for s in (0, 1))
        fn, avg, flatten = UFUNCS[op._value_], op is ReduceOp.AVG, like.ndim != 1
        name, nbytes = key[0], like.nbytes

        def run(a: np.ndarray) -> bool:  # a: C-contiguous, of like's shape and dtype (the caller checked)
            lock.acquire()
            if worker._jobs or worker._busy or self._error is not None or self._closed or (h is None and self.check):
                lock.release()
                return False
            worker._busy = True
            lock.release()
            t0 = perf() if self._observer is not None else 0.0  # metrics: this path bypasses _submit
            try:
                what.seq = s = next(seq)
                what.key, what.gather = key, None
                if flatten:
                    a = a.reshape(-1)
                k = shm.k
                shm.k = k + 1
                rw = rows[k & 1]
                rw[-1][...] = a  # this rank's row
                if self.check:
                    shm.pending = (h, s)
                try:
                    step(what)
                except Diverged:
                    self._mismatch(what.desc())
                finally:
                    shm.pending = None
                fn(rw[0], rw[1], out=a)
                if n > 2:
                    for row in rw[2:n]:
                        fn(a, row, out=a)
                if avg:
                    a /= n
            except BaseException as exc:
                self._set_broken(exc)
                raise
            finally:
                lock.acquire()
                worker._busy = False
                if worker._jobs:  # queued meanwhile from another thread: wake the worker
                    worker._cv.notify_all()
                lock.release()
            if t0:
                self._observe(name, nbytes, perf() - t0)
            return True

        return run

    def barrier(self, meta: dict | None = None, post: Any = None) -> Work:
        """As :meth:`ProcessGroup.barrier`; a synchronous barrier on shared memory is one phase,
        run at once in the caller's thread when the communication thread is idle."""
        shm = self.shm
        if shm is None or post is not None or meta is None or not meta.get("sync") or not self._enter_inline():
            return super().barrier(meta, post)
        key = (meta.get("op", "barrier"), meta.get("shapes") or (), meta.get("dtype") or "", ())
        return self._inline(key, None, shm.step, (), 0, None)

    def _inline(self, key: tuple, gather: tuple | None, run: Any, args: tuple, nbytes: int, post: Any) -> Work:
        """Run ``run(*args, what)`` (one shared-memory phase) as the collective described by
        ``key`` (its ``static_key``) in the caller's thread, after :meth:`_enter_inline`
        succeeded: sequence number, digest in the phase, mismatch, failure and metrics as on
        the generic path; then ``post``."""
        shm = self.shm
        what = self._sync_what
        what.gather = gather
        t0 = time.perf_counter() if self._observer is not None else 0.0
        result = None
        try:
            what.seq = seq = next(self._seq)
            what.key = key
            if self.check:
                h = self._digests.get(key)
                shm.pending = (h, seq) if h is not None else self._digest(what.desc())
            try:
                run(*args, what)
            except Diverged:
                self._mismatch(what.desc())
            finally:
                shm.pending = None
            if post is not None:
                result = post()
        except BaseException as exc:
            self._set_broken(exc)
            raise
        finally:
            self._leave_inline()
        if t0:
            self._observe(key[0], nbytes, time.perf_counter() - t0)
        if result is None:
            return self._done_work
        return CompletedWork(result, f"synchronous {key[0]} of group {self.name!r}")

    def allgather(self, output: Any, input: Any, counts: Sequence[int] | None = None, meta: dict | None = None,
                  post: Any = None) -> Work:
        """As :meth:`ProcessGroup.allgather`; a synchronous all-gather of NumPy arrays whose
        output fits the one-phase path runs at once in the caller's thread."""
        shm = self.shm
        if (shm is None or meta is None or not meta.get("sync") or type(output) is not np.ndarray
                or type(input) is not np.ndarray or not output.flags.c_contiguous or not input.flags.c_contiguous):
            return super().allgather(output, input, counts, meta, post)
        fast = meta.get("_inline_gather")  # (shapes, dtype, key, gather, byte offsets) of an earlier call with this meta
        if (counts is not None or fast is None or fast[0] != (output.shape, input.shape)
                or fast[1] is not input.dtype or output.dtype is not input.dtype):
            counts = tuple(counts) if counts is not None else (input.size,) * self._size
            if (output.dtype != input.dtype or len(counts) != self._size or input.size != counts[self._rank]
                    or output.size != sum(counts) or not 0 < output.nbytes <= shm.small_bytes):
                return super().allgather(output, input, counts, meta, post)
            offs = [0]
            for c in counts:
                offs.append(offs[-1] + c * input.itemsize)
            key = (meta.get("op", "all_gather"), (), meta.get("dtype") or input.dtype.name, (("counts", counts),))
            fast = ((output.shape, input.shape), input.dtype, key, (meta.get("shapes") or (input.shape,), input.size, counts),
                    tuple(offs))
            if counts == (input.size,) * self._size:  # the default counts: reusable by later calls with this meta
                meta["_inline_gather"] = fast
        if not self._enter_inline():
            return super().allgather(output, input, fast[3][2], meta, post)
        return self._inline(fast[2], fast[3], shm.allgather_small, (output.reshape(-1), input.reshape(-1), fast[4]),
                            output.nbytes, post)

    def allgather_into(self, output: Any, input: Any, counts: Sequence[int] | None = None, meta: dict | None = None,
                       post: Any = None) -> Work:
        """Same as :meth:`allgather`."""
        return self.allgather(output, input, counts, meta, post)

    def reduce_scatter(self, output: Any, input: Any, op: ReduceOp = ReduceOp.SUM, counts: Sequence[int] | None = None,
                       meta: dict | None = None, post: Any = None) -> Work:
        """As :meth:`ProcessGroup.reduce_scatter`; a synchronous reduce-scatter of NumPy arrays
        that fits the one-phase path runs at once in the caller's thread."""
        shm = self.shm
        if (shm is None or meta is None or not meta.get("sync") or type(output) is not np.ndarray
                or type(input) is not np.ndarray or output.dtype != input.dtype or not output.flags.c_contiguous
                or not input.flags.c_contiguous or not isinstance(op, ReduceOp)):
            return super().reduce_scatter(output, input, op, counts, meta, post)
        fast = meta.get("_inline_rs")  # (shapes, dtype, op, key, counts) of an earlier call with this meta
        if counts is not None or fast is None or fast[0] != (output.shape, input.shape) or fast[1] is not input.dtype \
                or fast[2] is not op or output.dtype is not input.dtype:
            counts = tuple(counts) if counts is not None else (output.size,) * self._size
            if (output.dtype != input.dtype or len(counts) != self._size or output.size != counts[self._rank]
                    or input.size != sum(counts) or not 0 < input.nbytes <= shm.small_bytes
                    or max(counts) > max(1, (shm.slot // input.itemsize) // self._size)):
                return super().reduce_scatter(output, input, op, counts, meta, post)
            key = (meta.get("op", "reduce_scatter"), meta.get("shapes") or (input.shape,),
                   meta.get("dtype") or input.dtype.name, (("op", op.name), ("counts", counts)))
            fast = ((output.shape, input.shape), input.dtype, op, key, list(counts))
            if counts == (output.size,) * self._size:  # the default counts: reusable by later calls with this meta
                meta["_inline_rs"] = fast
        if not self._enter_inline():
            return super().reduce_scatter(output, input, op, fast[4], meta, post)
        return self._inline(fast[3], None, shm.reduce_scatter_small, (output.reshape(-1), input.reshape(-1), op, fast[4]),
                            input.nbytes, post)

    def reduce_scatter_into(self, output: Any, input: Any, op: ReduceOp = ReduceOp.SUM,
                            counts: Sequence[int] | None = None, meta: dict | None = None, post: Any = None) -> Work:
        """Same as :meth:`reduce_scatter`."""
        return self.reduce_scatter(output, input, op, counts, meta, post)

    def broadcast(self, arrays: Sequence[Any], root: int, meta: dict | None = None, post: Any = None) -> Work:
        """As :meth:`ProcessGroup.broadcast`; a synchronous broadcast of one small NumPy array
        runs at once in the caller's thread."""
        shm = self.shm
        if shm is None or meta is None or len(arrays) != 1 or not meta.get("sync"):
            return super().broadcast(arrays, root, meta, post)
        a = arrays[0]
        if (type(a) is not np.ndarray or not a.flags.c_contiguous or not 0 < a.nbytes <= shm.small_bytes
                or not 0 <= root < self._size or not self._enter_inline()):
            return super().broadcast(arrays, root, meta, post)
        key = (meta.get("op", "broadcast"), meta.get("shapes") or (a.shape,), meta.get("dtype") or a.dtype.name,
               (("root", root),))
        return self._inline(key, None, shm.broadcast_small, (a.reshape(-1), root), a.nbytes, post)

    # -- shared buffers --------------------------------------------------------------------------------------
    def alloc_shared(self, shape: tuple, dtype: np.dtype) -> np.ndarray:
        """A C-contiguous array of ``shape`` and ``dtype`` in a shared arena of this group (a
        collective: every rank passes the same shape and dtype, in the same order).

        Collectives of this group read such arrays in place when every rank passes one. A
        group without shared memory (sockets) returns ``np.empty`` without communicating.
        """
        dtype = np.dtype(dtype)
        shape = tuple(int(d) for d in shape)
        nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        if self.shm is None:
            return np.empty(shape, dtype)
        self._raise_if_broken("shared_empty")
        meta = {"op": "shared_empty", "dtype": dtype.name, "shapes": (shape,), "sync": True}
        desc = self._desc("shared_empty", [], meta)
        got: list = []

        def run(d: CollectiveDesc) -> None:
            got.append(self._create_arena(nbytes, d))

        self._submit(desc, run, None).wait()
        raw = got[0]
        if raw is None:
            return np.empty(shape, dtype)
        return raw.view(dtype).reshape(shape)

    def _create_arena(self, nbytes: int, desc: CollectiveDesc) -> np.ndarray | None:
        if nbytes == 0:
            return None
        shm = self.shm
        if shm.arenas is None:
            shm.arenas = Arenas(self._size, self._rank)
        try:
            return shm.arenas.create(nbytes, lambda b: self._exchange_frames(desc.seq, b, desc, True), shm._create)
        except ShmUnavailable as exc:
            logger.warning("rank=%d group %r: no shared arena of %d bytes (%s); the tensor is private memory",
                           self._rank, self.name, nbytes, exc)
            return None
