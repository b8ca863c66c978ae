"""The process groups' metrics observer (in-process: the threaded backend and a world of one).

Bytes follow nccl-tests' size convention (closed form from the shapes); with no observer
nothing is recorded; ``init_process_group`` starts the exporter when AXONML_METRICS_PORT
is set and the collectives it runs show up in a scrape.
"""

import socket
import urllib.request

import numpy as np
import pytest

import axonml as ax
import axonml.collectives as dist
from axonml.cluster import metrics
from axonml.collectives.process_group import collective_bytes, set_collective_observer
from axonml.collectives.testing import run_threaded
from axonml.collectives.types import CollectiveDesc

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def calls():
    seen = []
    previous = set_collective_observer(lambda op, nbytes, seconds, n: seen.append((op, nbytes, n, seconds >= 0)))
    yield seen
    set_collective_observer(previous)


def body(rank):
    n = dist.get_world_size()
    dist.all_reduce(ax.ones(10))                                            # 10 float32: 40 B
    dist.all_reduce(ax.from_numpy(np.ones(6, dtype=np.float64)), async_op=True).wait()  # 48 B
    dist.all_gather([ax.zeros(3) for _ in range(n)], ax.ones(3))            # output 3n float32
    dist.reduce_scatter_tensor(ax.zeros(2), ax.ones(2 * n))                 # input 2n float32
    dist.broadcast(ax.ones(5, dtype=ax.float16), src=0)                     # 10 B
    dist.barrier()                                                          # 0 B
    if rank == 0:
        dist.send(ax.ones(4), dst=1)
    elif rank == 1:
        dist.recv(ax.zeros(4), src=0)
    return rank


def test_every_collective_is_observed_with_its_bytes(calls):
    n = 2
    assert run_threaded(n, body) == [0, 1]
    per_rank = [("all_reduce", 40), ("all_reduce", 48), ("all_gather", 12 * n), ("reduce_scatter_tensor", 8 * n),
                ("broadcast", 10), ("barrier", 0)]
    got = sorted((op, b) for op, b, size, ok in calls if size == n and ok)
    want = sorted(per_rank * n + [("send", 16), ("recv", 16)])
    assert got == want, calls


def test_no_observer_records_nothing():
    seen = []
    previous = set_collective_observer(lambda *a: seen.append(a))
    set_collective_observer(None)
    try:
        run_threaded(2, body)
    finally:
        set_collective_observer(previous)
    assert seen == []


def test_a_failing_observer_does_not_fail_the_collective():
    previous = set_collective_observer(lambda *a: 1 / 0)
    try:
        assert run_threaded(2, body) == [0, 1]
    finally:
        set_collective_observer(previous)


def test_observer_must_be_callable():
    with pytest.raises(TypeError, match="expected a callable or None, got int"):
        set_collective_observer(3)


@pytest.mark.parametrize("op, shapes, dtype, extra, n, want", [
    ("all_reduce", ((4, 5),), "float32", (), 2, 80),
    ("all_reduce_coalesced", ((3,), (2, 2)), "bfloat16", (), 2, 14),
    ("all_gather", ((3,),), "int64", (("counts", (3, 1, 2)),), 3, 48),
    ("gather", ((4,),), "float64", (("root", 0),), 3, 96),
    ("reduce_scatter", ((8,),), "float16", (("op", "SUM"),), 4, 16),
    ("barrier", (), "", (), 4, 0),
    ("broadcast", ((2,),), "bool", (), 2, 2),
])
def test_collective_bytes(op, shapes, dtype, extra, n, want):
    assert collective_bytes(CollectiveDesc(op, "g", 1, shapes, dtype, extra), n) == want


def test_init_process_group_starts_the_exporter(monkeypatch):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("AXONML_METRICS_PORT", str(port))
    for var in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    previous = set_collective_observer(None)
    try:
        dist.init_process_group("tcp")  # a world of one
        exporter = metrics.worker_metrics()
        assert exporter is not None and exporter.port == port
        t = ax.ones(256)
        for _ in range(3):
            dist.all_reduce(t)
        dist.destroy_process_group()
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
        line = next(ln for ln in text.splitlines() if ln.startswith("axonml_collective_bytes_total{"))
        assert 'op="all_reduce"' in line and 'group_size="1"' in line and 'rank="0"' in line and line.endswith(" 3072.0")
        assert 'axonml_memory_peak_bytes{device="cpu"' in text
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
        metrics.stop_worker_metrics()
        set_collective_observer(previous)
