"""Process-group life cycle: ``init_process_group``, groups, ranks.

Note on state: the default group, the groups made by :func:`new_group` and the store
live in a ``_State``. A process has one, except under the threaded test backend, where
:func:`use_private_state` gives each rank thread its own (so that ``get_rank()`` in a
rank thread answers that thread's rank).

Note on rendezvous: ``init_method`` names the store the ranks bootstrap from.
``env://`` (the default) reads ``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT``:
rank 0 serves a :class:`GrpcStoreServer` on ``MASTER_ADDR:MASTER_PORT`` (unless
``AXONML_USE_AGENT_STORE=1`` says the launcher already serves one there) and every rank
connects with the job token ``AXONML_STORE_TOKEN``. With none of the four variables set,
the script runs as a world of one. ``tcp://host:port`` is ``env://`` with the address
in the URL; ``file:///path`` uses a :class:`FileStore`. Group keys live under
``axonml/<restart count>/<group name>/`` so a restarted job never reads stale keys.

Note on MPI mode (``mpiexec -n 4 python train.py``): with RANK and WORLD_SIZE unset, the
rank and size come from the MPI launcher's environment (``PMI_RANK``/``PMI_SIZE`` of
MPICH's hydra, ``OMPI_COMM_WORLD_RANK``/``_SIZE`` of Open MPI, ``PMIX_RANK``, MVAPICH's).
The ``mpi`` backend (what ``auto`` picks there) bootstraps from MPI itself; a store-based
backend (``tcp``) uses MASTER_ADDR/MASTER_PORT when both are set, else rank 0 serves the
store on a free port and broadcasts its address and token over MPI (mpi4py). Both paths
compare ``MPI_COMM_WORLD``'s size with the launcher's promise, so an ``mpiexec`` of one MPI
with the library of another (N worlds of size 1) is an error, not a silent world of one.

Note on metrics: with ``AXONML_METRICS_PORT`` set, :func:`init_process_group` starts this
process's Prometheus exporter (:mod:`axonml.cluster.metrics`) and makes it the process
groups' collective observer; it lives as long as the process (across re-initialization).
"""

from __future__ import annotations

import datetime
import hashlib
import logging
import os
import threading
import urllib.parse
from typing import Any, Sequence

from .._env import get_flag
from ..cluster import FileStore, GrpcStore, GrpcStoreServer, MemoryStore, PrefixStore, Store
from ..cluster import metrics as _metrics
from ..data.distributed import register_world_provider
from ..errors import CollectiveError, RendezvousError
from ..runtime import memory_stats
from .backends import mpi as _mpi  # registers "mpi" (mpi4py is imported only when a group starts)
from .backends import nccl as _nccl  # noqa: F401  (registers "nccl"; CuPy is imported only when a group starts)
from .backends import tcp as _tcp  # noqa: F401  (registers "tcp")
from .backends import threaded as _threaded  # noqa: F401  (registers "threaded")
from .backends.nccl_support import nccl_available
from .mpi_bootstrap import env_int as _env_int
from .mpi_bootstrap import mpi_store, mpi_world
from .process_group import ProcessGroup, env_flag, env_value, get_backend_factory, set_collective_observer
from .types import to_seconds

__all__ = [
    "GroupMember",
    "init_process_group",
    "destroy_process_group",
    "is_initialized",
    "is_available",
    "get_rank",
    "get_world_size",
    "get_backend",
    "new_group",
    "get_group_rank",
    "get_global_rank",
    "get_process_group_ranks",
    "use_private_state",
]

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT = datetime.timedelta(minutes=10)
_ENV_VARS = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
#: Where MPI launchers announce this process's rank (MPICH hydra, Open MPI, PMIx, MVAPICH) and its rank on the host.
_MPI_LOCAL_RANK_VARS = ("MPI_LOCALRANKID", "OMPI_COMM_WORLD_LOCAL_RANK", "MV2_COMM_WORLD_LOCAL_RANK")


class _NonMember:
    def __repr__(self) -> str:
        return "GroupMember.NON_GROUP_MEMBER"


class GroupMember:
    """``GroupMember.WORLD`` stands for the default group; ``new_group`` returns
    ``GroupMember.NON_GROUP_MEMBER`` on ranks outside the new group (as in PyTorch)."""

    WORLD: Any = None
    NON_GROUP_MEMBER = _NonMember()


class _State:
    def __init__(self) -> None:
        self.default: ProcessGroup | None = None
        self.groups: list[ProcessGroup] = []
        self.store: Store | None = None
        self.server: GrpcStoreServer | None = None
        self.backend = ""
        self.rank = 0
        self.size = 1
        self.timeout = DEFAULT_TIMEOUT.total_seconds()
        self.group_count = 0
        self.prefix = ""


_GLOBAL = _State()
_TLS = threading.local()


def _state() -> _State:
    return _TLS.__dict__.get("state") or _GLOBAL  # no AttributeError machinery on the hot path


def use_private_state() -> None:
    """Give the calling thread its own process-group state (threaded-backend rank threads)."""
    _TLS.state = _State()


def is_available() -> bool:
    """True: collectives are always available (the tcp backend needs no native library)."""
    return True


def is_initialized() -> bool:
    """Whether the default process group exists."""
    return _state().default is not None


def _resolve_world(rank: int, world_size: int) -> tuple[int, int]:
    if rank < 0:
        rank = _env_int("RANK") if _env_int("RANK") is not None else -1
    if world_size < 0:
        world_size = _env_int("WORLD_SIZE") if _env_int("WORLD_SIZE") is not None else -1
    if rank < 0 or world_size < 1:
        raise ValueError(
            f"init_process_group: rank ({rank}) and world_size ({world_size}) must be given, as arguments or in "
            "the RANK and WORLD_SIZE environment variables"
        )
    if not 0 <= rank < world_size:
        raise ValueError(f"init_process_group: rank {rank} is outside [0, world_size={world_size})")
    return rank, world_size


def _grpc_store(host: str, port: int, rank: int, state: _State, timeout: float) -> Store:
    token = env_value("AXONML_STORE_TOKEN")
    if not token:
        # every rank derives the same token; set AXONML_STORE_TOKEN to keep other jobs out
        token = hashlib.sha256(f"axonml:{host}:{port}".encode()).hexdigest()[:32]
    agent_store = env_flag("AXONML_USE_AGENT_STORE", "0") in ("1", "true", "yes", "on")
    if rank == 0 and not agent_store:
        loopback = host in ("localhost", "::1") or host.startswith("127.")
        state.server = GrpcStoreServer("127.0.0.1" if loopback else "0.0.0.0", port, token=token).start()
    return GrpcStore(host, port, token=token, timeout=timeout)


def _rendezvous(init_method: str, rank: int, world_size: int, state: _State, timeout: float) -> tuple[Store, int, int]:
    url = urllib.parse.urlparse(init_method)
    if url.scheme == "env":
        present = [v for v in _ENV_VARS if os.environ.get(v, "").strip()]
        launched = mpi_world() if rank < 0 and world_size < 0 else None
        if launched is not None:
            rank, world_size = launched
            if world_size == 1:
                return MemoryStore(timeout=timeout), rank, 1
            if not (os.environ.get("MASTER_ADDR", "").strip() and os.environ.get("MASTER_PORT", "").strip()):
                return mpi_store(rank, world_size, state, timeout), rank, world_size
        elif not present and rank < 0 and world_size < 0:
            return MemoryStore(timeout=timeout), 0, 1  # a script started on its own: a world of one
        rank, world_size = _resolve_world(rank, world_size)
        if world_size == 1:
            return MemoryStore(timeout=timeout), rank, 1
        missing = [v for v in ("MASTER_ADDR", "MASTER_PORT") if not os.environ.get(v, "").strip()]
        if missing:
            raise ValueError(
                f"init_process_group(init_method='env://'): world_size={world_size} needs {missing} in the environment "
                "(axonml-launch, torchrun and the MPI adapter set them), or pass init_method='tcp://host:port'"
            )
        port = _env_int("MASTER_PORT")
        return _grpc_store(os.environ["MASTER_ADDR"].strip(), port, rank, state, timeout), rank, world_size
    if url.scheme == "tcp":
        if not url.hostname or not url.port:
            raise ValueError(f"init_process_group: init_method {init_method!r} must look like 'tcp://host:port'")
        rank, world_size = _resolve_world(rank, world_size)
        if world_size == 1:
            return MemoryStore(timeout=timeout), rank, 1
        return _grpc_store(url.hostname, url.port, rank, state, timeout), rank, world_size
    if url.scheme == "file":
        path = urllib.parse.unquote(url.path)
        if not path:
            raise ValueError(f"init_process_group: init_method {init_method!r} must look like 'file:///absolute/path'")
        rank, world_size = _resolve_world(rank, world_size)
        return FileStore(path, world_size=world_size, timeout=timeout), rank, world_size
    raise ValueError(f"init_process_group: unknown init_method {init_method!r}; use 'env://', 'tcp://host:port' or 'file:///path'")


def _auto_backend() -> str:
    """``AXONML_BACKEND`` when set (the launcher's ``--backend``, the Ray adapter's ``backend``);
    ``mpi`` when an MPI launcher started a multi-rank job and nothing set RANK/WORLD_SIZE
    (``mpiexec -n 4 python train.py``); ``nccl`` when the default device is CUDA and NCCL
    is usable; ``tcp`` otherwise."""
    chosen = env_flag("AXONML_BACKEND", "auto")
    if chosen != "auto":
        return chosen
    launched = _mpi.launcher_world_size()
    if launched is not None and launched[1] > 1 and not os.environ.get("RANK") and not os.environ.get("WORLD_SIZE"):
        return "mpi"
    if get_flag("AXONML_DEFAULT_DEVICE").startswith("cuda") and nccl_available():
        return "nccl"
    return "tcp"


def init_process_group(
    backend: str = "auto",
    init_method: str | None = None,
    timeout: datetime.timedelta | float | None = None,
    world_size: int = -1,
    rank: int = -1,
    store: Store | None = None,
    group_name: str = "",
    pg_options: Any = None,
) -> None:
    """Start the default process group (the world) of this process.

    Args:
        backend: ``"auto"`` (``mpi`` under ``mpiexec``, else ``tcp``), ``"tcp"``, ``"mpi"``,
            ``"threaded"`` (ranks are threads of one process, for tests), or any registered one.
        init_method: ``"env://"`` (default), ``"tcp://host:port"`` or ``"file:///path"``;
            not allowed together with ``store``.
        timeout: how long any collective (and the bootstrap) may take; a ``timedelta`` or
            seconds. Default 10 minutes.
        world_size, rank: the world; default from ``WORLD_SIZE`` and ``RANK``.
        store: a ready store (then ``rank`` and ``world_size`` are required).
        group_name: the default group's name (default ``"default_pg"``).

    With no arguments and none of RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT set, the
    script runs as a world of one. Example::

        init_process_group(backend="tcp")          # under axonml-launch or torchrun
        all_reduce(t)                              # t holds the sum over ranks
        destroy_process_group()
    """
    state = _state()
    if state.default is not None:
        raise CollectiveError("init_process_group: the default process group is already initialized; "
                              "call destroy_process_group() first")
    seconds = to_seconds(timeout) if timeout is not None else DEFAULT_TIMEOUT.total_seconds()
    name = backend if isinstance(backend, str) else str(backend)
    name = name.lower()
    if name == "auto":
        name = _auto_backend()
    factory = get_backend_factory(name)
    if store is not None and init_method is not None:
        raise ValueError("init_process_group: pass either init_method or store, not both")
    pg: ProcessGroup | None = None
    try:
        if getattr(factory, "needs_store", True) is False:
            base, r, n = None, rank, world_size  # the backend knows the world (e.g. MPI)
        elif store is not None:
            if rank < 0 or world_size < 1:
                raise ValueError(f"init_process_group: with a store, pass rank and world_size (got rank={rank}, "
                                 f"world_size={world_size})")
            if not 0 <= rank < world_size:
                raise ValueError(f"init_process_group: rank {rank} is outside [0, world_size={world_size})")
            base, r, n = store, rank, world_size
        else:
            base, r, n = _rendezvous(init_method or "env://", rank, world_size, state, seconds)
        state.prefix = f"axonml/{get_flag('AXONML_RESTART_COUNT')}"
        gname = group_name or "default_pg"
        pg_store = PrefixStore(f"{state.prefix}/{gname}", base) if base is not None else None
        pg = factory(store=pg_store, rank=r, size=n, timeout=seconds, name=gname, global_ranks=None)
        _start_metrics(pg)
    except BaseException:
        if pg is not None:  # the metrics exporter could not start
            pg.shutdown()
        if state.server is not None:
            state.server.stop()
            state.server = None
        raise
    state.default, state.store, state.backend = pg, base, name
    state.rank, state.size, state.timeout = pg.rank(), pg.size(), seconds
    state.groups = [pg]
    state.group_count = 0
    logger.info("rank=%d initialized process group %r: backend %s, world size %d", pg.rank(), gname, name, pg.size())


def _memory_by_device() -> dict[str, tuple[int, int]]:
    devices = {"cpu", get_flag("AXONML_DEFAULT_DEVICE") or "cpu"}
    stats = {d: memory_stats(d) for d in sorted(devices)}
    return {d: (s["current_bytes"], s["peak_bytes"]) for d, s in stats.items()}


def _start_metrics(pg: ProcessGroup) -> None:
    """Start the worker's Prometheus exporter when AXONML_METRICS_PORT is set; observe collectives.
    Not for the threaded test backend, whose ranks share one process (and so one exporter)."""
    if pg.backend_name == "threaded":
        return
    local = next((v for v in ("LOCAL_RANK",) + _MPI_LOCAL_RANK_VARS if os.environ.get(v, "").strip()), None)
    local_rank = _env_int(local) if local is not None else pg.rank()
    exporter = _metrics.start_worker_metrics_from_env(pg.rank(), pg.size(), local_rank)
    if exporter is not None:
        exporter.set_memory_source(_memory_by_device)
        set_collective_observer(exporter.record_collective)


def _default(what: str) -> ProcessGroup:
    pg = _state().default
    if pg is None:
        raise CollectiveError(f"{what}: the default process group is not initialized; call init_process_group() first")
    return pg


def resolve_group(group: Any, what: str) -> ProcessGroup:
    """The ProcessGroup for ``group`` (None or GroupMember.WORLD: the default group)."""
    if group is None or group is GroupMember.WORLD:
        return _default(what)
    if group is GroupMember.NON_GROUP_MEMBER:
        raise ValueError(f"{what}: this rank is not a member of the group (new_group returned NON_GROUP_MEMBER here)")
    if not isinstance(group, ProcessGroup):
        raise TypeError(f"{what}: group must be a ProcessGroup from new_group() or None, got {type(group).__name__}")
    if group._closed:
        raise CollectiveError(f"{what}: process group {group.name!r} was destroyed")
    return group


def destroy_process_group(group: Any = None) -> None:
    """Destroy ``group``, or, with None, every group and the default group.

    Queued collectives finish first (each bounded by the group's timeout).
    """
    state = _state()
    if group is not None and group is not GroupMember.WORLD:
        pg = resolve_group(group, "destroy_process_group")
        pg.shutdown()
        if pg in state.groups:
            state.groups.remove(pg)
        return
    if state.default is None:
        return
    for pg in reversed(state.groups):
        pg.shutdown()
    store, server, n = state.store, state.server, state.size
    if server is not None and store is not None:
        # keep serving the store until every rank has finished with it (bounded)
        try:
            store.add(f"{state.prefix}/finished", 1)
            waited = 0.0
            while store.add(f"{state.prefix}/finished", 0) < n and waited < 10.0:
                threading.Event().wait(0.05)
                waited += 0.05
        except RendezvousError:
            pass
    elif store is not None and n > 1 and isinstance(store, GrpcStore):
        try:
            store.add(f"{state.prefix}/finished", 1)
        except RendezvousError:
            pass
    if store is not None:
        store.close()
    if server is not None:
        server.stop()
    fresh = _State()
    state.__dict__.update(fresh.__dict__)


def get_rank(group: Any = None) -> int:
    """This process's rank in ``group`` (default: the world); -1 when not a member."""
    if group is GroupMember.NON_GROUP_MEMBER:
        return -1
    return resolve_group(group, "get_rank").rank()


def get_world_size(group: Any = None) -> int:
    """The number of ranks in ``group`` (default: the world); -1 when not a member."""
    if group is GroupMember.NON_GROUP_MEMBER:
        return -1
    return resolve_group(group, "get_world_size").size()


def get_backend(group: Any = None) -> str:
    """The backend name of ``group`` (default: the world)."""
    return resolve_group(group, "get_backend").backend_name


def get_process_group_ranks(group: Any) -> list[int]:
    """The world ranks of ``group``'s members, in group-rank order."""
    return list(resolve_group(group, "get_process_group_ranks").global_ranks)


def get_group_rank(group: Any, global_rank: int) -> int:
    """The rank in ``group`` of world rank ``global_rank``.

    Raises:
        ValueError: ``global_rank`` is not a member of ``group``.
    """
    pg = resolve_group(group, "get_group_rank")
    if global_rank not in pg.global_ranks:
        raise ValueError(f"get_group_rank: world rank {global_rank} is not in group {pg.name!r} (ranks {pg.global_ranks})")
    return pg.global_ranks.index(global_rank)


def get_global_rank(group: Any, group_rank: int) -> int:
    """The world rank of ``group``'s rank ``group_rank``."""
    pg = resolve_group(group, "get_global_rank")
    if not 0 <= group_rank < pg.size():
        raise ValueError(f"get_global_rank: group rank {group_rank} is outside group {pg.name!r} of size {pg.size()}")
    return pg.global_ranks[group_rank]


def new_group(
    ranks: Sequence[int] | None = None,
    timeout: datetime.timedelta | float | None = None,
    backend: str | None = None,
    pg_options: Any = None,
    group_desc: str | None = None,
) -> Any:
    """Make a group of the world ranks ``ranks`` (default: all). Every world rank must call it,
    in the same order, even ranks outside the group (as in PyTorch).

    Returns:
        The new :class:`ProcessGroup` on members, ``GroupMember.NON_GROUP_MEMBER`` elsewhere.

    Example::

        evens = new_group([0, 2])
        if get_rank() in (0, 2):
            all_reduce(t, group=evens)
    """
    state = _state()
    world = _default("new_group")
    ranks = sorted(range(state.size) if ranks is None else ranks)
    if len(set(ranks)) != len(ranks):
        raise ValueError(f"new_group: ranks {ranks} contain duplicates")
    bad = [r for r in ranks if not 0 <= r < state.size]
    if bad or not ranks:
        raise ValueError(f"new_group: ranks must be a non-empty subset of the world [0, {state.size}); got {ranks}")
    state.group_count += 1
    name = group_desc or f"group{state.group_count}"
    if world.rank() not in ranks:
        return GroupMember.NON_GROUP_MEMBER
    seconds = to_seconds(timeout) if timeout is not None else state.timeout
    bname = (backend or state.backend).lower()
    bname = "tcp" if bname == "auto" else bname
    factory = get_backend_factory(bname)
    pg_store = PrefixStore(f"{state.prefix}/{name}", state.store) if state.store is not None else None
    pg = factory(store=pg_store, rank=ranks.index(world.rank()), size=len(ranks), timeout=seconds, name=name,
                 global_ranks=ranks)
    state.groups.append(pg)
    return pg


register_world_provider(lambda: (get_world_size(), get_rank()) if is_initialized() else None)
