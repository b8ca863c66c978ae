"""The ``threaded`` backend: N threads of one process are N ranks.

It exists for fast semantic tests of the collective API (every op, every world size,
every reduce op) without starting processes. Ranks meet in a shared :class:`_World`:
the n-th collective of every rank deposits a copy of its contribution under the key
``n``, waits (with the group timeout) until all ranks have deposited, and computes its
own output from the contributions, in rank order, so that every rank gets bit-identical
results. Point-to-point messages go through per-(src, dst) mailboxes.

Ranks find their shared world through the store: they agree on a world id with
``compare_set`` and look it up in a process-wide table. :func:`abort_world` (used by
``run_threaded`` when a rank's function raises) makes every waiting rank raise at once.
"""

from __future__ import annotations

import collections
import threading
import time
import uuid
from typing import Any, Sequence

import numpy as np

from ...errors import CollectiveError, CollectiveTimeout
from ..process_group import ProcessGroup, p2p_done, register_backend
from ..types import CollectiveDesc, ReduceOp, finish_avg, reduce_into

__all__ = ["ThreadedProcessGroup", "ThreadedRun", "abort_world", "current_worlds"]

_WORLDS: dict[str, "_World"] = {}
_WORLDS_LOCK = threading.Lock()
_CURRENT_RUN = threading.local()


class ThreadedRun:
    """The rank threads of one ``run_threaded`` call: one failure aborts all their worlds.

    A rank thread calls :meth:`bind` first; worlds created by bound threads join the run.
    """

    def __init__(self) -> None:
        self.reason: str | None = None
        self.worlds: list[_World] = []
        self.lock = threading.Lock()

    def bind(self) -> None:
        _CURRENT_RUN.run = self

    def add(self, world: "_World") -> None:
        with self.lock:
            self.worlds.append(world)
            reason = self.reason
        if reason is not None:
            world.abort(reason)

    def abort(self, reason: str) -> None:
        """Make every rank of the run that waits in a collective raise ``reason``."""
        with self.lock:
            if self.reason is None:
                self.reason = reason
            worlds = list(self.worlds)
        for w in worlds:
            w.abort(reason)


class _World:
    """Shared state of one threaded group: exchange slots and p2p mailboxes."""

    def __init__(self, wid: str, size: int, name: str) -> None:
        self.wid, self.size, self.name = wid, size, name
        self.cv = threading.Condition(threading.Lock())
        self.slots: dict[Any, list] = {}  # key -> [values, arrived count, read count]
        self.mail: dict[tuple[int, int], collections.deque] = collections.defaultdict(collections.deque)
        self.aborted: str | None = None
        self.members = 0

    def abort(self, reason: str) -> None:
        with self.cv:
            if self.aborted is None:
                self.aborted = reason
            self.cv.notify_all()

    def _check_abort(self, rank: int) -> None:
        if self.aborted is not None:
            raise CollectiveError(f"threaded group {self.name!r} (rank {rank}) was aborted: {self.aborted}")

    def exchange(self, key: Any, rank: int, value: Any, timeout: float, what: object) -> list:
        """Deposit ``value``; return every rank's value (index: rank) once all have deposited."""
        deadline = time.monotonic() + timeout
        with self.cv:
            self._check_abort(rank)
            slot = self.slots.setdefault(key, [[_MISSING] * self.size, 0, 0])
            slot[0][rank] = value
            slot[1] += 1
            self.cv.notify_all()
            while slot[1] < self.size:
                self._check_abort(rank)
                left = deadline - time.monotonic()
                if left <= 0:
                    missing = [r for r, v in enumerate(slot[0]) if v is _MISSING]
                    raise CollectiveTimeout(
                        f"{what} in threaded group {self.name!r} timed out after {timeout:g} s on rank {rank}: "
                        f"ranks {missing} did not arrive"
                    )
                self.cv.wait(min(left, 1.0))
            values = slot[0]
            slot[2] += 1
            if slot[2] == self.size:
                del self.slots[key]
            return values

    def post(self, src: int, dst: int, tag: int, array: Any) -> None:
        with self.cv:
            self._check_abort(src)
            self.mail[(src, dst)].append((tag, array))
            self.cv.notify_all()

    def take(self, src: int, dst: int, tag: int, timeout: float) -> Any:
        deadline = time.monotonic() + timeout
        box = self.mail[(src, dst)]
        with self.cv:
            while not box:
                self._check_abort(dst)
                left = deadline - time.monotonic()
                if left <= 0:
                    raise CollectiveTimeout(
                        f"recv in threaded group {self.name!r}: rank {dst} waited {timeout:g} s for a message "
                        f"(tag {tag}) from rank {src}, which never sent it"
                    )
                self.cv.wait(min(left, 1.0))
            got_tag, array = box.popleft()
        if got_tag != tag:
            raise CollectiveError(
                f"recv in threaded group {self.name!r}: rank {dst} expected tag {tag} from rank {src} but the next "
                f"message from it has tag {got_tag}; sends and receives between two ranks must match in order"
            )
        return array


_MISSING = object()


def current_worlds() -> list[str]:
    """Ids of the threaded worlds alive in this process (for tests)."""
    with _WORLDS_LOCK:
        return list(_WORLDS)


def abort_world(wid: str, reason: str) -> None:
    """Make every rank of the threaded world ``wid`` that waits, or will wait, raise ``reason``."""
    with _WORLDS_LOCK:
        world = _WORLDS.get(wid)
    if world is not None:
        world.abort(reason)


def _offsets(counts: Sequence[int]) -> list[int]:
    return [0] + list(np.cumsum(counts, dtype=np.int64))


class ThreadedProcessGroup(ProcessGroup):
    """A rank of an in-process group of threads (see the module docstring)."""

    backend_name = "threaded"

    def __init__(self, store: Any, rank: int, size: int, timeout: float, name: str,
                 global_ranks: Sequence[int] | None = None) -> None:
        wid = store.compare_set("threaded_world_id", "", uuid.uuid4().hex).decode()
        with _WORLDS_LOCK:
            world = _WORLDS.get(wid)
            created = world is None
            if world is None:
                world = _WORLDS[wid] = _World(wid, size, name)
            world.members += 1
        run = getattr(_CURRENT_RUN, "run", None)
        if created and run is not None:
            run.add(world)
        if world.size != size:
            raise ValueError(f"threaded group {name!r}: rank {rank} says the size is {size}, another rank said {world.size}")
        self.world = world
        super().__init__(rank, size, name, timeout, global_ranks)

    # -- helpers --------------------------------------------------------------------------
    def _all(self, desc: CollectiveDesc, value: Any, phase: str = "data") -> list:
        return self.world.exchange((phase, desc.seq), self._rank, value, self.timeout, desc)

    def _exchange_descs(self, desc: CollectiveDesc) -> list[CollectiveDesc]:
        return self._all(desc, desc, "desc")

    @staticmethod
    def _reduce_list(parts: list, op: ReduceOp, n: int) -> Any:
        acc = np.array(parts[0], copy=True)
        for p in parts[1:]:
            reduce_into(op, acc, p)
        if op is ReduceOp.AVG:
            finish_avg(acc, n)
        return acc

    # -- collectives -----------------------------------------------------------------------
    def _allreduce(self, arrays: list, op: ReduceOp, desc: CollectiveDesc) -> None:
        contrib = self._all(desc, [a.copy() for a in arrays])
        for i, a in enumerate(arrays):
            a[...] = self._reduce_list([c[i] for c in contrib], op, self._size)

    def _broadcast(self, arrays: list, root: int, desc: CollectiveDesc) -> None:
        contrib = self._all(desc, [a.copy() for a in arrays] if self._rank == root else None)
        if self._rank != root:
            for a, src in zip(arrays, contrib[root]):
                a[...] = src

    def _reduce(self, arrays: list, root: int, op: ReduceOp, desc: CollectiveDesc) -> None:
        contrib = self._all(desc, [a.copy() for a in arrays])
        if self._rank == root:
            for i, a in enumerate(arrays):
                a[...] = self._reduce_list([c[i] for c in contrib], op, self._size)

    def _allgather(self, output: Any, input: Any, counts: list[int], desc: CollectiveDesc) -> None:
        contrib = self._all(desc, input.copy())
        off = _offsets(counts)
        for r, c in enumerate(contrib):
            output[off[r]:off[r + 1]] = c

    def _gather(self, input: Any, outputs: list | None, root: int, desc: CollectiveDesc) -> None:
        contrib = self._all(desc, input.copy())
        if self._rank == root:
            for o, c in zip(outputs, contrib):
                o[...] = c.reshape(o.shape)

    def _scatter(self, output: Any, inputs: list | None, root: int, desc: CollectiveDesc) -> None:
        contrib = self._all(desc, [x.copy() for x in inputs] if self._rank == root else None)
        output[...] = contrib[root][self._rank].reshape(output.shape)

    def _reduce_scatter(self, output: Any, input: Any, op: ReduceOp, counts: list[int], desc: CollectiveDesc) -> None:
        contrib = self._all(desc, input.copy())
        off = _offsets(counts)
        lo, hi = off[self._rank], off[self._rank + 1]
        output[...] = self._reduce_list([c[lo:hi] for c in contrib], op, self._size)

    def _alltoall(self, output: Any, input: Any, out_counts: list[int], in_counts: list[int], desc: CollectiveDesc) -> None:
        contrib = self._all(desc, (input.copy(), list(in_counts)))
        out_off = _offsets(out_counts)
        for j, (data, their_in) in enumerate(contrib):
            src_off = _offsets(their_in)
            output[out_off[j]:out_off[j + 1]] = data[src_off[self._rank]:src_off[self._rank + 1]]

    def _barrier(self, desc: CollectiveDesc) -> None:
        self._all(desc, None)

    def _p2p(self, items: list) -> None:
        for (kind, array, peer, tag, _post), _ in items:
            if kind == "send":
                self.world.post(self._rank, peer, tag, array.copy())
        for i, ((kind, array, peer, tag, _post), _work) in enumerate(items):
            if kind == "recv":
                src = self.world.take(peer, self._rank, tag, self.timeout)
                if src.size != array.size or src.dtype != array.dtype:
                    raise CollectiveError(
                        f"recv in threaded group {self.name!r}: rank {self._rank} posted a receive of {array.size} "
                        f"{array.dtype} elements but rank {peer} sent {src.size} {src.dtype} elements"
                    )
                array[...] = src.reshape(array.shape)
            if i > 0:
                p2p_done(items[i])

    def _on_broken(self, exc: BaseException) -> None:
        self.world.abort(f"rank {self._rank} failed: {exc}")

    def _close(self) -> None:
        with _WORLDS_LOCK:
            self.world.members -= 1
            if self.world.members <= 0:
                _WORLDS.pop(self.world.wid, None)


def _factory(store: Any, rank: int, size: int, timeout: float, name: str, global_ranks: Sequence[int] | None = None
             ) -> ThreadedProcessGroup:
    return ThreadedProcessGroup(store, rank, size, timeout, name, global_ranks)


register_backend("threaded", _factory)
