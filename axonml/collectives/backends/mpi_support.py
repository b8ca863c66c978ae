"""Support for the ``mpi`` backend (:mod:`.mpi`): importing MPI, the launcher check, bounded
waits on MPI requests, and the mapping of NumPy dtypes and reduce ops to MPI's.

Note on importing: importing ``mpi4py.MPI`` initializes MPI, so it happens on first use
(:func:`mpi_module`), never when ``axonml`` is imported.

Note on waiting: MPI calls are nonblocking and :func:`poll` tests their requests until
they complete or a deadline passes. It spins first (lowest latency), then yields the CPU,
then sleeps briefly (a slow peer); MPI progresses only inside MPI calls, so the pauses
stay short. When this host runs more ranks than this process may use cores
(``MPI_LOCALNRANKS`` > ``os.sched_getaffinity``), spinning only steals the CPU from the
peer being waited for (a 4 KiB all-reduce of 4 ranks on 2 cores took 2 ms instead of
50 us): such jobs yield after every test from the start (MPICH progresses inside
``Test``). While spinning, the clock is read every few tests only (:data:`_CLOCK_EVERY`).

Note on threads: with ``MPI_THREAD_MULTIPLE`` (mpi4py's default request, provided by
MPICH and Open MPI) any thread may call MPI at any time. With ``MPI_THREAD_SERIALIZED``,
:data:`LOCK` becomes a process-wide lock held around every MPI call (every call is a
short, nonblocking one, except communicator creation). Lower levels are refused.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import shutil
import sys
import threading
import time
import zlib
from typing import Any, Mapping, Sequence

import numpy as np

from ...errors import CollectiveError, CollectiveTimeout, DTypeError
from ..types import ReduceOp, check_reduce_dtype, finish_avg

__all__ = [
    "SIZE_VARS", "LOCAL_VARS", "HANDSHAKE_MAX", "LOCK", "mpi_module", "launcher_world_size", "check_launch",
    "oversubscribed", "Backoff", "poll", "dup", "handshake", "group_tag", "flat", "spec", "reduction", "to_work",
    "finish_reduction",
]

#: Variables in which launchers announce the world size (hydra/PMI, Open MPI, MVAPICH).
SIZE_VARS = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")
#: Variables that announce the ranks on this host: the world has at least that many.
LOCAL_VARS = ("MPI_LOCALNRANKS", "OMPI_COMM_WORLD_LOCAL_SIZE", "MV2_COMM_WORLD_LOCAL_SIZE")
#: The largest group whose creation names the ranks that did not arrive (an all-to-all handshake).
HANDSHAKE_MAX = 256
#: Held around every MPI call; a real lock only below MPI_THREAD_MULTIPLE (read it as ``mpi_support.LOCK``).
LOCK: Any = contextlib.nullcontext()

_OP_NAMES = {ReduceOp.SUM: "SUM", ReduceOp.AVG: "SUM", ReduceOp.PRODUCT: "PROD", ReduceOp.MIN: "MIN",
             ReduceOp.MAX: "MAX", ReduceOp.BAND: "BAND", ReduceOp.BOR: "BOR", ReduceOp.BXOR: "BXOR"}
# bool reduces as uint8 0/1 with NumPy's rules: SUM is OR, PRODUCT is AND
_BOOL_OP_NAMES = {ReduceOp.SUM: "BOR", ReduceOp.PRODUCT: "BAND", ReduceOp.MIN: "BAND", ReduceOp.MAX: "BOR",
                  ReduceOp.BAND: "BAND", ReduceOp.BOR: "BOR", ReduceOp.BXOR: "BXOR"}
_SPIN_S, _YIELD_S, _SLEEP_S = 1e-3, 50e-3, 1e-4
_CLOCK_EVERY = 16  # tests between two reads of the clock while spinning or yielding
_SPIN: float | None = None  # this process's spin window (0 when oversubscribed); set on first use
_MPI: Any = None
_DATATYPES: dict[np.dtype, Any] = {}
_LOW: dict[np.dtype, bool] = {}
_PLANS: dict[tuple[ReduceOp, np.dtype], tuple[np.dtype, Any]] = {}


# -- MPI and the launcher ------------------------------------------------------------------------------


def mpi_module() -> Any:
    """``mpi4py.MPI``, imported on first use (importing it initializes MPI).

    Raises:
        CollectiveError: mpi4py or its MPI library is missing, MPI was finalized, or the
            thread level is below ``MPI_THREAD_SERIALIZED``.
    """
    global _MPI, LOCK
    if _MPI is not None:
        return _MPI
    try:
        mod = importlib.import_module("mpi4py.MPI")
    except (ImportError, RuntimeError, OSError) as exc:
        raise CollectiveError(
            f"the 'mpi' backend needs mpi4py and an MPI library ({type(exc).__name__}: {exc}); install them with "
            "`pip install mpi4py mpich` (or the axonml[mpi] extra) and start the job with `mpiexec -n N python script.py`. "
            "Debian's mpich package does not work with the mpi4py wheel; use the pip one."
        ) from exc
    if mod.Is_finalized():
        raise CollectiveError("the 'mpi' backend: MPI was already finalized in this process; it cannot be used again")
    level = mod.Query_thread()
    if level < mod.THREAD_SERIALIZED:
        raise CollectiveError(
            f"the 'mpi' backend calls MPI from communication threads and needs MPI_THREAD_SERIALIZED or more, but MPI "
            f"was initialized with thread level {level}; do not lower mpi4py.rc.thread_level (default 'multiple')"
        )
    if level < mod.THREAD_MULTIPLE:
        LOCK = threading.RLock()
    _MPI = mod
    return mod


def _env_size(env: Mapping[str, str], var: str) -> int | None:
    try:
        return int(env.get(var, "").strip())
    except ValueError:
        return None


def launcher_world_size(env: Mapping[str, str] | None = None) -> tuple[str, int] | None:
    """``(variable, size)`` when an MPI launcher started this process, from its environment; else None.

    Reads only the environment (no MPI import), so it can pick the backend before MPI starts::

        launcher_world_size()   # ('PMI_SIZE', 4) under `mpiexec -n 4` of MPICH
    """
    env = os.environ if env is None else env
    for var in SIZE_VARS:
        size = _env_size(env, var)
        if size is not None:
            return var, size
    return None


def check_launch(world_size: int, env: Mapping[str, str] | None = None, library: str = "") -> None:
    """Raise when ``MPI_COMM_WORLD``'s size (``world_size``) contradicts what the launcher promised.

    An ``mpiexec`` of one MPI with the library of another starts each process as a
    singleton (rank 0 of a world of 1) without any error; this turns that into one.

    Args:
        world_size: ``MPI_COMM_WORLD.Get_size()``.
        env: the environment (default ``os.environ``).
        library: ``MPI.Get_library_version()``, for the message.

    Raises:
        CollectiveError: naming the variables, both sizes, the MPI library and what to do.
    """
    env = os.environ if env is None else env
    problems = []
    for var in SIZE_VARS + ("WORLD_SIZE",):
        size = _env_size(env, var)
        if size is not None and size != world_size:
            problems.append(f"{var}={size}")
    for var in LOCAL_VARS:
        size = _env_size(env, var)
        if size is not None and size > world_size:
            problems.append(f"{var}={size} (ranks on this host)")
    if not problems:
        return
    launcher = shutil.which("mpiexec") or "none on PATH"
    own = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    own = f"after `pip install mpi4py mpich` that is {own}" if os.path.exists(own) else "`pip install mpi4py mpich` provides one"
    lib = library.strip().splitlines()[0] if library.strip() else "an unknown MPI"
    raise CollectiveError(
        f"the 'mpi' backend: MPI_COMM_WORLD has {world_size} process(es) but the launcher promised {', '.join(problems)}. "
        "This happens when mpiexec belongs to one MPI and mpi4py loaded the library of another (each process then starts "
        f"alone as rank 0 of a world of 1), or when the job was not started by mpiexec at all. mpi4py uses: {lib}; mpiexec "
        f"on PATH: {launcher}. Start the job with the mpiexec of the same MPI ({own}), or rebuild mpi4py against the "
        "launcher's MPI (`pip install --no-binary mpi4py mpi4py`). WORLD_SIZE, when set, must match too."
    )


# -- bounded waits ------------------------------------------------------------------------------------------


def oversubscribed(env: Mapping[str, str] | None = None, cores: int | None = None) -> bool:
    """Whether the launcher put more ranks on this host than this process may use cores.

    Reads the launcher's local rank count (:data:`LOCAL_VARS`) and ``os.sched_getaffinity``::

        oversubscribed({"MPI_LOCALNRANKS": "4"}, cores=2)   # True
    """
    env = os.environ if env is None else env
    local = next((n for n in (_env_size(env, v) for v in LOCAL_VARS) if n is not None), None)
    if local is None:
        return False
    if cores is None:
        try:
            cores = len(os.sched_getaffinity(0))
        except (AttributeError, OSError):  # not Linux
            cores = os.cpu_count() or 1
    return local > cores


def _spin_window() -> float:
    global _SPIN
    if _SPIN is None:
        _SPIN = 0.0 if oversubscribed() else _SPIN_S
    return _SPIN


class Backoff:
    """Poll pacing: spin (not when oversubscribed), then yield the CPU, then sleep briefly.

    :meth:`pause` reads the clock every :data:`_CLOCK_EVERY` calls while spinning and after
    every yield or sleep; :meth:`expired` says whether ``deadline`` passed by the clock of
    the last read (while spinning at most ``_CLOCK_EVERY`` tests stale: microseconds).
    """

    __slots__ = ("t0", "now", "n", "spin", "deadline")

    def __init__(self, deadline: float = float("inf")) -> None:
        self.t0 = self.now = time.monotonic()
        self.n = 0
        self.spin = _spin_window()
        self.deadline = deadline

    def expired(self) -> bool:
        """Whether the deadline passed (by the last clock read)."""
        return self.now > self.deadline

    def pause(self) -> None:
        """Wait a little before the next test: nothing while spinning, else a yield or a short sleep."""
        self.n += 1
        if self.now - self.t0 < self.spin:
            if self.n % _CLOCK_EVERY == 0:
                self.now = time.monotonic()
            return
        if self.now - self.t0 < _YIELD_S:
            os.sched_yield()
        else:
            time.sleep(_SLEEP_S)
        self.now = time.monotonic()  # a yield may give the CPU away for a whole time slice


def poll(reqs: list, deadline: float) -> bool:
    """Test ``reqs`` until all completed (True) or ``deadline`` (``time.monotonic``) passed (False).

    MPI errors propagate as ``mpi4py.MPI.Exception``.
    """
    testall = _MPI.Request.Testall
    with LOCK:
        if testall(reqs):
            return True
    backoff = Backoff(deadline)
    while True:
        backoff.pause()
        with LOCK:
            if testall(reqs):
                return True
        if backoff.expired():
            return False


def dup(comm: Any, timeout: float, what: str) -> Any:
    """``comm.Idup()``, bounded by ``timeout`` (every rank of ``comm`` must call it)."""
    with LOCK:
        new, req = comm.Idup()
    if not poll([req], time.monotonic() + timeout):
        raise CollectiveTimeout(f"{what}: not every rank of the MPI communicator ({comm.Get_size()} ranks) arrived within "
                                f"{timeout:g} s (every rank must create the group; MPI cannot tell which ranks are missing)")
    return new


def group_tag(name: str, creation: bool = False) -> int:
    """The tag of group ``name``'s creation handshake (or of ``Create_group`` itself), below 32767."""
    return (16200 if creation else 100) + zlib.crc32(name.encode()) % 16000


def handshake(comm: Any, members: list[int], name: str, timeout: float, what: str = "new_group") -> None:
    """Wait, bounded, until every member (ranks of ``comm``) started creating group ``name``.

    Every member messages every other one, so groups of more than :data:`HANDSHAKE_MAX`
    ranks skip it (their creation still times out, without naming the missing ranks).

    Raises:
        CollectiveTimeout: naming the members that did not call ``what``.
    """
    if len(members) > HANDSHAKE_MAX:
        return
    mpi = mpi_module()
    me, tag, payload = comm.Get_rank(), group_tag(name), name.encode()
    with LOCK:
        sends = [comm.Isend([payload, mpi.BYTE], p, tag) for p in members if p != me]
    pending = {p for p in members if p != me}
    deadline, backoff, status = time.monotonic() + timeout, Backoff(), mpi.Status()
    while pending:
        for p in sorted(pending):
            with LOCK:
                msg = comm.Improbe(p, tag, status)
                if msg is not None:
                    body = bytearray(status.Get_count(mpi.BYTE))
                    msg.Recv([body, mpi.BYTE])
            if msg is not None:
                pending.discard(p)
                if bytes(body) != payload:
                    raise CollectiveError(f"{what} {name!r}: world rank {p} is creating group {bytes(body).decode()!r} "
                                          "at the same time; every rank must create groups in the same order")
        if pending and time.monotonic() > deadline:
            raise CollectiveTimeout(f"{what} of group {name!r} (world ranks {members}) on world rank {me}: world ranks "
                                    f"{sorted(pending)} did not call {what} within {timeout:g} s")
        if pending:
            backoff.pause()
    if not poll(sends, deadline):
        raise CollectiveTimeout(f"{what} {name!r} on world rank {me}: the handshake messages were not delivered in time")


# -- dtypes and reduce ops -------------------------------------------------------------------------------


def _datatype(dtype: np.dtype) -> Any:
    """The MPI datatype of a NumPy dtype, or None (float16, bfloat16, bool and extension types)."""
    found = _DATATYPES.get(dtype, False)
    if found is False:
        found = None
        if dtype.kind in "iufc" and dtype.name != "float16":
            try:
                found = mpi_module().Datatype.fromcode(dtype.char)
            except (KeyError, ValueError):
                found = None
        _DATATYPES[dtype] = found
    return found


def _is_low(dtype: np.dtype) -> bool:
    low = _LOW.get(dtype)
    if low is None:
        low = _LOW[dtype] = dtype.name in ("float16", "bfloat16")
    return low


def flat(a: Any, what: str) -> Any:
    """``a`` as a flat view; a TypeError/ValueError for what the backend cannot send in place."""
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{what}: the mpi backend works on NumPy arrays, got {type(a).__name__}")
    if not a.flags.c_contiguous:
        raise ValueError(f"{what}: the mpi backend needs contiguous arrays (got strides {a.strides} for shape {a.shape})")
    return a.reshape(-1)


def spec(a: Any, what: str, counts: Sequence[int] | None = None) -> list:
    """An mpi4py buffer spec that moves ``a``'s bytes unchanged (with per-rank counts and
    displacements when given). Dtypes without an MPI datatype go as unsigned integers of
    their width, or as bytes."""
    view = flat(a, what)
    dt, k = _datatype(view.dtype), 1
    if dt is None:
        size = view.dtype.itemsize
        if size in (1, 2, 4, 8):
            view = view.view(f"u{size}")
            dt = _datatype(view.dtype)
        else:
            view, dt, k = view.view(np.uint8), mpi_module().BYTE, size
    if counts is None:
        return [view, dt]
    counts = [int(c) * k for c in counts]
    displs = [0] + np.cumsum(counts[:-1], dtype=np.int64).tolist() if counts else []
    return [view, (counts, displs), dt]


def reduction(op: ReduceOp, dtype: np.dtype, what: str) -> tuple[np.dtype, Any]:
    """``(dtype to reduce in, MPI op)`` for ``op`` on ``dtype``.

    Raises:
        DTypeError: ``op`` is not defined for ``dtype`` (AVG on integers, bitwise ops on floats, ...).
    """
    plan = _PLANS.get((op, dtype))
    if plan is not None:
        return plan
    check_reduce_dtype(op, dtype, what)
    mpi = mpi_module()
    if _is_low(dtype):
        plan = (np.dtype(np.float32), getattr(mpi, _OP_NAMES[op]))
    elif dtype == np.bool_:
        plan = (np.dtype(np.uint8), getattr(mpi, _BOOL_OP_NAMES[op]))
    elif dtype.kind == "c" and op in (ReduceOp.MIN, ReduceOp.MAX):
        raise DTypeError(f"{what}: {op!r} is not defined for complex tensors ({dtype.name})")
    elif _datatype(dtype) is None:
        raise DTypeError(f"{what}: the mpi backend cannot reduce {dtype.name} arrays")
    else:
        plan = (dtype, getattr(mpi, _OP_NAMES[op]))
    _PLANS[(op, dtype)] = plan
    return plan


def to_work(a: Any, wdt: np.dtype) -> Any:
    """The flat array to reduce in: ``a`` itself, its uint8 view (bool) or a float32 copy (low precision)."""
    if a.dtype == wdt:
        return a
    return a.view(np.uint8) if a.dtype == np.bool_ else a.astype(wdt)


def finish_reduction(a: Any, work: Any, op: ReduceOp, n: int) -> None:
    """AVG's division by ``n``, then the cast back into ``a`` from a float32 accumulator."""
    if op is ReduceOp.AVG:
        finish_avg(work, n)
    if _is_low(a.dtype):
        a[...] = work.astype(a.dtype)
