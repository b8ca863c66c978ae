"""The ``mpi`` backend: collectives through mpi4py on NumPy buffers, for jobs started by ``mpiexec``.

Note on the world: rank and size come from ``MPI_COMM_WORLD``; no store is needed. Each
group owns two duplicated communicators (data, and control messages for the divergence
check), so user code on ``COMM_WORLD`` never matches AxonML's messages. Sub-groups are
made with ``Comm.Create_group`` by the members only (``new_group`` is not called on the
other ranks), after a handshake that names the members that did not arrive. An
``mpiexec`` of one MPI with the library of another silently starts every process as rank
0 of a world of 1: :func:`check_launch` compares the world size with what the launcher
promised (``PMI_SIZE``, ``OMPI_COMM_WORLD_SIZE``, ..., ``WORLD_SIZE``) and says so.

Note on progress and timeouts: every MPI call is nonblocking (``Iallreduce``, ``Ibcast``,
``Idup``, ...) and its request is polled (:func:`.mpi_support.poll`) until it completes
or the group timeout passes: a collective then raises :class:`CollectiveTimeout` naming
the op and sequence number and, with the divergence check on, the ranks that did not
arrive. MPI cannot cancel a started collective: after a timeout its request stays
pending and the group is broken (destroy it); MPICH still finalizes and exits. A peer
that dies (e.g. SIGKILL) makes ``mpiexec`` end the whole job ("BAD TERMINATION"), so no
rank waits on a dead peer.

Note on threads: a group's MPI calls run one at a time, on its communication thread (so
``async_op`` overlaps with compute) or inline in the caller's thread for a synchronous
collective when nothing is queued. Several groups, and ``new_group``, call MPI from
several threads at once: that needs ``MPI_THREAD_MULTIPLE`` (mpi4py asks for it by
default; MPICH and Open MPI provide it); with ``MPI_THREAD_SERIALIZED`` a process-wide
lock serializes the (short, nonblocking) calls; lower levels are refused.

Note on dtypes: reductions of float16/bfloat16 accumulate in float32 (the tensor layer
already upcasts, so only raw arrays are converted here); bool reduces as uint8 0/1 with
SUM as OR and PRODUCT as AND (NumPy's rules); AVG is SUM then a division. Data movement
sends dtypes without an MPI datatype (bfloat16, float16, bool) as unsigned integers of
the same width. The helpers live in :mod:`.mpi_support` (this backend is two modules).
"""

from __future__ import annotations

import logging
import pickle
import time
from typing import Any, Sequence

import numpy as np

from ...errors import CollectiveError, CollectiveTimeout
from ..process_group import ProcessGroup, p2p_done, register_backend
from ..types import CollectiveDesc, ReduceOp
from . import mpi_support as ms
from .mpi_support import check_launch, launcher_world_size, mpi_module

__all__ = ["MpiProcessGroup", "check_launch", "launcher_world_size", "mpi_module"]

logger = logging.getLogger(__name__)

_TAG_DESC = 1
_CREATE_COMM: Any = None  # a private dup of COMM_WORLD in which sub-groups are created


# -- the process group ---------------------------------------------------------------------------------


class MpiProcessGroup(ProcessGroup):
    """A rank of an ``mpi`` group; built by ``init_process_group(backend="mpi")`` or ``new_group``.

    Args:
        comm: an MPI communicator whose ranks are this group's ranks (it is duplicated).
        rank, size, timeout, name, global_ranks: as :class:`ProcessGroup`.
        owned: ``comm`` was made for this group: free it once duplicated.
    """

    backend_name = "mpi"

    def __init__(self, comm: Any, rank: int, size: int, timeout: float, name: str,
                 global_ranks: Sequence[int] | None = None, owned: bool = False) -> None:
        mpi = mpi_module()
        if comm.Get_rank() != rank or comm.Get_size() != size:
            raise CollectiveError(f"mpi group {name!r}: the communicator has rank {comm.Get_rank()} of {comm.Get_size()} "
                                  f"but the group was asked for rank {rank} of {size}")
        what = f"creating mpi group {name!r}"
        self.comm = ms.dup(comm, timeout, what)  # collectives and user send/recv
        self.ctrl = ms.dup(comm, timeout, what)  # divergence-check messages
        with ms.LOCK:
            self.comm.Set_name(f"axonml:{name}")
            self.ctrl.Set_name(f"axonml:{name}:ctrl")
            self._tag_ub = int(mpi.COMM_WORLD.Get_attr(mpi.TAG_UB) or 32767)
            if owned:
                comm.Free()
        self._deadline = (0, 0.0)
        self._stuck: list[tuple[list, Any]] = []  # requests MPI cannot cancel, and the buffers they use
        super().__init__(rank, size, name, timeout, global_ranks)

    # -- waiting -----------------------------------------------------------------------------------------
    def _where(self) -> str:
        return f"mpi group {self.name!r} (rank {self._rank}, world rank {self.global_ranks[self._rank]})"

    def _deadline_of(self, desc: CollectiveDesc) -> float:
        if self._deadline[0] != desc.seq:  # the description exchange and the data share one deadline
            self._deadline = (desc.seq, time.monotonic() + self.timeout)
        return self._deadline[1]

    def _wait(self, reqs: list, desc: CollectiveDesc, keep: Any = None) -> None:
        """Poll ``reqs`` until done; a CollectiveTimeout at the collective's deadline (``keep``: buffers in use)."""
        mpi = mpi_module()
        try:
            done = ms.poll(reqs, self._deadline_of(desc))
        except mpi.Exception as exc:
            raise CollectiveError(f"{desc.summary()} in {self._where()}: MPI reported an error: {exc}") from exc
        if done:
            return
        self._stuck.append((reqs, keep))
        arrived = ("every rank had arrived (their descriptions matched), so a peer is hung inside MPI or issued "
                   "collectives in another order" if self.check and self._size > 1 else
                   "MPI cannot tell which ranks did not arrive (AXONML_CHECK_COLLECTIVES=0 skips the exchange that "
                   "names them)")
        raise CollectiveTimeout(
            f"{desc.summary()} in {self._where()} did not finish within {self.timeout:g} s; {arrived}. MPI cannot "
            "cancel a collective: the group is unusable, destroy it (a peer that died makes mpiexec end the job)"
        )

    def _exchange_descs(self, desc: CollectiveDesc) -> list[CollectiveDesc]:
        mpi = mpi_module()
        payload = pickle.dumps(desc.to_wire(), protocol=pickle.HIGHEST_PROTOCOL)
        peers = [p for p in range(self._size) if p != self._rank]
        got: list[Any] = [None] * self._size
        got[self._rank] = desc
        with ms.LOCK:
            sends = [self.ctrl.Isend([payload, mpi.BYTE], p, _TAG_DESC) for p in peers]
        pending, deadline, backoff, status = set(peers), self._deadline_of(desc), ms.Backoff(), mpi.Status()
        while pending:
            for p in sorted(pending):
                with ms.LOCK:
                    msg = self.ctrl.Improbe(p, _TAG_DESC, status)
                    if msg is not None:
                        body = bytearray(status.Get_count(mpi.BYTE))
                        msg.Recv([body, mpi.BYTE])
                if msg is not None:
                    got[p] = CollectiveDesc.from_wire(pickle.loads(body))
                    pending.discard(p)
            if pending and time.monotonic() > deadline:
                missing = sorted(pending)
                raise CollectiveTimeout(
                    f"{desc.summary()} in {self._where()} timed out after {self.timeout:g} s: group ranks {missing} "
                    f"(world ranks {[self.global_ranks[p] for p in missing]}) did not arrive; they are slow, hung, or "
                    "issuing other collectives"
                )
            if pending:
                backoff.pause()
        self._wait(sends, desc, payload)
        return got

    # -- reductions ------------------------------------------------------------------------------------------
    def _allreduce(self, arrays: list, op: ReduceOp, desc: CollectiveDesc) -> None:
        if len(arrays) > 1 and all(a.dtype == arrays[0].dtype for a in arrays):
            flat = np.concatenate([ms.flat(a, desc.op) for a in arrays])  # one collective for many small arrays
            self._allreduce([flat], op, desc)
            off = 0
            for a in arrays:
                a.reshape(-1)[...] = flat[off:off + a.size]
                off += a.size
            return
        mpi = mpi_module()
        jobs = []
        with ms.LOCK:
            for a in arrays:
                wdt, mop = ms.reduction(op, a.dtype, desc.op)
                work = ms.to_work(ms.flat(a, desc.op), wdt)
                jobs.append((a, work, self.comm.Iallreduce(mpi.IN_PLACE, ms.spec(work, desc.op), mop)))
        self._wait([r for _, _, r in jobs], desc, jobs)
        for a, work, _ in jobs:
            ms.finish_reduction(a.reshape(-1), work, op, self._size)

    def _reduce(self, arrays: list, root: int, op: ReduceOp, desc: CollectiveDesc) -> None:
        mpi = mpi_module()
        jobs = []
        with ms.LOCK:
            for a in arrays:
                wdt, mop = ms.reduction(op, a.dtype, desc.op)
                work = ms.to_work(ms.flat(a, desc.op), wdt)
                if self._rank == root:
                    req = self.comm.Ireduce(mpi.IN_PLACE, ms.spec(work, desc.op), mop, root)
                else:
                    req = self.comm.Ireduce(ms.spec(work, desc.op), None, mop, root)
                jobs.append((a, work, req))
        self._wait([r for _, _, r in jobs], desc, jobs)
        if self._rank == root:
            for a, work, _ in jobs:
                ms.finish_reduction(a.reshape(-1), work, op, self._size)

    def _reduce_scatter(self, output: Any, input: Any, op: ReduceOp, counts: list[int], desc: CollectiveDesc) -> None:
        wdt, mop = ms.reduction(op, input.dtype, desc.op)
        src = ms.to_work(ms.flat(input, desc.op), wdt)
        out = ms.flat(output, desc.op)
        dst = out.view(np.uint8) if out.dtype == np.bool_ else (out if out.dtype == wdt else np.empty(out.size, wdt))
        if src.size != sum(counts) or dst.size != counts[self._rank]:
            raise ValueError(f"{desc.op}: input has {src.size} elements and output {dst.size}, but the counts are {counts}")
        with ms.LOCK:
            if all(c == counts[0] for c in counts):
                req = self.comm.Ireduce_scatter_block(ms.spec(src, desc.op), ms.spec(dst, desc.op), mop)
            else:
                req = self.comm.Ireduce_scatter(ms.spec(src, desc.op), ms.spec(dst, desc.op), [int(c) for c in counts], mop)
        self._wait([req], desc, (src, dst))
        ms.finish_reduction(out, dst, op, self._size)

    # -- data movement ---------------------------------------------------------------------------------------
    def _broadcast(self, arrays: list, root: int, desc: CollectiveDesc) -> None:
        with ms.LOCK:
            reqs = [self.comm.Ibcast(ms.spec(a, desc.op), root) for a in arrays]
        self._wait(reqs, desc, arrays)

    def _allgather(self, output: Any, input: Any, counts: list[int], desc: CollectiveDesc) -> None:
        if output.size != sum(counts) or input.size != counts[self._rank]:
            raise ValueError(f"{desc.op}: input has {input.size} elements and output {output.size}, but the counts are {counts}")
        with ms.LOCK:
            if all(c == counts[0] for c in counts):
                req = self.comm.Iallgather(ms.spec(input, desc.op), ms.spec(output, desc.op))
            else:
                req = self.comm.Iallgatherv(ms.spec(input, desc.op), ms.spec(output, desc.op, counts))
        self._wait([req], desc, (input, output))

    def _gather(self, input: Any, outputs: list | None, root: int, desc: CollectiveDesc) -> None:
        tmp = None
        with ms.LOCK:
            if self._rank == root:
                sizes = [o.size for o in outputs]
                tmp = np.empty(sum(sizes), dtype=input.dtype)
                req = self.comm.Igatherv(ms.spec(input, desc.op), ms.spec(tmp, desc.op, sizes), root)
            else:
                req = self.comm.Igatherv(ms.spec(input, desc.op), None, root)
        self._wait([req], desc, (input, tmp))
        if tmp is not None:
            off = 0
            for o in outputs:
                o.reshape(-1)[...] = tmp[off:off + o.size]
                off += o.size

    def _scatter(self, output: Any, inputs: list | None, root: int, desc: CollectiveDesc) -> None:
        flat = None
        with ms.LOCK:
            if self._rank == root:
                flat = np.concatenate([x.reshape(-1) for x in inputs]) if inputs else np.empty(0, output.dtype)
                req = self.comm.Iscatterv(ms.spec(flat, desc.op, [x.size for x in inputs]), ms.spec(output, desc.op), root)
            else:
                req = self.comm.Iscatterv(None, ms.spec(output, desc.op), root)
        self._wait([req], desc, (flat, output))

    def _alltoall(self, output: Any, input: Any, out_counts: list[int], in_counts: list[int], desc: CollectiveDesc) -> None:
        if input.size != sum(in_counts) or output.size != sum(out_counts):
            raise ValueError(f"{desc.op}: input has {input.size} elements for sends of {in_counts}, output {output.size} "
                             f"for receives of {out_counts}")
        with ms.LOCK:
            req = self.comm.Ialltoallv(ms.spec(input, desc.op, in_counts), ms.spec(output, desc.op, out_counts))
        self._wait([req], desc, (input, output))

    def _barrier(self, desc: CollectiveDesc) -> None:
        if self.check and self._size > 1:
            return  # the description exchange was already a barrier
        with ms.LOCK:
            req = self.comm.Ibarrier()
        self._wait([req], desc)

    # -- point to point -----------------------------------------------------------------------------------------
    def _p2p(self, items: list) -> None:
        mpi = mpi_module()
        first = items[0]
        active: list[list] = []  # [request, item, status]
        absorbed: list = []
        deadline = [time.monotonic() + self.timeout]

        def post(batch: list) -> None:
            for item in batch:
                (kind, array, peer, tag, _post), _work = item
                if not 0 <= tag <= self._tag_ub:
                    raise ValueError(f"{kind} in {self._where()}: tag {tag} is outside MPI's range [0, {self._tag_ub}]")
                spec = ms.spec(array, kind)
                with ms.LOCK:
                    req = self.comm.Isend(spec, peer, tag) if kind == "send" else self.comm.Irecv(spec, peer, tag)
                active.append([req, item, mpi.Status()])

        def is_p2p(job: Any) -> bool:
            return isinstance(job.payload, list)

        try:
            post(items)
            backoff = ms.Backoff()
            while active:
                for entry in list(active):
                    req, item, status = entry
                    with ms.LOCK:
                        try:
                            done = req.Test(status)
                        except mpi.Exception as exc:
                            raise self._p2p_error(item, f"MPI reported: {exc}") from exc
                    if not done:
                        continue
                    active.remove(entry)
                    (kind, array, peer, _tag, _post), _work = item
                    if kind == "recv" and status.Get_count(mpi.BYTE) != array.nbytes:
                        raise self._p2p_error(item, f"the message from rank {peer} has {status.Get_count(mpi.BYTE)} bytes")
                    if item is not first:
                        p2p_done(item)
                # a send and a receive queued one after the other progress together (no deadlock on large messages)
                job = self._worker.take_next_if(is_p2p)
                while job is not None:
                    job.work._started()
                    absorbed.extend(job.payload)
                    deadline[0] = time.monotonic() + self.timeout
                    post(job.payload)
                    job = self._worker.take_next_if(is_p2p)
                if active and time.monotonic() > deadline[0]:
                    self._stuck.append(([e[0] for e in active], active))
                    waiting = ", ".join(f"{e[1][0][0]}(peer={e[1][0][2]}, tag={e[1][0][3]}, shape={tuple(e[1][0][1].shape)})"
                                        for e in active[:6])
                    raise CollectiveTimeout(f"send/recv in {self._where()}: {waiting} did not complete within "
                                            f"{self.timeout:g} s; the peer did not post the matching operation")
                if active:
                    backoff.pause()
        except BaseException as exc:
            for _op, work in absorbed:  # the worker fails only the first job's Works
                work._complete(exc=exc)
            raise

    def _p2p_error(self, item: tuple, why: str) -> CollectiveError:
        (kind, array, peer, tag, _post), _work = item
        return CollectiveError(
            f"{kind} in {self._where()}: rank {self._rank} posted a {kind} of {array.nbytes} bytes (shape "
            f"{tuple(array.shape)}, {array.dtype}, tag {tag}) with rank {peer}, but {why}; sends and receives between two "
            "ranks are matched in order and must have the same size"
        )

    # -- life cycle -------------------------------------------------------------------------------------------------
    def _close(self) -> None:
        mpi = mpi_module()
        with ms.LOCK:
            for comm in (self.comm, self.ctrl):
                try:
                    comm.Free()  # requests still pending after a timeout keep their resources until they end
                except mpi.Exception as exc:
                    logger.warning("rank=%d freeing the communicator of mpi group %r failed: %s", self._rank, self.name, exc)


def _factory(store: Any = None, rank: int = -1, size: int = -1, timeout: float = 600.0, name: str = "default_pg",
             global_ranks: Sequence[int] | None = None) -> MpiProcessGroup:
    """Build an ``mpi`` group: the world (``global_ranks`` None) or the members ``global_ranks`` of a sub-group."""
    global _CREATE_COMM
    mpi = mpi_module()
    world = mpi.COMM_WORLD
    wrank, wsize = world.Get_rank(), world.Get_size()
    check_launch(wsize, library=mpi.Get_library_version())
    if global_ranks is None:
        if (size >= 0 and size != wsize) or (rank >= 0 and rank != wrank):
            raise CollectiveError(
                f"init_process_group(backend='mpi'): rank and size come from MPI (rank {wrank} of {wsize}), but rank={rank}, "
                f"world_size={size} were given; leave them out, or start the job with mpiexec -n {size}"
            )
        ms.handshake(world, list(range(wsize)), name, timeout, "init_process_group")
        if _CREATE_COMM is None:
            _CREATE_COMM = ms.dup(world, timeout, "init_process_group(backend='mpi')")
        return MpiProcessGroup(world, wrank, wsize, timeout, name, list(range(wsize)))
    granks = [int(g) for g in global_ranks]
    if not 0 <= rank < len(granks) or any(not 0 <= g < wsize for g in granks) or granks[rank] != wrank:
        raise CollectiveError(
            f"new_group {name!r} (backend 'mpi'): world ranks {granks} with this process as member {rank} do not match MPI, "
            f"where this process is rank {wrank} of {wsize}; the mpi backend needs the world ranks to be MPI's ranks"
        )
    parent = _CREATE_COMM if _CREATE_COMM is not None else world
    ms.handshake(parent, granks, name, timeout)
    if granks == list(range(wsize)):
        return MpiProcessGroup(world, rank, wsize, timeout, name, granks)
    with ms.LOCK:
        everyone = parent.Get_group()
        members = everyone.Incl(granks)
        comm = parent.Create_group(members, ms.group_tag(name, creation=True))
        members.Free()
        everyone.Free()
    return MpiProcessGroup(comm, rank, len(granks), timeout, name, granks, owned=True)


_factory.needs_store = False  # type: ignore[attr-defined]  (rank and size come from MPI)
register_backend("mpi", _factory)
