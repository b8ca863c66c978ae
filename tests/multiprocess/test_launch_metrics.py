"""``axonml-launch --metrics-port P``: worker i serves Prometheus metrics on P + i and the
agent on P + nproc-per-node (with /health); both are scraped over HTTP during a run and
the counters move."""

import json
import socket
import urllib.request

import pytest
from launch_util import WORKER, Launch, free_port
from prometheus_client.parser import text_string_to_metric_families

NPROC = 2


def scrape(port, path="/metrics"):
    return urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5).read().decode()


def sample(text, name, **labels):
    found = [s.value for f in text_string_to_metric_families(text) for s in f.samples
             if s.name == name and set(labels.items()) <= set(s.labels.items())]
    assert len(found) == 1, (name, labels, text[:2000])
    return found[0]


def _free_block(n):
    for _ in range(50):
        base = free_port()
        if base + n < 65536 and all(_is_free(base + i) for i in range(n + 1)):
            return base
    raise AssertionError("no block of free ports")


def _is_free(port):
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


@pytest.mark.timeout(60)
def test_workers_and_agent_are_scraped_during_a_run_and_the_counters_move():
    base = _free_block(NPROC)
    job = Launch(["--standalone", "--nproc-per-node", str(NPROC), "--metrics-port", str(base), WORKER,
                  "--metric-steps", "25"])
    try:
        for rank in range(NPROC):  # each rank has recorded at least 3 steps
            job.wait_for(f"[rank{rank}]: rank {rank} metrics step 2 ")
        first = [scrape(base + i) for i in range(NPROC)]
        health = json.loads(scrape(base + NPROC, "/health"))
        agent = scrape(base + NPROC)
        job.wait_for("[rank1]: rank 1 metrics step 8 ")
        second = [scrape(base + i) for i in range(NPROC)]
    finally:
        code = job.wait(60)
    assert code == 0, job.output
    assert health["status"] == "ok" and health["workers_alive"] == NPROC
    assert (health["generation"], health["node_rank"], health["nnodes"]) == (0, 0, 1)
    assert sample(agent, "axonml_agent_workers_alive") == NPROC
    for rank in range(NPROC):
        labels = dict(rank=str(rank), local_rank=str(rank), world_size=str(NPROC))
        steps1 = sample(first[rank], "axonml_steps_total", **labels)
        steps2 = sample(second[rank], "axonml_steps_total", **labels)
        assert 3 <= steps1 < steps2, (steps1, steps2)
        assert sample(second[rank], "axonml_samples_total", **labels) == 8 * steps2
