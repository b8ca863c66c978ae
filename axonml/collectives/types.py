"""The small shared vocabulary of the collectives: ``ReduceOp``, ``Work``, ``CollectiveDesc``.

Note on ``Work``: a ``Work`` is completed exactly once, by the backend's communication
thread, with a result (the output tensors, for :meth:`Work.result`) or an exception.
Completion callbacks (``_add_done_callback``) run on that thread *before* waiters wake,
so that the tensor layer can copy results back into non-contiguous tensors, cast
float32 accumulators back to float16, and bump version counters: when ``wait()``
returns, the user's tensors hold the result.

Note on divergence checks: every collective carries a :class:`CollectiveDesc` with a
per-group sequence number. Backends gather every rank's description before moving data
and call :func:`check_descs`, which raises the same :class:`CollectiveError` on every
rank when the ranks disagree on the operation, the shapes, the dtype, the root or the
reduce op, naming what each rank called.
"""

from __future__ import annotations

import enum
import threading
import time
from concurrent.futures import Future
from typing import Any, Callable, Sequence

import numpy as np

from ..errors import CollectiveError, CollectiveTimeout, DTypeError
from ..runtime.devices import get_array_module

__all__ = [
    "ReduceOp",
    "Work",
    "CompletedWork",
    "CollectiveDesc",
    "check_descs",
    "check_counts",
    "check_rooted",
    "check_alltoall",
    "check_reduce_dtype",
    "reduce_into",
    "reduce_rows",
    "finish_avg",
    "to_seconds",
]


class ReduceOp(enum.Enum):
    """How a reducing collective combines the ranks' values (as ``torch.distributed.ReduceOp``).

    ``AVG`` needs a floating dtype; ``BAND``/``BOR``/``BXOR`` need an integer or bool dtype.
    float16/bfloat16 tensors are reduced with float32 accumulation.
    """

    SUM = "sum"
    AVG = "avg"
    PRODUCT = "product"
    MIN = "min"
    MAX = "max"
    BAND = "band"
    BOR = "bor"
    BXOR = "bxor"

    def __repr__(self) -> str:
        return f"ReduceOp.{self.name}"


_BINARY = {
    ReduceOp.SUM: np.add,
    ReduceOp.AVG: np.add,  # divided by the group size once, at the end
    ReduceOp.PRODUCT: np.multiply,
    ReduceOp.MIN: np.minimum,
    ReduceOp.MAX: np.maximum,
    ReduceOp.BAND: np.bitwise_and,
    ReduceOp.BOR: np.bitwise_or,
    ReduceOp.BXOR: np.bitwise_xor,
}


_REDUCIBLE: set = set()  # (op, dtype) pairs already accepted (the check runs on every collective)


def check_reduce_dtype(op: ReduceOp, dtype: np.dtype, where: str) -> None:
    """Raise DTypeError when ``op`` cannot reduce arrays of ``dtype``."""
    try:
        if (op, dtype) in _REDUCIBLE:
            return
    except TypeError:  # an unhashable op: reported below
        pass
    _check_reduce_dtype(op, dtype, where)
    if len(_REDUCIBLE) < 256:
        _REDUCIBLE.add((op, dtype))


def _check_reduce_dtype(op: ReduceOp, dtype: np.dtype, where: str) -> None:
    if not isinstance(op, ReduceOp):
        raise TypeError(f"{where}: op must be a ReduceOp (e.g. ReduceOp.SUM), got {op!r}")
    kind = np.dtype(dtype).kind
    floating = kind == "f" or np.dtype(dtype).name == "bfloat16"
    if op in (ReduceOp.BAND, ReduceOp.BOR, ReduceOp.BXOR) and floating:
        raise DTypeError(f"{where}: {op!r} needs an integer or bool tensor, got {np.dtype(dtype).name}")
    if op is ReduceOp.AVG and not floating:
        raise DTypeError(
            f"{where}: ReduceOp.AVG needs a floating tensor, got {np.dtype(dtype).name}; "
            "use ReduceOp.SUM and divide by the group size"
        )


def reduce_into(op: ReduceOp, acc: Any, x: Any) -> None:
    """``acc = op(acc, x)`` in place (arrays of one dtype and shape; NumPy or CuPy ufuncs)."""
    fn = _BINARY[op]
    if not isinstance(acc, np.ndarray):  # CuPy has the same ufunc names
        fn = getattr(get_array_module(acc), fn.__name__)
    fn(acc, x, out=acc)


def reduce_rows(op: ReduceOp, rows: Sequence[Any], out: Any) -> None:
    """``out = rows[0] op rows[1] op ...`` in rank order, then divided by ``len(rows)`` for AVG.

    The same order (and so the same bits) as :func:`reduce_into` over a copy of ``rows[0]``;
    ``out`` must not alias any row but the first.
    """
    fn = _BINARY[op]
    if not isinstance(out, np.ndarray):
        fn = getattr(get_array_module(out), fn.__name__)
    if len(rows) == 1:
        out[...] = rows[0]
    else:
        fn(rows[0], rows[1], out=out)
        for row in rows[2:]:
            fn(out, row, out=out)
    if op is ReduceOp.AVG:
        finish_avg(out, len(rows))


def finish_avg(acc: Any, n: int) -> None:
    """Divide a SUM accumulator by the group size, in place (AVG's last step)."""
    acc /= n


def to_seconds(timeout: Any) -> float:
    """A ``timedelta`` or a number of seconds, as a positive float."""
    seconds = timeout.total_seconds() if hasattr(timeout, "total_seconds") else float(timeout)
    if not seconds > 0:
        raise ValueError(f"timeout must be positive, got {timeout!r}")
    return seconds


class CollectiveDesc:
    """What one rank asked for: enough to detect divergence and to write error messages.

    ``shapes`` and ``dtype`` must agree across ranks unless ``shapes_may_differ`` (gather,
    scatter, all_to_all with uneven splits); ``extra`` holds op-specific arguments that
    must agree (root, reduce op); ``local`` holds per-rank data checked by ``cross_check``.
    ``sync``: the caller waits at once; ``fused``: the backend checks divergence inside the
    data exchange (the digest rides on the payload), so no separate check round runs.
    Neither is sent to peers. A plain ``__slots__`` class (not a frozen dataclass): one is
    built per collective, and this keeps that cheap; treat it as immutable.
    """

    __slots__ = ("op", "group", "seq", "shapes", "dtype", "extra", "shapes_may_differ", "local", "cross_check", "sync",
                 "fused")

    def __init__(self, op: str, group: str, seq: int, shapes: tuple = (), dtype: str = "", extra: tuple = (),
                 shapes_may_differ: bool = False, local: Any = None,
                 cross_check: Callable[[Sequence["CollectiveDesc"]], str | None] | None = None, sync: bool = False,
                 fused: bool = False) -> None:
        self.op, self.group, self.seq, self.shapes, self.dtype, self.extra = op, group, seq, shapes, dtype, extra
        self.shapes_may_differ, self.local, self.cross_check, self.sync, self.fused = (
            shapes_may_differ, local, cross_check, sync, fused)

    def _fields(self) -> tuple:
        return (self.op, self.group, self.seq, self.shapes, self.dtype, self.extra, self.shapes_may_differ, self.local)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, CollectiveDesc):
            return NotImplemented
        return self._fields() == other._fields()

    def __hash__(self) -> int:
        return hash(self._fields())

    def __repr__(self) -> str:
        return f"CollectiveDesc({self.summary()})"

    def key(self) -> tuple:
        """The part that every rank must agree on."""
        shapes = () if self.shapes_may_differ else self.shapes
        return (self.seq, self.op, shapes, self.dtype, self.extra)

    def static_key(self) -> tuple:
        """:meth:`key` without the sequence number (the same for every call of a training loop)."""
        return (self.op, () if self.shapes_may_differ else self.shapes, self.dtype, self.extra)

    def summary(self) -> str:
        """A one-line description for error messages."""
        shapes = list(self.shapes)
        shown = ", ".join(str(tuple(s)) for s in shapes[:6]) + (f", ... ({len(shapes)} tensors)" if len(shapes) > 6 else "")
        extra = "".join(f", {k}={v}" for k, v in self.extra)
        return f"{self.op}(seq={self.seq}, shapes=[{shown}], dtype={self.dtype}{extra})"

    def __str__(self) -> str:
        return self.summary()

    def to_wire(self) -> tuple:
        """A picklable, comparable form sent to peers (no callables)."""
        return (self.op, self.group, self.seq, tuple(tuple(s) for s in self.shapes), self.dtype, self.extra,
                self.shapes_may_differ, self.local)

    @classmethod
    def from_wire(cls, wire: tuple) -> "CollectiveDesc":
        op, group, seq, shapes, dtype, extra, may_differ, local = wire
        return cls(op, group, seq, shapes, dtype, extra, may_differ, local)


def check_descs(descs: Sequence[CollectiveDesc], mine: CollectiveDesc) -> None:
    """Raise CollectiveError when the ranks' descriptions (index = group rank) disagree.

    Every rank calls this with the same list, so every rank raises the same error.
    """
    keys = [d.key() for d in descs]
    if all(k == keys[0] for k in keys):
        problem = mine.cross_check(descs) if mine.cross_check is not None else None
        if problem is None:
            return
        raise CollectiveError(f"collective mismatch in group '{mine.group}' at {mine.summary()}: {problem}")
    groups: dict[tuple, list[int]] = {}
    for r, k in enumerate(keys):
        groups.setdefault(k, []).append(r)
    lines = []
    for ranks in groups.values():
        lines.append(f"  ranks {ranks} called {descs[ranks[0]].summary()}")
    raise CollectiveError(
        f"collective mismatch in group '{mine.group}': the ranks called different collectives "
        f"(operation, sequence number, shapes, dtype or arguments differ):\n" + "\n".join(lines) +
        "\nEvery rank of a group must issue the same collectives in the same order with matching tensors."
    )


# -- cross-rank checks of per-rank sizes -----------------------------------------------------


def check_counts(what: str, counts: list[int]) -> Callable[[Sequence[CollectiveDesc]], str | None]:
    """A cross-check: rank i's ``local`` (its element count) equals ``counts[i]``.

    ``counts`` is part of the description every rank must agree on, so each rank can also
    check its own part alone: the returned check has ``local_ok(rank, local) -> bool``,
    which backends use to avoid a round of full descriptions (see the tcp backend).
    """
    def check(descs: Sequence[CollectiveDesc]) -> str | None:
        bad = [(r, d.local, counts[r]) for r, d in enumerate(descs) if d.local != counts[r]]
        if bad:
            return "; ".join(f"rank {r} has {got} {what} elements but {want} were expected" for r, got, want in bad)
        return None

    check.local_ok = lambda rank, local: local == counts[rank]  # type: ignore[attr-defined]
    return check


def check_rooted(root: int, mine: str, lst: str) -> Callable[[Sequence[CollectiveDesc]], str | None]:
    """A cross-check: rank i's tensor size equals the size of the root's list entry i."""
    def check(descs: Sequence[CollectiveDesc]) -> str | None:
        sizes = descs[root].local[1]
        bad = [(r, d.local[0], sizes[r]) for r, d in enumerate(descs) if d.local[0] != sizes[r]]
        if bad:
            return "; ".join(f"rank {r}'s {mine} has {got} elements but the root's {lst}[{r}] has {want}" for r, got, want in bad)
        return None

    return check


def check_alltoall(descs: Sequence[CollectiveDesc]) -> str | None:
    """A cross-check: what rank i sends to rank j is what rank j expects from rank i."""
    problems = []
    for i, di in enumerate(descs):
        for j, dj in enumerate(descs):
            sent, expected = di.local[0][j], dj.local[1][i]
            if sent != expected:
                problems.append(f"rank {i} sends {sent} elements to rank {j}, which expects {expected}")
    return "; ".join(problems[:8]) or None


_NO_CALLBACKS: list = []  # shared and never appended to (see Work._add_done_callback)


class _DoneFlag:
    """The part of ``threading.Event`` that ``Work`` uses, with the Event made only when a
    thread actually has to block: a synchronous collective completes before anyone waits,
    so it never pays for a Condition. Guarded by the owning Work's lock."""

    __slots__ = ("_set", "_event", "_lock")

    def __init__(self, lock: Any) -> None:
        self._set = False
        self._event: threading.Event | None = None
        self._lock = lock

    def is_set(self) -> bool:
        return self._set

    def _mark(self) -> threading.Event | None:
        """Set the flag (the caller holds the lock); return the Event to set, if a waiter made one."""
        self._set = True
        return self._event

    def set(self) -> None:
        with self._lock:
            event = self._mark()
        if event is not None:
            event.set()

    def wait(self, timeout: float | None = None) -> bool:
        if self._set:
            return True
        with self._lock:
            if self._set:
                return True
            if self._event is None:
                self._event = threading.Event()
            event = self._event
        return event.wait(timeout)


class Work:
    """A handle on a collective that may still be running (``async_op=True``).

    Example::

        work = all_reduce(t, async_op=True)
        ...  # compute while the all-reduce runs
        work.wait()  # t now holds the sum
    """

    def __init__(self, desc: Any = "", timeout: float | None = None) -> None:
        self._desc = desc
        self._timeout = timeout
        self._lock = threading.Lock()
        self._done = _DoneFlag(self._lock)
        self._exc: BaseException | None = None
        self._result: Any = None
        self._callbacks: list[Callable[["Work"], None]] = _NO_CALLBACKS  # a list is made on the first callback
        self._future: Future | None = None
        self._t_start: float | None = None

    def _started(self) -> None:
        """Called by the communication thread when the collective starts running."""
        self._t_start = time.monotonic()

    # -- completion (backend side) ---------------------------------------------------
    def _add_done_callback(self, fn: Callable[["Work"], None]) -> None:
        """Run ``fn(self)`` on completion, before waiters wake (immediately if done)."""
        with self._lock:
            if not self._done.is_set():
                if self._callbacks is _NO_CALLBACKS:
                    self._callbacks = []
                self._callbacks.append(fn)
                return
        fn(self)

    def _complete(self, result: Any = None, exc: BaseException | None = None) -> None:
        with self._lock:
            if self._done._set:
                return
            callbacks, self._callbacks = self._callbacks, _NO_CALLBACKS
            if not callbacks:  # the common case: done in one step
                self._result, self._exc = result, exc
                event, fut = self._done._mark(), self._future
        if not callbacks:
            if event is not None:
                event.set()
            if fut is not None:
                self._settle(fut)
            return
        self._result, self._exc = result, exc
        for fn in callbacks:
            if self._exc is not None:
                break
            try:
                fn(self)
            except BaseException as e:  # a failing copy-back is this work's error
                self._exc = e
        with self._lock:
            event, fut = self._done._mark(), self._future
        if event is not None:
            event.set()
        if fut is not None:
            self._settle(fut)

    def _settle(self, fut: Future) -> None:
        if self._exc is not None:
            fut.set_exception(self._exc)
        else:
            fut.set_result(self._result)

    # -- user side -----------------------------------------------------------------------
    def is_completed(self) -> bool:
        """True once the collective finished (successfully or not)."""
        return self._done.is_set()

    def is_success(self) -> bool:
        """True once the collective finished without an error."""
        return self._done.is_set() and self._exc is None

    def exception(self) -> BaseException | None:
        """The error of a finished collective, or None (also None while still running)."""
        return self._exc if self._done.is_set() else None

    def wait(self, timeout: Any = None) -> bool:
        """Block until the collective finished; return True.

        Args:
            timeout: seconds or a ``timedelta``. Default: until the backend finishes it,
                which is bounded: a running collective fails after the group's timeout.

        Raises:
            CollectiveTimeout: not finished in time (the collective keeps running).
            CollectiveError: the collective failed (the backend's error is re-raised).
        """
        if timeout is not None:
            limit = to_seconds(timeout)
            if not self._done.wait(limit):
                raise CollectiveTimeout(
                    f"Work.wait: {self._desc or 'collective'} did not finish within {limit:.1f} s; "
                    "a peer may be slow, hung or issuing different collectives"
                )
        else:
            # The backend bounds a running collective by the group timeout; this guard only
            # catches a backend that fails to (it never fires in normal operation).
            while not self._done.wait(0.5):
                t0 = self._t_start
                if self._timeout is not None and t0 is not None and time.monotonic() - t0 > self._timeout + 30.0:
                    raise CollectiveTimeout(
                        f"Work.wait: {self._desc or 'collective'} has run {time.monotonic() - t0:.0f} s, past the "
                        f"group timeout of {self._timeout:.0f} s, and the backend did not end it"
                    )
        if self._exc is not None:
            raise self._exc
        return True

    def result(self) -> Any:
        """Wait, then return the output tensors (a list, as torch's ``Work.result()``)."""
        self.wait()
        return self._result

    def get_future(self) -> Future:
        """A ``concurrent.futures.Future`` settled with :meth:`result`'s value or the error."""
        with self._lock:
            if self._future is None:
                self._future = Future()
                if self._done.is_set():
                    self._settle(self._future)
            return self._future

    def synchronize(self) -> None:
        """Same as :meth:`wait` (CPU backends have no streams)."""
        self.wait()

    def __repr__(self) -> str:
        state = "failed" if self._exc is not None else ("done" if self.is_completed() else "pending")
        return f"Work({self._desc!s}, {state})"


class CompletedWork(Work):
    """A Work that is already done (world of one, empty batches)."""

    def __init__(self, result: Any = None, desc: str = "") -> None:
        super().__init__(desc)
        self._complete(result)
