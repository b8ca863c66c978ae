"""The node agent behind ``axonml-launch``: join the rendezvous, run the workers, restart them.

One agent runs on each node. It (optionally) hosts the job's :class:`RendezvousServer`,
joins the job, starts ``nproc_per_node`` workers with the environment contract of
:mod:`.env`, and watches them:

* a worker fails: the agent stops its other workers, reports the failure, and every agent
  (told by its heartbeat) stops its workers and joins the new generation, while
  ``max_restarts`` allows; then each agent exits with the failing worker's exit code and
  prints a summary naming the rank, the exit code and the end of its traceback;
* the membership changes (``--nodes MIN:MAX``): a node joining a job with room, or a node
  lost or leaving with at least MIN left, restarts the workers at the new size;
* SIGINT/SIGTERM: forwarded once to every worker; after a grace period the rest are
  killed, the agent leaves the job and exits with 128 + the signal number.

With ``backend="mpi"`` (one node) the workers are one ``mpiexec -n K`` job
(:class:`.mpi_workers.MpiWorkerGroup`); everything above holds for it unchanged.

Design note (who hosts the service): with ``--standalone`` the agent serves the
rendezvous on a free loopback port. Otherwise the agent whose ``--node-rank`` is 0, or an
agent without ``--node-rank`` whose host is the endpoint's, tries to serve it on
``--rdzv-endpoint``; when the port is already held (by another agent of this host) it
joins as a client, like every other agent. The hosting agent keeps serving until
every node has learned how the job ended (bounded by ``close_timeout``). The service lives
in that agent: if its node is lost, the job is lost (the other agents notice within
``heartbeat_timeout`` and stop).

Design note (the store): the workers' ``MASTER_ADDR:MASTER_PORT`` is the rendezvous
service, which also serves the key-value store; ``AXONML_USE_AGENT_STORE=1`` tells
``init_process_group`` not to start its own. Keys are namespaced by
``AXONML_RESTART_COUNT`` (the generation), so a restarted job never reads stale keys.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import IO, Any

from .._env import get_flag
from ..errors import RendezvousError
from ._proto import rendezvous_pb2 as pb
from .env import WorkerEnv
from .mpi_workers import MpiWorkerGroup, find_mpiexec
from .rendezvous import RendezvousClient, RendezvousConfig, RendezvousServer, StaleGenerationError, join_timeout_message
from .workers import WorkerExit, WorkerGroup, WorkerSpec, describe_exit, traceback_tail

try:  # Prometheus metrics are optional: the agent runs without them
    from . import metrics as _metrics
except ImportError:  # pragma: no cover - metrics.py ships with axonml
    _metrics = None  # type: ignore[assignment]

__all__ = ["AgentConfig", "NodeAgent", "is_local_host", "mpi_multinode_message"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class AgentConfig:
    """Everything one node agent needs (``axonml-launch`` builds it from its arguments).

    Args:
        cmd: the worker command, e.g. ``(sys.executable, "-u", "train.py", "--lr", "0.1")``.
        nproc_per_node: workers on this node.
        min_nodes, max_nodes: the job's node count range (``--nodes MIN:MAX``).
        node_rank: this node's rank, or -1 to let the rendezvous assign one.
        rdzv_host, rdzv_port: the rendezvous endpoint (ignored with ``standalone``).
        job_id: the job id (``--rdzv-id``), also ``AXONML_RUN_ID``.
        token: the job's shared token.
        standalone: serve a private rendezvous on a free loopback port (one node).
        max_restarts: restarts after worker failures.
        monitor_interval: seconds between checks of the workers.
        log_dir, tee: per-rank log files, and whether to copy them to the console too.
        metrics_port: base port of the workers' Prometheus exporters (worker i: base + i;
            the agent's own: base + nproc_per_node); None: no metrics.
        backend: exported as ``AXONML_BACKEND`` unless ``"auto"``; ``"mpi"`` starts the workers as one
            ``mpiexec -n nproc_per_node`` job (one node only: see :func:`mpi_multinode_message`).
        join_timeout, last_call_timeout, heartbeat_timeout: rendezvous timing (seconds).
        heartbeat_interval: how often the agent reports alive.
        stop_timeout: grace between SIGTERM and SIGKILL when stopping workers.
        close_timeout: how long the hosting agent waits for the others to learn the outcome.
    """

    cmd: tuple[str, ...]
    nproc_per_node: int = 1
    min_nodes: int = 1
    max_nodes: int = 1
    node_rank: int = -1
    rdzv_host: str = "127.0.0.1"
    rdzv_port: int = 29400
    job_id: str = "none"
    token: str = ""
    standalone: bool = False
    max_restarts: int = 0
    monitor_interval: float = 0.1
    log_dir: str | None = None
    tee: bool = False
    metrics_port: int | None = None
    backend: str = "auto"
    join_timeout: float = 600.0
    last_call_timeout: float = 1.0
    heartbeat_timeout: float = 30.0
    heartbeat_interval: float = 2.0
    stop_timeout: float = 5.0
    close_timeout: float = 10.0
    hostname: str = field(default_factory=socket.gethostname)

    def __post_init__(self) -> None:
        if not self.cmd:
            raise ValueError("AgentConfig.cmd is empty: give the script to run")
        if self.nproc_per_node < 1:
            raise ValueError(f"--nproc-per-node must be >= 1, got {self.nproc_per_node}")
        if not 1 <= self.min_nodes <= self.max_nodes:
            raise ValueError(f"--nodes needs 1 <= MIN <= MAX, got {self.min_nodes}:{self.max_nodes}")
        if not -1 <= self.node_rank < self.max_nodes:
            raise ValueError(f"--node-rank {self.node_rank} is outside [0, {self.max_nodes}) for --nodes "
                             f"{self.min_nodes}:{self.max_nodes}")
        if self.max_restarts < 0:
            raise ValueError(f"--max-restarts must be >= 0, got {self.max_restarts}")
        if not self.token:
            raise ValueError("the job needs a token: pass --rdzv-token-file FILE or set AXONML_STORE_TOKEN "
                             "(every node of the job must use the same one)")
        if self.backend == "mpi" and self.max_nodes != 1:
            raise ValueError(mpi_multinode_message(self.min_nodes, self.max_nodes))
        if self.standalone and self.max_nodes != 1:
            raise ValueError(f"--standalone runs one node, but --nodes is {self.min_nodes}:{self.max_nodes}")
        if self.metrics_port is not None and not 0 < self.metrics_port + self.nproc_per_node <= 65535:
            raise ValueError(f"--metrics-port {self.metrics_port} + --nproc-per-node {self.nproc_per_node} must stay "
                             "within [1, 65535]")
        for name in ("monitor_interval", "join_timeout", "heartbeat_timeout", "heartbeat_interval", "stop_timeout"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"AgentConfig.{name} must be >= 0 seconds, got {getattr(self, name)!r}")


def mpi_multinode_message(min_nodes: int, max_nodes: int) -> str:
    """Why ``--backend mpi`` runs one node only, and what to run instead."""
    return (f"--backend mpi runs one node (got --nodes {min_nodes}:{max_nodes}): an MPI job's processes on every node "
            "must be started by one mpiexec (its process manager wires them together), not by one agent per node; "
            "run `mpiexec -f hostfile -n N python train.py` (see launch/mpi_run.sh and launch/mpi_hostfile), or use "
            "--backend tcp with axonml-launch on each node")


def is_local_host(host: str) -> bool:
    """Whether ``host`` names an address of this machine (so this agent can serve it)."""
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except OSError:
        return False
    for family, _, _, _, addr in infos:
        try:
            with socket.socket(family, socket.SOCK_STREAM) as s:
                s.bind((addr[0], 0))
            return True
        except OSError:
            continue
    return False


def _bind_address(host: str) -> str:
    """The address to serve ``host`` on: the loopback or interface address it resolves to."""
    if host in ("0.0.0.0", "::", ""):
        return host or "127.0.0.1"
    try:
        return socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)[0][4][0]
    except OSError:
        return host


def _listening(host: str, port: int) -> bool:
    """Whether something already accepts connections on ``host:port`` (then this agent joins it)."""
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


@dataclass
class _Outcome:
    kind: str  # "succeeded", "restart", "failed", "signal"
    failure: pb.Failure | None = None
    message: str = ""
    exit_code: int = 0


class _Heartbeat(threading.Thread):
    """Reports this node alive and notices a new generation or a final state at once."""

    def __init__(self, client: RendezvousClient, generation: int, interval: float, alive: Any) -> None:
        super().__init__(name="axonml-agent-heartbeat", daemon=True)
        self._client, self._generation, self._interval, self._alive = client, generation, interval, alive
        self.changed = threading.Event()
        self.latest: pb.HeartbeatResponse | None = None
        self.error: BaseException | None = None
        self._stop = threading.Event()

    def run(self) -> None:
        known = pb.RUNNING
        while not self._stop.is_set():
            try:
                reply = self._client.heartbeat(self._generation, known, self._alive(), wait=self._interval)
            except (RendezvousError, ValueError) as e:
                self.error = e
                self.changed.set()
                return
            self.latest = reply
            known = reply.state
            if reply.generation != self._generation or reply.state != pb.RUNNING:
                self.changed.set()
                return

    def stop(self) -> None:
        self._stop.set()


class NodeAgent:
    """Run one node of a job. :meth:`run` returns the exit code for ``axonml-launch``.

    Example::

        cfg = AgentConfig(cmd=(sys.executable, "-u", "train.py"), nproc_per_node=2, standalone=True, token="t")
        sys.exit(NodeAgent(cfg).run())
    """

    def __init__(self, config: AgentConfig, stdout: IO[bytes] | None = None, stderr: IO[bytes] | None = None) -> None:
        self.config = config
        self._stdout, self._stderr = stdout, stderr
        self._signal: int | None = None
        self.server: RendezvousServer | None = None
        self.client: RendezvousClient | None = None
        self._metrics: Any = None
        self.restarts = 0

    # -- life cycle -----------------------------------------------------------------------
    def run(self) -> int:
        """Serve (if this agent hosts it), join, run and restart the workers; returns the exit code."""
        cfg = self.config
        previous = self._install_signal_handlers()
        try:
            if cfg.backend == "mpi":
                find_mpiexec()  # fail before the rendezvous when there is none
            self._start_rendezvous()
            if cfg.metrics_port is not None and _metrics is not None:
                addr = get_flag("AXONML_METRICS_ADDR").strip() or "127.0.0.1"
                self._metrics = _metrics.AgentMetrics(cfg.metrics_port + cfg.nproc_per_node, addr=addr)
            while True:
                assignment = self._join()
                if assignment is None:  # interrupted while joining
                    return self._leave_on_signal()
                outcome = self._run_generation(assignment)
                if outcome.kind == "restart":
                    self.restarts += 1
                    if self._metrics is not None:
                        self._metrics.inc_restarts()
                    continue
                if outcome.kind == "succeeded":
                    logger.info("job %r finished successfully", cfg.job_id)
                    return 0
                if outcome.kind == "signal":
                    return self._leave_on_signal()
                self._print_summary(outcome)
                return outcome.exit_code or 1
        except (RendezvousError, ValueError, OSError) as e:
            # the rendezvous failed or refused us, or a worker or the metrics exporter could not start
            self._say(f"axonml-launch: {e}")
            self._leave_quietly(f"agent on {cfg.hostname} failed: {str(e)[:200]}", 1)
            return 1
        finally:
            self._shutdown()
            self._restore_signal_handlers(previous)

    def _start_rendezvous(self) -> None:
        cfg = self.config
        rcfg = RendezvousConfig(job_id=cfg.job_id, min_nodes=cfg.min_nodes, max_nodes=cfg.max_nodes,
                                max_restarts=cfg.max_restarts, join_timeout=cfg.join_timeout,
                                last_call_timeout=cfg.last_call_timeout, heartbeat_timeout=cfg.heartbeat_timeout,
                                advertise_addr=None if cfg.standalone else cfg.rdzv_host)
        host, port = cfg.rdzv_host, cfg.rdzv_port
        if cfg.standalone:
            self.server = RendezvousServer(rcfg, "127.0.0.1", 0, token=cfg.token).start()
            host, port = "127.0.0.1", self.server.port
        elif (cfg.node_rank == 0 or (cfg.node_rank < 0 and is_local_host(host))) and not _listening(host, port):
            try:
                self.server = RendezvousServer(rcfg, _bind_address(host), port, token=cfg.token).start()
                logger.info("serving the rendezvous of job %r on %s", cfg.job_id, self.server.address)
            except RendezvousError as e:
                # another agent of this host already serves it (or something else holds the port:
                # then the join fails with the service's answer, or as unreachable)
                logger.info("not serving the rendezvous on %s:%d (%s); joining it as a client", host, port, e)
        retry = max(cfg.heartbeat_timeout, 10.0)
        self.client = RendezvousClient(host, port, cfg.token, cfg.job_id, hostname=cfg.hostname, retry_timeout=retry)

    def _join(self) -> pb.Assignment | None:
        cfg = self.config
        assert self.client is not None
        limit = cfg.join_timeout + 30.0  # the service fails the round at join_timeout; this is the backstop
        deadline = time.monotonic() + limit
        last = None
        while self._signal is None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise RendezvousError(join_timeout_message(cfg.job_id, self.client.address, limit, cfg.min_nodes, last))
            # short calls keep a Ctrl-C during the rendezvous responsive
            last = self.client.join_once(cfg.nproc_per_node, min_nodes=cfg.min_nodes, max_nodes=cfg.max_nodes,
                                         node_rank=cfg.node_rank, wait=min(left, 1.0))
            if not last.complete:
                continue
            a = last.assignment
            logger.info("node rank %d of %d, generation %d, ranks %d..%d of %d", a.node_rank, a.nnodes, a.generation,
                        a.rank_offset, a.rank_offset + cfg.nproc_per_node - 1, a.world_size)
            if self._metrics is not None:
                self._metrics.set_node_info(a.node_rank, a.nnodes)
                self._metrics.set_generation(a.generation)
            return a
        return None

    def _worker_specs(self, a: pb.Assignment) -> list[WorkerSpec]:
        cfg = self.config
        specs = []
        for local in range(cfg.nproc_per_node):
            env = WorkerEnv(
                rank=a.rank_offset + local, local_rank=local, world_size=a.world_size, local_world_size=cfg.nproc_per_node,
                node_rank=a.node_rank, nnodes=a.nnodes, master_addr=a.master_addr, master_port=a.master_port,
                restart_count=a.generation, max_restarts=a.max_restarts, run_id=a.run_id, store_token=cfg.token,
                metrics_port=None if cfg.metrics_port is None else cfg.metrics_port + local, backend=cfg.backend,
            ).to_environ()
            if cfg.metrics_port is None:
                env["AXONML_METRICS_PORT"] = ""  # never inherit the agent's
            specs.append(WorkerSpec(cfg.cmd, a.rank_offset + local, local, env))
        return specs

    def _run_generation(self, a: pb.Assignment) -> _Outcome:
        cfg = self.config
        assert self.client is not None
        log_dir = os.path.join(cfg.log_dir, cfg.job_id, f"gen{a.generation}") if cfg.log_dir else None
        kind = MpiWorkerGroup if cfg.backend == "mpi" else WorkerGroup  # mpi: one mpiexec -n K job
        group = kind(self._worker_specs(a), log_dir=log_dir, tee=cfg.tee, stdout=self._stdout, stderr=self._stderr)
        group.start()
        beat = _Heartbeat(self.client, a.generation, cfg.heartbeat_interval, group.alive)
        beat.start()
        reported_success = False
        try:
            while True:
                if self._signal is not None:
                    self._stop_workers(group, self._signal)
                    return _Outcome("signal")
                ended = group.next_exit(cfg.monitor_interval)
                if self._metrics is not None:
                    self._metrics.set_workers_alive(group.alive())
                if ended is not None and ended.exit_code != 0:
                    return self._on_worker_failure(group, a, ended)
                if ended is not None and group.all_succeeded() and not reported_success:
                    reported_success = True
                    try:
                        if self.client.report_success(a.generation).state == pb.SUCCEEDED:
                            return _Outcome("succeeded")
                    except StaleGenerationError:
                        return _Outcome("restart")
                if beat.changed.is_set():
                    outcome = self._on_job_change(beat, a)
                    if outcome is not None:
                        self._stop_workers(group)
                        return outcome
        finally:
            beat.stop()
            group.stop(cfg.stop_timeout)

    def _on_job_change(self, beat: _Heartbeat, a: pb.Assignment) -> _Outcome | None:
        if beat.error is not None:
            raise RendezvousError(f"lost the rendezvous of job {self.config.job_id!r}: {beat.error}")
        view = beat.latest
        assert view is not None
        if view.generation != a.generation:
            logger.warning("job %r moved to generation %d (%s): restarting this node's workers", self.config.job_id,
                           view.generation, view.message)
            return _Outcome("restart")
        if view.state == pb.SUCCEEDED:
            return _Outcome("succeeded")
        if view.state == pb.FAILED:
            failure = view.failure if view.HasField("failure") else None
            return _Outcome("failed", failure, view.message, failure.exit_code if failure is not None else 1)
        return None

    def _on_worker_failure(self, group: WorkerGroup, a: pb.Assignment, ended: WorkerExit) -> _Outcome:
        cfg = self.config
        assert self.client is not None
        group.send_signal(signal.SIGTERM)  # the others stop while the failure is reported
        failure = pb.Failure(node_rank=a.node_rank, hostname=cfg.hostname, rank=ended.rank, local_rank=ended.local_rank,
                             exit_code=ended.exit_code, reason=describe_exit(ended.returncode),
                             traceback=traceback_tail(group.tail(ended.local_rank))[-8000:], generation=a.generation)
        logger.info("worker rank %d ended: %s", ended.rank, failure.reason)
        try:
            reply = self.client.report_failure(a.generation, failure)
        except StaleGenerationError:
            return _Outcome("restart")  # another node's failure already opened a new generation
        if reply.restarting:
            self._say(f"axonml-launch: worker rank {ended.rank} {failure.reason}; restarting the job "
                      f"(restart {reply.restart_count} of {cfg.max_restarts})")
            return _Outcome("restart")
        return _Outcome("failed", failure, reply.message, ended.exit_code)

    def _stop_workers(self, group: WorkerGroup, sig: int = signal.SIGTERM) -> None:
        group.stop(self.config.stop_timeout, sig)

    # -- signals --------------------------------------------------------------------------
    def _install_signal_handlers(self) -> dict:
        if threading.current_thread() is not threading.main_thread():
            return {}
        previous = {}
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, self._on_signal)
        return previous

    @staticmethod
    def _restore_signal_handlers(previous: dict) -> None:
        for sig, handler in previous.items():
            signal.signal(sig, handler)

    def _on_signal(self, signum: int, frame: Any) -> None:
        if self._signal is None:
            self._signal = signum
            logger.warning("agent got %s: stopping the workers", signal.Signals(signum).name)

    def _leave_on_signal(self) -> int:
        sig = self._signal or signal.SIGTERM
        code = 128 + sig
        name = signal.Signals(sig).name
        self._leave_quietly(f"agent on {self.config.hostname} got {name}", code)
        self._say(f"axonml-launch: stopped by {name}")
        return code

    def _leave_quietly(self, reason: str, exit_code: int) -> None:
        if self.client is None:
            return
        try:
            self.client.leave(reason, exit_code)
        except (RendezvousError, ValueError) as e:
            logger.info("could not leave the rendezvous: %s", e)

    # -- the end --------------------------------------------------------------------------
    def _shutdown(self) -> None:
        if self.server is not None:
            try:
                self.server.fail_job(f"the agent serving the rendezvous (host {self.config.hostname}) stopped")
                if not self.server.wait_settled(self.config.close_timeout):
                    logger.warning("stopping the rendezvous before every node learned the outcome")
            except RendezvousError:
                pass
            self.server.stop()
        if self.client is not None:
            self.client.close()
        if self._metrics is not None:
            self._metrics.close()

    def _say(self, text: str) -> None:
        out = self._stderr if self._stderr is not None else sys.stderr.buffer
        try:
            out.write((text + "\n").encode())
            out.flush()
        except (OSError, ValueError):
            pass

    def _print_summary(self, outcome: _Outcome) -> None:
        f = outcome.failure
        lines = [f"axonml-launch: job {self.config.job_id!r} failed: {outcome.message or 'a worker failed'}"]
        if f is not None and f.rank >= 0:
            how = f"exit code {f.exit_code}" + ("" if f.reason.startswith("exit code") else f" ({f.reason})")
            lines.append(f"  rank {f.rank} (local rank {f.local_rank} on node {f.node_rank}, host {f.hostname}) ended with {how}")
            lines.append(f"  restarts used: {self.restarts} of {self.config.max_restarts} on this node")
            if f.traceback:
                lines.append("  last lines of its output:")
                lines.extend("    " + line for line in f.traceback.splitlines())
        elif f is not None:
            lines.append(f"  node {f.node_rank} ({f.hostname}): {f.reason}")
        self._say("\n".join(lines))

