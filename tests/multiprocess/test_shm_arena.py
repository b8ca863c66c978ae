"""Shared arenas and the in-place reduction helper, with ranks as threads of this process
(real sockets and shared memory): fallback when /dev/shm refuses, lookup of views, release."""

import gc
import logging
import threading

import numpy as np
import pytest

from axonml.cluster import MemoryStore, PrefixStore
from axonml.collectives import ReduceOp
from axonml.collectives.backends import shm as shm_module
from axonml.collectives.backends.shm_collectives import UFUNCS, reduce_segments
from axonml.collectives.backends.tcp import TcpProcessGroup

pytestmark = pytest.mark.timeout(60)


def build(n, monkeypatch, shm="1"):
    monkeypatch.setenv("AXONML_SHM", shm)
    store = PrefixStore("arena", MemoryStore())
    pgs = [None] * n
    threads = [threading.Thread(target=lambda r=r: pgs.__setitem__(r, TcpProcessGroup(store, r, n, 10.0, "g")))
               for r in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert all(pg is not None for pg in pgs)
    return pgs


def run_all(pgs, fn):
    out, errs = [None] * len(pgs), []

    def body(r):
        try:
            out[r] = fn(r, pgs[r])
        except BaseException as e:  # noqa: BLE001
            errs.append(e)

    threads = [threading.Thread(target=body, args=(r,)) for r in range(len(pgs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    if errs:
        raise errs[0]
    return out


def close(pgs):
    run_all(pgs, lambda r, pg: pg.shutdown())


def test_arena_views_release_and_close(monkeypatch):
    pgs = build(2, monkeypatch)
    try:
        arrays = run_all(pgs, lambda r, pg: pg.alloc_shared((4, 1000), np.float64))
        for pg, a in zip(pgs, arrays):
            arenas = pg.shm.arenas
            assert a.shape == (4, 1000) and a.flags.c_contiguous
            assert arenas.locate(a) == (1, 0)
            assert arenas.locate(a[1]) == (1, 8000)  # a contiguous view lives there too
            assert arenas.locate(a[:, 1])[0] == -1  # not contiguous: staged
            assert arenas.locate(np.zeros(3))[0] == -1
        # peers see each other's regions through their own mappings
        arrays[1][...] = 7.0
        view = pgs[0].shm.arenas.view(1, (1, 8), 16).view(np.float64)
        assert view.tolist() == [7.0, 7.0]
        # an in-place all-reduce on them (two ranks as threads share one interpreter: values only)
        for r, a in enumerate(arrays):
            a[...] = np.arange(4000, dtype=np.float64).reshape(4, 1000) * (r + 1)
        run_all(pgs, lambda r, pg, arrays=arrays: pg.allreduce([arrays[r]], ReduceOp.SUM).wait())
        for a in arrays:
            np.testing.assert_array_equal(a, np.arange(4000).reshape(4, 1000) * 3.0)
        run_all(pgs, lambda r, pg: pg.barrier().wait())  # the communication thread drops its last job's arrays
        # release on every rank, then the next allocation sweeps the arena
        kept = arrays[0]
        del arrays, a, view
        gc.collect()
        assert pgs[0].shm.arenas._live[1].alive()  # rank 0 still holds its tensor
        del kept
        gc.collect()
        run_all(pgs, lambda r, pg: pg.alloc_shared((8,), np.int32))
        assert [sorted(pg.shm.arenas._live) for pg in pgs] == [[2], [2]]
        survivor = run_all(pgs, lambda r, pg: pg.alloc_shared((5,), np.float32))
    finally:
        close(pgs)
    survivor[0][...] = 3.0  # still mapped after the group is gone
    assert survivor[0].tolist() == [3.0] * 5


def test_no_room_in_dev_shm_gives_private_memory_on_every_rank(monkeypatch, caplog):
    pgs = build(3, monkeypatch)
    try:
        monkeypatch.setattr(shm_module.ShmChannel, "_create", staticmethod(lambda size: ""))
        with caplog.at_level(logging.WARNING):
            arrays = run_all(pgs, lambda r, pg: pg.alloc_shared((1000,), np.float32))
        assert "no shared arena" in caplog.text
        assert [pg.shm.arenas.created for pg in pgs] == [0, 0, 0]
        for r, a in enumerate(arrays):
            a[...] = r
        run_all(pgs, lambda r, pg, arrays=arrays: pg.allreduce([arrays[r]], ReduceOp.SUM).wait())
        assert all((a == 3).all() for a in arrays)
    finally:
        close(pgs)


def test_socket_groups_allocate_privately_without_communicating(monkeypatch):
    pgs = build(2, monkeypatch, shm="0")
    try:
        a = pgs[0].alloc_shared((2, 3), np.int64)  # one rank alone: no collective on sockets
        assert a.shape == (2, 3) and a.dtype == np.int64 and pgs[0].shm is None
    finally:
        close(pgs)


@pytest.mark.parametrize("n", [2, 3, 4])
@pytest.mark.parametrize("op", [ReduceOp.SUM, ReduceOp.AVG, ReduceOp.PRODUCT, ReduceOp.MAX])
def test_reduce_writing_over_its_own_operand_keeps_rank_order(n, op):
    rng = np.random.default_rng(n)
    xs = [rng.standard_normal(257).astype(np.float32) for _ in range(n)]
    want = xs[0].copy()
    for x in xs[1:]:
        UFUNCS[op._value_](want, x, out=want)
    if op is ReduceOp.AVG:
        want /= n
    for own in range(n):
        ops = [x.copy() for x in xs]
        reduce_segments(UFUNCS[op._value_], ops, ops[own], np.empty(257, np.float32), own, op is ReduceOp.AVG)
        assert ops[own].tobytes() == want.tobytes(), (n, op, own)
