"""Run by test_mpi_backend.py under ``mpiexec -n N`` (or alone, as a world of one).

Exercises the ``mpi`` backend through the tensor API with closed-form expected values
and prints ``OK rank r`` at the end, or ``FAIL rank r`` and the traceback (exit code 1).
A rank that hangs dumps its stacks (faulthandler) and exits. Modes (``argv[1]``):

- ``full``: every collective and reduce op, dtypes, sizes 0 to a few MB, sub-groups,
  async_op, send/recv, object collectives, raw ProcessGroup arrays, the checks shared
  by every backend (tests/collectives/checks.py), and (N >= 2) a mismatch and a
  timeout that name the ranks.
- ``quick``: a smaller set (used with MPI_THREAD_SERIALIZED and with the divergence
  check off), plus, with the check off and N >= 2, a timeout in the data phase.
- ``launch``: init_process_group('mpi') must fail with the launcher-mismatch error.
- ``kill``: rank 1 SIGKILLs itself; mpiexec must end the job (no rank prints OK).
- ``noinit``: only rank 0 calls init_process_group; it must time out naming rank 1.
"""

import faulthandler
import math
import os
import signal
import sys
import time
import traceback

import ml_dtypes
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the tests folder

from collectives.checks import ALL_CHECKS  # the semantic checks every backend passes

import axonml as ax
import axonml.collectives as dist
from axonml.collectives import P2POp, ReduceOp
from axonml.collectives.api import resolve_group
from axonml.collectives.backends import mpi as mpi_backend  # noqa: F401  (registers "mpi")
from axonml.errors import CollectiveError, CollectiveTimeout, DTypeError

BF16 = np.dtype(ml_dtypes.bfloat16)
FLOATS = [np.dtype(np.float32), np.dtype(np.float64), np.dtype(np.float16), BF16]
INTS = [np.dtype(np.int64), np.dtype(np.int32), np.dtype(np.uint8)]
BOOL = np.dtype(np.bool_)


def T(values, dtype=np.float32):
    return ax.from_numpy(np.array(values).astype(dtype))


def check(tensor, want, what, tol=0.0):
    got = tensor.numpy() if hasattr(tensor, "numpy") else np.asarray(tensor)
    want = np.asarray(want)
    if got.dtype != want.dtype and want.dtype != BOOL:
        want = want.astype(got.dtype)
    if got.shape != want.shape:
        raise AssertionError(f"{what}: shape {got.shape}, expected {want.shape}")
    g, w = got.astype(np.float64), want.astype(np.float64)
    ok = np.allclose(g, w, rtol=tol, atol=0) if tol else np.array_equal(g, w)
    if not ok:
        raise AssertionError(f"{what}: got {got.ravel()[:8]}, expected {want.ravel()[:8]} (dtype {got.dtype})")


def expect_raises(exc_type, fn, match, what):
    try:
        fn()
    except exc_type as exc:
        if match not in str(exc):
            raise AssertionError(f"{what}: {exc_type.__name__} without {match!r}: {exc}") from exc
        return exc
    raise AssertionError(f"{what}: expected {exc_type.__name__}")


# -- reductions --------------------------------------------------------------------------------------


def reductions(r, n):
    ranks = np.arange(1, n + 1, dtype=np.float64)  # rank + 1 over all ranks
    for dtype in FLOATS:
        tol = 1e-2 if dtype.itemsize == 2 else 1e-6
        for size in (0, 1, 7):
            k = np.arange(size, dtype=np.float64)
            mine = (r + 1 + k)
            all_vals = ranks[:, None] + k[None, :]
            for op, want in [(ReduceOp.SUM, all_vals.sum(0)), (ReduceOp.AVG, all_vals.mean(0)),
                             (ReduceOp.PRODUCT, all_vals.prod(0)), (ReduceOp.MIN, all_vals.min(0)),
                             (ReduceOp.MAX, all_vals.max(0))]:
                t = T(mine, dtype)
                dist.all_reduce(t, op)
                check(t, want, f"all_reduce {op} {dtype} size {size}", tol if op in (ReduceOp.AVG, ReduceOp.PRODUCT) else 0)
    for dtype in INTS:
        bits = [(1 << q) | 64 for q in range(n)]  # one own bit per rank, and a shared one
        for op, want in [(ReduceOp.BOR, np.bitwise_or.reduce(bits)), (ReduceOp.BAND, np.bitwise_and.reduce(bits)),
                         (ReduceOp.BXOR, np.bitwise_xor.reduce(bits))]:
            t = T([bits[r]] * 3, dtype)
            dist.all_reduce(t, op)
            check(t, [want] * 3, f"all_reduce {op} {dtype}")
        for op, want in [(ReduceOp.SUM, n * (n + 1) // 2), (ReduceOp.PRODUCT, math.factorial(n)), (ReduceOp.MIN, 1),
                         (ReduceOp.MAX, n)]:
            t = T([r + 1] * 5, dtype)
            dist.all_reduce(t, op)
            check(t, [want] * 5, f"all_reduce {op} {dtype}")
    evens = (n + 1) // 2  # ranks whose value is True
    for op, want in [(ReduceOp.SUM, True), (ReduceOp.MAX, True), (ReduceOp.BOR, True), (ReduceOp.PRODUCT, n == 1),
                     (ReduceOp.MIN, n == 1), (ReduceOp.BAND, n == 1), (ReduceOp.BXOR, evens % 2 == 1)]:
        t = T([r % 2 == 0] * 4, BOOL)
        dist.all_reduce(t, op)
        check(t, np.array([want] * 4), f"all_reduce {op} bool")
    big = ax.from_numpy(np.full(2**20 + 3, r + 1, dtype=np.float32))  # 4 MB
    dist.all_reduce(big)
    check(big, np.full(2**20 + 3, n * (n + 1) / 2), "all_reduce 4 MB")
    expect_raises(DTypeError, lambda: dist.all_reduce(T([1], np.int64), ReduceOp.AVG), "AVG", "AVG on int64")
    a, b, c = T([r + 1] * 3), T(np.full((2, 2), 2.0 * (r + 1))), T(np.zeros(0))
    dist.all_reduce_coalesced([a, b, c], ReduceOp.SUM)
    check(a, [n * (n + 1) / 2] * 3, "coalesced a")
    check(b, np.full((2, 2), n * (n + 1)), "coalesced b")
    for root in range(n):
        for dtype, op, want in [(np.float32, ReduceOp.SUM, n * (n + 1) / 2), (np.float16, ReduceOp.MAX, n),
                                (np.int64, ReduceOp.PRODUCT, math.factorial(n))]:
            t = T([r + 1] * 3, dtype)
            dist.reduce(t, root, op)
            check(t, [want if r == root else r + 1] * 3, f"reduce {op} {dtype} to {root}")


def scatters_reduced(r, n):
    tri = n * (n + 1) / 2
    for dtype in (np.float32, np.float16, BF16, np.int64):
        # uneven segments: segment i has i + 1 elements
        lst = [T(np.full(i + 1, r + 1), dtype) for i in range(n)]
        out = T(np.zeros(r + 1), dtype)
        dist.reduce_scatter(out, lst)
        check(out, np.full(r + 1, tri), f"reduce_scatter {dtype}")
    inp = T(np.arange(3 * n) + r + 1, np.float32)
    out = T(np.zeros(3), np.float32)
    dist.reduce_scatter_tensor(out, inp, ReduceOp.AVG)
    check(out, np.arange(3 * r, 3 * r + 3) + (n + 1) / 2, "reduce_scatter_tensor AVG", 1e-6)
    out0 = T(np.zeros(0), np.float32)
    dist.reduce_scatter_tensor(out0, T(np.zeros(0), np.float32))
    bits = T([r % 2 == 0] * n, BOOL)
    ob = T([False], BOOL)
    dist.reduce_scatter_tensor(ob, bits, ReduceOp.BOR)
    check(ob, np.array([True]), "reduce_scatter_tensor bool BOR")


# -- data movement -----------------------------------------------------------------------------------


def movement(r, n):
    for root in range(n):
        for dtype in (np.float32, BF16, np.int64, BOOL, np.float16):
            t = T((np.arange(5) + 100 * r) % 2 if dtype == BOOL else np.arange(5) + 100 * r, dtype)
            dist.broadcast(t, root)
            check(t, (np.arange(5) + 100 * root) % 2 if dtype == BOOL else np.arange(5) + 100 * root, f"broadcast {dtype}")
    base = T(np.arange(6).reshape(2, 3) + 10 * r)
    view = base.t()  # non-contiguous
    dist.broadcast(view, n - 1)
    check(base, np.arange(6).reshape(2, 3) + 10 * (n - 1), "broadcast into a transposed view")
    for dtype in (np.float32, BF16, np.int64, BOOL):
        mine = T(np.full(3, r % 2 if dtype == BOOL else r), dtype)
        outs = [T(np.zeros(3), dtype) for _ in range(n)]
        dist.all_gather(outs, mine)
        for i, o in enumerate(outs):
            check(o, np.full(3, i % 2 if dtype == BOOL else i), f"all_gather {dtype} [{i}]")
    out = T(np.zeros((2 * n, 3)))
    dist.all_gather_into_tensor(out, T(np.full((2, 3), r)))
    check(out, np.repeat(np.arange(n), 6).reshape(2 * n, 3), "all_gather_into_tensor")
    empty_out = T(np.zeros(0))
    dist.all_gather_into_tensor(empty_out, T(np.zeros(0)))
    big_out = T(np.zeros(n * 2**18))
    dist.all_gather_into_tensor(big_out, T(np.full(2**18, r)))  # 1 MB per rank
    check(big_out, np.repeat(np.arange(n), 2**18), "all_gather 1 MB per rank")
    dst = n - 1
    gl = [T(np.zeros(2), BF16) for _ in range(n)] if r == dst else None
    dist.gather(T([r, r], BF16), gl, dst)
    if r == dst:
        for i, g in enumerate(gl):
            check(g, [i, i], f"gather [{i}]")
    got = T(np.zeros(4), np.int64)
    dist.scatter(got, [T(np.full(4, 10 * i), np.int64) for i in range(n)] if r == 0 else None, 0)
    check(got, np.full(4, 10 * r), "scatter")

    def split(i, j):
        return (i + 2 * j) % 3  # rows rank i sends to rank j (uneven, sometimes 0)

    rows_in = [split(r, j) for j in range(n)]
    rows_out = [split(j, r) for j in range(n)]
    inp = np.concatenate([np.full((split(r, j), 2), 1000 * r + 10 * j) for j in range(n)]).astype(np.float32)
    inp += np.concatenate([np.arange(s) for s in rows_in])[:, None]
    out = T(np.zeros((sum(rows_out), 2)))
    dist.all_to_all_single(out, ax.from_numpy(inp), rows_out, rows_in)
    want = np.concatenate([np.full((split(j, r), 2), 1000 * j + 10 * r) + np.arange(split(j, r))[:, None]
                           for j in range(n)])
    check(out, want, "all_to_all_single uneven")
    outs = [T(np.zeros(2), np.int32) for _ in range(n)]
    dist.all_to_all(outs, [T(np.full(2, 10 * r + j), np.int32) for j in range(n)])
    for j, o in enumerate(outs):
        check(o, np.full(2, 10 * j + r), f"all_to_all [{j}]")
    dist.barrier()


# -- groups, async, p2p, objects -----------------------------------------------------------------------


def groups_and_async(r, n):
    evens, odds = list(range(0, n, 2)), list(range(1, n, 2))
    g_even = dist.new_group(evens)
    g_odd = dist.new_group(odds) if odds else None
    mine, members = (g_even, evens) if r % 2 == 0 else (g_odd, odds)
    assert dist.get_world_size(mine) == len(members) and dist.get_rank(mine) == members.index(r)
    t = T([r + 1.0] * 4)
    dist.all_reduce(t, group=mine)
    check(t, [sum(m + 1 for m in members)] * 4, f"all_reduce in group {members}")
    b = T([float(r)])
    dist.broadcast(b, members[-1], group=mine)
    check(b, [members[-1]], "broadcast in a sub-group (src is a world rank)")
    # async: a sub-group and the world run concurrently (two communication threads)
    ws, ts = [], []
    for i in range(4):
        ts.append(T(np.full(1000, r + i)))
        ws.append(dist.all_reduce(ts[-1], async_op=True))
    ts_sub = T(np.full(10, 1.0))
    w_sub = dist.all_reduce(ts_sub, group=mine, async_op=True)
    x = np.random.default_rng(r).standard_normal((200, 200))
    for _ in range(5):
        x = np.tanh(x @ x.T / 200)  # compute while the collectives run
    for i, w in enumerate(ws):
        w.wait()
        assert w.is_completed() and w.exception() is None
        check(ts[i], np.full(1000, n * (n - 1) / 2 + n * i), f"async all_reduce {i}")
    assert w_sub.wait(timeout=30)
    check(ts_sub, np.full(10, len(members)), "async sub-group all_reduce")
    w = dist.broadcast(T([1.0]), 0, async_op=True)
    assert w.get_future().result(timeout=30) is not None
    if n > 1:
        single = dist.new_group([n - 1])
        if r == n - 1:
            s = T([5.0])
            dist.all_reduce(s, group=single)
            check(s, [5.0], "group of one")
    for g in (g_even, g_odd):
        if g is not None and g is not dist.GroupMember.NON_GROUP_MEMBER:
            dist.destroy_process_group(g)


def point_to_point(r, n):
    if n == 1:
        return
    right, left = (r + 1) % n, (r - 1) % n
    big = 2**18  # 1 MB of float32: past the eager limit, needs both sides progressing
    out, inn = T(np.full(big, r)), T(np.zeros(big))
    ws = [dist.isend(out, right, tag=3), dist.irecv(inn, left, tag=3)]
    for w in ws:
        w.wait()
    check(inn, np.full(big, left), "isend/irecv ring 1 MB")
    a, b = T(np.full(5, r), BF16), T(np.zeros(5), BF16)
    works = dist.batch_isend_irecv([P2POp(dist.isend, a, left, tag=9), P2POp(dist.irecv, b, right, tag=9)])
    for w in works:
        w.wait()
    check(b, np.full(5, right), "batch_isend_irecv")
    if r < n - (n % 2):  # pairs (0, 1), (2, 3): blocking send and recv in opposite orders
        peer = r + 1 if r % 2 == 0 else r - 1
        t = T(np.arange(7) + r, np.int64)
        got = T(np.zeros(7), np.int64)
        if r % 2 == 0:
            dist.send(t, peer)
            assert dist.recv(got, peer) == peer
        else:
            assert dist.recv(got, peer) == peer
            dist.send(t, peer)
        check(got, np.arange(7) + peer, "send/recv pair")
        empty = T(np.zeros(0))
        (dist.send if r % 2 == 0 else dist.recv)(empty, peer)


def objects(r, n):
    lst = [{"rank": r}, "x" * r] if r == n - 1 else [None, None]
    dist.broadcast_object_list(lst, src=n - 1)
    assert lst == [{"rank": n - 1}, "x" * (n - 1)], lst
    got = [None] * n
    dist.all_gather_object(got, ("r", r, list(range(r))))
    assert got == [("r", i, list(range(i))) for i in range(n)], got
    g = [None] * n if r == 0 else None
    dist.gather_object({r: "v" * r}, g, dst=0)
    if r == 0:
        assert g == [{i: "v" * i} for i in range(n)], g
    out = [None]
    dist.scatter_object_list(out, [{"to": i} for i in range(n)] if r == 0 else None, src=0)
    assert out == [{"to": r}], out


def raw_arrays(r, n):
    pg = resolve_group(None, "raw")
    assert pg.backend_name == "mpi"
    for dtype in (np.float16, BF16):
        a = np.full(5, r + 1, dtype=dtype)
        pg.allreduce([a], ReduceOp.SUM).wait()  # the backend accumulates in float32 itself
        check(a, np.full(5, n * (n + 1) / 2), f"raw allreduce {dtype}")
    a = np.array([r % 2 == 0, False, True])
    pg.allreduce([a], ReduceOp.SUM).wait()
    check(a, np.array([True, False, True]), "raw bool SUM (logical or)")
    pair = [np.full(3, r, np.float64), np.full(2, r, np.float32)]  # coalesced with two dtypes
    pg.allreduce(pair, ReduceOp.MAX).wait()
    check(pair[0], np.full(3, n - 1), "raw mixed dtypes [0]")
    check(pair[1], np.full(2, n - 1), "raw mixed dtypes [1]")


# -- failures -----------------------------------------------------------------------------------------


def failures(r, n):
    if n < 2:
        return
    g = dist.new_group(list(range(n)))
    shape = (3,) if r == 0 else (4,)
    exc = expect_raises(CollectiveError, lambda: dist.all_reduce(T(np.zeros(shape)), group=g), "mismatch", "mismatch")
    assert "(3,)" in str(exc) and "(4,)" in str(exc), exc
    expect_raises(CollectiveError, lambda: dist.all_reduce(T([1.0]), group=g), "unusable", "after a failure")
    dist.destroy_process_group(g)
    g = dist.new_group([0, 1])  # created with the default timeout: a loaded machine may start ranks late
    if r == 0:
        g.timeout = 1.0
        t0 = time.monotonic()
        exc = expect_raises(CollectiveTimeout, lambda: dist.all_reduce(T([1.0]), group=g), "did not arrive", "timeout")
        assert "world ranks [1]" in str(exc) and "seq=1" in str(exc), exc
        assert time.monotonic() - t0 < 5, "the timeout took too long"
    if g is not dist.GroupMember.NON_GROUP_MEMBER:
        dist.destroy_process_group(g)
    dist.barrier()
    if r == 0:  # the other ranks never call new_group: the creation handshake names them (last: the counts diverge)
        exc = expect_raises(CollectiveTimeout, lambda: dist.new_group([0, 1], timeout=1.0, group_desc="lonely"),
                            "did not call new_group", "new_group timeout")
        assert "world ranks [1]" in str(exc), exc


def data_phase_timeout(r, n):
    """With the check off, a rank that skips a collective leaves the others' data phase pending."""
    if n < 2 or os.environ.get("AXONML_CHECK_COLLECTIVES") != "0":
        return
    g = dist.new_group([0, 1])
    if r == 0:
        g.timeout = 1.0
        exc = expect_raises(CollectiveTimeout, lambda: dist.all_reduce(T([1.0]), group=g), "cannot tell", "data timeout")
        assert "seq=1" in str(exc), exc
    if g is not dist.GroupMember.NON_GROUP_MEMBER:
        dist.destroy_process_group(g)
    dist.barrier()


def quick(r, n):
    t = T([r + 1.0] * 3)
    dist.all_reduce(t)
    check(t, [n * (n + 1) / 2] * 3, "quick all_reduce")
    dist.barrier()
    groups_and_async(r, n)
    point_to_point(r, n)
    data_phase_timeout(r, n)


def main():
    mode = sys.argv[1] if len(sys.argv) > 1 else "full"
    faulthandler.dump_traceback_later(float(os.environ.get("MPI_WORKER_HANG_S", "40")), exit=True)
    rank = "?"
    try:
        if mode == "launch":
            exc = expect_raises(CollectiveError, lambda: dist.init_process_group("mpi"), "launcher promised", "launch")
            print(f"LAUNCH-ERROR {exc}")
            del os.environ["OMPI_COMM_WORLD_SIZE"]
            expect_raises(CollectiveError, lambda: dist.init_process_group("mpi", world_size=2), "come from MPI", "size arg")
            dist.init_process_group("mpi")  # now a world of one
            assert (dist.get_rank(), dist.get_world_size()) == (0, 1)
            dist.destroy_process_group()
            print("OK rank 0", flush=True)
            return
        if mode == "noinit":  # rank 0 initializes alone: the bootstrap names the missing ranks
            from mpi4py import MPI

            rank = MPI.COMM_WORLD.Get_rank()
            if rank == 0:
                exc = expect_raises(CollectiveTimeout, lambda: dist.init_process_group("mpi", timeout=1.0),
                                    "did not call init_process_group", "init timeout")
                assert "world ranks [1]" in str(exc), exc
                print(f"INIT-ERROR {exc}")
            print(f"OK rank {rank}", flush=True)
            return
        dist.init_process_group("mpi", timeout=30)
        rank, n = dist.get_rank(), dist.get_world_size()
        if mode == "kill":  # rank 1 dies mid-job; mpiexec must end the others
            if rank == 1:
                time.sleep(0.3)
                os.kill(os.getpid(), signal.SIGKILL)
            dist.all_reduce(T([1.0]))
            time.sleep(30)
            print(f"OK rank {rank} (not killed)", flush=True)
            return
        from mpi4py import MPI

        assert (rank, n) == (MPI.COMM_WORLD.Get_rank(), MPI.COMM_WORLD.Get_size())
        assert dist.get_backend() == "mpi"
        if mode == "full":
            for part in (reductions, scatters_reduced, movement, groups_and_async, point_to_point, objects, raw_arrays,
                         *ALL_CHECKS, failures):
                part(rank, n)
        else:
            quick(rank, n)
            dist.destroy_process_group()
            dist.init_process_group("mpi", timeout=30)  # a second world in the same process
            t = T([1.0])
            dist.all_reduce(t)
            check(t, [n], "all_reduce after re-initializing")
        dist.destroy_process_group()
        print(f"OK rank {rank} thread_level={MPI.Query_thread()}", flush=True)
    except BaseException:
        print(f"FAIL rank {rank}\n{traceback.format_exc()}", flush=True)
        sys.stdout.flush()
        os._exit(1)


if __name__ == "__main__":
    main()
