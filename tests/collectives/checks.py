"""Semantic checks of every collective, run on each rank of a live default group.

Shared by the threaded tests (tests/collectives) and the real-process tests
(tests/multiprocess): a check takes ``(rank, n)`` and asserts closed-form values.
"""

from __future__ import annotations

import ml_dtypes
import numpy as np

import axonml as ax
import axonml.collectives as dist
from axonml.collectives import ReduceOp

FLOAT_OPS = [ReduceOp.SUM, ReduceOp.AVG, ReduceOp.PRODUCT, ReduceOp.MIN, ReduceOp.MAX]
INT_OPS = [ReduceOp.SUM, ReduceOp.PRODUCT, ReduceOp.MIN, ReduceOp.MAX, ReduceOp.BAND, ReduceOp.BOR, ReduceOp.BXOR]
NP_OP = {
    ReduceOp.SUM: np.add, ReduceOp.AVG: np.add, ReduceOp.PRODUCT: np.multiply, ReduceOp.MIN: np.minimum,
    ReduceOp.MAX: np.maximum, ReduceOp.BAND: np.bitwise_and, ReduceOp.BOR: np.bitwise_or, ReduceOp.BXOR: np.bitwise_xor,
}


def values(rank: int, size: int, dtype: str) -> np.ndarray:
    """Rank-dependent values that every op reduces exactly (small integers)."""
    i = np.arange(size)
    if dtype == "bool":
        return ((i + rank) % 3 == 0)
    v = ((i * 7 + rank * 3) % 5) + 1  # 1..5: products over 4 ranks stay exact in every dtype
    if dtype == "bfloat16":
        return v.astype(ml_dtypes.bfloat16)
    return v.astype(dtype)


def expected(op: ReduceOp, n: int, size: int, dtype: str) -> np.ndarray:
    parts = [values(r, size, dtype) for r in range(n)]
    if dtype in ("float16", "bfloat16"):
        parts = [p.astype(np.float64) for p in parts]
    acc = parts[0].copy()
    for p in parts[1:]:
        acc = NP_OP[op](acc, p)
    if op is ReduceOp.AVG:
        acc = acc / n
    return acc


def _t(a: np.ndarray) -> ax.Tensor:
    return ax.from_numpy(np.ascontiguousarray(a).copy())


def check_all_reduce_ops(rank: int, n: int, sizes=(0, 1, 7, 100)) -> None:
    for dtype in ("float32", "float64", "float16", "bfloat16", "int32", "int64", "uint8", "int8", "bool"):
        floating = dtype.startswith("float") or dtype == "bfloat16"
        ops = FLOAT_OPS if floating else INT_OPS
        if dtype == "bool":
            ops = [ReduceOp.MIN, ReduceOp.MAX, ReduceOp.BAND, ReduceOp.BOR, ReduceOp.BXOR]
        for op in ops:
            for size in sizes:
                t = _t(values(rank, size, dtype))
                dist.all_reduce(t, op=op)
                npd = values(0, 0, dtype).dtype
                want = expected(op, n, size, dtype).astype(npd)  # float32 accumulation, one final rounding
                got = t.numpy()
                assert got.dtype == npd, (dtype, got.dtype)
                np.testing.assert_allclose(got.astype(np.float64), want.astype(np.float64),
                                           rtol=1e-6 if npd.itemsize > 2 else 1e-2,
                                           err_msg=f"all_reduce {op} {dtype} size {size}")


def check_all_reduce_large(rank: int, n: int) -> None:
    """Sizes that take the ring path on the tcp backend (uneven segments, several chunks)."""
    for size, op in ((300_001, ReduceOp.SUM), (70_003, ReduceOp.MAX), (2_500_000, ReduceOp.AVG)):
        base = np.arange(size, dtype=np.float64) % 1000
        t = _t((base + rank + 1).astype(np.float32))
        dist.all_reduce(t, op=op)
        if op is ReduceOp.SUM:
            want = n * base + n * (n + 1) / 2
        elif op is ReduceOp.MAX:
            want = base + n
        else:
            want = base + (n + 1) / 2
        np.testing.assert_allclose(t.numpy(), want, rtol=1e-6, err_msg=f"{op} size {size}")


def check_low_precision_accumulation(rank: int, n: int) -> None:
    # fp16: 2048 + 1 + 1 rounds back to 2048 when accumulated in float16, not in float32
    for dtype, big in (("float16", 2048.0), ("bfloat16", 256.0)):
        npd = np.float16 if dtype == "float16" else ml_dtypes.bfloat16
        for size in (3, 40_000):  # direct and ring paths on tcp
            t = _t(np.full(size, big if rank == 0 else 1.0, dtype=npd))
            dist.all_reduce(t)
            want = np.array(big + (n - 1), dtype=np.float32).astype(npd)
            assert (t.numpy() == want).all(), (dtype, size, t.numpy()[:3], want)


def check_non_contiguous(rank: int, n: int) -> None:
    base = _t(np.arange(12, dtype=np.float32).reshape(3, 4) * (rank + 1))
    view = base.T  # (4, 3), not contiguous
    assert not view.is_contiguous()
    version = view._version
    dist.all_reduce(view)
    assert view._version > version
    np.testing.assert_allclose(base.numpy(), np.arange(12).reshape(3, 4) * n * (n + 1) / 2)
    out = _t(np.zeros((3, 4 * n), dtype=np.float32)).T  # (4n, 3) view
    src = _t(np.full((3, 4), rank, dtype=np.float32)).T
    dist.all_gather_into_tensor(out, src)
    np.testing.assert_allclose(out.numpy(), np.concatenate([np.full((4, 3), r) for r in range(n)]))


def check_broadcast_reduce(rank: int, n: int) -> None:
    for root in range(n):
        for size in (0, 5, 100_000):
            t = _t(np.arange(size, dtype=np.float64) + 10 * rank)
            dist.broadcast(t, src=root)
            np.testing.assert_array_equal(t.numpy(), np.arange(size) + 10 * root)
        t = _t(np.full(6, rank + 1, dtype=np.int64))
        dist.reduce(t, dst=root)
        want = n * (n + 1) // 2 if rank == root else rank + 1
        assert (t.numpy() == want).all(), (root, t.numpy())
        big = _t(np.full(100_003, rank + 1.0, dtype=np.float32))
        dist.reduce(big, dst=root, op=ReduceOp.MAX)
        assert (big.numpy() == (n if rank == root else rank + 1)).all()


def check_gathers(rank: int, n: int) -> None:
    for size in (0, 3, 20_000):
        mine = _t(np.arange(size, dtype=np.int32) + 100 * rank)
        lst = [_t(np.zeros(size, dtype=np.int32)) for _ in range(n)]
        dist.all_gather(lst, mine)
        for r, t in enumerate(lst):
            np.testing.assert_array_equal(t.numpy(), np.arange(size) + 100 * r)
        flat = _t(np.zeros(n * size, dtype=np.int32))
        dist.all_gather_into_tensor(flat, mine)
        np.testing.assert_array_equal(flat.numpy(), np.concatenate([np.arange(size) + 100 * r for r in range(n)]))
    stacked = _t(np.zeros((n, 2, 3), dtype=np.float32))
    dist.all_gather_into_tensor(stacked, _t(np.full((2, 3), rank, dtype=np.float32)))
    assert all((stacked.numpy()[r] == r).all() for r in range(n))
    for root in range(n):
        mine = _t(np.full(4, rank, dtype=np.float64))
        lst = [_t(np.zeros(4)) for _ in range(n)] if rank == root else None
        dist.gather(mine, lst, dst=root)
        if rank == root:
            assert [t.numpy()[0] for t in lst] == list(range(n))
        out = _t(np.zeros(3, dtype=np.int64))
        srcs = [_t(np.full(3, 10 * r + root, dtype=np.int64)) for r in range(n)] if rank == root else None
        dist.scatter(out, srcs, src=root)
        assert (out.numpy() == 10 * rank + root).all()


def check_reduce_scatter(rank: int, n: int) -> None:
    # uneven list: segment i has i + 1 elements
    lst = [_t(np.full(i + 1, rank + 1.0 + i, dtype=np.float32)) for i in range(n)]
    out = _t(np.zeros(rank + 1, dtype=np.float32))
    dist.reduce_scatter(out, lst)
    np.testing.assert_allclose(out.numpy(), n * (n + 1) / 2 + n * rank)
    for per in (0, 5, 40_001):
        inp = _t(np.arange(n * per, dtype=np.float64) + rank)
        out = _t(np.zeros(per))
        dist.reduce_scatter_tensor(out, inp, op=ReduceOp.SUM)
        want = n * (np.arange(rank * per, (rank + 1) * per)) + n * (n - 1) / 2
        np.testing.assert_allclose(out.numpy(), want)
        out = _t(np.zeros(per))
        dist.reduce_scatter_tensor(out, inp, op=ReduceOp.AVG)
        np.testing.assert_allclose(out.numpy(), want / n)


def check_all_to_all(rank: int, n: int) -> None:
    # even: one row of 2 columns to every rank; row value encodes (src, dst)
    inp = _t(np.array([[rank * 10 + j] * 2 for j in range(n)], dtype=np.float32))
    out = _t(np.zeros((n, 2), dtype=np.float32))
    dist.all_to_all_single(out, inp)
    np.testing.assert_array_equal(out.numpy()[:, 0], [j * 10 + rank for j in range(n)])
    # uneven: rank r sends r + j + 1 rows to rank j (0 rows never happen here), and 0 rows to itself when r is even
    send = [0 if (j == rank and rank % 2 == 0) else rank + j + 1 for j in range(n)]
    recv = [0 if (j == rank and rank % 2 == 0) else j + rank + 1 for j in range(n)]
    rows = np.concatenate([np.full((s, 3), rank * 100 + j) for j, s in enumerate(send)]) if sum(send) else np.zeros((0, 3))
    out = _t(np.zeros((sum(recv), 3), dtype=np.int64))
    dist.all_to_all_single(out, _t(rows.astype(np.int64)), output_split_sizes=recv, input_split_sizes=send)
    want = np.concatenate([np.full((s, 3), j * 100 + rank) for j, s in enumerate(recv)]) if sum(recv) else np.zeros((0, 3))
    np.testing.assert_array_equal(out.numpy(), want)
    ins = [_t(np.full(j + 1, rank * 10 + j, dtype=np.int32)) for j in range(n)]
    outs = [_t(np.zeros(rank + 1, dtype=np.int32)) for _ in range(n)]
    dist.all_to_all(outs, ins)
    for j, t in enumerate(outs):
        assert (t.numpy() == j * 10 + rank).all()


def check_large_messages(rank: int, n: int) -> None:
    """Messages larger than two shared-memory slots / many ring chunks, uneven lengths."""
    size = 2_300_001  # float32: 9.2 MB
    base = np.arange(size, dtype=np.float64) % 997
    for root in sorted({0, n - 1}):
        t = _t((base + rank).astype(np.float32))
        dist.broadcast(t, src=root)
        np.testing.assert_array_equal(t.numpy(), base + root)
        t = _t((base + rank).astype(np.float32))
        dist.reduce(t, dst=root)
        want = n * base + n * (n - 1) / 2 if rank == root else base + rank
        np.testing.assert_allclose(t.numpy(), want, rtol=1e-6)
    per = size // n
    out = _t(np.zeros(n * per, dtype=np.float32))
    dist.all_gather_into_tensor(out, _t(np.full(per, rank, dtype=np.float32)))
    np.testing.assert_array_equal(out.numpy(), np.repeat(np.arange(n, dtype=np.float32), per))
    inp = _t((base[:n * per] + rank).astype(np.float32))
    mine = _t(np.zeros(per, dtype=np.float32))
    dist.reduce_scatter_tensor(mine, inp)
    np.testing.assert_allclose(mine.numpy(), n * base[rank * per:(rank + 1) * per] + n * (n - 1) / 2, rtol=1e-6)


def check_p2p(rank: int, n: int) -> None:
    if n == 1:
        return
    right, left = (rank + 1) % n, (rank - 1) % n
    for size in (3, 500_000):  # the large one would deadlock if isend ran alone before irecv
        x = _t(np.full(size, rank, dtype=np.float32))
        y = _t(np.zeros(size, dtype=np.float32))
        ws = dist.isend(x, right), dist.irecv(y, left)
        for w in ws:
            w.wait()
        assert ws[1].result() == left
        assert (y.numpy() == left).all()
        y2 = _t(np.zeros(size, dtype=np.float32))
        works = dist.batch_isend_irecv([dist.P2POp(dist.isend, x, right, tag=3), dist.P2POp(dist.irecv, y2, left, tag=3)])
        for w in works:
            w.wait()
        assert (y2.numpy() == left).all()
    # blocking send/recv in rank order (0 -> 1 -> ... ), non-contiguous receive buffer
    z = _t(np.zeros((3, 2), dtype=np.int64)).T
    if rank == 0:
        dist.send(_t(np.full((2, 3), 7, dtype=np.int64)), dst=1)
    elif rank == 1:
        assert dist.recv(z, src=0) == 0
        assert (z.numpy() == 7).all()


def check_objects(rank: int, n: int) -> None:
    objs = [{"rank": rank, "x": [1, 2]}, "s" * rank, None] if rank == 0 else [None, None, None]
    dist.broadcast_object_list(objs, src=0)
    assert objs == [{"rank": 0, "x": [1, 2]}, "", None]
    got = [None] * n
    dist.all_gather_object(got, ("r", rank, "x" * (rank * 1000)))
    assert got == [("r", r, "x" * (r * 1000)) for r in range(n)]
    dst = n - 1
    lst = [None] * n if rank == dst else None
    dist.gather_object({"k": rank}, lst, dst=dst)
    if rank == dst:
        assert lst == [{"k": r} for r in range(n)]
    out = [None]
    dist.scatter_object_list(out, [f"to {r}" for r in range(n)] if rank == 0 else None, src=0)
    assert out == [f"to {rank}"]


def check_async_and_coalesced(rank: int, n: int) -> None:
    ts = [_t(np.full(s, rank + 1.0, dtype=np.float32)) for s in (3, 0, 1000)]
    ints = _t(np.full(4, rank + 1, dtype=np.int64))
    work = dist.all_reduce_coalesced(ts + [ints], async_op=True)
    assert work.wait() is True
    assert work.is_completed() and work.is_success() and work.exception() is None
    for t in ts:
        assert (t.numpy() == n * (n + 1) / 2).all()
    assert (ints.numpy() == n * (n + 1) / 2).all()
    t = _t(np.ones(5, dtype=np.float32))
    work = dist.all_reduce(t, async_op=True)
    fut = work.get_future()
    res = fut.result(timeout=30)
    assert res[0] is t and (t.numpy() == n).all()
    assert work.result()[0] is t
    works = [dist.all_reduce(_t(np.full(2, float(i))), async_op=True) for i in range(5)]
    for w in works:
        w.wait()
    assert dist.barrier() is None
    dist.barrier(async_op=True).wait()


def check_groups(rank: int, n: int) -> None:
    assert dist.get_rank() == rank and dist.get_world_size() == n
    evens = dist.new_group([r for r in range(n) if r % 2 == 0])
    odds = dist.new_group([r for r in range(n) if r % 2 == 1]) if n > 1 else None
    mine, other = (evens, odds) if rank % 2 == 0 else (odds, evens)
    if other is not None:
        assert other is dist.GroupMember.NON_GROUP_MEMBER
        assert dist.get_rank(other) == -1
    members = list(range(rank % 2, n, 2))
    assert dist.get_world_size(mine) == len(members)
    assert dist.get_rank(mine) == members.index(rank)
    assert dist.get_process_group_ranks(mine) == members
    assert dist.get_global_rank(mine, 0) == members[0]
    assert dist.get_group_rank(mine, rank) == members.index(rank)
    t = _t(np.full(3, rank + 1.0))
    dist.all_reduce(t, group=mine)
    assert (t.numpy() == sum(r + 1 for r in members)).all()
    b = _t(np.full(2, float(rank)))
    dist.broadcast(b, src=members[-1], group=mine)  # src is a world rank
    assert (b.numpy() == members[-1]).all()
    dist.destroy_process_group(mine)
    t = _t(np.ones(2))
    dist.all_reduce(t)  # the world still works
    assert (t.numpy() == n).all()


ALL_CHECKS = [
    check_all_reduce_ops,
    check_all_reduce_large,
    check_low_precision_accumulation,
    check_non_contiguous,
    check_broadcast_reduce,
    check_large_messages,
    check_gathers,
    check_reduce_scatter,
    check_all_to_all,
    check_p2p,
    check_objects,
    check_async_and_coalesced,
    check_groups,
]


def run_all(rank: int, n: int) -> str:
    for check in ALL_CHECKS:
        check(rank, n)
    return "ok"
