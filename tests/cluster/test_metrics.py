"""Unit tests of axonml.cluster.metrics: the worker and agent exporters over real HTTP.

Values come from closed forms: what was recorded is what a scrape reads (counts, sums,
the bucket a latency falls in, busbw = bytes / seconds * 2(n-1)/n for an all-reduce).
"""

import json
import os
import socket
import threading
import urllib.error
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from axonml.cluster import metrics

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
pytestmark = pytest.mark.timeout(60)


def scrape(port, path="/metrics"):
    """{(sample name, frozenset(labels)): value} of one scrape."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5).read().decode()
    return {(s.name, frozenset(s.labels.items())): s.value for f in text_string_to_metric_families(text) for s in f.samples}


def value(samples, name, **labels):
    found = [v for (n, ls), v in samples.items() if n == name and set(labels.items()) <= set(ls)]
    assert len(found) == 1, f"{name} {labels}: {len(found)} samples"
    return found[0]


def health(port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as r:
        assert r.status == 200 and r.headers["Content-Type"] == "application/json"
        return json.loads(r.read())


@pytest.fixture
def worker():
    w = metrics.start_worker_metrics(0, rank=3, world_size=4, local_rank=1, restart_count=2)
    yield w
    metrics.stop_worker_metrics()


def test_steps_and_throughput(worker):
    metrics.record_step(0.5, samples=32, tokens=4096)
    metrics.record_step(0.25, samples=16)
    metrics.record_step(2.0)
    s = scrape(worker.port)
    ids = {"rank": "3", "local_rank": "1", "world_size": "4"}
    assert value(s, "axonml_steps_total", **ids) == 3
    assert value(s, "axonml_step_seconds_count", **ids) == 3 and value(s, "axonml_step_seconds_sum", **ids) == 2.75
    assert value(s, "axonml_step_seconds_bucket", le="0.25", **ids) == 1  # 0.25 <= 0.25
    assert value(s, "axonml_step_seconds_bucket", le="0.5", **ids) == 2
    assert value(s, "axonml_samples_total", **ids) == 48 and value(s, "axonml_tokens_total", **ids) == 4096
    assert value(s, "axonml_samples_per_second", **ids) == 64.0  # the last step with samples: 16 / 0.25
    assert value(s, "axonml_tokens_per_second", **ids) == 8192.0
    assert value(s, "axonml_restart_count", **ids) == 2
    h = health(worker.port)
    assert h["status"] == "ok" and h["role"] == "worker"
    assert (h["rank"], h["local_rank"], h["world_size"], h["steps"]) == (3, 1, 4, 3)


def test_collectives_and_memory(worker):
    worker.record_collective("all_reduce", 4096, 3e-5, 4)
    worker.record_collective("all_reduce", 4096, 1e-3, 4)
    worker.record_collective("all_gather", 800, 2e-4, 2)
    worker.set_memory_source(lambda: {"cpu": (1000, 5000)})
    s = scrape(worker.port)
    ar = {"op": "all_reduce", "group_size": "4", "rank": "3"}
    assert value(s, "axonml_collective_calls_total", **ar) == 2 and value(s, "axonml_collective_bytes_total", **ar) == 8192
    assert value(s, "axonml_collective_seconds_count", **ar) == 2
    assert value(s, "axonml_collective_seconds_sum", **ar) == pytest.approx(1.03e-3)
    assert value(s, "axonml_collective_seconds_bucket", le="2.5e-05", **ar) == 0
    assert value(s, "axonml_collective_seconds_bucket", le="5e-05", **ar) == 1
    assert value(s, "axonml_collective_seconds_bucket", le="0.001", **ar) == 2
    assert value(s, "axonml_collective_seconds_bucket", le="+Inf", **ar) == 2
    # busbw of the last call: 4096 B / 1 ms * 2 * 3 / 4
    assert value(s, "axonml_collective_bus_bandwidth_bytes_per_second", **ar) == pytest.approx(4096 / 1e-3 * 1.5)
    ag = {"op": "all_gather", "group_size": "2"}
    assert value(s, "axonml_collective_bus_bandwidth_bytes_per_second", **ag) == pytest.approx(800 / 2e-4 * 0.5)
    assert value(s, "axonml_memory_in_use_bytes", device="cpu", rank="3") == 1000
    assert value(s, "axonml_memory_peak_bytes", device="cpu", rank="3") == 5000


def test_a_failing_memory_source_does_not_break_the_scrape(worker):
    worker.set_memory_source(lambda: 1 / 0)
    metrics.record_step(0.1)
    assert value(scrape(worker.port), "axonml_steps_total") == 1


@pytest.mark.parametrize("op, n, factor", [("all_reduce", 4, 1.5), ("all_reduce", 1, 0.0), ("all_gather_into_tensor", 4, 0.75),
                                           ("reduce_scatter", 2, 0.5), ("all_to_all", 3, 2 / 3), ("broadcast", 8, 1.0)])
def test_busbw_factor(op, n, factor):
    assert metrics.busbw_factor(op, n) == pytest.approx(factor)


def test_record_step_checks_its_arguments_even_when_off():
    assert metrics.worker_metrics() is None
    metrics.record_step(0.1, samples=3)  # no exporter: nothing happens
    with pytest.raises(ValueError, match=r"seconds must be >= 0, got -1"):
        metrics.record_step(-1)
    with pytest.raises(ValueError, match=r"samples must be a non-negative int or None, got True"):
        metrics.record_step(0.1, samples=True)
    with pytest.raises(ValueError, match=r"tokens must be a non-negative int or None, got 2.5"):
        metrics.record_step(0.1, tokens=2.5)


def test_step_timer(worker):
    timer = metrics.StepTimer(samples=8)
    for _ in range(2):
        with timer:
            pass
    with pytest.raises(RuntimeError), timer:
        raise RuntimeError("a failed step is not counted")
    with metrics.StepTimer() as t:
        t.tokens = 100
    s = scrape(worker.port)
    assert value(s, "axonml_steps_total") == 3 and value(s, "axonml_samples_total") == 16
    assert value(s, "axonml_tokens_total") == 100 and timer.seconds >= 0


def test_one_exporter_per_process(worker):
    assert metrics.start_worker_metrics(worker.port, rank=3, world_size=4, local_rank=1) is worker
    other = metrics.start_worker_metrics(0, rank=0, world_size=1)  # re-initialized as another rank
    assert other is not worker and metrics.worker_metrics() is other
    with pytest.raises(urllib.error.URLError):
        scrape(worker.port)
    metrics.record_step(0.1)
    assert value(scrape(other.port), "axonml_steps_total", rank="0") == 1


def test_from_env(monkeypatch):
    monkeypatch.delenv("AXONML_METRICS_PORT", raising=False)
    assert metrics.start_worker_metrics_from_env(0, 1) is None
    monkeypatch.setenv("AXONML_METRICS_PORT", "nine")
    with pytest.raises(ValueError, match=r"AXONML_METRICS_PORT='nine' is not an integer"):
        metrics.start_worker_metrics_from_env(0, 1)
    monkeypatch.setenv("AXONML_METRICS_PORT", "70000")
    with pytest.raises(ValueError, match=r"port must be an int in \[0, 65535\], got 70000"):
        metrics.start_worker_metrics_from_env(0, 1)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        monkeypatch.setenv("AXONML_METRICS_PORT", str(busy.getsockname()[1]))
        with pytest.raises(OSError, match=rf"cannot serve metrics on 127.0.0.1:{busy.getsockname()[1]}.*in use"):
            metrics.start_worker_metrics_from_env(0, 1)
    monkeypatch.setenv("AXONML_METRICS_PORT", "0")
    monkeypatch.setenv("LOCAL_RANK", "5")
    monkeypatch.setenv("AXONML_RESTART_COUNT", "4")
    try:
        w = metrics.start_worker_metrics_from_env(7, 8)
        assert value(scrape(w.port), "axonml_restart_count", rank="7", local_rank="5", world_size="8") == 4
    finally:
        metrics.stop_worker_metrics()


def test_agent_metrics_and_health():
    with metrics.AgentMetrics(0) as agent:
        h = health(agent.port)
        assert h["status"] == "ok" and h["role"] == "agent" and h["workers_alive"] == 0 and h["node_rank"] == -1
        agent.set_workers_alive(4)
        agent.set_generation(3)
        agent.set_node_info(node_rank=1, nnodes=2)
        agent.inc_restarts()
        agent.inc_restarts()
        h = health(agent.port)
        assert (h["workers_alive"], h["generation"], h["restarts"], h["node_rank"], h["nnodes"]) == (4, 3, 2, 1, 2)
        s = scrape(agent.port)
        assert value(s, "axonml_agent_workers_alive") == 4 and value(s, "axonml_agent_generation") == 3
        assert value(s, "axonml_agent_restarts_total") == 2
        assert value(s, "axonml_agent_node_rank") == 1 and value(s, "axonml_agent_nodes") == 2
        with pytest.raises(ValueError, match=r"set_workers_alive: expected an int >= 0, got -1"):
            agent.set_workers_alive(-1)
        with pytest.raises(ValueError, match=r"node_rank 2 is outside \[0, nnodes=2\)"):
            agent.set_node_info(2, 2)
        port = agent.port
    with pytest.raises(urllib.error.URLError):
        health(port)
    agent.close()  # twice is fine


def test_exporters_have_private_registries(worker):
    # a worker and two agents in one process do not see each other's series
    a, b = metrics.AgentMetrics(0), metrics.AgentMetrics(0)
    try:
        a.set_workers_alive(1)
        b.set_workers_alive(2)
        assert value(scrape(a.port), "axonml_agent_workers_alive") == 1
        assert value(scrape(b.port), "axonml_agent_workers_alive") == 2
        assert not any(n.startswith("axonml_agent") for n, _ in scrape(worker.port))
    finally:
        a.close()
        b.close()


def test_concurrent_scrapes_while_recording(worker):
    stop = threading.Event()

    def record():
        while not stop.is_set():
            worker.record_collective("broadcast", 100, 1e-4, 2)

    t = threading.Thread(target=record)
    t.start()
    try:
        counts = [value(scrape(worker.port), "axonml_collective_calls_total", op="broadcast") for _ in range(5)]
    finally:
        stop.set()
        t.join()
    assert counts == sorted(counts) and counts[-1] > 0


def test_prometheus_yml_scrapes_the_launcher_layout():
    yaml = pytest.importorskip("yaml")  # PyYAML (installed with ray, the test extra)
    with open(os.path.join(REPO, "launch", "prometheus.yml")) as f:
        cfg = yaml.safe_load(f)
    assert cfg["global"]["scrape_timeout"] <= cfg["global"]["scrape_interval"]
    jobs = {j["job_name"]: j for j in cfg["scrape_configs"]}
    assert set(jobs) == {"axonml-workers", "axonml-agents"}
    workers = [t for g in jobs["axonml-workers"]["static_configs"] for t in g["targets"]]
    agents = [t for g in jobs["axonml-agents"]["static_configs"] for t in g["targets"]]
    base = min(int(t.rsplit(":", 1)[1]) for t in workers)
    nproc = len(workers)
    # workers on base + local rank, the agent on base + nproc_per_node
    assert sorted(int(t.rsplit(":", 1)[1]) for t in workers) == list(range(base, base + nproc))
    assert [int(t.rsplit(":", 1)[1]) for t in agents] == [base + nproc]
    # and those targets answer: serve them (when the ports are free here) and scrape each
    try:
        exporters = [metrics.WorkerMetrics(base + r, rank=r, world_size=nproc, local_rank=r) for r in range(nproc)]
    except OSError:
        pytest.skip(f"ports {base}..{base + nproc} are in use on this machine")
    try:
        exporters.append(metrics.AgentMetrics(base + nproc))
        for job, targets in (("axonml-workers", workers), ("axonml-agents", agents)):
            for target in targets:
                url = f"http://{target}{jobs[job].get('metrics_path', '/metrics')}"
                text = urllib.request.urlopen(url, timeout=5).read().decode()
                assert ("axonml_steps_total" if job == "axonml-workers" else "axonml_agent_workers_alive") in text
    finally:
        for e in exporters:
            e.close()
