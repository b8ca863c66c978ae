"""The ``nccl`` backend: collectives on CuPy arrays through ``cupy.cuda.nccl``, one GPU per rank.

Note on streams: every collective runs on the group's own CUDA stream. At submission
(in the caller's thread) an event is recorded on the caller's current stream; the
group's stream waits for it, so the collective sees every kernel the caller queued
before it, and the host never blocks. The NCCL calls and the tensor layer's copy-back
are enqueued on the group's stream, then a completion event is recorded there. The
:class:`~.nccl_work.NcclWork` returned completes on the host once the collective is
*enqueued*; ``wait()`` makes the caller's current stream wait for the completion event
(as PyTorch's NCCL backend does), ``wait(timeout)`` blocks the host polling that event,
``is_completed()`` queries it. The arrays a collective uses are kept alive until its
event fires, so CuPy's memory pool cannot hand them to other work while NCCL runs.

Note on the bootstrap and the divergence check: rank 0 creates the NCCL unique id and
puts it in the group's store; the others read it with the group timeout (see
:func:`~.nccl_support.bootstrap`). With ``AXONML_CHECK_COLLECTIVES`` on (the default),
each collective first exchanges its description through the store (a few store round
trips on the host; set it to 0 in production), so a rank that calls another op, shape or
dtype gets the same error everywhere and a missing rank is named.

Note on failure: a watchdog thread per group polls the pending completion events, the
communicator's asynchronous error (``ncclCommGetAsyncError``) and, once a second, an
abort note in the store. An NCCL error, or GPU work still unfinished after the group
timeout, aborts the communicator (``ncclCommAbort``, which ends the hung kernels), fails
the pending Works and breaks the group; the first failing rank leaves a note in the
store, so its peers fail within about a second instead of at their own timeout.

Note on the collectives: all-reduce, reduce and reduce-scatter use NCCL's reductions
(uneven reduce-scatter: one ncclReduce per segment in a group call); broadcast,
all-gather (uneven: one broadcast per rank), gather, scatter, all-to-all and send/recv
move bytes (gathers, scatters and all-to-all are send/recv inside ``groupStart`` /
``groupEnd``). NCCL has no message tags: sends and receives between two ranks match in
order, and their sizes must agree (NCCL cannot check; a mismatch hangs until the
watchdog's timeout). Consecutive queued send/recv calls are issued in one group call so
that ``isend`` then ``irecv`` on both ranks does not deadlock. Dtypes and reduce ops:
see :mod:`.nccl_support`.
"""

from __future__ import annotations

import contextlib
import logging
import pickle
import threading
import time
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from ...errors import AxonError, CollectiveError, CollectiveTimeout, DeviceError, RendezvousError
from ..process_group import Meta, Post, ProcessGroup, p2p_result, register_backend
from ..types import CollectiveDesc, ReduceOp, Work
from .nccl_support import ReducePlan, bootstrap, load_runtime, nccl_available, pick_device, reduce_plan, store_allgather
from .nccl_work import NcclWork, Watchdog

__all__ = ["NcclProcessGroup", "nccl_available"]

logger = logging.getLogger(__name__)

_NOTE_S = 1.0  # how often it looks for a peer's abort note in the store


def _offsets(counts: Sequence[int]) -> list[int]:
    return [0] + [int(x) for x in np.cumsum(counts, dtype=np.int64)]


def _is_p2p(job: Any) -> bool:
    return isinstance(job.payload, list)


class NcclProcessGroup(ProcessGroup):
    """A rank of an ``nccl`` group; built by ``init_process_group(backend="nccl")`` or ``new_group``.

    Args:
        store, rank, size, timeout, name, global_ranks: as the other backends.
        runtime: the CuPy/NCCL seam (default: the real one; tests pass a fake).
        device: the GPU index (default: ``LOCAL_RANK``, else CuPy's current device).

    Raw-array methods take contiguous CuPy arrays on this group's GPU.
    """

    backend_name = "nccl"
    devices = ("cuda",)
    native_low_precision = False  # float16/bfloat16 reductions go through float32 copies

    def __init__(self, store: Any, rank: int, size: int, timeout: float, name: str,
                 global_ranks: Sequence[int] | None = None, *, runtime: Any = None, device: int | None = None) -> None:
        rt = runtime if runtime is not None else load_runtime()
        dev = pick_device(rt, device)
        super().__init__(rank, size, name, timeout, global_ranks)
        self._rt, self.device_index, self._store = rt, dev, store
        self._abort_lock = threading.Lock()
        self._aborted = False
        self._keep: list = []  # buffers of the collective being enqueued
        self._next_note = 0.0
        self._prev_desc_key: str | None = None
        self._barrier_buf: Any = None
        try:
            self._comm, self._gen = bootstrap(store, rank, size, self.timeout, name, rt, dev)
            self._stream = rt.new_stream(dev)
            self._u8 = rt.const("NCCL_UINT8")
        except BaseException:
            self._worker.stop()
            raise
        self._watchdog = Watchdog(rt, self.timeout, self._where(), self._watch_check, self._set_broken)
        logger.info("rank=%d nccl group %r of %d ranks on cuda:%d (NCCL %d)", rank, name, size, dev, rt.version)

    def _where(self) -> str:
        world = self.global_ranks[self._rank]
        return f"nccl group {self.name!r} (rank {self._rank}, world rank {world}, cuda:{self.device_index})"

    # -- host <-> device, for callers that hold host bytes (object collectives) --------------------------------
    def to_device(self, array: np.ndarray) -> Any:
        """A copy of the host ``array`` on this group's GPU (on the caller's current stream)."""
        return self._rt.to_device(self.device_index, array)

    def to_host(self, array: Any) -> np.ndarray:
        """A NumPy copy of the device ``array`` (ordered after ``Work.wait()`` on the current stream)."""
        return self._rt.to_host(array)

    # -- validation in the caller's thread (a bad argument never breaks the group) ------------------------
    def _check_arrays(self, what: str, arrays: Sequence[Any]) -> None:
        dev = self.device_index
        for a in arrays:
            if not self._rt.is_device_array(a):
                raise DeviceError(f"{what}: the nccl backend works on CuPy arrays on cuda:{dev}, got {type(a).__name__}; "
                                  f"move the tensor with .to('cuda:{dev}') or use the tcp backend for CPU tensors")
            got = self._rt.array_device(a)
            if got != dev:
                raise DeviceError(f"{what}: an array is on cuda:{got} but {self._where()} runs on cuda:{dev}; move it with "
                                  f".to('cuda:{dev}')")
            if not a.flags.c_contiguous:
                raise ValueError(f"{what}: the nccl backend needs contiguous arrays, got shape {tuple(a.shape)} with strides "
                                 f"{a.strides}")

    def _plan(self, op: ReduceOp, a: Any, user_dtype: str) -> ReducePlan:
        return reduce_plan(op, a.dtype.name, user_dtype, self._rt.version)

    def allreduce(self, arrays: Sequence[Any], op: ReduceOp = ReduceOp.SUM, meta: Meta = None, post: Post = None) -> Work:
        self._check_arrays("all_reduce", arrays)
        for a in arrays:
            self._plan(op, a, (meta or {}).get("dtype", ""))
        return super().allreduce(arrays, op, meta, post)

    def reduce(self, arrays: Sequence[Any], root: int, op: ReduceOp = ReduceOp.SUM, meta: Meta = None, post: Post = None) -> Work:
        self._check_arrays("reduce", arrays)
        for a in arrays:
            self._plan(op, a, (meta or {}).get("dtype", ""))
        return super().reduce(arrays, root, op, meta, post)

    def reduce_scatter(self, output: Any, input: Any, op: ReduceOp = ReduceOp.SUM, counts: Sequence[int] | None = None,
                       meta: Meta = None, post: Post = None) -> Work:
        self._check_arrays("reduce_scatter", [output, input])
        self._plan(op, input, (meta or {}).get("dtype", ""))
        return super().reduce_scatter(output, input, op, counts, meta, post)

    def broadcast(self, arrays: Sequence[Any], root: int, meta: Meta = None, post: Post = None) -> Work:
        self._check_arrays("broadcast", arrays)
        return super().broadcast(arrays, root, meta, post)

    def allgather(self, output: Any, input: Any, counts: Sequence[int] | None = None, meta: Meta = None,
                  post: Post = None) -> Work:
        self._check_arrays("all_gather", [output, input])
        return super().allgather(output, input, counts, meta, post)

    def gather(self, input: Any, outputs: Sequence[Any] | None, root: int, meta: Meta = None, post: Post = None) -> Work:
        self._check_arrays("gather", [input, *(outputs or ())])
        return super().gather(input, outputs, root, meta, post)

    def scatter(self, output: Any, inputs: Sequence[Any] | None, root: int, meta: Meta = None, post: Post = None) -> Work:
        self._check_arrays("scatter", [output, *(inputs or ())])
        return super().scatter(output, inputs, root, meta, post)

    def alltoall(self, output: Any, input: Any, out_counts: Sequence[int], in_counts: Sequence[int],
                 meta: Meta = None, post: Post = None) -> Work:
        self._check_arrays("all_to_all", [output, input])
        return super().alltoall(output, input, out_counts, in_counts, meta, post)

    # -- submission: stream ordering and the Work -----------------------------------------------------------
    def _submit(self, desc: CollectiveDesc, run: Callable[[CollectiveDesc], Any], post: Post) -> Work:
        work = NcclWork(desc, self.timeout, self._rt, self.device_index, self._stream)
        work._ready = self._rt.record_current(self.device_index)  # the caller's queued kernels come first

        def enqueue() -> Any:
            result = run(desc)
            return post() if post is not None else result  # the copy-back, on the group's stream

        def job(_: Any) -> Any:
            self._raise_if_broken(desc.op)
            if self.check and self._size > 1 and not desc.fused:
                self._check(desc)
            return self._launch([work], desc, enqueue)

        if desc.sync:
            return self._worker.run_inline(job, work)
        return self._worker.submit(job, work)

    def batch_p2p(self, ops: Sequence[tuple[str, Any, int, int, Post]], sync: bool = False) -> list[Work]:
        ops = list(ops)
        for kind, _a, peer, _t, _p in ops:
            if kind not in ("send", "recv"):
                raise ValueError(f"batch_p2p: kind must be 'send' or 'recv', got {kind!r}")
            if not 0 <= peer < self._size or peer == self._rank:
                raise ValueError(f"{kind}: peer {peer} must be another rank of group {self.name!r} (size {self._size}, "
                                 f"this rank {self._rank})")
        self._check_arrays("send/recv", [op[1] for op in ops])
        ready = self._rt.record_current(self.device_index)
        works = []
        for kind, a, peer, tag, _p in ops:
            works.append(NcclWork(f"{kind}(peer={peer}, tag={tag}, shape={tuple(a.shape)})", self.timeout, self._rt,
                                  self.device_index, self._stream))
            works[-1]._ready = ready
        items = list(zip(ops, works))

        def job(j: Any) -> Any:
            batch = list(j.payload)
            try:
                self._raise_if_broken("send/recv")
                nxt = self._worker.take_next_if(_is_p2p)
                while nxt is not None:  # queued sends and receives go into the same NCCL group call
                    nxt.work._started()
                    batch.extend(nxt.payload)
                    nxt = self._worker.take_next_if(_is_p2p)
                outcomes = self._launch([w for _op, w in batch], "send/recv", lambda: self._p2p(batch))
            except BaseException as exc:
                for _op, w in batch[1:]:  # the worker fails the first one
                    w._complete(exc=exc)
                raise
            for (_op, w), (res, err) in zip(batch[1:], outcomes[1:]):
                w._complete(res, err)  # a failing post (copy-back) fails only its own Work
            if outcomes[0][1] is not None:
                raise outcomes[0][1]
            return outcomes[0][0]

        submit = self._worker.run_inline if sync else self._worker.submit
        return [submit(job, works[0], items)] + works[1:]

    def _launch(self, works: list[NcclWork], what: Any, enqueue: Callable[[], Any]) -> Any:
        """Run ``enqueue`` (NCCL calls, copies) on the group's stream after the submitters' events;
        record the completion event and hand it to ``works`` and the watchdog."""
        keep: list = []
        self._keep = keep
        rt, dev = self._rt, self.device_index
        try:
            with rt.activate(dev, self._stream), self._watchdog.launching(what):
                for ready in {id(w._ready): w._ready for w in works if w._ready is not None}.values():
                    rt.stream_wait(self._stream, ready)
                result = enqueue()
                event = rt.record(dev, self._stream)
        except Exception as exc:
            self._watchdog.graveyard.append(keep)  # NCCL may have queued work on these already
            if isinstance(exc, AxonError):
                raise
            op = getattr(what, "op", "send/recv")
            # the watchdog may have aborted the communicator meanwhile (a peer failed): say that
            self._raise_if_broken(op)
            raise CollectiveError(f"{op}: NCCL call failed in {self._where()}: {exc}") from exc
        except BaseException:
            self._watchdog.graveyard.append(keep)
            raise
        finally:
            self._keep = []
        for w in works:
            w._attach(event, keep)
        self._watchdog.add(event, works, what, keep)
        return result

    # -- helpers for the primitives (run inside _launch) ------------------------------------------------------
    def _p(self, a: Any) -> int:
        """The device pointer of ``a`` (kept alive until the collective's event fires)."""
        self._keep.append(a)
        return self._rt.ptr(a)

    def _sp(self) -> int:
        return int(self._stream.ptr)

    @contextlib.contextmanager
    def _group(self, on: bool = True) -> Iterator[None]:
        if not on:
            yield
            return
        self._rt.group_start()
        try:
            yield
        finally:
            self._rt.group_end()

    def _buffers(self, a: Any, plan: ReducePlan) -> tuple[Any, bool]:
        """The flat buffer NCCL reduces for ``a``, and whether it is a copy."""
        flat = a.reshape(-1)
        if plan.view:
            return flat.view(plan.view), False
        if plan.work:
            return flat.astype(plan.work), True
        return flat, False

    def _finish(self, a: Any, buf: Any, plan: ReducePlan, copied: bool) -> None:
        if plan.divide:
            buf /= self._size
        if copied:
            a.reshape(-1)[...] = buf.astype(a.dtype)

    # -- collectives ------------------------------------------------------------------------------------------------
    def _allreduce(self, arrays: list, op: ReduceOp, desc: CollectiveDesc) -> None:
        c = self._rt.const
        jobs = []
        for a in arrays:
            plan = self._plan(op, a, desc.dtype)
            jobs.append((a, plan, *self._buffers(a, plan)))
        with self._group(len(jobs) > 1):  # a coalesced call is one NCCL launch
            for _a, plan, buf, _copied in jobs:
                if buf.size:
                    p = self._p(buf)
                    self._comm.allReduce(p, p, buf.size, c(plan.nccl_dtype), c(plan.nccl_op), self._sp())
        for a, plan, buf, copied in jobs:
            self._finish(a, buf, plan, copied)

    def _reduce(self, arrays: list, root: int, op: ReduceOp, desc: CollectiveDesc) -> None:
        c = self._rt.const
        jobs = []
        for a in arrays:
            plan = self._plan(op, a, desc.dtype)
            jobs.append((a, plan, *self._buffers(a, plan)))
        with self._group(len(jobs) > 1):
            for _a, plan, buf, _copied in jobs:
                if buf.size:
                    p = self._p(buf)  # NCCL writes the result only on the root
                    self._comm.reduce(p, p, buf.size, c(plan.nccl_dtype), c(plan.nccl_op), root, self._sp())
        if self._rank == root:
            for a, plan, buf, copied in jobs:
                self._finish(a, buf, plan, copied)

    def _reduce_scatter(self, output: Any, input: Any, op: ReduceOp, counts: list[int], desc: CollectiveDesc) -> None:
        c = self._rt.const
        plan = self._plan(op, input, desc.dtype)
        src, _ = self._buffers(input, plan)
        if plan.work:
            dst, copied = self._rt.xp.empty(output.size, dtype=plan.work), True
        else:
            dst, copied = (output.view(plan.view) if plan.view else output), False
        if src.size != sum(counts) or dst.size != counts[self._rank]:
            raise ValueError(f"{desc.op}: input has {src.size} elements and output {dst.size}, but the counts are {counts}")
        dt, nop, s = c(plan.nccl_dtype), c(plan.nccl_op), self._sp()
        if all(n == counts[0] for n in counts):
            if dst.size:
                self._comm.reduceScatter(self._p(src), self._p(dst), dst.size, dt, nop, s)
        else:
            off, sp, dp = _offsets(counts), self._p(src), self._p(dst)
            with self._group():
                for r, n in enumerate(counts):
                    if n:
                        seg = sp + off[r] * src.itemsize
                        self._comm.reduce(seg, dp if r == self._rank else seg, n, dt, nop, r, s)
        self._finish(output, dst, plan, copied)

    def _broadcast(self, arrays: list, root: int, desc: CollectiveDesc) -> None:
        with self._group(len(arrays) > 1):
            for a in arrays:
                if a.nbytes:
                    p = self._p(a)
                    self._comm.broadcast(p, p, a.nbytes, self._u8, root, self._sp())

    def _allgather(self, output: Any, input: Any, counts: list[int], desc: CollectiveDesc) -> None:
        if output.size != sum(counts) or input.size != counts[self._rank]:
            raise ValueError(f"{desc.op}: input has {input.size} elements and output {output.size}, but the counts are {counts}")
        isz, s = input.itemsize, self._sp()
        if all(n == counts[0] for n in counts):
            if input.nbytes:
                self._comm.allGather(self._p(input), self._p(output), input.nbytes, self._u8, s)
            return
        off, out = _offsets(counts), self._p(output)
        with self._group():  # uneven: each rank broadcasts its segment into place
            for r, n in enumerate(counts):
                if n:
                    dst = out + off[r] * isz
                    self._comm.broadcast(self._p(input) if r == self._rank else dst, dst, n * isz, self._u8, r, s)

    def _gather(self, input: Any, outputs: list | None, root: int, desc: CollectiveDesc) -> None:
        s = self._sp()
        with self._group():
            if self._rank != root:
                if input.nbytes:
                    self._comm.send(self._p(input), input.nbytes, self._u8, root, s)
                return
            for r, o in enumerate(outputs):
                if r == root:
                    o.reshape(-1)[...] = input.reshape(-1)  # a copy on the group's stream
                    self._keep.append(o)
                elif o.nbytes:
                    self._comm.recv(self._p(o), o.nbytes, self._u8, r, s)

    def _scatter(self, output: Any, inputs: list | None, root: int, desc: CollectiveDesc) -> None:
        s = self._sp()
        with self._group():
            if self._rank != root:
                if output.nbytes:
                    self._comm.recv(self._p(output), output.nbytes, self._u8, root, s)
                return
            for r, x in enumerate(inputs):
                if r == root:
                    output.reshape(-1)[...] = x.reshape(-1)
                    self._keep.append(x)
                elif x.nbytes:
                    self._comm.send(self._p(x), x.nbytes, self._u8, r, s)

    def _alltoall(self, output: Any, input: Any, out_counts: list[int], in_counts: list[int], desc: CollectiveDesc) -> None:
        me = self._rank
        if input.size != sum(in_counts) or output.size != sum(out_counts) or in_counts[me] != out_counts[me]:
            raise ValueError(f"{desc.op}: input has {input.size} elements for sends of {in_counts}, output {output.size} "
                             f"for receives of {out_counts}")
        isz, s = input.itemsize, self._sp()
        io, oo = _offsets(in_counts), _offsets(out_counts)
        ip, op = self._p(input), self._p(output)
        with self._group():
            for j in range(self._size):
                if j == me:
                    output[oo[j]:oo[j + 1]] = input[io[j]:io[j + 1]]
                    continue
                if in_counts[j]:
                    self._comm.send(ip + io[j] * isz, in_counts[j] * isz, self._u8, j, s)
                if out_counts[j]:
                    self._comm.recv(op + oo[j] * isz, out_counts[j] * isz, self._u8, j, s)

    def _barrier(self, desc: CollectiveDesc) -> None:
        # as PyTorch: an all-reduce of one element, then the host waits for it (bounded)
        if self._barrier_buf is None:
            self._barrier_buf = self._rt.xp.zeros(1, dtype=np.int32)
        p = self._p(self._barrier_buf)
        self._comm.allReduce(p, p, 1, self._rt.const("NCCL_INT32"), self._rt.const("NCCL_SUM"), self._sp())
        event = self._rt.record(self.device_index, self._stream)
        deadline, pause = time.monotonic() + self.timeout, 1e-4
        while not self._rt.event_done(event):
            if time.monotonic() > deadline:
                raise CollectiveTimeout(f"{desc.summary()} in {self._where()} did not finish within {self.timeout:g} s; "
                                        "a peer is slow, hung or issuing other collectives")
            time.sleep(pause)
            pause = min(2 * pause, 0.01)

    def _p2p(self, items: list) -> list[tuple[Any, BaseException | None]]:
        """Send and receive ``items`` in one NCCL group call; return each one's (result, error)."""
        s = self._sp()
        with self._group():
            for (kind, a, peer, _tag, _post), _work in items:
                if a.nbytes:
                    call = self._comm.send if kind == "send" else self._comm.recv
                    call(self._p(a), a.nbytes, self._u8, peer, s)
        outcomes = []
        for op, _work in items:  # the posts' copies run on the group's stream
            try:
                outcomes.append((p2p_result(op), None))
            except Exception as exc:  # noqa: BLE001  (delivered to that Work's waiter)
                outcomes.append((None, exc))
        return outcomes

    # -- the divergence check, through the store ---------------------------------------------------------------------
    def _exchange_descs(self, desc: CollectiveDesc) -> list[CollectiveDesc]:
        key = f"nccl/{self._gen}/desc/{desc.seq}"
        raw = store_allgather(self._store, key, self._rank, self._size, pickle.dumps(desc.to_wire()),
                              time.monotonic() + self.timeout, f"{desc.summary()} in {self._where()}", self.timeout)
        got = [CollectiveDesc.from_wire(pickle.loads(b)) for b in raw]
        got[self._rank] = desc
        if self._prev_desc_key is not None:  # every rank has set this seq, so all have read the previous one
            self._store.delete(self._prev_desc_key)
        self._prev_desc_key = f"{key}/{self._rank}"
        return got

    # -- failure ---------------------------------------------------------------------------------------------------------
    def _watch_check(self) -> BaseException | None:
        """Polled by the watchdog while collectives are pending: NCCL's async error, a peer's abort note."""
        if self._error is not None:
            return None
        check = getattr(self._comm, "check_async_error", None)  # ncclCommGetAsyncError
        if check is not None:
            try:
                check()
            except Exception as exc:  # noqa: BLE001  (an NcclError)
                return CollectiveError(f"NCCL reported an asynchronous error in {self._where()}: {exc}; a peer may have "
                                       "died or lost its network; the communicator was aborted, destroy the group")
        if time.monotonic() >= self._next_note:
            self._next_note = time.monotonic() + _NOTE_S
            return self._peer_note()
        return None

    def _peer_note(self) -> BaseException | None:
        key = f"nccl/{self._gen}/abort"
        try:
            self._store.wait([key], timeout=0)
            note = self._store.get(key, timeout=0).decode(errors="replace")
        except RendezvousError:
            return None
        except Exception as exc:  # noqa: BLE001  (a store that went away is not this group's error)
            logger.debug("rank=%d nccl group %r: store unreachable from the watchdog: %s", self._rank, self.name, exc)
            return None
        return CollectiveError(f"{self._where()}: a peer failed and aborted the group: {note}")

    def _abort_comm(self) -> None:
        with self._abort_lock:
            if self._aborted:
                return
            self._aborted = True
        try:
            self._comm.abort()  # ncclCommAbort: ends this rank's hung kernels
        except Exception as exc:  # noqa: BLE001
            logger.warning("rank=%d aborting the NCCL communicator of group %r failed: %s", self._rank, self.name, exc)

    def _on_broken(self, exc: BaseException) -> None:
        self._abort_comm()
        try:  # tell the peers (the first note wins)
            note = f"rank {self._rank} (world rank {self.global_ranks[self._rank]}): {exc}"
            self._store.compare_set(f"nccl/{self._gen}/abort", "", note[:4000])
        except Exception as err:  # noqa: BLE001
            logger.warning("rank=%d nccl group %r: could not post the abort note: %s", self._rank, self.name, err)
        self._watchdog.fail_pending(exc)

    # -- life cycle ----------------------------------------------------------------------------------------------------------
    def _close(self) -> None:
        finished = self._watchdog.drain(self.timeout if self._error is None else 0.0)
        if not finished or self._error is not None:
            self._abort_comm()
            self._watchdog.fail_pending(self._error or CollectiveTimeout(
                f"{self._where()} was destroyed with collectives unfinished after {self.timeout:g} s"))
        else:
            try:
                self._comm.destroy()
            except Exception as exc:  # noqa: BLE001
                logger.warning("rank=%d destroying the NCCL communicator of group %r failed: %s", self._rank, self.name, exc)
        self._watchdog.stop()


def _factory(store: Any, rank: int, size: int, timeout: float, name: str, global_ranks: Sequence[int] | None = None
             ) -> NcclProcessGroup:
    return NcclProcessGroup(store, rank, size, timeout, name, global_ranks)


register_backend("nccl", _factory)
