"""The built-in ``tcp`` backend: CPU collectives between processes, over sockets and, between
the ranks of one host, shared memory.

Note on the pieces: :mod:`.transport` builds the socket mesh (through the store) and moves
bytes; :mod:`.algorithms` holds the ring and direct-exchange algorithms on sockets;
:mod:`.shm` the shared-memory ones. This module binds the :class:`ProcessGroup`
primitives to them, runs the divergence check and the point-to-point protocol, and tells
the peers when this rank fails. When all ranks of a group share a host (and
``AXONML_SHM`` is not 0), all-reduce, broadcast, reduce, all-gather, reduce-scatter and
barrier use shared memory; gather, scatter, all-to-all and send/recv use sockets.

Note on the divergence check: every rank publishes a 16-byte digest of what must agree
(a hash of op, shapes, dtype, root, counts, cached per call site, and the sequence
number): in shared memory when the group has it, else as a framed message to every peer.
Every rank sees every digest, so when they differ every rank runs a second round with
full descriptions over the sockets and raises the same error; a rank that never arrives
is named by the timeout. All-gather's size check (each rank's input has its count) is
local once the counts agree: a rank whose own part fails spoils its digest, which sends
every rank to the full round. Gather, scatter and all-to-all sizes need the full round.
``AXONML_CHECK_COLLECTIVES=0`` skips all this (a barrier still synchronizes).

The check costs no round of its own where it can ride on the data: on shared memory,
every collective publishes its digest in its first phase (:attr:`.shm.ShmChannel.pending`)
and every rank compares digests before it reads anything another rank wrote; over
sockets, a small all-reduce (one array, at most ``SMALL_BYTES``) sends the digest in the
same framed message as its payload. A rank whose peer ran another collective (another
digest, another frame size) still reads the peer's whole frame, then runs the same
second round and raises the same error.

Note on the fast paths: a blocking small all-reduce, all-gather, reduce-scatter or
broadcast (one phase) and a blocking barrier on shared memory run in the caller's thread, and :meth:`alloc_shared` (behind
:func:`axonml.collectives.shared_empty`) creates arenas whose tensors collectives read in
place; both live in :mod:`.shm_fastpath`.

Note on point-to-point: a message is a header frame (tag, byte count) then the payload,
on the pair's data connection, matched in order. Consecutive queued p2p operations are
progressed together (``Exchange.more``), so ``isend`` then ``irecv`` on both ranks does
not deadlock on large messages.
"""

from __future__ import annotations

import hashlib
import logging
import pickle
import struct
from typing import Any, Sequence

import numpy as np

from ...errors import CollectiveError
from ..process_group import ProcessGroup, env_flag, p2p_done, register_backend
from ..types import CollectiveDesc, CompletedWork, ReduceOp, check_descs, reduce_rows
from . import algorithms as algo
from .exchange import Exchange
from .shm import Diverged, ShmChannel, ShmUnavailable, shm_possible
from .shm_fastpath import ShmFastPaths, SyncWhat
from .transport import HEADER, K_DESC, K_P2P, Mesh, as_bytes

__all__ = ["TcpProcessGroup"]

logger = logging.getLogger(__name__)

_WIRE_DIGEST = struct.Struct("<qq")  # a 64-bit hash of what must agree, then the sequence number
_DIGEST = _WIRE_DIGEST.size
#: collectives whose check rides on their first shared-memory phase
_SHM_FUSED = frozenset({"all_reduce", "broadcast", "reduce", "all_gather", "reduce_scatter", "barrier"})
_STAGE = " (the description every rank sends before a collective: those ranks did not arrive)"


def _by_dtype(arrays: list) -> list[list[int]]:
    """Indices of ``arrays`` grouped by dtype, in first-seen order (coalesced calls may mix dtypes)."""
    groups: dict[Any, list[int]] = {}
    for i, a in enumerate(arrays):
        groups.setdefault(a.dtype, []).append(i)
    return list(groups.values())


class TcpProcessGroup(ShmFastPaths, ProcessGroup):
    """A rank of a ``tcp`` group; built by ``init_process_group(backend="tcp")`` or ``new_group``."""

    backend_name = "tcp"

    def __init__(self, store: Any, rank: int, size: int, timeout: float, name: str,
                 global_ranks: Sequence[int] | None = None) -> None:
        super().__init__(rank, size, name, timeout, global_ranks)
        self.shm: ShmChannel | None = None
        self._digests: dict[tuple, int] = {}
        self._done_work = CompletedWork(None, f"synchronous collective of group {name!r}")
        self._sync_what = SyncWhat(name)
        try:
            self.mesh = Mesh(store, rank, size, timeout, name, self.global_ranks)
        except BaseException:
            self._worker.stop()
            raise
        try:
            if shm_possible(self.mesh, env_flag("AXONML_SHM", "1") not in ("0", "false", "no", "off")):
                self.shm = ShmChannel(self.mesh, lambda b: self._exchange_frames(0, b, f"group {name!r} set-up", True))
        except ShmUnavailable as exc:
            logger.warning("rank=%d group %r: shared memory unavailable (%s); using sockets", rank, name, exc)
        except BaseException:
            self._worker.stop()
            self.mesh.close(graceful=False)
            raise
        logger.info("rank=%d tcp group %r of %d ranks: %s", rank, name, size, "shared memory" if self.shm else "sockets")

    @property
    def transport(self) -> str:
        """``"shm"`` when the group's collectives use shared memory, else ``"socket"``."""
        return "shm" if self.shm is not None else "socket"

    # -- divergence check --------------------------------------------------------------------------------
    def _digest(self, desc: CollectiveDesc) -> tuple[int, int]:
        """Two words every rank must agree on: a hash of (op, shapes, dtype, arguments), cached
        (a training loop repeats a few collectives), and the sequence number."""
        key = desc.static_key()
        h = self._digests.get(key)
        if h is None:
            if len(self._digests) > 1024:
                self._digests.clear()
            raw = hashlib.blake2b(repr(key).encode(), digest_size=8).digest()
            h = self._digests[key] = int.from_bytes(raw, "little", signed=True)
        return h, desc.seq

    def _checked_digest(self, desc: CollectiveDesc) -> tuple[int, int]:
        """:meth:`_digest`, spoiled when this rank's own part of a cross-check fails (e.g. an
        all-gather input whose size is not this rank's count): every rank then sees digests
        that differ and runs the full round, which names the problem on every rank."""
        h, seq = self._digest(desc)
        cc = desc.cross_check
        if cc is not None and not cc.local_ok(self._rank, desc.local):
            h ^= 1
        return h, seq

    def _fuse_check(self, op: str, arrays: Sequence[Any]) -> bool:
        if not self.check or self._size == 1:
            return False
        if self.shm is not None:  # the digest rides on the collective's first phase
            return op in _SHM_FUSED
        return op == "all_reduce" and len(arrays) == 1 and arrays[0].nbytes <= algo.SMALL_BYTES

    def _mismatch(self, desc: CollectiveDesc) -> None:
        """The digests differed: exchange full descriptions and raise (on every rank)."""
        check_descs(self._exchange_descs(desc), desc)
        raise CollectiveError(f"{desc} in group {self.name!r}: the ranks' check digests differ but their descriptions "
                              "agree; the shared state of the group is corrupt")

    def _check(self, desc: CollectiveDesc) -> None:
        cc = desc.cross_check
        if cc is not None and getattr(cc, "local_ok", None) is None:
            check_descs(self._exchange_descs(desc), desc)  # rooted and all-to-all sizes: the full round
            return
        digest = self._checked_digest(desc)
        if self.shm is not None:
            same = self.shm.agree(digest, desc)
        else:
            packed = _WIRE_DIGEST.pack(*digest)
            same = all(d == packed for d in self._exchange_frames(desc.seq, packed, desc, True))
        if not same:
            self._mismatch(desc)

    def _on_shm(self, desc: CollectiveDesc, fn: Any, *args: Any) -> None:
        """Run the shared-memory collective ``fn(*args)``; when ``desc.fused``, with the check's
        digest in its first phase (or in a phase of its own when it moves nothing)."""
        shm = self.shm
        if not desc.fused:
            fn(*args)
            return
        digest = self._checked_digest(desc)
        shm.pending = digest
        try:
            fn(*args)
            if shm.pending is not None:  # no phase ran (empty tensors): the check alone
                shm.pending = None
                if not shm.agree(digest, desc):
                    raise Diverged()
        except Diverged:
            self._mismatch(desc)
        finally:
            shm.pending = None

    def _exchange_descs(self, desc: CollectiveDesc) -> list[CollectiveDesc]:
        payload = pickle.dumps(desc.to_wire(), protocol=pickle.HIGHEST_PROTOCOL)
        got = self._exchange_frames(desc.seq, payload, desc, False)
        got[self._rank] = desc
        return got

    def _exchange_frames(self, seq: int, payload: bytes, what: object, raw: bool) -> list[Any]:
        """Send ``payload`` to every peer; return every rank's payload (index: rank),
        unpickled into descriptions unless ``raw``."""
        n, r = self._size, self._rank
        frame = HEADER.pack(K_DESC, seq, len(payload)) + payload
        got: list[Any] = [None] * n
        got[r] = payload
        ex = Exchange(self.mesh, what)
        ex.stage = _STAGE
        headers = [bytearray(HEADER.size) for _ in range(n)]

        def on_header(p: int) -> None:
            kind, their_seq, nbytes = HEADER.unpack(headers[p])
            if kind != K_DESC:
                self._not_collective(p, their_seq, nbytes, what)
            body = bytearray(nbytes)

            def on_body() -> None:
                if raw:
                    got[p] = bytes(body)
                else:
                    got[p] = CollectiveDesc.from_wire(pickle.loads(bytes(body))) if nbytes else None

            ex.recv(p, memoryview(body), on_body, front=True)

        for p in range(n):
            if p != r:
                ex.send(p, memoryview(frame))
                ex.recv(p, memoryview(headers[p]), lambda p=p: on_header(p))
        ex.run()
        return got

    def _not_collective(self, p: int, tag: int, nbytes: int, what: object) -> None:
        raise CollectiveError(
            f"{what} in group {self.name!r}: {self.mesh.who(p)} sent a point-to-point message (tag {tag}, "
            f"{nbytes} bytes) where rank {self._rank} expected the collective; sends/recvs and collectives must be "
            "issued in the same order on both ranks"
        )

    def _allreduce_frames(self, flat: np.ndarray, op: ReduceOp, digest: tuple[int, int], desc: CollectiveDesc) -> bool:
        """A small all-reduce over sockets with the check folded in: one framed message (digest,
        then the data) to every peer. False (nothing combined) when some digest differs."""
        n, r, nb = self._size, self._rank, flat.nbytes
        got = np.empty((n, flat.size), dtype=flat.dtype)
        got[r] = flat
        digest = _WIRE_DIGEST.pack(*digest)
        frame = b"".join((HEADER.pack(K_DESC, desc.seq, _DIGEST + nb), digest, as_bytes(flat)))
        theirs = [digest] * n
        headers = [bytearray(HEADER.size) for _ in range(n)]
        ex = Exchange(self.mesh, desc)
        ex.stage = _STAGE

        def on_header(p: int) -> None:
            kind, their_seq, nbytes = HEADER.unpack(headers[p])
            if kind != K_DESC:
                self._not_collective(p, their_seq, nbytes, desc)
            if nbytes == _DIGEST + nb:  # the expected frame: straight into place
                dig = bytearray(_DIGEST)
                ex.recv(p, as_bytes(got[p]), None, front=True)
                ex.recv(p, memoryview(dig), lambda: theirs.__setitem__(p, bytes(dig)), front=True)
            else:  # another collective: read its whole frame (keeps the stream in step), then compare
                body = bytearray(nbytes)
                ex.recv(p, memoryview(body), lambda: theirs.__setitem__(p, bytes(body[:_DIGEST])), front=True)

        for p in range(n):
            if p != r:
                ex.send(p, memoryview(frame))
                ex.recv(p, memoryview(headers[p]), lambda p=p: on_header(p))
        ex.run()
        if any(d != digest for d in theirs):
            return False
        reduce_rows(op, got, flat)
        return True

    # -- collectives ------------------------------------------------------------------------------------
    def _allreduce(self, arrays: list, op: ReduceOp, desc: CollectiveDesc) -> None:
        if self._size == 1:
            return  # AVG over one rank divides by one
        if self.shm is not None:
            if len(arrays) == 1:
                self._on_shm(desc, self.shm.allreduce, arrays[0].reshape(-1), op, desc)
            else:
                self._on_shm(desc, self._allreduce_parts, arrays, op, desc)
        elif desc.fused:  # one small array over sockets: see _fuse_check
            if not self._allreduce_frames(arrays[0].reshape(-1), op, self._digest(desc), desc):
                self._mismatch(desc)
        else:
            self._allreduce_parts(arrays, op, desc)

    def _allreduce_parts(self, arrays: list, op: ReduceOp, desc: CollectiveDesc) -> None:
        what = desc
        for idx in _by_dtype(arrays):
            parts = [arrays[i] for i in idx]
            flat = parts[0].reshape(-1) if len(parts) == 1 else np.concatenate([a.reshape(-1) for a in parts])
            if self.shm is not None and self._size > 1:
                self.shm.allreduce(flat, op, what)
            else:
                algo.allreduce(self.mesh, flat, op, what)
            if len(parts) > 1:
                off = 0
                for a in parts:
                    a.reshape(-1)[...] = flat[off:off + a.size]
                    off += a.size

    def _broadcast(self, arrays: list, root: int, desc: CollectiveDesc) -> None:
        if self.shm is not None:
            self._on_shm(desc, self._each, arrays, lambda a: self.shm.broadcast(a.reshape(-1), root, desc))
            return
        for a in arrays:
            algo.broadcast(self.mesh, a.reshape(-1), root, desc)

    @staticmethod
    def _each(arrays: list, fn: Any) -> None:
        for a in arrays:
            fn(a)

    def _reduce(self, arrays: list, root: int, op: ReduceOp, desc: CollectiveDesc) -> None:
        if self.shm is not None:
            def one(a: Any) -> None:
                flat = a.reshape(-1)
                self.shm.reduce_scatter(flat, flat, op, algo.even_counts(flat.size, self._size), desc, root)

            self._on_shm(desc, self._each, arrays, one)
            return
        for a in arrays:
            algo.reduce(self.mesh, a.reshape(-1), root, op, desc)

    def _allgather(self, output: Any, input: Any, counts: list[int], desc: CollectiveDesc) -> None:
        if self.shm is not None:
            self._on_shm(desc, self.shm.allgather, output, input, counts, desc)
        else:
            algo.allgather(self.mesh, output, input, counts, desc)

    def _gather(self, input: Any, outputs: list | None, root: int, desc: CollectiveDesc) -> None:
        algo.gather(self.mesh, input, outputs, root, desc)

    def _scatter(self, output: Any, inputs: list | None, root: int, desc: CollectiveDesc) -> None:
        algo.scatter(self.mesh, output, inputs, root, desc)

    def _reduce_scatter(self, output: Any, input: Any, op: ReduceOp, counts: list[int], desc: CollectiveDesc) -> None:
        if self.shm is not None:
            self._on_shm(desc, self.shm.reduce_scatter, output, input, op, counts, desc)
        else:
            algo.reduce_scatter(self.mesh, output, input, op, counts, desc)

    def _alltoall(self, output: Any, input: Any, out_counts: list[int], in_counts: list[int], desc: CollectiveDesc) -> None:
        algo.alltoall(self.mesh, output, input, out_counts, in_counts, desc)

    def _barrier(self, desc: CollectiveDesc) -> None:
        if desc.fused:
            self._on_shm(desc, self.shm.barrier, desc)  # the check's phase is the barrier
            return
        if self.check or self._size == 1:
            return  # the divergence check that ran before this was a barrier already
        if self.shm is not None:
            self.shm.barrier(desc)
        else:
            self._exchange_frames(desc.seq, b"", desc, True)

    # -- point to point --------------------------------------------------------------------------------------
    def _p2p(self, items: list) -> None:
        ex = Exchange(self.mesh, f"send/recv in group {self.name!r}")
        first = items[0]

        def finished(item: tuple) -> None:
            if item is not first:  # the worker completes the first item's Work when _p2p returns
                p2p_done(item)

        def post(batch: list) -> None:
            for item in batch:
                (kind, array, peer, tag, _post), _work = item
                payload = memoryview(array.reshape(-1).view(np.uint8))
                if kind == "send":
                    ex.send(peer, memoryview(HEADER.pack(K_P2P, tag, len(payload))))
                    ex.send(peer, payload, lambda item=item: finished(item))
                else:
                    header = bytearray(HEADER.size)
                    ex.recv(peer, memoryview(header), lambda item=item, h=header, pl=payload: self._p2p_header(
                        ex, item, h, pl, finished))

        def is_p2p(job: Any) -> bool:
            return isinstance(job.payload, list)

        def more() -> None:
            job = self._worker.take_next_if(is_p2p)
            while job is not None:
                job.work._started()  # absorbed: its first Work is completed here, not by the worker
                ex.extend(self.timeout)
                post(job.payload)
                job = self._worker.take_next_if(is_p2p)

        post(items)
        ex.more = more
        ex.run()

    def _p2p_header(self, ex: Exchange, item: tuple, header: bytearray, payload: memoryview, finished: Any) -> None:
        (_kind, array, peer, tag, _post), _work = item
        kind, their_tag, nbytes = HEADER.unpack(header)
        who = self.mesh.who(peer)
        if kind != K_P2P:
            raise CollectiveError(
                f"recv in group {self.name!r}: rank {self._rank} posted a receive from {who} (tag {tag}) but that rank "
                f"is running collective seq {their_tag}; sends/recvs and collectives must be issued in the same order"
            )
        if their_tag != tag or nbytes != len(payload):
            raise CollectiveError(
                f"recv in group {self.name!r}: rank {self._rank} posted a receive of {len(payload)} bytes (shape "
                f"{tuple(array.shape)}, {array.dtype}, tag {tag}) from {who}, but the next message from it has "
                f"{nbytes} bytes and tag {their_tag}; sends and receives between two ranks are matched in order"
            )
        ex.recv(peer, payload, lambda: finished(item), front=True)

    # -- life cycle ---------------------------------------------------------------------------------------------
    def _on_broken(self, exc: BaseException) -> None:
        # Relay even a peer's failure: a rank that reads this ABORT before it notices the
        # original death still learns (and names) the rank that died.
        self.mesh.abort(f"rank {self._rank} (world rank {self.global_ranks[self._rank]}): {exc}")
        if self.shm is not None:  # after the ABORT, so that a peer that sees the mark can read the reason
            self.shm.mark_broken()

    def _close(self) -> None:
        if self.shm is not None:
            self.shm.close()
        self.mesh.close(graceful=self._error is None)


def _factory(store: Any, rank: int, size: int, timeout: float, name: str, global_ranks: Sequence[int] | None = None
             ) -> TcpProcessGroup:
    return TcpProcessGroup(store, rank, size, timeout, name, global_ranks)


register_backend("tcp", _factory)
