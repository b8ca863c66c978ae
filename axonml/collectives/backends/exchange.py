"""The progress engine of the ``tcp`` backend's sockets: :class:`Exchange`.

Note on progress: an :class:`Exchange` is one round of concurrent, non-blocking sends and
receives to many peers, driven by ``poll`` until done. Items on one peer's queue move in
order; a receive's callback runs as soon as its bytes are in, and may post more sends
and receives (pipelining: a ring forwards a chunk as soon as it has reduced it). Sends
and receives of large buffers go straight between the arrays and the kernel, no copies.
Every round also watches the control connections (see :mod:`.transport`), so a peer's
death or ABORT interrupts it at once.
"""

from __future__ import annotations

import collections
import errno
import time
from typing import Callable

from ...errors import CollectiveTimeout
from .transport import CTRL, POLL_ERR, POLL_IN, POLL_OUT, Mesh, PeerFailure

__all__ = ["Exchange"]


class _Item:
    __slots__ = ("view", "off", "done")

    def __init__(self, view: memoryview, done: Callable[[], None] | None) -> None:
        self.view, self.off, self.done = view, 0, done


class Exchange:
    """One round of concurrent sends and receives over a :class:`Mesh`; ``run()`` drives it.

    Example::

        ex = Exchange(mesh, "all_gather(seq=3)")
        ex.send(1, as_bytes(mine))
        ex.recv(1, as_bytes(theirs), on_done=lambda: ...)
        ex.run()
    """

    def __init__(self, mesh: Mesh, what: object, timeout: float | None = None) -> None:
        # ``what`` names the collective in messages; only its str() is used, and only on errors
        self.mesh, self.what = mesh, what
        self.deadline = time.monotonic() + (timeout if timeout is not None else mesh.timeout)
        self.sends: dict[int, collections.deque[_Item]] = collections.defaultdict(collections.deque)
        self.recvs: dict[int, collections.deque[_Item]] = collections.defaultdict(collections.deque)
        self.pending = 0
        self.more: Callable[[], None] | None = None  # called every round (p2p batching)
        self.stage = ""  # what the exchange waits for, for timeout messages

    def send(self, peer: int, view: memoryview, done: Callable[[], None] | None = None) -> None:
        """Queue ``view`` for ``peer`` (after what is queued for it already)."""
        if peer in self.mesh.gone or self.mesh.data[peer] is None:
            raise PeerFailure(f"{self.what}: {self.mesh.who(peer)} has left group {self.mesh.name!r}; cannot send to it")
        if len(view) == 0:
            if done is not None:
                done()
            return
        q = self.sends[peer]
        q.append(_Item(view, done))
        self.pending += 1
        if len(q) == 1:
            self._pump_send(peer)  # optimistic: small messages leave without a poll

    def recv(self, peer: int, view: memoryview, done: Callable[[], None] | None = None, front: bool = False) -> None:
        """Fill ``view`` with the next bytes from ``peer``; ``front``: before other queued receives."""
        if len(view) == 0:
            if done is not None:
                done()
            return
        item = _Item(view, done)
        if front:
            self.recvs[peer].appendleft(item)
        else:
            self.recvs[peer].append(item)
        self.pending += 1

    def extend(self, seconds: float) -> None:
        self.deadline = max(self.deadline, time.monotonic() + seconds)

    # -- progress -----------------------------------------------------------------------------------------
    def _fail(self, peer: int, exc: BaseException | None, sending: bool) -> None:
        mesh = self.mesh
        mesh.check_ctrl()  # a death or ABORT reported there is the root cause: raise that instead
        left = " after leaving the group (destroy_process_group)" if peer in mesh.left else ""
        detail = f" ({exc})" if exc is not None else ""
        direction = "sending to" if sending else "receiving from"
        raise PeerFailure(
            f"{self.what} in group {mesh.name!r}: {mesh.who(peer)} closed its connection{left} while rank {mesh.rank} "
            f"was {direction} it{detail}; that process died or stopped participating"
        ) from exc

    def _pump_send(self, peer: int) -> None:
        q, sock = self.sends[peer], self.mesh.data[peer]
        while q:
            item = q[0]
            try:
                n = sock.send(item.view[item.off:])
            except BlockingIOError:
                return
            except OSError as exc:
                if exc.errno in (errno.EAGAIN, errno.EWOULDBLOCK):
                    return
                self._fail(peer, exc, True)
            item.off += n
            if item.off < len(item.view):
                return
            q.popleft()
            self.pending -= 1
            if item.done is not None:
                item.done()

    def _pump_recv(self, peer: int) -> None:
        q, sock = self.recvs[peer], self.mesh.data[peer]
        while q:
            item = q[0]
            try:
                n = sock.recv_into(item.view[item.off:])
            except BlockingIOError:
                return
            except OSError as exc:
                if exc.errno in (errno.EAGAIN, errno.EWOULDBLOCK):
                    return
                self._fail(peer, exc, False)
            if n == 0:
                self._fail(peer, None, False)
            item.off += n
            if item.off < len(item.view):
                return
            q.popleft()
            self.pending -= 1
            if item.done is not None:
                item.done()

    def run(self) -> None:
        """Progress every queued item (and the ones callbacks add) to completion.

        Raises:
            PeerFailure: a peer died, left or aborted (named in the message).
            CollectiveTimeout: not done by the deadline; names the peers still owing data.
        """
        mesh = self.mesh
        mesh.check_ctrl()
        while True:
            if self.more is not None:
                self.more()
            if self.pending == 0:
                return
            for peer in set(self.sends) | set(self.recvs):
                mask = (POLL_OUT if self.sends[peer] else 0) | (POLL_IN if self.recvs[peer] else 0)
                mesh.set_mask(peer, mask)
            left = self.deadline - time.monotonic()
            if left <= 0:
                self._timeout()
            events = mesh.poll(max(1, min(int(left * 1000) + 1, 200 if self.more is not None else 1_000_000)))
            for fd, _ev in events:  # control first: a death or ABORT explains any data error
                peer, channel = mesh.peer_of(fd)
                if channel == CTRL:
                    mesh.on_ctrl(peer)
            for fd, ev in events:
                peer, channel = mesh.peer_of(fd)
                if channel == CTRL:
                    continue
                if ev & (POLL_IN | POLL_ERR) and self.recvs[peer]:
                    self._pump_recv(peer)
                if ev & (POLL_OUT | POLL_ERR) and self.sends[peer]:
                    self._pump_send(peer)
            if self.pending == 0:
                for peer in set(self.sends) | set(self.recvs):
                    mesh.set_mask(peer, 0)

    def _timeout(self) -> None:
        mesh = self.mesh
        waiting = sorted(p for p, q in self.recvs.items() if q)
        stuck = sorted(p for p, q in self.sends.items() if q)
        for peer in set(self.sends) | set(self.recvs):
            mesh.set_mask(peer, 0)
        parts = []
        if waiting:
            parts.append(f"ranks {waiting} did not send what this rank expects{self.stage}")
        if stuck:
            parts.append(f"ranks {stuck} did not take the data this rank sends")
        raise CollectiveTimeout(
            f"{self.what} in group {mesh.name!r} timed out on rank {mesh.rank} after {mesh.timeout:g} s: "
            + "; ".join(parts) + ". Those ranks are slow, hung, or issued different collectives."
        )
