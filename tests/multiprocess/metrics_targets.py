"""Targets of test_metrics_scrape.py: a training loop that the parent scrapes while it runs.

The ranks and the parent step through phases with files in ``sync_dir`` (bounded waits):
each rank runs phase 1, writes ``phase1-rank<r>``, waits for ``go``, runs phase 2, writes
``phase2-rank<r>``, waits for ``finish``. The parent scrapes after each phase.
"""

import os
import time

import numpy as np

import axonml as ax
import axonml.collectives as dist
from axonml.cluster.metrics import StepTimer, record_step, worker_metrics

NUMEL = 256  # float32: 1 KiB per all-reduce


def _wait_for(path, seconds=60.0):
    deadline = time.monotonic() + seconds
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} did not appear within {seconds} s")
        time.sleep(0.02)


def _touch(path):
    with open(path, "w"):
        pass


def _steps(count, rank):
    timer = StepTimer(samples=8, tokens=64)
    for _ in range(count):
        with timer:
            t = ax.from_numpy(np.full(NUMEL, rank + 1.0, dtype=np.float32))
            dist.all_reduce(t)
            assert t.numpy()[0] == dist.get_world_size() * (dist.get_world_size() + 1) / 2
        parts = [ax.zeros(4) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, ax.ones(4))  # 16 B per rank: 16 * world bytes


def scraped_training(rank, world_size, sync_dir, k1, k2):
    exporter = worker_metrics()
    assert exporter is not None and exporter.port == int(os.environ["AXONML_METRICS_PORT"]), exporter
    _steps(k1, rank)
    record_step(0.0)  # a step of zero seconds: counted, no rates
    _touch(os.path.join(sync_dir, f"phase1-rank{rank}"))
    _wait_for(os.path.join(sync_dir, "go"))
    _steps(k2, rank)
    _touch(os.path.join(sync_dir, f"phase2-rank{rank}"))
    _wait_for(os.path.join(sync_dir, "finish"))
    return exporter.port
