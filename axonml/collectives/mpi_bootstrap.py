"""Bootstrap of a process group from an MPI launcher (``mpiexec -n N python train.py``).

Note: when RANK and WORLD_SIZE are unset but an MPI launcher announced the job
(PMI_RANK/PMI_SIZE for MPICH's hydra, OMPI_COMM_WORLD_*, PMIX_RANK, MV2_*), rank and size come
from there. The ``mpi`` backend then starts directly; any other backend needs a store: rank 0
serves one on a free port and broadcasts (address, port, token) over MPI. Before any of it,
MPI's own world is compared with the launcher's (an ``mpiexec`` of one MPI with the library of
another silently gives N worlds of one).
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
from typing import Any

from ..cluster import GrpcStore, GrpcStoreServer, Store
from ..errors import CollectiveError, RendezvousError
from .backends import mpi as _mpi
from .backends import mpi_support as _mpi_support
from .backends.transport import host_name
from .process_group import env_value

__all__ = ["MPI_RANK_VARS", "env_int", "mpi_world", "mpi_comm_world", "mpi_store", "route_to"]

logger = logging.getLogger(__name__)

MPI_RANK_VARS = ("PMI_RANK", "OMPI_COMM_WORLD_RANK", "PMIX_RANK", "MV2_COMM_WORLD_RANK")


def env_int(name: str) -> int | None:
    """The integer in environment variable ``name`` (None when unset or empty)."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return None
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"init_process_group: environment variable {name}={raw!r} is not an integer") from None


def mpi_world() -> tuple[int, int] | None:
    """``(rank, size)`` announced by an MPI launcher, when RANK and WORLD_SIZE are unset; else None."""
    if os.environ.get("RANK", "").strip() or os.environ.get("WORLD_SIZE", "").strip():
        return None
    launched = _mpi.launcher_world_size()
    rank_var = next((v for v in MPI_RANK_VARS if os.environ.get(v, "").strip()), None)
    if rank_var is None:
        if launched is not None and launched[1] > 1:
            raise ValueError(f"init_process_group: the MPI launcher set {launched[0]}={launched[1]} but none of "
                             f"{list(MPI_RANK_VARS)}; set RANK and WORLD_SIZE, or start the job with mpiexec")
        return None
    rank = env_int(rank_var)
    size = launched[1] if launched is not None else mpi_comm_world("read the world size")[0].Get_size()
    if not 0 <= rank < size:
        raise ValueError(f"init_process_group: the MPI launcher set {rank_var}={rank}, outside the world of {size}")
    return rank, size


def mpi_comm_world(why: str) -> tuple[Any, Any]:
    """``(MPI.COMM_WORLD, MPI)`` after checking that MPI's world is the launcher's (mixed MPIs)."""
    try:
        mpi = _mpi.mpi_module()
    except CollectiveError as exc:
        raise CollectiveError(f"init_process_group: this process was started by an MPI launcher; to {why} AxonML "
                              f"needs mpi4py ({exc}). Or set RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT.") from exc
    try:
        _mpi.check_launch(mpi.COMM_WORLD.Get_size(), library=mpi.Get_library_version())
    except CollectiveError as exc:
        raise CollectiveError(f"init_process_group: to {why} over MPI: {exc}") from exc
    return mpi.COMM_WORLD, mpi


def route_to(hosts: list[str]) -> str:
    """This host's address as the other hosts of ``hosts`` reach it (AXONML_SOCKET_ADDR wins)."""
    explicit = env_value("AXONML_SOCKET_ADDR")
    if explicit:
        return explicit
    me = host_name()
    for other in hosts:
        if other == me:
            continue
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
                probe.connect((socket.gethostbyname(other), 9))  # no packet is sent: this only picks the route
                return probe.getsockname()[0]
        except OSError:
            continue
    return socket.gethostbyname(socket.gethostname())


def mpi_store(rank: int, size: int, state: Any, timeout: float) -> Store:
    """Rank 0 serves the store on a free port and broadcasts (address, port, token) over MPI."""
    world, _ = mpi_comm_world("broadcast the store address")
    if world.Get_rank() != rank:
        raise CollectiveError(f"init_process_group: the MPI launcher's environment says rank {rank} but MPI_COMM_WORLD "
                              f"says {world.Get_rank()}; do not set PMI_RANK/OMPI_COMM_WORLD_RANK by hand")
    _mpi_support.handshake(world, list(range(size)), "axonml-store-bootstrap", timeout, "init_process_group")
    comm = _mpi_support.dup(world, timeout, "init_process_group (MPI bootstrap)")
    try:
        with _mpi_support.LOCK:
            hosts = comm.allgather(host_name())
        one_host = len(set(hosts)) == 1
        info: Any = None
        if rank == 0:
            try:
                addr = "127.0.0.1" if one_host else route_to(hosts)
                token = env_value("AXONML_STORE_TOKEN") or secrets.token_urlsafe(24)
                state.server = GrpcStoreServer("127.0.0.1" if one_host else "0.0.0.0", 0, token=token).start()
                info = (addr, state.server.port, token)
            except Exception as exc:  # noqa: BLE001  (the other ranks must hear of it, or they wait forever)
                info = ("error", f"{type(exc).__name__}: {exc}", "")
        with _mpi_support.LOCK:
            info = comm.bcast(info, root=0)
    finally:
        comm.Free()
    addr, port, token = info
    if addr == "error":
        raise RendezvousError(f"init_process_group: rank 0 could not start the store for the MPI job: {port}")
    if not one_host:
        os.environ.setdefault("MASTER_ADDR", addr)  # the tcp backend routes its own sockets towards it
    logger.info("rank=%d MPI bootstrap: store at %s:%d (%d hosts)", rank, addr, port, len(set(hosts)))
    return GrpcStore(addr, port, token=token, timeout=timeout)
