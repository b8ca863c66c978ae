"""A real 2-process tcp job with AXONML_METRICS_PORT per rank (what the agent sets: base +
local rank): the parent scrapes every worker over HTTP during the run, twice, and checks
that the counters moved by exactly what the ranks did in between (steps, samples,
all-reduce and all-gather calls and bytes), plus the labels, memory and restart count.

Run twice: the ranks present different host names (the tcp backend's sockets), and one
host (shared memory). On shared memory a synchronous all-reduce of a few KiB runs in the
caller's thread, outside ``ProcessGroup._submit``; it reaches the metrics only once
``backends/tcp.py`` times it and calls ``self._observe`` (an expected failure until then).
"""

import json
import os
import shutil
import tempfile
import threading
import time
import urllib.request

import pytest
from harness import free_port, hosts, run_ranks
from metrics_targets import NUMEL, scraped_training
from prometheus_client.parser import text_string_to_metric_families

pytestmark = pytest.mark.timeout(120)
K1, K2 = 3, 5


def scrape(port):
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return {(s.name, frozenset(s.labels.items())): s.value for f in text_string_to_metric_families(text) for s in f.samples}


def value(samples, name, **labels):
    found = [v for (n, ls), v in samples.items() if n == name and set(labels.items()) <= set(ls)]
    assert len(found) == 1, f"{name} {labels}: {len(found)} samples in {sorted(n for n, _ in samples)}"
    return found[0]


def _wait_files(paths, job, seconds=60.0):
    deadline = time.monotonic() + seconds
    while not all(os.path.exists(p) for p in paths):
        if not job.is_alive() or time.monotonic() > deadline:
            job.join(1.0)
            raise AssertionError(f"ranks did not reach {paths}: {job.outcome}")
        time.sleep(0.02)


class Job(threading.Thread):
    def __init__(self, *args, **kwargs):
        super().__init__(daemon=True)
        self.args, self.kwargs, self.outcome = args, kwargs, None

    def run(self):
        try:
            self.outcome = run_ranks(*self.args, **self.kwargs)
        except BaseException as exc:  # noqa: BLE001  (reported by the test)
            self.outcome = exc


@pytest.mark.parametrize("path", [
    "sockets",
    "shm",  # includes the synchronous small all-reduce that runs in the caller's thread
])
def test_workers_are_scraped_during_the_run_and_the_counters_move(path):
    ports = [free_port()]
    while len(ports) < 2:
        port = free_port()
        ports += [port] if port not in ports else []
    sync = tempfile.mkdtemp(prefix="axonml-metrics-")
    # "sockets": each rank on its own "host"; "shm": one host, shared memory
    where = hosts(2) if path == "sockets" else {0: {}, 1: {}}
    rank_env = {r: dict(where[r], AXONML_METRICS_PORT=str(ports[r]), LOCAL_RANK=str(r)) for r in range(2)}
    job = Job(2, scraped_training, sync, K1, K2, init="env", timeout=90, env={"AXONML_RESTART_COUNT": "2"},
              rank_env=rank_env)
    job.start()
    try:
        _wait_files([os.path.join(sync, f"phase1-rank{r}") for r in range(2)], job)
        first = [scrape(p) for p in ports]
        with open(os.path.join(sync, "go"), "w"):
            pass
        _wait_files([os.path.join(sync, f"phase2-rank{r}") for r in range(2)], job)
        second = [scrape(p) for p in ports]
        health = [json.loads(urllib.request.urlopen(f"http://127.0.0.1:{p}/health", timeout=5).read()) for p in ports]
    finally:
        with open(os.path.join(sync, "finish"), "w"):
            pass
        job.join(60)
        shutil.rmtree(sync, ignore_errors=True)
    assert job.outcome == ports, job.outcome

    for r in range(2):
        ids = {"rank": str(r), "local_rank": str(r), "world_size": "2"}
        a, b = first[r], second[r]
        ar, ag = dict(ids, op="all_reduce", group_size="2"), dict(ids, op="all_gather", group_size="2")
        # phase 1 exactly (the exporter starts inside init_process_group, before any collective)
        assert value(a, "axonml_steps_total", **ids) == K1 + 1
        assert value(a, "axonml_collective_calls_total", **ar) == K1
        assert value(a, "axonml_collective_bytes_total", **ar) == K1 * NUMEL * 4
        # between the scrapes: exactly phase 2's work
        assert value(b, "axonml_steps_total", **ids) - value(a, "axonml_steps_total", **ids) == K2
        assert value(b, "axonml_samples_total", **ids) - value(a, "axonml_samples_total", **ids) == 8 * K2
        assert value(b, "axonml_tokens_total", **ids) - value(a, "axonml_tokens_total", **ids) == 64 * K2
        assert value(b, "axonml_collective_calls_total", **ar) - value(a, "axonml_collective_calls_total", **ar) == K2
        assert value(b, "axonml_collective_bytes_total", **ar) - value(a, "axonml_collective_bytes_total", **ar) == K2 * NUMEL * 4
        assert value(b, "axonml_collective_calls_total", **ag) - value(a, "axonml_collective_calls_total", **ag) == K2
        assert value(b, "axonml_collective_bytes_total", **ag) - value(a, "axonml_collective_bytes_total", **ag) == K2 * 32
        assert value(b, "axonml_collective_seconds_count", **ar) == K1 + K2
        assert value(b, "axonml_collective_seconds_sum", **ar) > value(a, "axonml_collective_seconds_sum", **ar) > 0
        assert value(b, "axonml_collective_bus_bandwidth_bytes_per_second", **ar) > 0
        assert value(b, "axonml_step_seconds_count", **ids) == K1 + K2 + 1
        assert value(b, "axonml_samples_per_second", **ids) > 0 and value(b, "axonml_tokens_per_second", **ids) > 0
        assert value(b, "axonml_memory_peak_bytes", device="cpu", **ids) >= NUMEL * 4
        assert value(b, "axonml_memory_in_use_bytes", device="cpu", **ids) >= 0
        assert value(b, "axonml_restart_count", **ids) == 2
        assert health[r]["status"] == "ok" and health[r]["rank"] == r and health[r]["steps"] == K1 + K2 + 1
