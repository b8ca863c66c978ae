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
copied by the others, so every rank gets bit-identical values. A small all-reduce
(``small_bytes``) takes one phase instead: every rank publishes its data (and, when
checked, its digest in the same phase), then every rank combines all contributions
itself in rank order, which gives the same bits on every rank as well.
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
from ..types import ReduceOp, finish_avg, reduce_into, reduce_rows
from .transport import C_WAKE, Mesh, PeerFailure

__all__ = ["ShmChannel", "ShmUnavailable", "Diverged", "shm_possible", "SLOT_BYTES"]

logger = logging.getLogger(__name__)

#: bytes per data slot (two per rank); also the pipeline chunk of shared-memory collectives
SLOT_BYTES = 4 << 20
_LINE = 64  # one cache line per rank: [phase, sleeping, digest A (2 x int64), digest B (2 x int64), broken, -]
_WORDS = _LINE // 8
_BROKEN = 6  # word set by a rank whose group broke (after it sent ABORT): peers that pass a phase with it fail too
_SPIN_S = 300e-6
_YIELD_AFTER_S = 0.0  # then the spin yields the core between looks (a peer may share it)
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


class Diverged(Exception):
    """The ranks published different check digests in a phase (raised on every rank, before
    any rank reads another's data); the caller exchanges full descriptions to explain it."""


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
        #: an all-reduce of at most this many bytes takes one phase (every rank reduces it all)
        self.small_bytes = min(self.slot, max(64 << 10, (4 << 20) // n))
        self._rows_cache: dict[tuple, np.ndarray] = {}
        #: a check digest to publish with the next phase (see :meth:`step`)
        self.pending: tuple[int, int] | None = None
        self._peer_words = [p * _WORDS for p in range(n) if p != self.rank]  # the peers' lines
        self._all_words = [p * _WORDS for p in range(n)]

    # -- phases -------------------------------------------------------------------------------------
    def step(self, what: object) -> None:
        """Bump this rank's phase counter and wait until every rank reached the same phase.

        With a :attr:`pending` digest, publish it in this phase and raise :class:`Diverged`
        after it when some rank published another: the divergence check rides on the first
        phase of a collective, before anything another rank wrote is read.
        """
        digest = self.pending
        if digest is not None:
            self.pending = None
            d = self._put_digest(digest)
        self.phase = phase = self.phase + 1
        pv, fence = self._pv, _FENCE
        fence.acquire()  # the data this rank wrote is visible before its bump
        fence.release()
        pv[self.rank * _WORDS] = phase
        fence.acquire()  # the bump is visible before we look for sleepers (pairs with the fence in _wait)
        fence.release()
        for w in self._peer_words:
            if pv[w + 1]:
                self.mesh.send_ctrl_to(w // _WORDS, C_WAKE)
        for w in self._all_words:
            if pv[w] < phase:
                self._wait(phase, what)
                break
        for w in self._peer_words:
            if pv[w + _BROKEN]:
                self._peer_broke(w // _WORDS, what)
        if digest is not None and not self._same_digest(d, digest):
            raise Diverged()

    def mark_broken(self) -> None:
        """Tell the peers (through the segment) that this rank's group broke: a peer that
        completes a phase with it raises instead of using what this rank left behind."""
        try:
            self._pv[self.rank * _WORDS + _BROKEN] = 1
        except (ValueError, IndexError):
            pass  # already closed

    def _peer_broke(self, p: int, what: object) -> None:
        """Raise the ABORT that rank ``p`` sent before it marked itself broken (or say so)."""
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            self.mesh.wait_ctrl(10)  # raises PeerFailure with p's reason (or a death)
        raise PeerFailure(f"{what} in group {self.mesh.name!r}: {self.mesh.who(p)} failed (it marked the shared-memory "
                          "segment broken) and cannot finish this collective")

    def _done(self, target: int) -> bool:
        pv = self._pv
        for w in self._all_words:
            if pv[w] < target:
                return False
        return True

    def _wait(self, target: int, what: object) -> None:
        if self._done(target):
            return
        t0 = time.monotonic()
        if self.spin:
            now = t0
            while now - t0 < _SPIN_S:
                if self._done(target):
                    return
                if now - t0 > _YIELD_AFTER_S:
                    os.sched_yield()
                now = time.monotonic()
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
    def agree(self, digest: tuple[int, int], what: object) -> bool:
        """Publish a digest (two signed 64-bit words); True when every rank published the same."""
        d = self._put_digest(digest)
        self.step(what)
        return self._same_digest(d, digest)

    def _put_digest(self, digest: tuple[int, int]) -> int:
        """Write ``digest`` into this rank's line (the two digest places alternate); return the offset."""
        d = 2 + 2 * (self.d & 1)
        self.d += 1
        i = self.rank * _WORDS + d
        self._pv[i], self._pv[i + 1] = digest
        return d

    def _same_digest(self, d: int, digest: tuple[int, int]) -> bool:
        pv = self._pv
        a, b = digest
        for w in self._peer_words:
            if pv[w + d] != a or pv[w + d + 1] != b:
                return False
        return True

    # -- collectives ----------------------------------------------------------------------------------
    def _slot(self) -> int:
        s, self.k = self.k % 2, self.k + 1
        return s

    def _rows(self, s: int, dtype: np.dtype, count: int) -> np.ndarray:
        """The ``(n, count)`` view of every rank's slot ``s`` as ``dtype`` (cached: a training loop
        reuses a few)."""
        key = (s, dtype, count)
        rows = self._rows_cache.get(key)
        if rows is None:
            if len(self._rows_cache) > 64:
                self._rows_cache.clear()
            rows = self._rows_cache[key] = self.data[:, s, :count * dtype.itemsize].view(dtype)
        return rows

    def allreduce_small(self, flat: np.ndarray, op: ReduceOp, what: object) -> None:
        """A one-phase all-reduce of at most :attr:`small_bytes` (a :attr:`pending` digest is
        checked in that phase)."""
        s = self.k & 1
        self.k += 1
        rows = self._rows_cache.get((s, flat.dtype, flat.size))
        if rows is None:
            rows = self._rows(s, flat.dtype, flat.size)
        rows[self.rank] = flat
        self.step(what)
        reduce_rows(op, rows, flat)

    def allreduce(self, flat: np.ndarray, op: ReduceOp, what: object) -> None:
        """One phase per chunk: after the phase of chunk k, rank r reduces its segment of chunk k
        into its result area, and copies out chunk k-1 (whose results every rank wrote before
        entering this phase); one more phase releases the last chunk."""
        if flat.nbytes <= self.small_bytes:
            self.allreduce_small(flat, op, what)
            return
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
        self._rows_cache.clear()
        self._pv.release()
        del self.digest, self.data, self.result
        try:
            self.mm.close()
        except (BufferError, ValueError):
            pass  # views still alive: the mapping goes when they do
