"""``ProcessGroup``: the backend interface, on raw arrays, and the backend registry.

Note on the split of work: the tensor-level API (:mod:`.functional`) validates tensors,
makes contiguous (and, for float16/bfloat16 reductions, float32) copies and converts
global ranks to group ranks. A backend sees only contiguous NumPy (or CuPy) arrays and
group ranks. This base class numbers every collective (one sequence per group, assigned
in the caller's thread, so the order of submission is the order of execution), builds
its :class:`CollectiveDesc`, and queues it on the group's :class:`CommWorker`; the
backend implements the ``_``-prefixed primitives that run there.

Note on metrics: :func:`set_collective_observer` installs a callback (the worker's metrics
exporter, when ``AXONML_METRICS_PORT`` is set) that receives the op name, the bytes (by
nccl-tests' size convention, :func:`collective_bytes`), the run time and the group size of
every collective when it completes. With no observer the cost on the hot path is one
attribute check (``self._observer is not None``). A backend with a path of its own that
bypasses :meth:`ProcessGroup._submit` times it and calls :meth:`ProcessGroup._observe`
under the same check.

Note on failure: the first error inside a collective (a dead peer, a timeout, a
divergence) breaks the group: that collective's ``Work`` carries the error and every
later collective fails at once with a :class:`CollectiveError` that repeats the cause.
A broken group must be destroyed; there is no silent recovery.
"""

from __future__ import annotations

import abc
import itertools
import logging
import math
import os
import re
import time
from typing import Any, Callable, Sequence

from .._env import FLAGS, get_flag
from ..errors import CollectiveError
from .comm_worker import CommWorker
from .types import CollectiveDesc, ReduceOp, Work, check_alltoall, check_counts, check_descs, check_rooted

__all__ = [
    "ProcessGroup",
    "CommWorker",
    "register_backend",
    "get_backend_factory",
    "registered_backends",
    "check_enabled",
    "env_flag",
    "env_value",
    "p2p_done",
    "p2p_result",
    "set_collective_observer",
    "collective_bytes",
]

logger = logging.getLogger(__name__)

# optional {"op": public name, "dtype": user dtype, "shapes": user shapes} for messages, and
# "sync": True when the caller waits at once (the collective may then run in its thread)
Meta = dict | None
_NO_META: dict = {}
_OP_EXTRA = {op: (("op", op.name),) for op in ReduceOp}  # built once, not per call
Post = Callable[[], Any] | None  # runs on the comm thread after the data moved; its value is Work.result()


def env_value(name: str, default: str = "") -> str:
    """The stripped value of the ``AXONML_*`` flag ``name`` (``default`` when unset or empty).

    Flags not (yet) in the table of ``axonml/_env.py`` are read from the environment.
    """
    value = get_flag(name) if name in FLAGS else os.environ.get(name, default)
    return value.strip() or default


def env_flag(name: str, default: str) -> str:
    """The lower-cased value of the ``AXONML_*`` flag ``name`` (``default`` when unset)."""
    return env_value(name, default).lower()


def check_enabled() -> bool:
    """Whether collectives compare (seq, op, shapes, dtype) across ranks (AXONML_CHECK_COLLECTIVES, default on)."""
    return env_flag("AXONML_CHECK_COLLECTIVES", "1") not in ("0", "false", "no", "off")


_DTYPE_NAMES: dict = {}


def _dtype_name(dtype: Any) -> str:
    """``dtype.name``, cached (NumPy computes it in Python on every access)."""
    name = _DTYPE_NAMES.get(dtype)
    if name is None:
        name = _DTYPE_NAMES[dtype] = dtype.name
    return name


# -- the metrics observer ---------------------------------------------------------------------

_ITEMSIZES: dict[str, int] = {"bool": 1}


def set_collective_observer(fn: Callable[[str, int, float, int], None] | None) -> Callable | None:
    """Call ``fn(op, nbytes, seconds, group_size)`` after every collective that completes; None stops it.

    ``init_process_group`` installs the worker's metrics exporter here when
    ``AXONML_METRICS_PORT`` is set. ``fn`` runs on the thread that ran the collective; it
    must be quick and must not raise (an error is logged and dropped). Returns the
    previous observer. Example::

        calls = []
        set_collective_observer(lambda op, nbytes, s, n: calls.append((op, nbytes)))
    """
    if fn is not None and not callable(fn):
        raise TypeError(f"set_collective_observer: expected a callable or None, got {type(fn).__name__}")
    previous = ProcessGroup._observer
    ProcessGroup._observer = staticmethod(fn) if fn is not None else None  # a plain function, never bound
    return previous


def _itemsize(dtype: str) -> int:
    """Bytes per element of the dtype named ``dtype`` (``float32`` -> 4, ``bfloat16`` -> 2)."""
    size = _ITEMSIZES.get(dtype)
    if size is None:
        bits = re.search(r"(\d+)", dtype)
        size = _ITEMSIZES[dtype] = max(1, int(bits.group(1)) // 8) if bits else 1
    return size


def collective_bytes(desc: CollectiveDesc, group_size: int) -> int:
    """The bytes of a collective by nccl-tests' convention: the buffer of an all-reduce,
    broadcast or reduce; the whole output of an all-gather; the whole input of a
    reduce-scatter or all-to-all; every rank's part of a gather or scatter."""
    counts = next((v for k, v in desc.extra if k == "counts"), None) if "gather" in desc.op else None
    if counts is not None:
        elements = sum(counts)
    else:
        elements = sum(math.prod(s) for s in desc.shapes)
        if desc.op in ("gather", "scatter"):
            elements *= group_size
    return elements * _itemsize(desc.dtype)


def _observed(pg: ProcessGroup, job: Callable[[Any], Any], op: str, nbytes: Callable[[], int]) -> Callable[[Any], Any]:
    """``job`` timed; the observer sees it when it succeeds (failures are errors, not samples)."""

    def timed(j: Any) -> Any:
        t0 = time.perf_counter()
        result = job(j)
        pg._observe(op, nbytes(), time.perf_counter() - t0)
        return result

    return timed


# -- the backend registry ------------------------------------------------------------------

_BACKENDS: dict[str, Callable[..., "ProcessGroup"]] = {}


def register_backend(name: str, factory: Callable[..., "ProcessGroup"]) -> None:
    """Make ``init_process_group(backend=name)`` and ``new_group(backend=name)`` available.

    ``factory(store=, rank=, size=, timeout=, name=, global_ranks=)`` returns a
    :class:`ProcessGroup`; ``store`` is already prefixed for the group.

    Raises:
        ValueError: ``name`` is already registered (registrations are never replaced).
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"register_backend: the name must be a non-empty str, got {name!r}")
    if name in _BACKENDS:
        raise ValueError(f"register_backend: a backend named {name!r} is already registered ({_BACKENDS[name]!r})")
    _BACKENDS[name] = factory


def registered_backends() -> list[str]:
    """The names of the registered backends, sorted."""
    return sorted(_BACKENDS)


def get_backend_factory(name: str) -> Callable[..., "ProcessGroup"]:
    """The factory registered under ``name``.

    Raises:
        ValueError: no such backend; the message lists the registered ones.
    """
    if name not in _BACKENDS:
        raise ValueError(
            f"unknown collectives backend {name!r}; registered backends: {registered_backends()} "
            "(a backend that needs an optional package registers itself when its module is imported)"
        )
    return _BACKENDS[name]


# -- the abstract process group ---------------------------------------------------------------


class ProcessGroup(abc.ABC):
    """A set of ranks that run collectives together; backends subclass it.

    Args:
        rank: this process's rank in the group (0 .. size-1).
        size: the number of ranks.
        name: the group's name (unique per job, the same on every member).
        timeout: seconds any collective may take before it fails.
        global_ranks: the world rank of each group rank (default: ``range(size)``).

    Raw-array methods return a :class:`Work`; outputs are written in place. Roots and
    peers are *group* ranks here (the tensor API converts from world ranks).
    """

    backend_name = "abstract"
    devices: tuple[str, ...] = ("cpu",)
    #: False: the tensor layer upcasts float16/bfloat16 to float32 for reductions.
    native_low_precision = False
    #: ``observer(op, nbytes, seconds, group_size)`` of every group, or None (set by :func:`set_collective_observer`).
    _observer: Callable[[str, int, float, int], None] | None = None

    def __init__(self, rank: int, size: int, name: str, timeout: float, global_ranks: Sequence[int] | None = None) -> None:
        if not 0 <= rank < size:
            raise ValueError(f"ProcessGroup {name!r}: rank {rank} outside [0, {size})")
        self._rank, self._size, self.name, self.timeout = rank, size, name, float(timeout)
        self.global_ranks = list(global_ranks) if global_ranks is not None else list(range(size))
        self._seq = itertools.count(1)  # the sequence numbers of this group's collectives
        self._error: BaseException | None = None
        self._closed = False
        self.check = check_enabled()
        self._worker = CommWorker(f"{name}-r{rank}", self._set_broken)

    # -- identity -----------------------------------------------------------------------
    def rank(self) -> int:
        """This process's rank in the group."""
        return self._rank

    def size(self) -> int:
        """The number of ranks in the group."""
        return self._size

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, rank={self._rank}, size={self._size})"

    def _observe(self, op: str, nbytes: int, seconds: float) -> None:
        """Report a completed collective to the observer (call only when ``self._observer is not None``)."""
        fn = self._observer
        if fn is not None:
            try:
                fn(op, nbytes, seconds, self._size)
            except Exception as exc:  # noqa: BLE001  (metrics never fail a collective)
                logger.warning("rank=%d collective observer %r failed on %s: %s", self._rank, fn, op, exc)

    # -- state ------------------------------------------------------------------------------
    def _set_broken(self, exc: BaseException) -> None:
        if self._error is None:
            self._error = exc
            logger.error("rank=%d group %r broken: %s", self._rank, self.name, exc)
            self._on_broken(exc)

    def _on_broken(self, exc: BaseException) -> None:  # noqa: B027  (an optional hook)
        """Backend hook: tell the peers (e.g. an abort message) after the first failure."""

    def _raise_if_broken(self, what: str) -> None:
        if self._closed:
            raise CollectiveError(f"{what}: process group {self.name!r} was destroyed")
        if self._error is not None:
            raise CollectiveError(
                f"{what}: process group {self.name!r} (rank {self._rank}) is unusable after an earlier "
                f"failure: {self._error}. Destroy it and start a new one."
            ) from self._error

    # -- submission -------------------------------------------------------------------------
    def _submit(self, desc: CollectiveDesc, run: Callable[[CollectiveDesc], Any], post: Post) -> Work:
        work = Work(desc, self.timeout)  # described lazily: str(desc) only in messages

        def job(_: Any) -> Any:
            if self._error is not None or self._closed:
                self._raise_if_broken(desc.op)
            if self.check and self._size > 1 and not desc.fused:
                self._check(desc)
            result = run(desc)
            # the caller's copy-back (non-contiguous tensors, float32 accumulators): it runs
            # here, before the Work completes, so that the outputs are final when wait() returns
            return post() if post is not None else result

        if self._observer is not None:  # metrics on: time it (off, this check is the only cost)
            job = _observed(self, job, desc.op, lambda: collective_bytes(desc, self._size))
        if desc.sync:
            return self._worker.run_inline(job, work)
        return self._worker.submit(job, work)

    def _desc(self, op: str, arrays: Sequence[Any], meta: dict | None, extra: tuple = (), **kw: Any) -> CollectiveDesc:
        if meta is None:
            meta = _NO_META
        seq = next(self._seq)  # atomic: one C call under the GIL
        shapes = meta.get("shapes") or tuple(a.shape for a in arrays)
        dtype = meta.get("dtype") or (_dtype_name(arrays[0].dtype) if arrays else "")
        if kw:
            return CollectiveDesc(meta.get("op", op), self.name, seq, shapes, dtype, extra, sync=bool(meta.get("sync")),
                                  **kw)
        return CollectiveDesc(meta.get("op", op), self.name, seq, shapes, dtype, extra, False, None, None,
                              meta.get("sync", False))

    def _fuse_check(self, op: str, arrays: Sequence[Any]) -> bool:
        """Backend hook: True when the backend checks divergence inside this collective's data
        exchange (the base class then skips its separate check round). It must depend only on
        what the check compares (op, shapes, dtype), so that every rank decides alike."""
        return False

    # -- collectives on raw arrays (group ranks) ----------------------------------------------
    def allreduce(self, arrays: Sequence[Any], op: ReduceOp = ReduceOp.SUM, meta: Meta = None, post: Post = None) -> Work:
        """Reduce every array across ranks, in place (a list is one coalesced collective)."""
        desc = self._desc("all_reduce", arrays, meta, _OP_EXTRA.get(op) or (("op", op.name),),
                          fused=self._fuse_check("all_reduce", arrays))
        return self._submit(desc, lambda d: self._allreduce(list(arrays), op, d), post)

    def broadcast(self, arrays: Sequence[Any], root: int, meta: Meta = None, post: Post = None) -> Work:
        """Copy ``root``'s arrays into every rank's arrays."""
        desc = self._desc("broadcast", arrays, meta, (("root", root),), fused=self._fuse_check("broadcast", arrays))
        return self._submit(desc, lambda d: self._broadcast(list(arrays), root, d), post)

    def reduce(self, arrays: Sequence[Any], root: int, op: ReduceOp = ReduceOp.SUM, meta: Meta = None, post: Post = None) -> Work:
        """Reduce into ``root``'s arrays; the other ranks' arrays are unchanged."""
        desc = self._desc("reduce", arrays, meta, (("root", root), ("op", op.name)), fused=self._fuse_check("reduce", arrays))
        return self._submit(desc, lambda d: self._reduce(list(arrays), root, op, d), post)

    def allgather(self, output: Any, input: Any, counts: Sequence[int] | None = None, meta: Meta = None,
                  post: Post = None) -> Work:
        """Concatenate every rank's flat ``input`` into every rank's flat ``output``.

        ``counts[i]`` is rank i's element count (default: all equal to ``input.size``).
        """
        counts = list(counts) if counts is not None else [input.size] * self._size
        desc = self._desc("all_gather", [input], meta, (("counts", tuple(counts)),), local=input.size,
                          shapes_may_differ=True, cross_check=check_counts("input", counts),
                          fused=self._fuse_check("all_gather", [input]))
        return self._submit(desc, lambda d: self._allgather(output.reshape(-1), input.reshape(-1), counts, d), post)

    def gather(self, input: Any, outputs: Sequence[Any] | None, root: int, meta: Meta = None, post: Post = None) -> Work:
        """Collect every rank's ``input`` into ``root``'s ``outputs[i]``."""
        sizes = [o.size for o in outputs] if outputs is not None else None
        desc = self._desc("gather", [input], meta, (("root", root),), shapes_may_differ=True,
                          local=(input.size, sizes), cross_check=check_rooted(root, "input", "gather_list"))
        return self._submit(desc, lambda d: self._gather(input, list(outputs) if outputs is not None else None, root, d), post)

    def scatter(self, output: Any, inputs: Sequence[Any] | None, root: int, meta: Meta = None, post: Post = None) -> Work:
        """Send ``root``'s ``inputs[i]`` into rank i's ``output``."""
        sizes = [x.size for x in inputs] if inputs is not None else None
        desc = self._desc("scatter", [output], meta, (("root", root),), shapes_may_differ=True,
                          local=(output.size, sizes), cross_check=check_rooted(root, "output", "scatter_list"))
        return self._submit(desc, lambda d: self._scatter(output, list(inputs) if inputs is not None else None, root, d), post)

    def reduce_scatter(self, output: Any, input: Any, op: ReduceOp = ReduceOp.SUM, counts: Sequence[int] | None = None,
                       meta: Meta = None, post: Post = None) -> Work:
        """Reduce the flat ``input`` across ranks; rank i keeps segment i (``counts[i]`` elements)."""
        counts = list(counts) if counts is not None else [output.size] * self._size
        desc = self._desc("reduce_scatter", [input], meta, (("op", op.name), ("counts", tuple(counts))),
                          fused=self._fuse_check("reduce_scatter", [input]))
        return self._submit(desc, lambda d: self._reduce_scatter(output.reshape(-1), input.reshape(-1), op, counts, d), post)

    def alltoall(self, output: Any, input: Any, out_counts: Sequence[int], in_counts: Sequence[int],
                 meta: Meta = None, post: Post = None) -> Work:
        """Send ``in_counts[j]`` elements of the flat ``input`` to rank j; receive ``out_counts[j]`` from j."""
        out_counts, in_counts = list(out_counts), list(in_counts)
        desc = self._desc("all_to_all", [input], meta, shapes_may_differ=True, local=(tuple(in_counts), tuple(out_counts)),
                          cross_check=check_alltoall)
        return self._submit(desc, lambda d: self._alltoall(output.reshape(-1), input.reshape(-1), out_counts, in_counts, d), post)

    # the names of the design notes: all-gather into a flat output, reduce-scatter into one
    def allgather_into(self, output: Any, input: Any, counts: Sequence[int] | None = None, meta: Meta = None,
                       post: Post = None) -> Work:
        """Same as :meth:`allgather` (the output is flat)."""
        return self.allgather(output, input, counts, meta, post)

    def reduce_scatter_into(self, output: Any, input: Any, op: ReduceOp = ReduceOp.SUM, counts: Sequence[int] | None = None,
                            meta: Meta = None, post: Post = None) -> Work:
        """Same as :meth:`reduce_scatter`."""
        return self.reduce_scatter(output, input, op, counts, meta, post)

    def barrier(self, meta: Meta = None, post: Post = None) -> Work:
        """Complete once every rank has entered the barrier."""
        desc = self._desc("barrier", [], meta, fused=self._fuse_check("barrier", []))
        return self._submit(desc, lambda d: self._barrier(d), post)

    def send(self, array: Any, dst: int, tag: int = 0) -> Work:
        """Send ``array`` to group rank ``dst`` (matched by a ``recv`` there, in order)."""
        return self.batch_p2p([("send", array, dst, tag, None)])[0]

    def recv(self, array: Any, src: int, tag: int = 0, post: Post = None) -> Work:
        """Receive into ``array`` from group rank ``src``; the Work's result is ``src``."""
        return self.batch_p2p([("recv", array, src, tag, post)])[0]

    def batch_p2p(self, ops: Sequence[tuple[str, Any, int, int, Post]], sync: bool = False) -> list[Work]:
        """Run ``(kind, array, peer, tag, post)`` sends and receives concurrently; one Work each.

        A Work's result is ``post()`` when given, else the peer (receives) or None (sends).
        """
        for kind, _a, peer, _t, _p in ops:
            if kind not in ("send", "recv"):
                raise ValueError(f"batch_p2p: kind must be 'send' or 'recv', got {kind!r}")
            if not 0 <= peer < self._size or peer == self._rank:
                raise ValueError(f"{kind}: peer {peer} must be another rank of group {self.name!r} (size {self._size}, "
                                 f"this rank {self._rank})")
        works = [Work(f"{k}(peer={p}, tag={t}, shape={tuple(a.shape)})", self.timeout) for k, a, p, t, _ in ops]
        items = list(zip(ops, works))

        def job(j: Any) -> Any:
            try:
                self._raise_if_broken("send/recv")
                self._p2p(j.payload)
            except BaseException as exc:
                for _op, w in j.payload[1:]:
                    w._complete(exc=exc)
                raise
            return p2p_result(j.payload[0][0])

        if self._observer is not None:
            name = ops[0][0] if len(ops) == 1 else "batch_isend_irecv"
            job = _observed(self, job, name, lambda: sum(int(op[1].nbytes) for op in ops))
        # the first Work rides on the job; the backend completes the others (p2p_done)
        submit = self._worker.run_inline if sync else self._worker.submit
        return [submit(job, works[0], items)] + works[1:]

    # -- what backends implement (run on the comm thread) -----------------------------------
    def _check(self, desc: CollectiveDesc) -> None:
        """Raise the same CollectiveError on every rank when the ranks' descriptions differ."""
        check_descs(self._exchange_descs(desc), desc)

    @abc.abstractmethod
    def _exchange_descs(self, desc: CollectiveDesc) -> list[CollectiveDesc]:
        """Every rank's description of this collective (index: group rank)."""

    @abc.abstractmethod
    def _allreduce(self, arrays: list, op: ReduceOp, desc: CollectiveDesc) -> Any: ...

    @abc.abstractmethod
    def _broadcast(self, arrays: list, root: int, desc: CollectiveDesc) -> Any: ...

    @abc.abstractmethod
    def _reduce(self, arrays: list, root: int, op: ReduceOp, desc: CollectiveDesc) -> Any: ...

    @abc.abstractmethod
    def _allgather(self, output: Any, input: Any, counts: list[int], desc: CollectiveDesc) -> Any: ...

    @abc.abstractmethod
    def _gather(self, input: Any, outputs: list | None, root: int, desc: CollectiveDesc) -> Any: ...

    @abc.abstractmethod
    def _scatter(self, output: Any, inputs: list | None, root: int, desc: CollectiveDesc) -> Any: ...

    @abc.abstractmethod
    def _reduce_scatter(self, output: Any, input: Any, op: ReduceOp, counts: list[int], desc: CollectiveDesc) -> Any: ...

    @abc.abstractmethod
    def _alltoall(self, output: Any, input: Any, out_counts: list[int], in_counts: list[int], desc: CollectiveDesc) -> Any: ...

    @abc.abstractmethod
    def _barrier(self, desc: CollectiveDesc) -> Any: ...

    @abc.abstractmethod
    def _p2p(self, items: list) -> None:
        """Run ``[((kind, array, peer, tag, post), work), ...]`` concurrently.

        Call :func:`p2p_done` on every item but the first as it finishes (the worker
        completes the first when this returns).
        """

    def _close(self) -> None:  # noqa: B027  (an optional hook)
        """Backend hook: release sockets and shared memory."""

    # -- life cycle ----------------------------------------------------------------------------
    def shutdown(self) -> None:
        """Finish queued collectives, stop the communication thread and release resources."""
        if self._closed:
            return
        self._worker.stop(timeout=self.timeout if self._error is None else 1.0)
        self._closed = True
        self._close()


def p2p_result(op: tuple) -> Any:
    """The result of a finished p2p op: ``post()``, else the peer (recv) or None (send)."""
    kind, _array, peer, _tag, post = op
    if post is not None:
        return post()
    return peer if kind == "recv" else None


def p2p_done(item: tuple) -> None:
    """Complete the Work of a finished p2p item ``(op, work)`` (a failing post fails it)."""
    op, work = item
    try:
        result = p2p_result(op)
    except BaseException as exc:  # noqa: BLE001  (delivered to the waiter)
        work._complete(exc=exc)
    else:
        work._complete(result)
