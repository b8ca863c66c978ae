"""The environment contract between a launcher and its workers, in one place.

``axonml-launch`` (and the Ray adapter) start each worker with these variables; the
process-group bootstrap (``init_process_group(init_method="env://")``) and training
scripts read them:

=========================  ==================================================================
``RANK``                   global rank of the worker, ``0 .. WORLD_SIZE - 1``
``LOCAL_RANK``             rank among the workers of its node
``WORLD_SIZE``             number of workers in the job
``LOCAL_WORLD_SIZE``       number of workers on this node
``NODE_RANK``              rank of the node (``GROUP_RANK`` too, as torchrun names it)
``NNODES``                 number of nodes in this generation
``MASTER_ADDR``            host of the key-value store the backends bootstrap from
``MASTER_PORT``            its port
``AXONML_RESTART_COUNT``   the rendezvous generation: how many times the workers were restarted
``AXONML_MAX_RESTARTS``    restarts after worker failures the job allows
``AXONML_RUN_ID``          the job id (``--rdzv-id``)
``AXONML_STORE_TOKEN``     the job token the store requires
``AXONML_USE_AGENT_STORE`` ``1``: the store at MASTER_ADDR:MASTER_PORT is served by the agent
``OMP_NUM_THREADS``        unless already set: the node's CPUs shared among its workers
``AXONML_METRICS_PORT``    with ``--metrics-port P``: ``P + LOCAL_RANK``
``AXONML_BACKEND``         with ``--backend B`` (not ``auto``): the backend ``auto`` resolves to
=========================  ==================================================================

Note on ``AXONML_RESTART_COUNT``: it is the generation, so it grows on every restart of the
workers, whether a worker failure or a membership change (an elastic join or loss) caused
it. The process groups namespace their store keys with it, so a new generation never reads
the keys of an old one; only worker failures count against ``AXONML_MAX_RESTARTS``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["CONTRACT_VARS", "WorkerEnv", "default_omp_threads"]

#: The variables every launched worker gets (the optional ones are added when configured).
CONTRACT_VARS = (
    "RANK",
    "LOCAL_RANK",
    "WORLD_SIZE",
    "LOCAL_WORLD_SIZE",
    "NODE_RANK",
    "GROUP_RANK",
    "NNODES",
    "MASTER_ADDR",
    "MASTER_PORT",
    "AXONML_RESTART_COUNT",
    "AXONML_MAX_RESTARTS",
    "AXONML_RUN_ID",
    "AXONML_STORE_TOKEN",
    "AXONML_USE_AGENT_STORE",
)


def default_omp_threads(local_world_size: int, cpus: int | None = None) -> int:
    """Threads per worker when ``OMP_NUM_THREADS`` is unset: this node's CPUs shared among
    its workers, at least one (torchrun always uses one; sharing keeps a single worker fast).
    """
    if cpus is None:
        try:
            cpus = len(os.sched_getaffinity(0))
        except (AttributeError, OSError):
            cpus = os.cpu_count() or 1
    return max(1, cpus // max(1, local_world_size))


@dataclass(frozen=True)
class WorkerEnv:
    """The environment of one launched worker.

    Example::

        env = WorkerEnv(rank=1, local_rank=1, world_size=2, local_world_size=2, node_rank=0, nnodes=1,
                        master_addr="127.0.0.1", master_port=29400, restart_count=0, max_restarts=3,
                        run_id="job", store_token="s3cret")
        subprocess.Popen([sys.executable, "train.py"], env={**os.environ, **env.to_environ()})
    """

    rank: int
    local_rank: int
    world_size: int
    local_world_size: int
    node_rank: int
    nnodes: int
    master_addr: str
    master_port: int
    restart_count: int
    max_restarts: int
    run_id: str
    store_token: str
    omp_num_threads: int | None = None
    metrics_port: int | None = None
    backend: str | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.rank < self.world_size:
            raise ValueError(f"WorkerEnv: rank {self.rank} is outside [0, world_size={self.world_size})")
        if not 0 <= self.local_rank < self.local_world_size:
            raise ValueError(f"WorkerEnv: local_rank {self.local_rank} is outside [0, local_world_size={self.local_world_size})")
        if not 0 <= self.node_rank < self.nnodes:
            raise ValueError(f"WorkerEnv: node_rank {self.node_rank} is outside [0, nnodes={self.nnodes})")
        if not 0 < self.master_port <= 65535:
            raise ValueError(f"WorkerEnv: master_port must be in [1, 65535], got {self.master_port}")
        if self.metrics_port is not None and not 0 < self.metrics_port <= 65535:
            raise ValueError(f"WorkerEnv: metrics_port must be in [1, 65535], got {self.metrics_port}")

    def to_environ(self, inherited: Mapping[str, str] | None = None) -> dict[str, str]:
        """The variables to add to the worker's environment. ``OMP_NUM_THREADS`` is set only
        when ``inherited`` (default: this process's environment) does not set it already."""
        inherited = os.environ if inherited is None else inherited
        env = {
            "RANK": str(self.rank),
            "LOCAL_RANK": str(self.local_rank),
            "WORLD_SIZE": str(self.world_size),
            "LOCAL_WORLD_SIZE": str(self.local_world_size),
            "NODE_RANK": str(self.node_rank),
            "GROUP_RANK": str(self.node_rank),
            "NNODES": str(self.nnodes),
            "MASTER_ADDR": self.master_addr,
            "MASTER_PORT": str(self.master_port),
            "AXONML_RESTART_COUNT": str(self.restart_count),
            "AXONML_MAX_RESTARTS": str(self.max_restarts),
            "AXONML_RUN_ID": self.run_id,
            "AXONML_STORE_TOKEN": self.store_token,
            "AXONML_USE_AGENT_STORE": "1",
        }
        if not inherited.get("OMP_NUM_THREADS", "").strip():
            threads = self.omp_num_threads or default_omp_threads(self.local_world_size)
            env["OMP_NUM_THREADS"] = str(threads)
        if self.metrics_port is not None:
            env["AXONML_METRICS_PORT"] = str(self.metrics_port)
        if self.backend and self.backend != "auto":
            env["AXONML_BACKEND"] = self.backend
        return env

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> WorkerEnv | None:
        """Read the contract back (inside a worker); None when this process was not launched.

        Raises:
            ValueError: a variable is set but is not a valid value.
        """
        environ = os.environ if environ is None else environ
        if not environ.get("RANK", "").strip() or not environ.get("WORLD_SIZE", "").strip():
            return None

        def number(name: str, default: int | None = None) -> int:
            raw = environ.get(name, "").strip()
            if not raw:
                if default is None:
                    raise ValueError(f"the launcher's environment sets RANK but not {name}")
                return default
            try:
                return int(raw)
            except ValueError:
                raise ValueError(f"environment variable {name}={raw!r} is not an integer") from None

        world = number("WORLD_SIZE")
        local_world = number("LOCAL_WORLD_SIZE", world)
        metrics = environ.get("AXONML_METRICS_PORT", "").strip()
        threads = environ.get("OMP_NUM_THREADS", "").strip()
        return cls(
            rank=number("RANK"),
            local_rank=number("LOCAL_RANK", number("RANK")),
            world_size=world,
            local_world_size=local_world,
            node_rank=number("NODE_RANK", 0),
            nnodes=number("NNODES", 1),
            master_addr=environ.get("MASTER_ADDR", "127.0.0.1"),
            master_port=number("MASTER_PORT", 29400),
            restart_count=number("AXONML_RESTART_COUNT", 0),
            max_restarts=number("AXONML_MAX_RESTARTS", 0),
            run_id=environ.get("AXONML_RUN_ID", ""),
            store_token=environ.get("AXONML_STORE_TOKEN", ""),
            omp_num_threads=int(threads) if threads.isdigit() else None,
            metrics_port=int(metrics) if metrics.isdigit() else None,
            backend=environ.get("AXONML_BACKEND", "") or None,
        )
