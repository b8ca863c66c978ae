"""Shared memory between the ranks of one host: the ``tcp`` backend's second transport.

Note on the segment: when every rank of a group runs on one host (same host name, see
``AXONML_HOSTNAME``) on x86-64, group rank 0 creates one file in ``/dev/shm``, the others
map it, and rank 0 unlinks it as soon as all have mapped it (nothing leaks after a crash;
a segment whose creator was killed in that short window carries its pid in its name and
is removed by the next group that starts on the host). It holds, per rank, a 128-byte
line of counters (phase counter, sleeping flag, divergence-check digests, the location of
a collective's shared-resident buffer), two staging slots and two result slots. Every
buffer starts at a different offset modulo 4 KiB: buffers that sit at the same offset
modulo a large power of two compete for the same cache sets and alias in the CPU's
store-to-load check, which costs up to 4x in bandwidth.

Note on synchronisation: a *phase* is "every rank has bumped its phase counter to p".
Collectives are sequences of phases over chunks, with two slots used alternately (double
buffering): a rank writes a slot again only after a phase that every rank entered after
it had finished reading that slot. A waiting rank spins on the counters for a moment
(tightly only when every rank has a core of its own, else yielding the core between
looks, so that ranks sharing cores take turns), then *blocks*: it raises its sleeping flag
and polls the group's control sockets, where a rank that bumps its counter sends a
``WAKE`` frame to the sleepers. Polling the control sockets also delivers deaths and
ABORTs, so a waiting rank learns at once that a peer died. x86 keeps ordinary stores in
program order; a full fence (a locked instruction, via a lock) before a bump also orders
the non-temporal stores that large copies use, and one between "bump" and "read flags"
(and between "raise flag" and "re-read counters") closes the store-load window; the short
nap is a safety net. Other architectures use sockets only.

Note on results: every segment of a reduction is reduced by one rank, in rank order, and
copied by the others, so every rank gets bit-identical values. A small all-reduce
(``small_bytes``) takes one phase instead: every rank publishes its data (and, when
checked, its digest in the same phase), then every rank combines all contributions
itself in rank order, which gives the same bits on every rank as well. The chunked
algorithms live in :mod:`.shm_collectives`; buffers that live in shared memory (and are
read in place) in :mod:`.shm_arena`.
"""

from __future__ import annotations

import logging
import mmap
import os
import platform
import threading
import time
import uuid
from typing import Any, Callable

import numpy as np

from ...errors import CollectiveTimeout
from ..types import ReduceOp
from . import shm_collectives as algo
from .shm_collectives import UFUNCS
from .transport import C_WAKE, Mesh, PeerFailure

__all__ = ["ShmChannel", "ShmUnavailable", "Diverged", "shm_possible", "map_segment", "stagger", "SLOT_BYTES"]

logger = logging.getLogger(__name__)

#: staging bytes per rank and slot (the pipeline chunk of the chunked shared-memory
#: collectives): small enough that a chunk's staging and result buffers stay in the caches
SLOT_BYTES = 1 << 20
_LINE = 128  # bytes per rank: two cache lines (the adjacent-line prefetcher fetches pairs)
_WORDS = _LINE // 8
# words of a rank's line: phase, sleeping, digest A (2), digest B (2), broken, -, location (arena id, offset)
_BROKEN = 6  # set by a rank whose group broke (after it sent ABORT): peers that pass a phase with it fail too
LOC = 8
_SPIN_S = 300e-6  # then block (a peer may be descheduled)
_YIELD_S = 1e-3  # when ranks outnumber cores: yield between looks this long, then block
_TIGHT_S = 30e-6  # spin without yielding the core this long first
_NAP_MS = 2
_FENCE = threading.Lock()
_SHM_DIR = "/dev/shm"

_AVG = ReduceOp.AVG


def _fence() -> None:
    """A full memory barrier: taking a lock runs a locked instruction, which drains the store
    buffer on x86 (plain stores may otherwise pass later loads)."""
    _FENCE.acquire()
    _FENCE.release()


def stagger(offset: int, index: int) -> int:
    """``offset`` rounded up to a page, plus ``index`` times nine cache lines (mod 4 KiB): the
    start of the ``index``-th buffer of a segment, away from the others' cache sets."""
    return -(-offset // 4096) * 4096 + (index * 9 * 64) % 4096


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


def _create(size: int) -> str:
    """Create and fully allocate a segment (so a full ``/dev/shm`` fails here, not with SIGBUS
    later); return its path, or "" when that is not possible."""
    _remove_orphans()
    path = os.path.join(_SHM_DIR, f"axonml-{os.getpid()}-{uuid.uuid4().hex}")
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as exc:
        logger.warning("shared memory unavailable (%s)", exc)
        return ""
    try:
        os.ftruncate(fd, size)
        if hasattr(os, "posix_fallocate"):
            os.posix_fallocate(fd, 0, size)
        return path
    except OSError as exc:
        logger.warning("cannot allocate %d bytes in %s (%s)", size, _SHM_DIR, exc)
        os.unlink(path)
        return ""
    finally:
        os.close(fd)


def map_segment(size: int, rank: int, exchange: Callable[[bytes], list[bytes]], create: Callable[[int], str] = _create,
                init: Callable[[mmap.mmap], None] | None = None, extra: bytes = b"") -> tuple[mmap.mmap, list[bytes]]:
    """Collectively create and map one segment of ``size`` bytes; unlink it once all mapped it.

    Rank 0 creates it (and runs ``init`` on its mapping before anyone else sees it); every
    rank maps it. ``extra`` is a small value every rank publishes in the final exchange;
    returns the mapping and every rank's ``extra``. Raises :class:`ShmUnavailable` on
    every rank when any rank failed.
    """
    path, fd, mm, status = "", -1, None, b"ok"
    try:
        if rank == 0:
            path = create(size)
            if path and init is not None:
                fd = os.open(path, os.O_RDWR)
                mm = mmap.mmap(fd, size)
                init(mm)
        name = exchange(path.encode())[0].decode()
        if not name:
            raise ShmUnavailable("rank 0 could not create the shared-memory segment")
        try:
            if mm is None:
                fd = os.open(name, os.O_RDWR)
                mm = mmap.mmap(fd, size)
        except OSError as exc:  # e.g. hosts that share a name but not /dev/shm
            status = f"rank {rank}: {exc}".encode()
        statuses = exchange(status + b"|" + extra)  # every rank holds a mapping (or failed): the name can go
        bad = [x.split(b"|", 1)[0].decode() for x in statuses if not x.startswith(b"ok|")]
        if bad:
            raise ShmUnavailable("; ".join(bad))
        return mm, [x.split(b"|", 1)[1] for x in statuses]
    except BaseException:
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
        return _create(size)

    def __init__(self, mesh: Mesh, exchange: Callable[[bytes], list[bytes]]) -> None:
        self.mesh, self.n, self.rank = mesh, mesh.size, mesh.rank
        n = self.n
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        self.spin = n <= cores  # spinning needs a core per rank
        # staging per rank and slot: 1 MiB, so that a chunk's buffers stay in the caches (larger chunks
        # measured slower here even when ranks share cores and phases cost context switches); less for many ranks
        self.slot = max(64 << 10, min(SLOT_BYTES, (4 * SLOT_BYTES) // n))
        self.rslot = -(-self.slot // n // 64) * 64  # a rank's reduced segment of an all-reduce chunk
        offsets, off = [], stagger(n * _LINE, 0)
        for i in range(n * 4):  # per rank: stage 0, stage 1, result 0, result 1
            off = stagger(off, i + 1)
            offsets.append(off)
            off += self.slot if i % 4 < 2 else self.rslot
        mm, _ = map_segment(off, self.rank, exchange, self._create)
        self.mm = mm
        self._pv = memoryview(mm)[:n * _LINE].cast("q")  # cheaper than NumPy for single words
        u8 = np.ndarray((off,), dtype=np.uint8, buffer=mm)
        self.stage = [[u8[offsets[4 * r + s]:offsets[4 * r + s] + self.slot] for s in range(2)] for r in range(n)]
        self.result = [[u8[offsets[4 * r + 2 + s]:offsets[4 * r + 2 + s] + self.rslot] for s in range(2)] for r in range(n)]
        self.phase = 0
        # Slots and digests alternate across collectives: a rank writes slot s again two
        # chunks later, after a phase that every rank entered only when done reading it.
        self.k = 0
        self.d = 0
        self.timeout = mesh.timeout
        #: an all-reduce of at most this many bytes takes one phase (every rank reduces it all): measured
        #: faster than the two phases of the chunked one up to 1 MiB with two ranks, 512 KiB with four
        self.small_bytes = min(self.slot, (2 << 20) // n)
        self._rows_cache: dict[tuple, tuple] = {}
        #: a check digest to publish with the next phase (see :meth:`step`)
        self.pending: tuple[int, int] | None = None
        #: buffers that live in shared memory (:class:`.shm_arena.Arenas`), set by the group
        self.arenas: Any = None
        self._peer_words = [p * _WORDS for p in range(n) if p != self.rank]  # the peers' lines
        self._all_words = [p * _WORDS for p in range(n)]
        self._me = self.rank * _WORDS

    # -- phases -------------------------------------------------------------------------------------
    def step(self, what: object) -> None:
        """Bump this rank's phase counter and wait until every rank reached the same phase.

        With a :attr:`pending` digest, publish it in this phase and raise :class:`Diverged`
        after it when some rank published another: the divergence check rides on the first
        phase of a collective, before anything another rank wrote is read.
        """
        pv, fence, peers, me = self._pv, _FENCE, self._peer_words, self._me
        digest = self.pending
        if digest is not None:  # (inlined _put_digest: this is the latency path)
            self.pending = None
            d = 2 + 2 * (self.d & 1)
            self.d += 1
            pv[me + d], pv[me + d + 1] = digest
        self.phase = phase = self.phase + 1
        fence.acquire()  # the data this rank wrote (non-temporal stores too) is visible before its bump
        fence.release()
        pv[me] = phase
        fence.acquire()  # the bump is visible before we look for sleepers (pairs with the fence in _wait)
        fence.release()
        late = False
        for w in peers:
            if pv[w + 1]:
                self.mesh.send_ctrl_to(w // _WORDS, C_WAKE)
            if pv[w] < phase:
                late = True
        if late:
            self._wait(phase, what)
        for w in peers:
            if pv[w + _BROKEN]:
                self._peer_broke(w // _WORDS, what)
        if digest is not None:
            a, b = digest
            for w in peers:
                if pv[w + d] != a or pv[w + d + 1] != b:
                    raise Diverged()

    def mark_broken(self) -> None:
        """Tell the peers (through the segment) that this rank's group broke: a peer that
        completes a phase with it raises instead of using what this rank left behind."""
        try:
            self._pv[self._me + _BROKEN] = 1
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
        pv = self._pv
        t0 = time.monotonic()
        if self.spin:
            # a peer on its own core arrives within microseconds: a tight loop on each late counter first
            for w in self._all_words:
                spins = 0
                while pv[w] < target:
                    spins += 1
                    if spins & 255 == 0 and time.monotonic() - t0 > _TIGHT_S:
                        break
        # then look between yields of the core (ranks that share cores take turns), then block
        limit = _SPIN_S if self.spin else _YIELD_S
        now = time.monotonic()
        while now - t0 < limit:
            if self._done(target):
                return
            os.sched_yield()
            now = time.monotonic()
        # Block: raise the sleeping flag, then re-check (a fence in between, so that a rank
        # bumping its counter either sees the flag and sends WAKE, or we see its bump).
        deadline = t0 + self.timeout
        flag = self._me + 1
        try:
            while True:
                pv[flag] = 1
                _fence()
                if self._done(target):
                    return
                left = deadline - time.monotonic()
                if left <= 0:
                    late = [r for r in range(self.n) if pv[r * _WORDS] < target]
                    raise CollectiveTimeout(
                        f"{what} in group {self.mesh.name!r} timed out on rank {self.rank} after {self.timeout:g} s: "
                        f"ranks {late} did not arrive (shared memory); they are slow, hung, or issued different "
                        "collectives"
                    )
                self.mesh.wait_ctrl(min(_NAP_MS, max(1, int(left * 1000))))
                gone = [r for r in self.mesh.left if pv[r * _WORDS] < target]
                if gone:
                    raise PeerFailure(
                        f"{what} in group {self.mesh.name!r}: {self.mesh.who(gone[0])} left the group "
                        f"(destroy_process_group) while rank {self.rank} waited for it; every rank must issue the "
                        "same collectives before leaving"
                    )
        finally:
            pv[flag] = 0

    # -- divergence check and published locations ---------------------------------------------------
    def agree(self, digest: tuple[int, int], what: object) -> bool:
        """Publish a digest (two signed 64-bit words); True when every rank published the same."""
        d = self._put_digest(digest)
        self.step(what)
        return self._same_digest(d, digest)

    def _put_digest(self, digest: tuple[int, int]) -> int:
        """Write ``digest`` into this rank's line (the two digest places alternate); return the offset."""
        d = 2 + 2 * (self.d & 1)
        self.d += 1
        i = self._me + d
        self._pv[i], self._pv[i + 1] = digest
        return d

    def _same_digest(self, d: int, digest: tuple[int, int]) -> bool:
        pv = self._pv
        a, b = digest
        for w in self._peer_words:
            if pv[w + d] != a or pv[w + d + 1] != b:
                return False
        return True

    def publish(self, loc: tuple[int, int]) -> None:
        """Put this rank's ``(arena id, byte offset)`` (or ``(-1, 0)``) into its line for the next phase.

        Every rank reads the others' right after that phase, and every collective that
        publishes runs at least one more phase before the next one can overwrite it.
        """
        self._pv[self._me + LOC], self._pv[self._me + LOC + 1] = loc

    def published(self, r: int) -> tuple[int, int]:
        """Rank ``r``'s location from the last phase (see :meth:`publish`)."""
        w = r * _WORDS + LOC
        return self._pv[w], self._pv[w + 1]

    # -- collectives ----------------------------------------------------------------------------------
    def next_slot(self) -> int:
        """The slot (0 or 1) of the next chunk."""
        s, self.k = self.k & 1, self.k + 1
        return s

    def allreduce_small(self, flat: np.ndarray, op: ReduceOp, what: object) -> None:
        """A one-phase all-reduce of at most :attr:`small_bytes` (a :attr:`pending` digest is
        checked in that phase)."""
        k = self.k
        self.k = k + 1
        key = (k & 1, flat.dtype.num, flat.size)
        rows = self._rows_cache.get(key)
        if rows is None:
            rows = self._rows(key, flat.dtype)
        rows[-1][...] = flat  # this rank's row
        self.step(what)
        fn = UFUNCS[op._value_]
        fn(rows[0], rows[1], out=flat)
        if self.n > 2:
            for row in rows[2:self.n]:
                fn(flat, row, out=flat)
        if op is _AVG:
            flat /= self.n

    def allgather_small(self, out: np.ndarray, mine: np.ndarray, offs: tuple, what: object) -> None:
        """A one-phase all-gather of flat contiguous arrays (every rank's block fits its slot;
        rank j's block is bytes ``offs[j]:offs[j + 1]`` of ``out``): this rank publishes its
        block in its slot, then copies the others' (the layout of one chunk of the staged
        all-gather, so ranks that run either one interoperate)."""
        k = self.k
        self.k = k + 1
        s, r = k & 1, self.rank
        raw_in, raw_out = mine.view(np.uint8), out.view(np.uint8)
        stage = self.stage
        lo, hi = offs[r], offs[r + 1]
        if hi > lo:
            stage[r][s][:hi - lo] = raw_in
            own = raw_out[lo:hi]
            # (not when in place: the input is this rank's part of the output)
            if not np.may_share_memory(own, raw_in) or own.__array_interface__ != raw_in.__array_interface__:
                own[...] = raw_in
        self.step(what)
        for j in range(self.n):
            lo, hi = offs[j], offs[j + 1]
            if hi > lo and j != r:
                raw_out[lo:hi] = stage[j][s][:hi - lo]

    def broadcast_small(self, flat: np.ndarray, root: int, what: object) -> None:
        """A one-phase broadcast of a flat contiguous array of at most one slot (the layout of
        one chunk of the staged broadcast)."""
        k = self.k
        self.k = k + 1
        raw = flat.view(np.uint8)
        src = self.stage[root][k & 1][:raw.size]
        if self.rank == root:
            src[...] = raw
            self.step(what)
        else:
            self.step(what)
            raw[...] = src

    def reduce_scatter_small(self, out: np.ndarray, inp: np.ndarray, op: ReduceOp, counts: list[int],
                             what: object) -> None:
        """A one-phase reduce-scatter (every segment at most :attr:`slot` / n bytes): this rank
        publishes the others' segments in its slot, then reduces its own segment of every rank's
        in rank order (the layout and bits of one chunk of the staged reduce-scatter)."""
        n, r, dt, isz = self.n, self.rank, inp.dtype, inp.itemsize
        per = max(1, (self.slot // isz) // n)
        k = self.k
        self.k = k + 1
        s = k & 1
        view = self.stage[r][s][:per * n * isz].view(dt)
        off = a = 0
        for j, c in enumerate(counts):
            if j == r:
                a = off
            elif c:
                view[j * per:j * per + c] = inp[off:off + c]
            off += c
        self.step(what)
        t = counts[r]
        if t:
            lo, hi = r * per * isz, (r * per + t) * isz
            xs = [inp[a:a + t] if i == r else self.stage[i][s][lo:hi].view(dt) for i in range(n)]
            algo.reduce_segments(UFUNCS[op._value_], xs, out, lambda: self.result[r][s][:t * isz].view(dt), r,
                                 op is _AVG)

    def _rows(self, key: tuple, dtype: np.dtype) -> tuple:
        """Every rank's slot ``s`` as ``count`` elements of ``dtype``, then this rank's again
        (cached: a training loop reuses a few)."""
        s, _num, count = key
        if len(self._rows_cache) > 64:
            self._rows_cache.clear()
        nbytes = count * dtype.itemsize
        rows = tuple(self.stage[j][s][:nbytes].view(dtype) for j in range(self.n))
        self._rows_cache[key] = rows = rows + (rows[self.rank],)
        return rows

    def allreduce(self, flat: np.ndarray, op: ReduceOp, what: object) -> None:
        """All-reduce ``flat`` in place: one phase when small, else chunked (see :mod:`.shm_collectives`)."""
        if flat.nbytes <= self.small_bytes:
            self.allreduce_small(flat, op, what)
        else:
            algo.allreduce(self, flat, op, what)

    def broadcast(self, flat: np.ndarray, root: int, what: object) -> None:
        algo.broadcast(self, flat, root, what)

    def allgather(self, out: np.ndarray, mine: np.ndarray, counts: list[int], what: object) -> None:
        algo.allgather(self, out, mine, counts, what)

    def reduce_scatter(self, out: np.ndarray, inp: np.ndarray, op: ReduceOp, counts: list[int], what: object,
                       root: int | None = None) -> None:
        """Rank i gets segment i reduced into ``out``; with ``root``, the root reduces every
        segment into ``out`` (which may be ``inp``)."""
        algo.reduce_scatter(self, out, inp, op, counts, what, root)

    def barrier(self, what: object) -> None:
        self.step(what)

    def close(self) -> None:
        self._rows_cache.clear()
        if self.arenas is not None:
            self.arenas.close()
            self.arenas = None
        self._pv.release()
        del self.stage, self.result
        try:
            self.mm.close()
        except (BufferError, ValueError):
            pass  # views still alive: the mapping goes when they do
