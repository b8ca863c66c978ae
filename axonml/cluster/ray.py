"""Ray mode: AxonML workers as Ray actors, with the launcher's environment contract.

:func:`run` calls a function in ``num_workers`` actors and returns each rank's result;
:func:`launch_script` (``axonml-launch --ray``) runs ``python script.py args`` under
``nodes * nproc_per_node`` actors and returns an exit code. Example::

    def train():
        dist.init_process_group()          # env:// from the contract below
        ...
        return final_loss

    losses = axonml.cluster.ray.run(train, num_workers=4, resources_per_worker={"CPU": 1})

Note on placement: the workers' resources are reserved at once with a placement group
(``PACK`` for :func:`run`; one bundle per node with ``STRICT_SPREAD`` when
:func:`launch_script` asks for several nodes), so a job starts whole or not at all
(a clear error names the request and the free resources when it cannot be placed).

Note on the contract: each actor gets RANK, LOCAL_RANK, WORLD_SIZE, LOCAL_WORLD_SIZE,
NODE_RANK (nodes in order of their first rank), MASTER_ADDR (rank 0's node), MASTER_PORT
(a port free there), AXONML_RESTART_COUNT, AXONML_MAX_RESTARTS, AXONML_RUN_ID, a fresh
AXONML_STORE_TOKEN, AXONML_BACKEND (what ``init_process_group(backend="auto")`` picks)
and OMP_NUM_THREADS (its CPUs), then the caller's ``env``: the same code runs under
``axonml-launch``, under Ray and alone.

Note on failure: the first failing rank (an exception, a non-zero exit, a dead actor)
stops every actor of the group and frees the placement group; the group restarts with
AXONML_RESTART_COUNT + 1 up to ``max_failures`` times (scripts resume from their
checkpoints), then :class:`RayWorkerError` names the rank and the tail of its traceback.

Note on logs: Ray forwards each actor's output to the driver (``log_to_driver``)
prefixed with the actor's repr, ``rank<r>``: ``(rank1 pid=4242) step 10 loss 0.3``.
Ray's merging of similar lines from different workers is turned off
(``RAY_DEDUP_LOGS=0``) unless the user set that variable.

Ray is imported on first use (``pip install ray``); this module imports only the
standard library and layer 0.
"""

from __future__ import annotations

import importlib
import logging
import os
import re
import secrets
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from ..errors import AxonError

__all__ = ["RayJob", "RayWorkerError", "launch_script", "run"]

logger = logging.getLogger(__name__)

# Runs a script in a fresh interpreter as `python script.py args` would, and ends it when
# its actor dies (the actor's SIGKILL does not reach its children).
_BOOT = (
    "import os, runpy, sys, threading, time\n"
    "parent = os.getppid()\n"
    "def watch():\n"
    "    while os.getppid() == parent:\n"
    "        time.sleep(1.0)\n"
    "    os._exit(137)\n"
    "threading.Thread(target=watch, name='axonml-parent-watch', daemon=True).start()\n"
    "sys.argv = sys.argv[1:]\n"
    "sys.path[0] = os.path.dirname(os.path.abspath(sys.argv[0]))\n"
    "runpy.run_path(sys.argv[0], run_name='__main__')\n"
)
_RAY: Any = None


def _ray() -> Any:
    """The ``ray`` module, imported on first use."""
    global _RAY
    if _RAY is None:
        os.environ.setdefault("RAY_DEDUP_LOGS", "0")  # every rank's lines, not "[repeated 2x across cluster]"
        try:
            _RAY = importlib.import_module("ray")
        except ImportError as exc:
            raise ImportError(f"axonml's Ray mode needs Ray ({exc}); install it with `pip install ray`") from exc
    return _RAY


class RayWorkerError(AxonError, RuntimeError):
    """A rank of a Ray job failed and no restart was left; ``rank``, ``attempts``, ``exit_code``."""

    def __init__(self, message: str, rank: int, attempts: int, exit_code: int = 1) -> None:
        super().__init__(message)
        self.rank, self.attempts, self.exit_code = rank, attempts, exit_code


@dataclass(frozen=True)
class RayJob:
    """What to run on Ray: ``num_workers`` ranks in ``nodes`` groups (one node each when > 1).

    ``resources_per_worker``: Ray resources of one rank (``{"CPU": 1}`` by default; ``GPU``
    and custom resources as Ray names them). ``max_failures``: group restarts allowed.
    ``backend``: the collectives backend of ``init_process_group(backend="auto")``.
    ``env``: extra environment of every rank. ``placement_timeout``: seconds to wait for
    the resources. ``timeout``: seconds one attempt may run (None: no limit).
    """

    num_workers: int
    nodes: int = 1
    resources_per_worker: dict = field(default_factory=lambda: {"CPU": 1})
    max_failures: int = 0
    backend: str = "tcp"
    env: dict = field(default_factory=dict)
    placement_timeout: float = 60.0
    timeout: float | None = None

    def __post_init__(self) -> None:
        for name, low in (("num_workers", 1), ("nodes", 1), ("max_failures", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"Ray job: {name} must be an int >= {low}, got {value!r}")
        if self.num_workers % self.nodes:
            raise ValueError(f"Ray job: num_workers={self.num_workers} is not a multiple of nodes={self.nodes}")
        if not isinstance(self.resources_per_worker, dict) or not all(
                isinstance(k, str) and isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0
                for k, v in self.resources_per_worker.items()):
            raise ValueError(f"Ray job: resources_per_worker must map resource names to numbers >= 0, "
                             f"got {self.resources_per_worker!r}")
        if not isinstance(self.env, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in self.env.items()):
            raise ValueError(f"Ray job: env must map str to str, got {self.env!r}")
        if not isinstance(self.backend, str) or not self.backend:
            raise ValueError(f"Ray job: backend must be a backend name such as 'tcp', got {self.backend!r}")
        if not self.placement_timeout > 0 or (self.timeout is not None and not self.timeout > 0):
            raise ValueError(f"Ray job: timeouts must be positive, got placement_timeout={self.placement_timeout!r}, "
                             f"timeout={self.timeout!r}")


class _RankActor:
    """One rank (made a Ray actor by :func:`_actor_class`); ``repr`` is the log prefix."""

    def __init__(self, rank: int) -> None:
        self.rank = rank
        self._proc: subprocess.Popen | None = None

    def __repr__(self) -> str:
        return f"rank{self.rank}"

    def where(self) -> tuple[str, str]:
        ray = _ray()
        return ray.get_runtime_context().get_node_id(), ray.util.get_node_ip_address()

    def free_port(self) -> int:
        with socket.socket() as s:
            s.bind(("", 0))
            return s.getsockname()[1]

    def call(self, fn: Callable[..., Any], env: dict, args: tuple) -> Any:
        os.environ.update(env)
        return fn(*args)

    def run_script(self, argv: list[str], env: dict, cwd: str | None) -> int:
        full = {**os.environ, **env}
        cwd = cwd if cwd and os.path.isdir(cwd) else None
        self._proc = subprocess.Popen([sys.executable, "-u", "-c", _BOOT, *argv], env=full, cwd=cwd,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
        assert self._proc.stdout is not None
        for line in self._proc.stdout:  # Ray forwards this to the driver with our prefix
            sys.stdout.write(line)
            sys.stdout.flush()
        code = self._proc.wait()
        return 128 - code if code < 0 else code  # killed by signal N: 128 + N, as a shell says

    def stop(self) -> None:
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(5.0)
            except subprocess.TimeoutExpired:
                proc.kill()


_ACTOR: Any = None


def _actor_class() -> Any:
    global _ACTOR
    if _ACTOR is None:
        _ACTOR = _ray().remote(_RankActor)
    return _ACTOR


def _no_dedup() -> None:
    """Turn off Ray's merging of similar lines from different workers ("[repeated 2x across
    cluster]"), which holds back all but one rank's line, when Ray was imported before
    :func:`_ray` could set ``RAY_DEDUP_LOGS=0`` and the user did not choose (a private flag of Ray's)."""
    if os.environ.get("RAY_DEDUP_LOGS", "0") != "0":
        return
    try:
        logging_mod = importlib.import_module("ray._private.ray_logging")
    except ImportError:
        return
    if getattr(logging_mod, "RAY_DEDUP_LOGS", False):
        logging_mod.RAY_DEDUP_LOGS = False


def _ensure_ray(address: str | None) -> bool:
    """Connect to (or start) Ray unless connected; True when this call connected."""
    ray = _ray()
    _no_dedup()
    if ray.is_initialized():
        return False
    ray.init(address=address, log_to_driver=True)
    return True


class _Group:
    """The actors and placement group of one attempt."""

    def __init__(self, job: RayJob, attempt: int, run_id: str) -> None:
        ray = _ray()
        pg_mod = importlib.import_module("ray.util.placement_group")
        strategies = importlib.import_module("ray.util.scheduling_strategies")
        self.job, self.actors, self.pg = job, [], None
        per_node = job.num_workers // job.nodes
        res = dict(job.resources_per_worker) or {"CPU": 1}
        if job.nodes == 1:
            bundles, strategy, bundle_of = [res] * job.num_workers, "PACK", list(range(job.num_workers))
        else:
            node_res = {k: v * per_node for k, v in res.items()}
            bundles, strategy = [node_res] * job.nodes, "STRICT_SPREAD"
            bundle_of = [r // per_node for r in range(job.num_workers)]
        self.pg = pg_mod.placement_group(bundles, strategy=strategy)
        ready, _ = ray.wait([self.pg.ready()], timeout=job.placement_timeout)
        if not ready:
            free = ray.available_resources()
            self.stop()
            raise RayWorkerError(
                f"Ray could not place {job.num_workers} workers ({job.nodes} node(s), {res} each, strategy {strategy}) "
                f"within {job.placement_timeout:g} s; free resources: {free}. Lower num_workers or resources_per_worker, "
                "or add nodes", rank=-1, attempts=attempt)
        options = {"num_cpus": res.get("CPU", 0), "num_gpus": res.get("GPU", 0), "max_concurrency": 2,
                   "resources": {k: v for k, v in res.items() if k not in ("CPU", "GPU", "memory")}}
        if "memory" in res:
            options["memory"] = res["memory"]
        actor = _actor_class()
        try:
            for rank in range(job.num_workers):
                strategy_obj = strategies.PlacementGroupSchedulingStrategy(placement_group=self.pg,
                                                                           placement_group_bundle_index=bundle_of[rank])
                self.actors.append(actor.options(scheduling_strategy=strategy_obj, **options).remote(rank))
            self.envs = self._contract(attempt, run_id, res)
        except Exception as exc:
            self.stop()
            raise RayWorkerError(f"Ray could not start the {job.num_workers} rank actors of attempt {attempt + 1}: "
                                 f"{_describe(exc)}", rank=-1, attempts=attempt) from exc

    def _contract(self, attempt: int, run_id: str, res: dict) -> list[dict]:
        ray, job = _ray(), self.job
        places = ray.get([a.where.remote() for a in self.actors], timeout=self.job.placement_timeout)
        nodes: list[str] = []
        for node_id, _ip in places:
            if node_id not in nodes:
                nodes.append(node_id)
        port = ray.get(self.actors[0].free_port.remote(), timeout=self.job.placement_timeout)
        token = secrets.token_hex(16)
        threads = str(max(1, int(res.get("CPU", 1))))
        envs = []
        for rank, (node_id, _ip) in enumerate(places):
            peers = [r for r, (n, _) in enumerate(places) if n == node_id]
            env = {"RANK": str(rank), "WORLD_SIZE": str(job.num_workers), "LOCAL_RANK": str(peers.index(rank)),
                   "LOCAL_WORLD_SIZE": str(len(peers)), "NODE_RANK": str(nodes.index(node_id)),
                   "MASTER_ADDR": places[0][1], "MASTER_PORT": str(port), "AXONML_RESTART_COUNT": str(attempt),
                   "AXONML_MAX_RESTARTS": str(job.max_failures), "AXONML_RUN_ID": run_id, "AXONML_STORE_TOKEN": token,
                   "OMP_NUM_THREADS": threads}
            if job.backend != "auto":
                env["AXONML_BACKEND"] = job.backend
            env.update(job.env)
            envs.append(env)
        return envs

    def stop(self) -> None:
        ray = _ray()
        if self.actors:
            stops = [a.stop.remote() for a in self.actors]
            ray.wait(stops, num_returns=len(stops), timeout=10.0)
        for a in self.actors:
            ray.kill(a, no_restart=True)
        self.actors = []
        if self.pg is not None:
            importlib.import_module("ray.util.placement_group").remove_placement_group(self.pg)
            self.pg = None


def _describe(exc: BaseException) -> str:
    """The last lines of a failed rank's error (Ray's colour codes removed)."""
    lines = re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).strip().splitlines()
    return "\n".join(lines[-15:])


_GRACE_S = 2.0  # after a first failure, how long the other ranks' outcomes are awaited to find the cause


def _secondary(what: Any) -> bool:
    """A rank that failed only because a peer did: its collective raised naming the peer."""
    return isinstance(what, BaseException) and any(k in str(what) for k in ("CollectiveError", "PeerFailure"))


def _wait(refs: list, deadline: float | None, failed: Callable[[int, Any], bool]) -> tuple[list, tuple | None]:
    """Results in rank order, or ``(None, (rank, exc_or_value))`` for the failure that caused
    the others: when one rank dies, its peers' collectives fail too, often first; so the
    outcomes of the others are awaited for a moment and a rank that failed on its own is
    blamed before one whose collective merely reported the dead peer."""
    ray = _ray()
    index = {ref: r for r, ref in enumerate(refs)}
    results: list[Any] = [None] * len(refs)
    pending = list(refs)
    failures: list[tuple] = []
    grace_end: float | None = None
    while pending:
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        if grace_end is not None:
            left = max(0.0, grace_end - time.monotonic()) if left is None else min(left, max(0.0, grace_end - time.monotonic()))
        ready, pending = ray.wait(pending, num_returns=1, timeout=None if left is None else min(left, 1.0))
        if not ready and grace_end is not None and time.monotonic() >= grace_end:
            break
        if not ready and deadline is not None and time.monotonic() >= deadline:
            if failures:
                break
            rank = index[pending[0]]
            return [], (rank, TimeoutError(f"rank {rank} (and {len(pending) - 1} more) still running at the job timeout"))
        for ref in ready:
            rank = index[ref]
            try:
                value = ray.get(ref)
            except Exception as exc:  # noqa: BLE001  (a failed rank: restart or report)
                failures.append((rank, exc))
                continue
            if failed(rank, value):
                failures.append((rank, value))
                continue
            results[rank] = value
        if failures and grace_end is None:
            grace_end = time.monotonic() + _GRACE_S
    if failures:
        return [], next((f for f in failures if not _secondary(f[1])), failures[0])
    return results, None


def _run_job(job: RayJob, method: str, args_of: Callable[[int, dict], tuple], failed: Callable[[int, Any], bool],
             address: str | None) -> tuple[list, tuple | None, int]:
    """Run attempts until one succeeds or ``max_failures`` restarts are spent."""
    _ensure_ray(address)
    run_id = uuid.uuid4().hex[:12]
    failure: tuple | None = None
    for attempt in range(job.max_failures + 1):
        group = _Group(job, attempt, run_id)
        try:
            deadline = None if job.timeout is None else time.monotonic() + job.timeout
            refs = [getattr(a, method).remote(*args_of(r, group.envs[r])) for r, a in enumerate(group.actors)]
            results, failure = _wait(refs, deadline, failed)
        finally:
            group.stop()
        if failure is None:
            return results, None, attempt
        rank, what = failure
        detail = _describe(what) if isinstance(what, BaseException) else f"exit code {what}"
        if attempt < job.max_failures:
            logger.warning("Ray job %s: rank %d failed (attempt %d of %d), restarting every rank: %s", run_id, rank,
                           attempt + 1, job.max_failures + 1, detail)
    return [], failure, job.max_failures + 1


def run(train_fn: Callable[..., Any], num_workers: int = 1, resources_per_worker: dict | None = None,
        max_failures: int = 0, backend: str = "tcp", env: dict | None = None, address: str | None = None, *,
        args: Sequence[Any] = (), timeout: float | None = None, placement_timeout: float = 60.0) -> list[Any]:
    """Run ``train_fn(*args)`` on ``num_workers`` Ray actors; return each rank's result, in rank order.

    Args:
        train_fn: runs once per rank with the environment contract set (module docstring);
            it typically calls ``init_process_group()`` (backend ``backend``) and trains.
        num_workers: the world size.
        resources_per_worker: Ray resources of one rank (default ``{"CPU": 1}``).
        max_failures: how many times the whole group restarts after a rank fails.
        backend: the collectives backend ``init_process_group()`` picks (``"auto"``: its own choice).
        env: extra environment variables of every rank.
        address: the Ray cluster (``"auto"``, ``"ray://host:10001"``; None: ``RAY_ADDRESS`` or a
            local cluster); ignored when Ray is already initialized.
        args: positional arguments of ``train_fn``.
        timeout: seconds one attempt may run (None: no limit); placement_timeout: seconds to
            wait for the resources.

    Raises:
        RayWorkerError: a rank failed with no restart left (its rank and traceback tail), or the
            workers could not be placed.
        ImportError: Ray is not installed (``pip install ray``).

    Example::

        results = run(train, num_workers=2, max_failures=1)   # [rank 0's value, rank 1's value]
    """
    if not callable(train_fn):
        raise TypeError(f"run: train_fn must be callable, got {type(train_fn).__name__}")
    job = RayJob(num_workers, 1, dict(resources_per_worker or {"CPU": 1}), max_failures, backend, dict(env or {}),
                 placement_timeout, timeout)
    results, failure, attempts = _run_job(job, "call", lambda r, e: (train_fn, e, tuple(args)), lambda r, v: False,
                                          address)
    if failure is not None:
        rank, exc = failure
        raise RayWorkerError(f"Ray job failed: rank {rank} of {num_workers} failed on attempt {attempts} of "
                             f"{max_failures + 1} (no restart left):\n{_describe(exc)}", rank=rank, attempts=attempts)
    return results


def launch_script(script: str, script_args: Sequence[str] = (), nodes: int = 1, nproc_per_node: int = 1,
                  address: str | None = None, max_restarts: int = 0, backend: str = "auto") -> int:
    """Run ``python script script_args...`` as ``nodes * nproc_per_node`` ranks on Ray; return the exit code.

    What ``axonml-launch --ray`` calls. Each rank is a subprocess of its actor, with the
    environment contract; its output reaches this process prefixed ``(rank<r> pid=...)``.
    On the first failing rank every rank stops and the job restarts, up to
    ``max_restarts`` times. With several nodes, each node's ranks share one Ray node
    (``STRICT_SPREAD``). Ray is started (or joined at ``address``) and, if this call
    started it, shut down at the end.

    Returns:
        0, or the exit code of the rank that failed last (128 + N for signal N).

    Example::

        sys.exit(launch_script("train.py", ["--epochs", "3"], nproc_per_node=2))
    """
    if not os.path.isfile(script):
        raise FileNotFoundError(f"axonml-launch --ray: the script {script!r} does not exist")
    job = RayJob(nodes * nproc_per_node, nodes, {"CPU": 1}, max_restarts, backend)
    argv = [os.path.abspath(script), *map(str, script_args)]
    started = _ensure_ray(address)
    try:
        _, failure, attempts = _run_job(job, "run_script", lambda r, e: (argv, e, os.getcwd()), lambda r, code: code != 0,
                                        address)
    except RayWorkerError as exc:
        logger.error("%s", exc)
        return 1
    finally:
        if started:
            _ray().shutdown()
    if failure is None:
        return 0
    rank, what = failure
    code = what if isinstance(what, int) else 1
    detail = f"exit code {code}" if isinstance(what, int) else _describe(what)
    logger.error("axonml-launch --ray: rank %d failed on attempt %d of %d (%s); its output above is prefixed (rank%d ...)",
                 rank, attempts, max_restarts + 1, detail, rank)
    return code
