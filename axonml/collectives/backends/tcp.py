"""The built-in ``tcp`` backend: CPU collectives between processes over sockets.

Note on the pieces: :mod:`.transport` builds the mesh (through the store) and moves
bytes; :mod:`.algorithms` holds the ring and direct-exchange algorithms; this module
binds the :class:`ProcessGroup` primitives to them, runs the divergence check and the
point-to-point protocol, and tells the peers when this rank fails.

Note on the divergence check: before moving data, every rank sends a framed
description of the collective (sequence number, op, shapes, dtype, root, counts) to
every peer and reads theirs, then all compare the same list, so a mismatch raises the
same error on every rank, and a rank that never arrives is named by the timeout. With
``AXONML_CHECK_COLLECTIVES=0`` the exchange is skipped (a barrier still exchanges an
empty frame).

Note on point-to-point: a message is a header frame (tag, byte count) then the payload,
on the pair's data connection, matched in order. Consecutive queued p2p operations are
progressed together (``Exchange.more``), so ``isend`` then ``irecv`` on both ranks does
not deadlock on large messages.
"""

from __future__ import annotations

import hashlib
import logging
import pickle
from typing import Any, Sequence

import numpy as np

from ...errors import CollectiveError
from ..process_group import ProcessGroup, p2p_done, register_backend
from ..types import CollectiveDesc, ReduceOp, check_descs
from . import algorithms as algo
from .transport import HEADER, K_DESC, K_P2P, Exchange, Mesh, PeerFailure

__all__ = ["TcpProcessGroup"]

logger = logging.getLogger(__name__)


class TcpProcessGroup(ProcessGroup):
    """A rank of a ``tcp`` group; built by ``init_process_group(backend="tcp")`` or ``new_group``."""

    backend_name = "tcp"

    def __init__(self, store: Any, rank: int, size: int, timeout: float, name: str,
                 global_ranks: Sequence[int] | None = None) -> None:
        granks = list(global_ranks) if global_ranks is not None else list(range(size))
        self.mesh = Mesh(store, rank, size, timeout, name, granks)
        super().__init__(rank, size, name, timeout, granks)

    # -- framed messages on the data channel ----------------------------------------------------------
    def _check(self, desc: CollectiveDesc) -> None:
        # Fast path: a 16-byte digest of what must agree. Every rank sees the same list of
        # digests, so on a mismatch every rank runs the second, full round and raises.
        if desc.cross_check is None:
            digest = hashlib.blake2b(repr(desc.key()).encode(), digest_size=16).digest()
            got = self._exchange_frames(desc, digest, desc.summary(), raw=True)
            if all(g == digest for g in got):
                return
        check_descs(self._exchange_descs(desc), desc)

    def _exchange_descs(self, desc: CollectiveDesc) -> list[CollectiveDesc]:
        payload = pickle.dumps(desc.to_wire(), protocol=pickle.HIGHEST_PROTOCOL)
        return self._exchange_frames(desc, payload, desc.summary())

    def _exchange_frames(self, desc: CollectiveDesc, payload: bytes, what: str, raw: bool = False) -> list[Any]:
        """Send ``payload`` to every peer and return every rank's (index: rank; own: ``desc``
        or, with ``raw``, ``payload``); unpickled as descriptions unless ``raw``."""
        n, r = self._size, self._rank
        frame = HEADER.pack(K_DESC, desc.seq, len(payload)) + payload
        got: list[Any] = [None] * n
        got[r] = payload if raw else desc
        ex = Exchange(self.mesh, what)
        ex.stage = " (the description every rank sends before a collective: those ranks did not arrive)"
        headers = [bytearray(HEADER.size) for _ in range(n)]

        def on_header(p: int) -> None:
            kind, seq, nbytes = HEADER.unpack(headers[p])
            if kind != K_DESC:
                raise CollectiveError(
                    f"{what} in group {self.name!r}: {self.mesh.who(p)} sent a point-to-point message (tag {seq}, "
                    f"{nbytes} bytes) where rank {r} expected the collective; sends/recvs and collectives must be "
                    "issued in the same order on both ranks"
                )
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

    # -- collectives ------------------------------------------------------------------------------------
    def _allreduce(self, arrays: list, op: ReduceOp, desc: CollectiveDesc) -> None:
        if len(arrays) == 1:
            algo.allreduce(self.mesh, arrays[0].reshape(-1), op, desc.summary())
            return
        if not arrays:
            return
        flat = np.concatenate([a.reshape(-1) for a in arrays])
        algo.allreduce(self.mesh, flat, op, desc.summary())
        off = 0
        for a in arrays:
            a.reshape(-1)[...] = flat[off:off + a.size]
            off += a.size

    def _broadcast(self, arrays: list, root: int, desc: CollectiveDesc) -> None:
        if len(arrays) == 1:
            algo.broadcast(self.mesh, arrays[0].reshape(-1), root, desc.summary())
            return
        flat = np.concatenate([a.reshape(-1) for a in arrays]) if arrays else np.empty(0)
        algo.broadcast(self.mesh, flat, root, desc.summary())
        off = 0
        for a in arrays:
            a.reshape(-1)[...] = flat[off:off + a.size]
            off += a.size

    def _reduce(self, arrays: list, root: int, op: ReduceOp, desc: CollectiveDesc) -> None:
        for a in arrays:
            algo.reduce(self.mesh, a.reshape(-1), root, op, desc.summary())

    def _allgather(self, output: Any, input: Any, counts: list[int], desc: CollectiveDesc) -> None:
        algo.allgather(self.mesh, output, input, counts, desc.summary())

    def _gather(self, input: Any, outputs: list | None, root: int, desc: CollectiveDesc) -> None:
        algo.gather(self.mesh, input, outputs, root, desc.summary())

    def _scatter(self, output: Any, inputs: list | None, root: int, desc: CollectiveDesc) -> None:
        algo.scatter(self.mesh, output, inputs, root, desc.summary())

    def _reduce_scatter(self, output: Any, input: Any, op: ReduceOp, counts: list[int], desc: CollectiveDesc) -> None:
        algo.reduce_scatter(self.mesh, output, input, op, counts, desc.summary())

    def _alltoall(self, output: Any, input: Any, out_counts: list[int], in_counts: list[int], desc: CollectiveDesc) -> None:
        algo.alltoall(self.mesh, output, input, out_counts, in_counts, desc.summary())

    def _barrier(self, desc: CollectiveDesc) -> None:
        if not self.check and self._size > 1:  # with the check on, the description exchange was the barrier
            self._exchange_frames(desc, b"", desc.summary())

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

        def more() -> None:
            job = self._worker.take_next_if(lambda j: j.payload is not None and isinstance(j.payload, list))
            while job is not None:
                # the absorbed job's first Work is completed here too (the worker will not run it)
                job.work._started()
                ex.extend(self.timeout)
                post(job.payload)
                job = self._worker.take_next_if(lambda j: j.payload is not None and isinstance(j.payload, list))

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
        if isinstance(exc, PeerFailure):
            return  # every peer sees a death, a BYE or an ABORT directly: no need to relay it
        self.mesh.abort(f"rank {self._rank} (world rank {self.global_ranks[self._rank]}): {exc}")

    def _close(self) -> None:
        self.mesh.close(graceful=self._error is None)


def _factory(store: Any, rank: int, size: int, timeout: float, name: str, global_ranks: Sequence[int] | None = None
             ) -> TcpProcessGroup:
    return TcpProcessGroup(store, rank, size, timeout, name, global_ranks)


register_backend("tcp", _factory)
