"""Sockets for the ``tcp`` backend: bootstrap of a full mesh, and the progress engine.

Note on the mesh: every pair of ranks holds two TCP connections. The *data* connection
carries collective payloads as raw bytes (both sides know the algorithm, so no framing
is needed) plus small framed messages (descriptions for the divergence check,
point-to-point headers). The *control* connection carries only ``ABORT`` and ``BYE``
frames and is watched during every collective: a peer that dies (its kernel closes the
sockets) or fails (it sends ``ABORT`` with the cause) makes every other rank's pending
collective raise at once, naming that peer, even when this rank was waiting on someone
else. A peer that leaves cleanly says ``BYE`` first, so its closing is not an error.

Bootstrap: each rank listens on an ephemeral port, publishes ``host:port`` and its host
name in the store, connects to every lower rank and accepts every higher rank; all with
the group timeout.

The progress engine that moves the bytes is :class:`.exchange.Exchange`.
"""

from __future__ import annotations

import hashlib
import logging
import os
import select
import socket
import struct
import time
from typing import Any

import numpy as np

from ...errors import CollectiveError, CollectiveTimeout
from ..process_group import env_value

__all__ = ["Mesh", "HEADER", "C_WAKE", "CTRL", "PeerFailure", "as_bytes", "advertised_address", "host_name"]

logger = logging.getLogger(__name__)

_MAGIC = b"AXTC"
_HANDSHAKE = struct.Struct("<4s8sIIB")  # magic, group key, rank, size, channel
_DATA, CTRL = 0, 1
#: frame header on the data channel: kind, a (seq or tag), b (payload bytes)
HEADER = struct.Struct("<BqQ")
K_DESC, K_P2P = 1, 2
_CTRL_HEADER = struct.Struct("<BI")
C_ABORT, C_BYE, C_WAKE = 1, 2, 3
_BUF_BYTES = 4 * 1024 * 1024
POLL_IN, POLL_OUT = select.POLLIN | select.POLLPRI, select.POLLOUT
POLL_ERR = select.POLLERR | select.POLLHUP | select.POLLNVAL


def as_bytes(a: np.ndarray) -> memoryview:
    """A byte view of a contiguous array (any dtype, bfloat16 included), without a copy."""
    return memoryview(a.reshape(-1).view(np.uint8))


def host_name() -> str:
    """This host's name as ranks compare it (``AXONML_HOSTNAME`` overrides, for tests)."""
    return env_value("AXONML_HOSTNAME") or socket.gethostname()


def advertised_address() -> str:
    """The address peers use to reach this rank.

    ``AXONML_SOCKET_ADDR`` wins; otherwise the interface that routes to ``MASTER_ADDR``
    when that is not a loopback address; otherwise ``127.0.0.1``.
    """
    explicit = env_value("AXONML_SOCKET_ADDR")
    if explicit:
        return explicit
    master = os.environ.get("MASTER_ADDR", "").strip()
    if master and master not in ("localhost", "::1") and not master.startswith("127."):
        try:
            probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                probe.connect((master, 9))  # no packet is sent: this only picks the route
                return probe.getsockname()[0]
            finally:
                probe.close()
        except OSError:
            pass
    return "127.0.0.1"


def _tune(sock: socket.socket) -> None:
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    for opt in (socket.SO_SNDBUF, socket.SO_RCVBUF):
        try:
            sock.setsockopt(socket.SOL_SOCKET, opt, _BUF_BYTES)
        except OSError:  # capped or refused: the kernel's autotuning stays in charge
            pass


class PeerFailure(CollectiveError):
    """A peer died, left or aborted during a collective."""


class Mesh:
    """Data and control connections to every peer of one group (see the module docstring)."""

    def __init__(self, store: Any, rank: int, size: int, timeout: float, name: str, global_ranks: list[int]) -> None:
        self.rank, self.size, self.timeout, self.name = rank, size, timeout, name
        self.global_ranks = global_ranks
        self.data: list[socket.socket | None] = [None] * size
        self.ctrl: list[socket.socket | None] = [None] * size
        self.hosts: list[str] = [""] * size
        self.left: set[int] = set()  # peers that said BYE
        self.gone: set[int] = set()  # peers whose control connection closed after BYE
        self._ctrl_buf: dict[int, bytearray] = {}
        self._fd_peer: dict[int, tuple[int, int]] = {}
        self._poll = select.poll()
        self._mask: dict[int, int] = {}
        if size > 1:
            self._connect(store)

    def who(self, peer: int) -> str:
        g = self.global_ranks[peer]
        return f"rank {peer}" if g == peer else f"rank {peer} (world rank {g})"

    # -- bootstrap -------------------------------------------------------------------------------
    def _connect(self, store: Any) -> None:
        deadline = time.monotonic() + self.timeout
        key = hashlib.sha256(self.name.encode()).digest()[:8]
        addr = advertised_address()
        bind_host = "127.0.0.1" if addr.startswith("127.") else "0.0.0.0"
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            _tune(listener)
            listener.bind((bind_host, 0))
            listener.listen(max(128, 2 * self.size))
            port = listener.getsockname()[1]
            store.set(f"tcp/addr/{self.rank}", f"{addr}:{port}|{host_name()}")
            for peer in range(self.rank):
                raw = store.get(f"tcp/addr/{peer}", timeout=max(0.1, deadline - time.monotonic())).decode()
                hostport, self.hosts[peer] = raw.split("|", 1)
                host, p = hostport.rsplit(":", 1)
                for channel in (_DATA, CTRL):
                    sock = self._dial(host, int(p), peer, deadline)
                    sock.sendall(_HANDSHAKE.pack(_MAGIC, key, self.rank, self.size, channel))
                    self._adopt(sock, peer, channel)
            self.hosts[self.rank] = host_name()
            expected = 2 * (self.size - 1 - self.rank)
            listener.settimeout(0.2)
            while expected:
                if time.monotonic() > deadline:
                    missing = [p for p in range(self.rank + 1, self.size) if self.data[p] is None or self.ctrl[p] is None]
                    raise CollectiveTimeout(
                        f"tcp group {self.name!r}: rank {self.rank} waited {self.timeout:g} s for connections from "
                        f"ranks {missing}; they did not start, crashed, or cannot reach this host"
                    )
                try:
                    sock, _ = listener.accept()
                except socket.timeout:
                    continue
                peer, channel = self._greet(sock, key, deadline)
                self._adopt(sock, peer, channel)
                expected -= 1
            for peer in range(self.rank + 1, self.size):
                raw = store.get(f"tcp/addr/{peer}", timeout=max(0.1, deadline - time.monotonic())).decode()
                self.hosts[peer] = raw.split("|", 1)[1]
        except BaseException:
            self.close(graceful=False)
            raise
        finally:
            listener.close()

    def _dial(self, host: str, port: int, peer: int, deadline: float) -> socket.socket:
        delay = 0.01
        while True:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            _tune(sock)
            sock.settimeout(max(0.1, min(5.0, deadline - time.monotonic())))
            try:
                sock.connect((host, port))
                return sock
            except OSError as exc:
                sock.close()
                if time.monotonic() + delay > deadline:
                    raise CollectiveTimeout(
                        f"tcp group {self.name!r}: rank {self.rank} could not connect to {self.who(peer)} at "
                        f"{host}:{port} within {self.timeout:g} s ({exc}); is the address reachable from here? "
                        "set AXONML_SOCKET_ADDR to the interface other hosts can reach"
                    ) from exc
                time.sleep(delay)
                delay = min(delay * 2, 0.5)

    def _greet(self, sock: socket.socket, key: bytes, deadline: float) -> tuple[int, int]:
        sock.settimeout(max(0.1, deadline - time.monotonic()))
        buf = bytearray()
        while len(buf) < _HANDSHAKE.size:
            chunk = sock.recv(_HANDSHAKE.size - len(buf))
            if not chunk:
                raise CollectiveError(f"tcp group {self.name!r}: a connection closed during the handshake")
            buf += chunk
        magic, their_key, peer, size, channel = _HANDSHAKE.unpack(bytes(buf))
        if magic != _MAGIC or their_key != key or size != self.size or not self.rank < peer < self.size:
            sock.close()
            raise CollectiveError(
                f"tcp group {self.name!r}: rank {self.rank} got a connection that does not belong to this group "
                f"(rank {peer}, size {size}); two jobs may share a store prefix"
            )
        return peer, channel

    def _adopt(self, sock: socket.socket, peer: int, channel: int) -> None:
        _tune(sock)
        sock.setblocking(False)
        (self.data if channel == _DATA else self.ctrl)[peer] = sock
        self._fd_peer[sock.fileno()] = (peer, channel)
        if channel == CTRL:
            self._ctrl_buf[peer] = bytearray()
            self._poll.register(sock.fileno(), POLL_IN)

    # -- control channel -----------------------------------------------------------------------------
    def _send_ctrl(self, kind: int, payload: bytes) -> None:
        frame = _CTRL_HEADER.pack(kind, len(payload)) + payload
        for peer, sock in enumerate(self.ctrl):
            if sock is None or peer in self.gone:
                continue
            try:
                sock.setblocking(True)
                sock.settimeout(1.0)
                sock.sendall(frame)
            except OSError:
                pass
            finally:
                try:
                    sock.setblocking(False)
                except OSError:
                    pass

    def send_ctrl_to(self, peer: int, kind: int) -> None:
        """Best effort, never blocking: a small control frame (e.g. WAKE) to one peer."""
        sock = self.ctrl[peer]
        if sock is None or peer in self.gone:
            return
        frame = _CTRL_HEADER.pack(kind, 0)
        try:
            sent = sock.send(frame)
            if sent < len(frame):  # never leave half a frame: finish it, briefly blocking
                sock.settimeout(1.0)
                sock.sendall(frame[sent:])
                sock.setblocking(False)
        except OSError:
            pass  # full or closed: a sleeper wakes up on its own, a death is seen elsewhere

    def wait_ctrl(self, timeout_ms: int) -> None:
        """Block up to ``timeout_ms`` for control traffic (a WAKE); raise on ABORT or a death."""
        for fd, _ev in self._poll.poll(timeout_ms):
            peer, channel = self._fd_peer[fd]
            if channel == CTRL:
                self.on_ctrl(peer)

    def abort(self, reason: str) -> None:
        """Tell every peer that this rank failed (their pending collectives raise ``reason``)."""
        self._send_ctrl(C_ABORT, reason.encode("utf-8", "replace")[:4000])

    def on_ctrl(self, peer: int) -> None:
        """Read the control connection of ``peer``; raise on ABORT or a death."""
        sock = self.ctrl[peer]
        buf = self._ctrl_buf[peer]
        while True:
            try:
                chunk = sock.recv(65536)
            except BlockingIOError:
                return
            except OSError as exc:
                chunk = b""
                logger.debug("rank=%d control connection to %d: %s", self.rank, peer, exc)
            if not chunk:
                self._poll.unregister(sock.fileno())
                self.gone.add(peer)
                if peer in self.left:
                    return
                raise PeerFailure(
                    f"{self.who(peer)} of group {self.name!r} closed its connection without leaving the group: "
                    "the process died, was killed, or exited without destroy_process_group()"
                )
            buf += chunk
            self._parse_ctrl(peer, buf)

    def _parse_ctrl(self, peer: int, buf: bytearray) -> None:
        while len(buf) >= _CTRL_HEADER.size:
            kind, n = _CTRL_HEADER.unpack_from(buf)
            if len(buf) < _CTRL_HEADER.size + n:
                return
            payload = bytes(buf[_CTRL_HEADER.size:_CTRL_HEADER.size + n])
            del buf[:_CTRL_HEADER.size + n]
            if kind == C_BYE:
                self.left.add(peer)
            elif kind == C_ABORT:
                raise PeerFailure(f"{self.who(peer)} of group {self.name!r} failed: {payload.decode('utf-8', 'replace')}")

    # -- data channel masks -------------------------------------------------------------------------
    def set_mask(self, peer: int, mask: int) -> None:
        sock = self.data[peer]
        fd = sock.fileno()
        old = self._mask.get(fd, 0)
        if mask == old:
            return
        if old == 0:
            self._poll.register(fd, mask)
        elif mask == 0:
            self._poll.unregister(fd)
        else:
            self._poll.modify(fd, mask)
        self._mask[fd] = mask

    def poll(self, timeout_ms: int) -> list[tuple[int, int]]:
        return self._poll.poll(timeout_ms)

    def peer_of(self, fd: int) -> tuple[int, int]:
        return self._fd_peer[fd]

    def check_ctrl(self) -> None:
        """Process pending control frames without waiting (raises on ABORT or death)."""
        for fd, _ev in self._poll.poll(0):
            peer, channel = self._fd_peer[fd]
            if channel == CTRL:
                self.on_ctrl(peer)

    # -- life cycle -------------------------------------------------------------------------------------
    def close(self, graceful: bool = True) -> None:
        """Say BYE (when graceful), then close every connection."""
        if graceful:
            self._send_ctrl(C_BYE, b"")
        for sock in self.data + self.ctrl:
            if sock is not None:
                try:
                    sock.close()
                except OSError:
                    pass
        self.data = [None] * self.size
        self.ctrl = [None] * self.size
