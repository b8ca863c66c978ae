"""Shared memory between the ranks of one host: the ``tcp`` backend's second transport.

Note on the segment: when every rank of a group runs on one host (same host name, see
``AXONML_HOSTNAME``) on x86-64, group rank 0 creates one file in ``/dev/shm``, the others
map it, and rank 0 unlinks it as soon as all have mapped it (nothing leaks after a crash;
a segment whose creator was killed in that short window carries its pid in its name and
is removed by the next group that starts on the host). It holds, per rank, a 64-byte
line of counters (phase counter, sleeping flag, divergence-check digests), two data
slots of ``SLOT_BYTES`` and two result areas (a rank's reduced segment of an all-reduce
chunk).

Note on synchronisation: a *phase* is "every rank has bumped its phase counter to p".
Collectives are sequences of phases over chunks of ``SLOT_BYTES``, with two slots used
alternately (double buffering): a rank writes a slot again only after a phase that every
rank entered after it had finished reading that slot. A waiting rank spins on the
counters for a moment (only when every rank has a core of its own), then *blocks*: it
raises its sleeping flag and polls the group's control sockets, where a rank that bumps
its counter sends a ``WAKE`` frame to the sleepers. Polling the control sockets also
delivers deaths and ABORTs, so a waiting rank learns at once that a peer died. x86 keeps
stores in program order, so a counter bump publishes the data written before it; a full
fence (a locked instruction, via a lock) between "raise flag" and "re-read counters",
and between "bump" and "read flags", closes the store-load window; the short nap is a
safety net. Other architectures use sockets only.

Note on results: every segment of a reduction is reduced by one rank, in rank order, and
copied by the others, so every rank gets bit-identical values.
"""

from __future__ import annotations

import logging
import mmap
import os
import platform
import threading
import time
import uuid
from typing import Callable

import numpy as np

from ...errors import CollectiveError, CollectiveTimeout
from ..types import ReduceOp, finish_avg, reduce_into
from .transport import C_WAKE, Mesh, PeerFailure

__all__ = ["ShmChannel", "ShmUnavailable", "shm_possible", "SLOT_BYTES"]

logger = logging.getLogger(__name__)

#: bytes per data slot (two per rank); also the pipeline chunk of shared-memory collectives
SLOT_BYTES = 4 << 20
_LINE = 64  # one cache line per rank: [phase, sleeping, digest A (2 x int64), digest B (2 x int64)]
_WORDS = _LINE // 8
_SPIN_S = 300e-6
_NAP_MS = 2
_FENCE = threading.Lock()


def _fence() -> None:
    """A full memory barrier: taking a lock runs a locked instruction, which drains the store
    buffer on x86 (plain stores may otherwise pass later loads)."""
    _FENCE.acquire()
    _FENCE.release()
_SHM_DIR = "/dev/shm"


def shm_possible(mesh: Mesh, enabled: bool) -> bool:
    """Whether the group can use shared memory (one host, x86-64, ``/dev/shm`` present)."""
    return (
        enabled
        and mesh.size > 1
        and all(h == mesh.hosts[0] for h in mesh.hosts)
        and platform.machine().lower() in ("x86_64", "amd64")
        and os.path.isdir(_SHM_DIR)
    )


def _remove_orphans() -> None:
    """Unlink segments whose creator died between creating and unlinking them (a SIGKILL in
    that short window); their names carry the creator's pid."""
    try:
        names = [f for f in os.listdir(_SHM_DIR) if f.startswith("axonml-")]
    except OSError:
        return
    for name in names:
        try:
            pid = int(name.split("-")[1])
            os.kill(pid, 0)
        except ValueError:
            continue
        except ProcessLookupError:
            try:
                os.unlink(os.path.join(_SHM_DIR, name))
            except OSError:
                pass
        except OSError:
            continue  # alive (owned by another user)


class ShmUnavailable(Exception):
    """Shared memory could not be set up on every rank; the group uses sockets instead."""


class ShmChannel:
    """Shared-memory collectives for a group whose ranks share a host.

    Built collectively: ``exchange`` is a callable that sends a small bytes value to every
    peer and returns every rank's (used to publish the segment name and to agree that
    every rank mapped it). Raises :class:`ShmUnavailable` on every rank when any rank
    could not create or map the segment (no space in ``/dev/shm``, separate ``/dev/shm``
    per container).
    """

    @staticmethod
    def _create(size: int) -> str:
        """Create and fully allocate the segment (so a full ``/dev/shm`` fails here, not with
        SIGBUS later); return its path, or "" when that is not possible."""
        _remove_orphans()
        path = os.path.join(_SHM_DIR, f"axonml-{os.getpid()}-{uuid.uuid4().hex}")
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        except OSError as exc:
            logger.warning("shared memory unavailable (%s); using sockets", exc)
            return ""
        try:
            os.ftruncate(fd, size)
            if hasattr(os, "posix_fallocate"):
                os.posix_fallocate(fd, 0, size)
            return path
        except OSError as exc:
            logger.warning("cannot allocate %d bytes in %s (%s); using sockets", size, _SHM_DIR, exc)
            os.unlink(path)
            return ""
        finally:
            os.close(fd)

    def __init__(self, mesh: Mesh, exchange: Callable[[bytes], list[bytes]]) -> None:
        self.mesh, self.n, self.rank = mesh, mesh.size, mesh.rank
        n = self.n
        # 4 MiB slots (fewer phases per byte), smaller for many ranks: at most ~128 MiB in all
        self.slot = max(_LINE * n, min(SLOT_BYTES, (64 << 20) // n // _LINE * _LINE))
        self.rslot = -(-self.slot // n // _LINE) * _LINE  # a rank's reduced segment of a chunk
        size = n * _LINE + n * 2 * self.slot + n * 2 * self.rslot
        path, fd, mm, status = "", -1, None, b"ok"
        try:
            if self.rank == 0:
                path = self._create(size)
            names = exchange(path.encode())
            name = names[0].decode()
            if not name:
                raise ShmUnavailable("rank 0 could not create the shared-memory segment")
            try:
                if self.rank != 0:
                    fd = os.open(name, os.O_RDWR)
                else:
                    fd = os.open(path, os.O_RDWR)
                mm = mmap.mmap(fd, size)
            except OSError as exc:  # e.g. hosts that share a name but not /dev/shm
                status = f"rank {self.rank}: {exc}".encode()
            statuses = exchange(status)  # every rank holds a mapping (or failed): the name can go
            bad = [x.decode() for x in statuses if x != b"ok"]
            if bad:
                raise ShmUnavailable("; ".join(bad))
        except ShmUnavailable:
            if mm is not None:
                mm.close()
            raise
        finally:
            if fd >= 0:
                os.close(fd)
            if path:
                try:
                    os.unlink(path)
                except FileNotFoundError:
                    pass
        self.mm = mm
        lines = np.ndarray((n, _WORDS), dtype=np.int64, buffer=self.mm)
        self._pv = memoryview(self.mm)[:n * _LINE].cast("q")  # cheaper than NumPy for single words
        self.digest = lines[:, 2:6].reshape(n, 2, 2)
        self.data = np.ndarray((n, 2, self.slot), dtype=np.uint8, buffer=self.mm, offset=n * _LINE)
        self.result = np.ndarray((n, 2, self.rslot), dtype=np.uint8, buffer=self.mm, offset=n * _LINE + n * 2 * self.slot)
        self.phase = 0
        # Slots and digests alternate across collectives: a rank writes slot s again two
        # chunks later, after a phase that every rank entered only when done reading it.
        self.k = 0
        self.d = 0
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        self.spin = n <= cores  # spinning needs a core per rank
        self.timeout = mesh.timeout

    # -- phases -------------------------------------------------------------------------------------
    def step(self, what: object) -> None:
        """Bump this rank's phase counter and wait until every rank reached the same phase."""
        self.phase += 1
        _fence()  # the data this rank wrote is visible before its bump
        self._pv[self.rank * _WORDS] = self.phase
        _fence()  # the bump is visible before we look for sleepers (pairs with the fence in _wait)
        pv, n = self._pv, self.n
        for p in range(n):
            if pv[p * _WORDS + 1] and p != self.rank:
                self.mesh.send_ctrl_to(p, C_WAKE)
        self._wait(self.phase, what)

    def _done(self, target: int) -> bool:
        pv = self._pv
        for p in range(self.n):
            if pv[p * _WORDS] < target:
                return False
        return True

    def _wait(self, target: int, what: object) -> None:
        if self._done(target):
            return
        t0 = time.monotonic()
        if self.spin:
            while time.monotonic() - t0 < _SPIN_S:
                if self._done(target):
                    return
        # Block: raise the sleeping flag, then re-check (a fence in between, so that a rank
        # bumping its counter either sees the flag and sends WAKE, or we see its bump).
        deadline = t0 + self.timeout
        flag = self.rank * _WORDS + 1
        try:
            while True:
                self._pv[flag] = 1
                _fence()
                if self._done(target):
                    return
                left = deadline - time.monotonic()
                if left <= 0:
                    late = [r for r in range(self.n) if self._pv[r * _WORDS] < target]
                    raise CollectiveTimeout(
                        f"{what} in group {self.mesh.name!r} timed out on rank {self.rank} after {self.timeout:g} s: "
                        f"ranks {late} did not arrive (shared memory); they are slow, hung, or issued different "
                        "collectives"
                    )
                self.mesh.wait_ctrl(min(_NAP_MS, max(1, int(left * 1000))))
                gone = [r for r in self.mesh.left if self._pv[r * _WORDS] < target]
                if gone:
                    raise PeerFailure(
                        f"{what} in group {self.mesh.name!r}: {self.mesh.who(gone[0])} left the group "
                        f"(destroy_process_group) while rank {self.rank} waited for it; every rank must issue the "
                        "same collectives before leaving"
                    )
        finally:
            self._pv[flag] = 0

    # -- divergence check -----------------------------------------------------------------------------
    def agree(self, digest: bytes, what: object) -> bool:
        """Publish a 16-byte digest; True when every rank published the same one."""
        d, self.d = self.d % 2, self.d + 1
        self.digest[self.rank, d] = np.frombuffer(digest, dtype=np.int64)
        self.step(what)
        return bool((self.digest[:, d] == self.digest[self.rank, d]).all())

    # -- collectives ----------------------------------------------------------------------------------
    def _slot(self) -> int:
        s, self.k = self.k % 2, self.k + 1
        return s

    def allreduce(self, flat: np.ndarray, op: ReduceOp, what: object) -> None:
        """One phase per chunk: after the phase of chunk k, rank r reduces its segment of chunk k
        into its result area, and copies out chunk k-1 (whose results every rank wrote before
        entering this phase); one more phase releases the last chunk."""
        n, r, isz = self.n, self.rank, flat.itemsize
        per = (self.slot // isz) // n * n  # elements per chunk, a multiple of n
        if per == 0:
            raise CollectiveError(f"{what}: element size {isz} too large for shared-memory slots")
        pending: tuple | None = None  # (slot, lo, segment bounds) of the chunk to copy out
        for lo in range(0, flat.size, per):
            hi = min(lo + per, flat.size)
            s = self._slot()
            m = hi - lo
            self.data[r, s, :m * isz].view(flat.dtype)[:] = flat[lo:hi]
            self.step(what)
            q, rem = divmod(m, n)
            b = [j * q + min(j, rem) for j in range(n + 1)]
            if b[r + 1] > b[r]:
                parts = [self.data[j, s, b[r] * isz:b[r + 1] * isz].view(flat.dtype) for j in range(n)]
                acc = parts[0].copy()
                for p in parts[1:]:
                    reduce_into(op, acc, p)
                if op is ReduceOp.AVG:
                    finish_avg(acc, n)
                self.result[r, s, :acc.nbytes] = acc.view(np.uint8)
            if pending is not None:
                self._copy_out(flat, *pending)
            pending = (s, lo, b)
        if pending is not None:
            self.step(what)
            self._copy_out(flat, *pending)

    def _copy_out(self, flat: np.ndarray, s: int, lo: int, b: list[int]) -> None:
        isz = flat.itemsize
        for j in range(self.n):
            flat[lo + b[j]:lo + b[j + 1]] = self.result[j, s, :(b[j + 1] - b[j]) * isz].view(flat.dtype)

    def broadcast(self, flat: np.ndarray, root: int, what: object) -> None:
        raw = flat.reshape(-1).view(np.uint8)
        for lo in range(0, raw.size, self.slot):
            hi = min(lo + self.slot, raw.size)
            s = self._slot()
            if self.rank == root:
                self.data[root, s, :hi - lo] = raw[lo:hi]
            self.step(what)
            if self.rank != root:
                raw[lo:hi] = self.data[root, s, :hi - lo]

    def allgather(self, out: np.ndarray, mine: np.ndarray, counts: list[int], what: object) -> None:
        isz = out.itemsize
        b = [0]
        for c in counts:
            b.append(b[-1] + c * isz)
        raw_out, raw_in = out.reshape(-1).view(np.uint8), mine.reshape(-1).view(np.uint8)
        for lo in range(0, max(counts) * isz, self.slot):
            s = self._slot()
            take = max(0, min(self.slot, raw_in.size - lo))
            self.data[self.rank, s, :take] = raw_in[lo:lo + take]
            self.step(what)
            for j, c in enumerate(counts):
                t = max(0, min(self.slot, c * isz - lo))
                raw_out[b[j] + lo:b[j] + lo + t] = self.data[j, s, :t]

    def reduce_scatter(self, out: np.ndarray, inp: np.ndarray, op: ReduceOp, counts: list[int], what: object,
                       root: int | None = None) -> None:
        """Rank i gets segment i reduced into ``out``; with ``root``, the root reduces every
        segment into ``out`` (which may be ``inp``: each chunk is copied in before it is written)."""
        n, r, isz = self.n, self.rank, inp.itemsize
        b = [0]
        for c in counts:
            b.append(b[-1] + c)
        per = max(1, (self.slot // isz) // n)  # elements of each segment per chunk
        for lo in range(0, max(counts), per):
            s = self._slot()
            view = self.data[r, s, :per * n * isz].view(inp.dtype).reshape(n, per)
            for j in range(n):
                t = max(0, min(per, counts[j] - lo))
                view[j, :t] = inp[b[j] + lo:b[j] + lo + t]
            self.step(what)
            if root is not None and r != root:
                continue
            for j in (range(n) if root is not None else [r]):
                t = max(0, min(per, counts[j] - lo))
                if t == 0:
                    continue
                parts = [self.data[i, s, :per * n * isz].view(inp.dtype).reshape(n, per)[j, :t] for i in range(n)]
                acc = parts[0].copy()
                for p in parts[1:]:
                    reduce_into(op, acc, p)
                if op is ReduceOp.AVG:
                    finish_avg(acc, n)
                dst = out[b[j] + lo:b[j] + lo + t] if root is not None else out[lo:lo + t]
                dst[...] = acc

    def barrier(self, what: object) -> None:
        self.step(what)

    def close(self) -> None:
        self._pv.release()
        del self.digest, self.data, self.result
        try:
            self.mm.close()
        except (BufferError, ValueError):
            pass  # views still alive: the mapping goes when they do
