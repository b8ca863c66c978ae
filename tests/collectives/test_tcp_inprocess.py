"""The tcp backend with its ranks as threads of this process (real sockets and shared memory)."""

import threading

import numpy as np
import pytest

from axonml.cluster import MemoryStore, PrefixStore
from axonml.collectives import ReduceOp
from axonml.collectives.backends import shm as shm_module
from axonml.collectives.backends.tcp import TcpProcessGroup
from axonml.errors import CollectiveTimeout

pytestmark = pytest.mark.timeout(60)


def build(n, timeout=10.0, env_hosts=None):
    """Start ``n`` TcpProcessGroups in threads; return them in rank order."""
    store = PrefixStore("t", MemoryStore())
    pgs, errors = [None] * n, []

    def make(rank):
        try:
            pgs[rank] = TcpProcessGroup(store, rank, n, timeout, "g")
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=make, args=(r,)) for r in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    if errors:
        raise errors[0]
    return pgs


def run_all(pgs, fn):
    out, errors = [None] * len(pgs), []

    def body(r):
        try:
            out[r] = fn(r, pgs[r])
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=body, args=(r,)) for r in range(len(pgs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    if errors:
        raise errors[0]
    return out


def allreduce_values(pgs):
    def fn(r, pg):
        a = np.full(1_000_003, float(r + 1), dtype=np.float32)  # several shm chunks / ring pieces
        pg.allreduce([a], ReduceOp.SUM).wait()
        return float(a[0]), float(a[-1])

    return run_all(pgs, fn)


def shutdown(pgs):
    run_all(pgs, lambda r, pg: pg.shutdown())


def test_one_host_uses_shared_memory():
    pgs = build(2)
    try:
        assert [pg.transport for pg in pgs] == ["shm", "shm"]
        assert allreduce_values(pgs) == [(3.0, 3.0)] * 2
    finally:
        shutdown(pgs)


def test_falls_back_to_sockets_when_shared_memory_cannot_be_created(monkeypatch):
    monkeypatch.setattr(shm_module.ShmChannel, "_create", staticmethod(lambda size: ""))
    pgs = build(3)
    try:
        assert [pg.transport for pg in pgs] == ["socket"] * 3
        assert allreduce_values(pgs) == [(6.0, 6.0)] * 3
    finally:
        shutdown(pgs)


def test_shm_switch_off(monkeypatch):
    monkeypatch.setenv("AXONML_SHM", "0")
    pgs = build(2)
    try:
        assert [pg.transport for pg in pgs] == ["socket", "socket"]
    finally:
        shutdown(pgs)


def test_missing_rank_is_named_at_bootstrap():
    store = PrefixStore("t", MemoryStore())
    with pytest.raises(CollectiveTimeout, match=r"connections from ranks \[1, 2\]"):
        TcpProcessGroup(store, 0, 3, 0.5, "g")


@pytest.mark.parametrize("transport", ["shm", "socket"])
def test_peer_that_leaves_is_named_by_a_waiting_rank(transport, monkeypatch):
    if transport == "socket":
        monkeypatch.setenv("AXONML_SHM", "0")
    pgs = build(2, timeout=20)

    def fn(r, pg):
        if r == 1:
            pg.shutdown()  # leaves cleanly (BYE) without joining rank 0's collective
            return None
        with pytest.raises(Exception, match="rank 1") as info:
            pg.allreduce([np.ones(10, np.float32)]).wait()
        return str(info.value)

    msg = run_all(pgs, fn)[0]
    assert "left" in msg or "leaving" in msg, msg
    pgs[0].shutdown()
