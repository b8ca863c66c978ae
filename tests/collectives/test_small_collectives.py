"""The latency path of small collectives: the one-phase shared-memory all-reduce, the
divergence check folded into the data exchange (shared memory and sockets), and the cheap
``Work`` / ``CollectiveDesc`` of the base layer. Ranks are threads of this process."""

import threading

import numpy as np
import pytest

from axonml.cluster import MemoryStore, PrefixStore
from axonml.collectives import ReduceOp
from axonml.collectives.backends import algorithms as algo
from axonml.collectives.backends.tcp import TcpProcessGroup
from axonml.collectives.types import CollectiveDesc, Work, reduce_into, reduce_rows
from axonml.errors import CollectiveError

pytestmark = pytest.mark.timeout(60)

TRANSPORTS = ["shm", "socket"]


def build(n, transport, monkeypatch, timeout=10.0):
    """``n`` TcpProcessGroups (threads) on ``transport``; returned in rank order."""
    monkeypatch.setenv("AXONML_SHM", "1" if transport == "shm" else "0")
    store = PrefixStore("small", MemoryStore())
    pgs, errors = [None] * n, []

    def make(rank):
        try:
            pgs[rank] = TcpProcessGroup(store, rank, n, timeout, "g")
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    _in_threads(n, make)
    if errors:
        raise errors[0]
    assert all(pg.transport == transport for pg in pgs)
    return pgs


def _in_threads(n, fn):
    threads = [threading.Thread(target=fn, args=(r,)) for r in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)


def run_all(pgs, fn):
    """``fn(rank, pg)`` on every rank; return (results, errors) by rank."""
    out, errs = [None] * len(pgs), [None] * len(pgs)

    def body(r):
        try:
            out[r] = fn(r, pgs[r])
        except BaseException as e:  # noqa: BLE001
            errs[r] = e

    _in_threads(len(pgs), body)
    return out, errs


def close(pgs):
    for pg in pgs:
        pg.shutdown()


def reference(op, inputs):
    """Rank-order reduction (the order every backend path must follow)."""
    acc = inputs[0].copy()
    for x in inputs[1:]:
        reduce_into(op, acc, x)
    if op is ReduceOp.AVG:
        acc /= len(inputs)
    return acc


CASES = [
    (ReduceOp.SUM, np.float32, 1024),
    (ReduceOp.AVG, np.float64, 333),
    (ReduceOp.MAX, np.float32, 7),
    (ReduceOp.PRODUCT, np.float64, 5),
    (ReduceOp.BXOR, np.int32, 100),
    (ReduceOp.MIN, np.int64, 0),  # empty: the check still runs
]


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("check", [True, False])
def test_small_all_reduce_values_bit_identical(transport, check, monkeypatch):
    pgs = build(3, transport, monkeypatch)
    try:
        for pg in pgs:
            pg.check = check
        rng = np.random.default_rng(0)
        for op, dtype, size in CASES:
            if np.dtype(dtype).kind == "f":
                inputs = [rng.standard_normal(size).astype(dtype) for _ in range(3)]
            else:
                inputs = [rng.integers(1, 1000, size).astype(dtype) for _ in range(3)]

            def fn(r, pg, op=op, inputs=inputs):
                a = inputs[r].copy()
                work = pg.allreduce([a], op)
                work.wait()
                return a, work._desc.fused

            out, errs = run_all(pgs, fn)
            assert errs == [None] * 3, errs
            want = reference(op, inputs)
            for a, fused in out:
                assert fused is check  # small and one array: checked inside the data exchange
                np.testing.assert_array_equal(a, want)
                assert a.tobytes() == out[0][0].tobytes()
    finally:
        close(pgs)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_fused_and_separate_paths_alternate(transport, monkeypatch):
    """Small (fused), large (separate check) and coalesced all-reduces and other collectives
    interleave on the same streams and slots without mixing data."""
    pgs = build(2, transport, monkeypatch)
    big = max(algo.SMALL_BYTES, pgs[0].shm.small_bytes if pgs[0].shm else 0) // 4 + 10

    def fn(r, pg):
        got = []
        for i in range(6):
            s = np.full(8, float(r + i), np.float32)
            pg.allreduce([s], ReduceOp.SUM).wait()
            b = np.full(big, float(r), np.float32)
            pg.allreduce([b], ReduceOp.MAX).wait()
            c1, c2 = np.full(3, r + 1.0), np.full(2, 2.0 * r)
            pg.allreduce([c1, c2], ReduceOp.SUM).wait()
            x = np.full(4, float(r), np.float64)
            pg.broadcast([x], 1).wait()
            got.append((s[0], b[-1], c1[0], c2[0], x[0]))
        return got

    try:
        out, errs = run_all(pgs, fn)
        assert errs == [None, None], errs
        for got in out:
            assert got == [(2.0 * i + 1, 1.0, 3.0, 2.0, 1.0) for i in range(6)]
    finally:
        close(pgs)


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("kind", ["shape", "small-vs-large", "op"])
def test_mismatch_on_the_fused_path_is_reported_on_every_rank(transport, kind, monkeypatch):
    pgs = build(2, transport, monkeypatch)
    big = max(algo.SMALL_BYTES, pgs[0].shm.small_bytes if pgs[0].shm else 0) // 4 + 10

    def fn(r, pg):
        if kind == "shape":
            pg.allreduce([np.ones(3 + r, np.float32)], ReduceOp.SUM).wait()
        elif kind == "small-vs-large":  # one rank fuses the check, the other runs it separately
            pg.allreduce([np.ones(4 if r == 0 else big, np.float32)], ReduceOp.SUM).wait()
        elif r == 0:
            pg.allreduce([np.ones(4, np.float32)], ReduceOp.SUM).wait()
        else:
            pg.broadcast([np.ones(4, np.float32)], 0).wait()

    try:
        _, errs = run_all(pgs, fn)
        for e in errs:
            assert isinstance(e, CollectiveError), errs
            assert "collective mismatch" in str(e) and "ranks [0]" in str(e) and "ranks [1]" in str(e), str(e)
        # the group is broken on both ranks afterwards
        _, errs = run_all(pgs, lambda r, pg: pg.allreduce([np.ones(2)], ReduceOp.SUM).wait())
        assert all(e is not None and "unusable" in str(e) for e in errs), errs
    finally:
        close(pgs)


def test_fuse_decision_depends_only_on_what_the_check_compares(monkeypatch):
    pgs = build(2, "socket", monkeypatch)
    try:
        pg = pgs[0]
        small, large = np.ones(16, np.float32), np.ones(algo.SMALL_BYTES // 4 + 1, np.float32)
        assert pg._fuse_check("all_reduce", [small])
        assert not pg._fuse_check("all_reduce", [large])
        assert not pg._fuse_check("all_reduce", [small, small])  # coalesced: separate check
        pg.check = False
        assert not pg._fuse_check("all_reduce", [small])
    finally:
        close(pgs)


def test_shm_peer_marked_broken_fails_the_next_phase(monkeypatch):
    """A rank whose group broke after it published a phase marks the segment; a late peer that
    completes that phase raises (naming it) instead of returning a result."""
    pgs = build(2, "shm", monkeypatch)
    try:
        pgs[0].shm.k += 1  # rank 0 publishes phase 1 then breaks, as a timeout would
        pgs[0].shm.phase += 1
        pgs[0].shm._pv[0] = pgs[0].shm.phase
        pgs[0]._set_broken(CollectiveError("deliberate"))
        with pytest.raises(CollectiveError, match=r"rank 0"):
            pgs[1].allreduce([np.ones(4, np.float32)], ReduceOp.SUM).wait()
    finally:
        close(pgs)


# -- the base layer -------------------------------------------------------------------------------


def test_reduce_rows_matches_reduce_into_order():
    rng = np.random.default_rng(1)
    rows = rng.standard_normal((4, 50)).astype(np.float32)
    for op in (ReduceOp.SUM, ReduceOp.AVG, ReduceOp.MIN, ReduceOp.PRODUCT):
        out = np.empty(50, np.float32)
        reduce_rows(op, rows, out)
        assert out.tobytes() == reference(op, list(rows)).tobytes()
    one = np.empty(50, np.float32)
    reduce_rows(ReduceOp.AVG, rows[:1], one)
    np.testing.assert_array_equal(one, rows[0])


def test_work_completes_without_an_event_and_wakes_waiters():
    w = Work("x", 5.0)
    w._complete([1])
    assert w._done._event is None and w.is_success() and w.wait() and w.result() == [1]
    w2 = Work("y", 5.0)
    order = []
    w2._add_done_callback(lambda w: order.append("callback"))
    waiter = threading.Thread(target=lambda: (w2.wait(5.0), order.append("woke")))
    waiter.start()
    while w2._done._event is None:
        threading.Event().wait(0.001)
    w2._complete("r")
    waiter.join(5)
    assert order == ["callback", "woke"] and w2.get_future().result() == "r"
    w3 = Work("z", 5.0)
    w3._complete(exc=CollectiveError("boom"))
    with pytest.raises(CollectiveError, match="boom"):
        w3.wait()
    assert isinstance(w3.get_future().exception(), CollectiveError)


def test_collective_desc_value_semantics():
    a = CollectiveDesc("all_reduce", "g", 3, ((2, 3),), "float32", (("op", "SUM"),), sync=True, fused=True)
    b = CollectiveDesc("all_reduce", "g", 3, ((2, 3),), "float32", (("op", "SUM"),))
    assert a == b and hash(a) == hash(b)  # sync/fused are local, not compared
    assert str(a) == "all_reduce(seq=3, shapes=[(2, 3)], dtype=float32, op=SUM)"
    assert CollectiveDesc.from_wire(a.to_wire()) == a
    assert a.key() == (3, "all_reduce", ((2, 3),), "float32", (("op", "SUM"),))
    assert a.static_key() == a.key()[1:]
    c = CollectiveDesc("gather", "g", 3, ((2,),), "float32", shapes_may_differ=True)
    assert c.static_key() == ("gather", (), "float32", ())


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_all_gather_size_cross_check_without_a_full_round(transport, monkeypatch):
    """Counts agree, but rank 1's input is not its count: every rank names rank 1."""
    pgs = build(2, transport, monkeypatch)

    def fn(r, pg):
        counts = [2, 3]
        x = np.full(counts[r] + (1 if r == 1 else 0), float(r), np.float32)
        pg.allgather(np.empty(5 + 1, np.float32), x, counts).wait()

    try:
        _, errs = run_all(pgs, fn)
        for e in errs:
            assert isinstance(e, CollectiveError), errs
            assert "rank 1 has 4 input elements but 3 were expected" in str(e), str(e)
    finally:
        close(pgs)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_checked_collectives_values_and_empty_tensors(transport, monkeypatch):
    """Every shared-memory collective carries the check in its first phase; with nothing to
    move (empty tensors) the check runs alone. Values stay right either way."""
    pgs = build(3, transport, monkeypatch)

    def fn(r, pg):
        out = {}
        a = np.full(5, float(r), np.float64)
        pg.broadcast([a], 2).wait()
        out["bcast"] = a.tolist()
        b = np.arange(6, dtype=np.float64) + r
        pg.reduce([b], 0, ReduceOp.SUM).wait()
        out["reduce"] = b.tolist()
        g = np.empty(3 * 2, np.int32)
        pg.allgather(g, np.full(2, r, np.int32)).wait()
        out["gather"] = g.tolist()
        rs = np.empty(2, np.float32)
        pg.reduce_scatter(rs, np.arange(6, dtype=np.float32) * (r + 1), ReduceOp.SUM).wait()
        out["rs"] = rs.tolist()
        pg.barrier().wait()
        e = np.empty(0, np.float32)
        pg.allreduce([e], ReduceOp.SUM).wait()
        pg.broadcast([e], 0).wait()
        pg.allgather(np.empty(0, np.float32), e).wait()
        out["after"] = pg.allreduce([np.ones(2)], ReduceOp.SUM).wait() and True
        return out

    try:
        out, errs = run_all(pgs, fn)
        assert errs == [None] * 3, errs
        for r, o in enumerate(out):
            assert o["bcast"] == [2.0] * 5
            assert o["reduce"] == ((np.arange(6) * 3 + 3).tolist() if r == 0 else (np.arange(6) + r).tolist())
            assert o["gather"] == [0, 0, 1, 1, 2, 2]
            assert o["rs"] == (np.arange(6, dtype=np.float32) * 6)[2 * r:2 * r + 2].tolist()
    finally:
        close(pgs)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_barrier_against_broadcast_is_a_mismatch(transport, monkeypatch):
    pgs = build(2, transport, monkeypatch)

    def fn(r, pg):
        if r == 0:
            pg.barrier().wait()
        else:
            pg.broadcast([np.ones(3)], 0).wait()

    try:
        _, errs = run_all(pgs, fn)
        for e in errs:
            assert isinstance(e, CollectiveError) and "collective mismatch" in str(e), errs
            assert "barrier" in str(e) and "broadcast" in str(e)
    finally:
        close(pgs)
