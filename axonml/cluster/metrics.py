"""Prometheus metrics of training workers and node agents (prometheus-client).

A worker exports, on ``AXONML_METRICS_PORT`` (the launcher sets base port + local rank):

* ``axonml_steps_total``, ``axonml_step_seconds`` (histogram), ``axonml_samples_total``,
  ``axonml_tokens_total``, ``axonml_samples_per_second``, ``axonml_tokens_per_second``:
  fed by :func:`record_step` (or :class:`StepTimer`) from the training loop;
* ``axonml_collective_calls_total``, ``axonml_collective_bytes_total``,
  ``axonml_collective_seconds`` (histogram) and
  ``axonml_collective_bus_bandwidth_bytes_per_second`` (of the last call), labelled by
  ``op`` and ``group_size``: fed by the process groups;
* ``axonml_memory_in_use_bytes`` and ``axonml_memory_peak_bytes`` per ``device``;
* ``axonml_restart_count`` (``AXONML_RESTART_COUNT``).

Every series carries ``rank``, ``local_rank`` and ``world_size`` labels. ``/health``
answers a small JSON status. A node agent exports :class:`AgentMetrics` (workers alive,
restarts, rendezvous generation, node rank) on base port + nproc-per-node.

Note on layering and cost: this module is layer 1 (stdlib and layer 0 only), so it does
not know tensors or process groups. ``init_process_group`` (layer 6) starts the worker
exporter, installs :meth:`WorkerMetrics.record_collective` as the process groups'
observer and registers a memory source. prometheus-client is imported only when an
exporter starts, so ``import axonml`` never pays for it. Collective statistics are plain
counters under one lock, turned into metric families at scrape time: recording a
collective costs about a microsecond. Each exporter has its own registry (never the
global default), so several can live in one process (tests, an agent beside a worker).
"""

from __future__ import annotations

import bisect
import importlib
import json
import logging
import os
import socket
import socketserver
import threading
import time
import wsgiref.simple_server
from typing import Any, Callable, Iterator

from .._env import get_flag

__all__ = [
    "AgentMetrics",
    "StepTimer",
    "WorkerMetrics",
    "busbw_factor",
    "record_step",
    "start_worker_metrics",
    "start_worker_metrics_from_env",
    "stop_worker_metrics",
    "worker_metrics",
]

logger = logging.getLogger(__name__)

#: Upper bounds (seconds) of the collective latency histogram: 10 us to 30 s.
COLLECTIVE_BUCKETS = (1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 5e-2, 0.1, 0.25, 0.5,
                      1.0, 2.5, 5.0, 10.0, 30.0)
#: Upper bounds (seconds) of the step time histogram: 1 ms to 10 min.
STEP_BUCKETS = (1e-3, 5e-3, 1e-2, 2.5e-2, 5e-2, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)
_IDENTITY = ("rank", "local_rank", "world_size")
_PROM: Any = None


def _prom() -> Any:
    """prometheus_client, imported on first use."""
    global _PROM
    if _PROM is None:
        try:
            _PROM = importlib.import_module("prometheus_client")
        except ImportError as exc:
            raise ImportError(f"axonml metrics need prometheus-client ({exc}); install it with "
                              "`pip install prometheus-client`") from exc
    return _PROM


def busbw_factor(op: str, group_size: int) -> float:
    """Bus bandwidth / algorithm bandwidth of ``op`` (nccl-tests): 2(n-1)/n for an all-reduce,
    (n-1)/n for all-gather, reduce-scatter and all-to-all, 1 otherwise, 0 for one rank.

    Example::

        busbw_factor("all_reduce", 4)   # 1.5
    """
    n = group_size
    if n <= 1:
        return 0.0
    if op.startswith("all_reduce"):
        return 2.0 * (n - 1) / n
    if op.startswith(("all_gather", "reduce_scatter", "all_to_all")):
        return (n - 1) / n
    return 1.0


# -- the HTTP side ----------------------------------------------------------------------------------


class _QuietHandler(wsgiref.simple_server.WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002  (the stdlib's name)
        logger.debug("metrics request from %s: " + format, self.address_string(), *args)


class _Server(socketserver.ThreadingMixIn, wsgiref.simple_server.WSGIServer):
    daemon_threads = True
    allow_reuse_address = True  # a restarted worker rebinds its port at once


class _Server6(_Server):
    address_family = socket.AF_INET6


class _Exporter:
    """A WSGI server in a daemon thread: ``/health`` answers ``health()`` as JSON, every
    other path the registry in Prometheus' text format."""

    def __init__(self, registry: Any, port: int, addr: str, health: Callable[[], dict], what: str) -> None:
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            raise ValueError(f"{what}: the metrics port must be an int in [0, 65535], got {port!r}")
        metrics_app = _prom().make_wsgi_app(registry)

        def app(environ: dict, start_response: Callable) -> list[bytes]:
            if environ.get("PATH_INFO", "/") == "/health":
                body = json.dumps(health()).encode()
                start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
                return [body]
            return metrics_app(environ, start_response)

        server_class = _Server6 if ":" in addr else _Server
        try:
            self._server = wsgiref.simple_server.make_server(addr, port, app, server_class, handler_class=_QuietHandler)
        except OSError as exc:
            raise OSError(exc.errno, f"{what}: cannot serve metrics on {addr}:{port} ({exc.strerror or exc}); is the port "
                          "in use by another process? pick another base port (axonml-launch --metrics-port, "
                          "AXONML_METRICS_PORT) or port 0 for a free one") from exc
        self.addr, self.port = addr, self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.2},
                                        name=f"axonml-metrics-{self.port}", daemon=True)
        self._thread.start()
        logger.info("%s: serving metrics on http://%s:%d/metrics", what, addr, self.port)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5.0)


# -- worker metrics ---------------------------------------------------------------------------------


class _CollectiveStats:
    __slots__ = ("count", "nbytes", "seconds", "buckets", "busbw")

    def __init__(self) -> None:
        self.count, self.nbytes, self.seconds, self.busbw = 0, 0, 0.0, 0.0
        self.buckets = [0] * (len(COLLECTIVE_BUCKETS) + 1)  # the last one: above every bound (+Inf)


class _WorkerCollector:
    """Collective and memory statistics, turned into metric families at scrape time."""

    def __init__(self, identity: tuple[str, ...]) -> None:
        self._identity = identity
        self._lock = threading.Lock()
        self._stats: dict[tuple[str, int], _CollectiveStats] = {}
        self.memory_source: Callable[[], dict[str, tuple[int, int]]] | None = None

    def record(self, op: str, nbytes: int, seconds: float, group_size: int) -> None:
        slot = bisect.bisect_left(COLLECTIVE_BUCKETS, seconds)
        busbw = nbytes / seconds * busbw_factor(op, group_size) if seconds > 0 else 0.0
        with self._lock:
            st = self._stats.get((op, group_size))
            if st is None:
                st = self._stats[(op, group_size)] = _CollectiveStats()
            st.count += 1
            st.nbytes += nbytes
            st.seconds += seconds
            st.buckets[slot] += 1
            st.busbw = busbw

    def describe(self) -> list:
        return []  # families are only known at scrape time

    def collect(self) -> Iterator[Any]:
        core = importlib.import_module("prometheus_client.core")
        labels = list(_IDENTITY) + ["op", "group_size"]
        calls = core.CounterMetricFamily("axonml_collective_calls", "Collectives completed", labels=labels)
        nbytes = core.CounterMetricFamily("axonml_collective_bytes", "Bytes of completed collectives (nccl-tests sizes)",
                                          labels=labels)
        latency = core.HistogramMetricFamily("axonml_collective_seconds", "Run time of collectives", labels=labels)
        busbw = core.GaugeMetricFamily("axonml_collective_bus_bandwidth_bytes_per_second",
                                       "Bus bandwidth of the last collective (nccl-tests busbw)", labels=labels)
        with self._lock:
            snapshot = [(k, st.count, st.nbytes, st.seconds, list(st.buckets), st.busbw) for k, st in self._stats.items()]
        for (op, size), count, total, seconds, buckets, bw in sorted(snapshot):
            values = list(self._identity) + [op, str(size)]
            calls.add_metric(values, count)
            nbytes.add_metric(values, total)
            cumulative, running = [], 0
            for bound, n in zip(COLLECTIVE_BUCKETS + (float("inf"),), buckets):
                running += n
                cumulative.append(("+Inf" if bound == float("inf") else repr(bound), running))
            latency.add_metric(values, cumulative, seconds)
            busbw.add_metric(values, bw)
        yield from (calls, nbytes, latency, busbw)
        in_use = core.GaugeMetricFamily("axonml_memory_in_use_bytes", "Bytes held by tensor storage",
                                        labels=list(_IDENTITY) + ["device"])
        peak = core.GaugeMetricFamily("axonml_memory_peak_bytes", "Peak bytes held by tensor storage",
                                      labels=list(_IDENTITY) + ["device"])
        source = self.memory_source
        if source is not None:
            try:
                for device, (current, top) in sorted(source().items()):
                    in_use.add_metric(list(self._identity) + [device], current)
                    peak.add_metric(list(self._identity) + [device], top)
            except Exception as exc:  # noqa: BLE001  (a scrape must not fail on one gauge)
                logger.warning("metrics: the memory source failed: %s", exc)
        yield from (in_use, peak)


class WorkerMetrics:
    """The metrics exporter of one training process (normally started by ``init_process_group``).

    Args:
        port: the TCP port (0: a free one; read :attr:`port`).
        addr: the interface to bind (loopback by default; ``0.0.0.0`` to be scraped remotely).
        rank, world_size, local_rank: the labels of every series.
        restart_count: the value of ``axonml_restart_count``.

    Example::

        m = WorkerMetrics(0, rank=0, world_size=1)
        m.record_step(0.25, samples=32)
        urllib.request.urlopen(f"http://127.0.0.1:{m.port}/metrics").read()
        m.close()
    """

    def __init__(self, port: int, addr: str = "127.0.0.1", *, rank: int = 0, world_size: int = 1, local_rank: int = 0,
                 restart_count: int = 0) -> None:
        prom = _prom()
        self.identity = (str(rank), str(local_rank), str(world_size))
        self.registry = prom.CollectorRegistry(auto_describe=False)
        reg, ids, labels = self.registry, self.identity, _IDENTITY
        self._steps = prom.Counter("axonml_steps", "Training steps completed", labels, registry=reg).labels(*ids)
        self._step_seconds = prom.Histogram("axonml_step_seconds", "Time of one training step", labels, registry=reg,
                                            buckets=STEP_BUCKETS).labels(*ids)
        self._samples = prom.Counter("axonml_samples", "Samples processed", labels, registry=reg).labels(*ids)
        self._tokens = prom.Counter("axonml_tokens", "Tokens processed", labels, registry=reg).labels(*ids)
        self._samples_rate = prom.Gauge("axonml_samples_per_second", "Samples per second of the last step", labels,
                                        registry=reg).labels(*ids)
        self._tokens_rate = prom.Gauge("axonml_tokens_per_second", "Tokens per second of the last step", labels,
                                       registry=reg).labels(*ids)
        prom.Gauge("axonml_restart_count", "Times the job restarted (AXONML_RESTART_COUNT)", labels,
                   registry=reg).labels(*ids).set(restart_count)
        self.steps = 0  # also in /health
        self._collector = _WorkerCollector(ids)
        reg.register(self._collector)
        self._started = time.time()
        self._exporter = _Exporter(reg, port, addr, self._health, f"rank {rank} metrics")
        self.port, self.addr = self._exporter.port, addr
        self._closed = False

    def _health(self) -> dict:
        rank, local_rank, world_size = self.identity
        return {"status": "ok", "role": "worker", "rank": int(rank), "local_rank": int(local_rank),
                "world_size": int(world_size), "steps": self.steps,
                "uptime_seconds": round(time.time() - self._started, 3)}

    def record_step(self, seconds: float, samples: int | None = None, tokens: int | None = None) -> None:
        """Count one training step of ``seconds`` that processed ``samples`` and ``tokens``."""
        self.steps += 1
        self._steps.inc()
        self._step_seconds.observe(seconds)
        if samples is not None:
            self._samples.inc(samples)
            self._samples_rate.set(samples / seconds if seconds > 0 else 0.0)
        if tokens is not None:
            self._tokens.inc(tokens)
            self._tokens_rate.set(tokens / seconds if seconds > 0 else 0.0)

    def record_collective(self, op: str, nbytes: int, seconds: float, group_size: int) -> None:
        """Count one completed collective (the process groups' observer calls this)."""
        self._collector.record(op, nbytes, seconds, group_size)

    def set_memory_source(self, source: Callable[[], dict[str, tuple[int, int]]] | None) -> None:
        """``source()`` returns ``{device: (bytes in use, peak bytes)}``; it is called at each scrape."""
        self._collector.memory_source = source

    def close(self) -> None:
        """Stop serving (safe to call twice)."""
        if not self._closed:
            self._closed = True
            self._exporter.close()


_WORKER: WorkerMetrics | None = None
_WORKER_LOCK = threading.Lock()


def start_worker_metrics(port: int, addr: str = "127.0.0.1", *, rank: int = 0, world_size: int = 1, local_rank: int = 0,
                         restart_count: int = 0) -> WorkerMetrics:
    """Start (or return the running) exporter of this process; :func:`record_step` feeds it.

    A second call with the same port, address and identity returns the running exporter;
    otherwise the running one is closed first (a process re-initialized as another rank).
    """
    global _WORKER
    with _WORKER_LOCK:
        current = _WORKER
        wanted = (str(rank), str(local_rank), str(world_size))
        if current is not None and not current._closed:
            if current.identity == wanted and current.addr == addr and (port == 0 or current.port == port):
                return current
            current.close()
        _WORKER = WorkerMetrics(port, addr, rank=rank, world_size=world_size, local_rank=local_rank,
                                restart_count=restart_count)
        return _WORKER


def _int_env(name: str, value: str) -> int:
    try:
        return int(value.strip())
    except ValueError:
        raise ValueError(f"metrics: environment variable {name}={value!r} is not an integer") from None


def start_worker_metrics_from_env(rank: int, world_size: int, local_rank: int | None = None) -> WorkerMetrics | None:
    """Start the worker exporter when ``AXONML_METRICS_PORT`` is set (else return None).

    The address is ``AXONML_METRICS_ADDR`` (default ``127.0.0.1``), the local rank
    ``local_rank`` or ``LOCAL_RANK`` (default ``rank``), the restart count
    ``AXONML_RESTART_COUNT``.

    Raises:
        ValueError: a variable is not an integer, or the port is outside [0, 65535].
        OSError: the port cannot be bound (the message names it).
    """
    raw = get_flag("AXONML_METRICS_PORT").strip()
    if not raw:
        return None
    port = _int_env("AXONML_METRICS_PORT", raw)
    if local_rank is None:
        env_local = os.environ.get("LOCAL_RANK", "").strip()
        local_rank = _int_env("LOCAL_RANK", env_local) if env_local else rank
    restarts = _int_env("AXONML_RESTART_COUNT", get_flag("AXONML_RESTART_COUNT") or "0")
    addr = get_flag("AXONML_METRICS_ADDR").strip() or "127.0.0.1"
    return start_worker_metrics(port, addr, rank=rank, world_size=world_size, local_rank=local_rank,
                                restart_count=restarts)


def worker_metrics() -> WorkerMetrics | None:
    """The running worker exporter of this process, or None."""
    current = _WORKER
    return current if current is not None and not current._closed else None


def stop_worker_metrics() -> None:
    """Close the worker exporter of this process, if any."""
    global _WORKER
    with _WORKER_LOCK:
        if _WORKER is not None:
            _WORKER.close()
            _WORKER = None


def record_step(seconds: float, samples: int | None = None, tokens: int | None = None) -> None:
    """Record one training step (a no-op, after the argument check, when metrics are off).

    Args:
        seconds: the step's wall time.
        samples, tokens: how many the step processed (for samples/s and tokens/s).

    Example::

        t0 = time.perf_counter()
        loss = train_step(batch)
        record_step(time.perf_counter() - t0, samples=len(batch))
    """
    if not seconds >= 0:
        raise ValueError(f"record_step: seconds must be >= 0, got {seconds!r}")
    for name, value in (("samples", samples), ("tokens", tokens)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
            raise ValueError(f"record_step: {name} must be a non-negative int or None, got {value!r}")
    current = _WORKER
    if current is not None:
        current.record_step(seconds, samples, tokens)


class StepTimer:
    """Time a training step and :func:`record_step` it (not when the step raised).

    ``samples``/``tokens`` may also be set inside the block; :attr:`seconds` holds the
    last step's time. One timer can time many steps. Example::

        timer = StepTimer(samples=batch_size)
        for batch in loader:
            with timer:
                train_step(batch)
    """

    def __init__(self, samples: int | None = None, tokens: int | None = None) -> None:
        self.samples, self.tokens = samples, tokens
        self.seconds = 0.0
        self._t0: float | None = None

    def __enter__(self) -> StepTimer:
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        assert self._t0 is not None, "StepTimer.__exit__ without __enter__"
        self.seconds = time.perf_counter() - self._t0
        self._t0 = None
        if exc_type is None:
            record_step(self.seconds, self.samples, self.tokens)


# -- agent metrics --------------------------------------------------------------------------------


class AgentMetrics:
    """The node agent's exporter: workers alive, restarts, rendezvous generation, node rank,
    and ``/health`` (HTTP 200 with a JSON status).

    Args:
        port: the TCP port (the launcher uses base + nproc-per-node; 0 picks a free one).
        addr: the interface to bind (loopback by default).

    Example::

        with AgentMetrics(0) as m:
            m.set_node_info(node_rank=0, nnodes=2)
            m.set_workers_alive(4)
            urllib.request.urlopen(f"http://127.0.0.1:{m.port}/health").read()  # {"status": "ok", ...}
    """

    def __init__(self, port: int = 0, addr: str = "127.0.0.1") -> None:
        prom = _prom()
        self.registry = prom.CollectorRegistry(auto_describe=False)
        reg = self.registry
        self._alive = prom.Gauge("axonml_agent_workers_alive", "Worker processes of this node running", registry=reg)
        self._restarts = prom.Counter("axonml_agent_restarts", "Restarts of the job seen by this agent", registry=reg)
        self._generation = prom.Gauge("axonml_agent_generation", "Rendezvous generation", registry=reg)
        self._node_rank = prom.Gauge("axonml_agent_node_rank", "This node's rank in the job", registry=reg)
        self._nnodes = prom.Gauge("axonml_agent_nodes", "Nodes in the job", registry=reg)
        self._state = {"workers_alive": 0, "restarts": 0, "generation": 0, "node_rank": -1, "nnodes": 0}
        self._node_rank.set(-1)
        self._started = time.time()
        self._exporter = _Exporter(reg, port, addr, self._health, "agent metrics")
        self.port, self.addr = self._exporter.port, addr
        self._closed = False

    def _health(self) -> dict:
        return {"status": "ok", "role": "agent", **self._state, "uptime_seconds": round(time.time() - self._started, 3)}

    @staticmethod
    def _count(what: str, value: int, low: int = 0) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"AgentMetrics.{what}: expected an int >= {low}, got {value!r}")
        return value

    def set_workers_alive(self, n: int) -> None:
        """The number of this node's worker processes that are running."""
        self._state["workers_alive"] = self._count("set_workers_alive", n)
        self._alive.set(n)

    def inc_restarts(self) -> None:
        """Count one restart of the job."""
        self._state["restarts"] += 1
        self._restarts.inc()

    def set_generation(self, generation: int) -> None:
        """The current rendezvous generation."""
        self._state["generation"] = self._count("set_generation", generation)
        self._generation.set(generation)

    def set_node_info(self, node_rank: int, nnodes: int) -> None:
        """This node's rank and the number of nodes in the current generation."""
        self._count("set_node_info", nnodes, 1)
        if self._count("set_node_info", node_rank) >= nnodes:
            raise ValueError(f"AgentMetrics.set_node_info: node_rank {node_rank} is outside [0, nnodes={nnodes})")
        self._state.update(node_rank=node_rank, nnodes=nnodes)
        self._node_rank.set(node_rank)
        self._nnodes.set(nnodes)

    def close(self) -> None:
        """Stop serving (safe to call twice)."""
        if not self._closed:
            self._closed = True
            self._exporter.close()

    def __enter__(self) -> AgentMetrics:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
