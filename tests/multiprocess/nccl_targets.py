"""What the nccl tests run on each rank: every collective on raw arrays with closed-form
expected values (NumPy arrays on the fake runtime, CuPy arrays on a GPU), and the tensor
API on CUDA tensors. Importable without CuPy (it is imported only on a GPU)."""

import numpy as np

import axonml as ax
import axonml.collectives as dist
from axonml.cluster import MemoryStore
from axonml.collectives import api
from axonml.collectives.backends import nccl as _nccl  # noqa: F401  (registers "nccl")
from axonml.collectives.types import ReduceOp


def every_collective(pg, xp, r):
    """Run every raw-array collective of ``pg`` on rank ``r``; return {name: correct?}."""
    n = pg.size()
    tri = n * (n + 1) / 2
    out = {}
    a = xp.full(5, r + 1.0, xp.float32)
    pg.allreduce([a]).wait()
    out["sum"] = a.tolist() == [tri] * 5
    a = xp.full(3, r + 1.0, xp.float64)
    pg.allreduce([a], ReduceOp.AVG).wait()
    out["avg"] = a.tolist() == [(n + 1) / 2] * 3
    a, b = xp.array([r + 1, -r], xp.int64), xp.array([r + 2], xp.int16)
    pg.allreduce([a, b], ReduceOp.MAX).wait()  # coalesced, mixed dtypes, int16 through int32
    out["max"] = a.tolist() == [n, 0] and b.tolist() == [n + 1] and b.dtype == np.int16
    p = xp.array([r + 1], xp.int32)
    pg.allreduce([p], ReduceOp.PRODUCT).wait()
    out["prod"] = p.tolist() == [int(np.prod(np.arange(1, n + 1)))]
    f = xp.array([r == 0, True, False])
    pg.allreduce([f], ReduceOp.SUM).wait()
    out["bool_any"] = f.tolist() == [True, True, False]
    pg.allreduce([xp.zeros(0, xp.float32)]).wait()
    h = xp.full(4, float(r), xp.float16)
    pg.reduce([h], 0, ReduceOp.MIN).wait()
    out["reduce"] = h.tolist() == ([0.0] * 4 if r == 0 else [float(r)] * 4)
    bc = xp.arange(6, dtype=xp.int8) * (r + 1)
    pg.broadcast([bc], n - 1).wait()
    out["bcast"] = bc.tolist() == [i * n for i in range(6)]
    counts = [q + 1 for q in range(n)]  # uneven all-gather
    ag = xp.zeros(sum(counts), xp.float32)
    pg.allgather(ag, xp.full(counts[r], float(r), xp.float32), counts).wait()
    out["allgather_uneven"] = ag.tolist() == [float(q) for q in range(n) for _ in range(q + 1)]
    ag2 = xp.zeros(2 * n, xp.uint8)
    pg.allgather(ag2, xp.array([r, r], xp.uint8)).wait()
    out["allgather"] = ag2.tolist() == [q for q in range(n) for _ in range(2)]
    rs = xp.zeros(2, xp.float32)
    pg.reduce_scatter(rs, xp.arange(2 * n, dtype=xp.float32) + r).wait()
    out["reduce_scatter"] = rs.tolist() == [n * (2 * r) + tri - n, n * (2 * r + 1) + tri - n]
    rsu = xp.zeros(counts[r], xp.float64)
    pg.reduce_scatter(rsu, xp.ones(sum(counts)), ReduceOp.AVG, counts).wait()
    out["reduce_scatter_uneven"] = rsu.tolist() == [1.0] * counts[r]
    gl = [xp.zeros((2,), xp.int32) for _ in range(n)] if r == 0 else None
    pg.gather(xp.array([r, 10 * r], xp.int32), gl, 0).wait()
    out["gather"] = r != 0 or [g.tolist() for g in gl] == [[q, 10 * q] for q in range(n)]
    sc = xp.zeros(3, xp.float32)
    root = 1 % n
    pg.scatter(sc, [xp.full(3, q + 0.5, xp.float32) for q in range(n)] if r == root else None, root).wait()
    out["scatter"] = sc.tolist() == [r + 0.5] * 3
    in_c = [(r + j) % 3 for j in range(n)]  # rank r sends (r + j) % 3 elements to rank j
    out_c = [(j + r) % 3 for j in range(n)]
    src = xp.concatenate([xp.full(in_c[j], 100 * r + j, xp.int64) for j in range(n)])
    dst = xp.zeros(sum(out_c), xp.int64)
    pg.alltoall(dst, src, out_c, in_c).wait()
    out["alltoall"] = dst.tolist() == [100 * j + r for j in range(n) for _ in range(out_c[j])]
    pg.barrier().wait()
    if n > 1:
        nxt, prv = (r + 1) % n, (r - 1) % n
        got = xp.zeros(4, xp.float32)
        works = pg.batch_p2p([("send", xp.full(4, r, xp.float32), nxt, 0, None), ("recv", got, prv, 0, None)])
        for w in works:
            w.wait()
        out["p2p"] = got.tolist() == [float(prv)] * 4 and works[1].result() == prv
    return out


def check_collectives(rank, world):
    """On a GPU: every raw collective on CuPy arrays, real events, and the tensor API."""
    import cupy as cp

    own = not dist.is_initialized()
    if own:
        dist.init_process_group("nccl", store=MemoryStore(timeout=60), rank=0, world_size=1, timeout=60)
    try:
        pg = api.resolve_group(None, "check_collectives")
        res = every_collective(pg, cp, rank)
        a = cp.ones(1 << 20, cp.float32)
        work = pg.allreduce([a])
        res["async_wait_timeout"] = work.wait(timeout=30) and work.is_completed() and work.get_future().result() is None
        res["async_value"] = float(a[:4].sum().get()) == 4.0 * world
        res["host_round_trip"] = pg.to_host(pg.to_device(np.arange(5))).tolist() == list(range(5))
        t = ax.full((4,), float(rank + 1), device=f"cuda:{pg.device_index}")
        dist.all_reduce(t)
        res["tensor_all_reduce"] = t.tolist() == [world * (world + 1) / 2] * 4
        h = ax.full((3,), 1.5, dtype=ax.float16, device=f"cuda:{pg.device_index}")
        dist.all_reduce(h, op=ReduceOp.AVG)  # through a float32 copy
        res["tensor_float16_avg"] = h.tolist() == [1.5] * 3
        return res
    finally:
        if own:
            dist.destroy_process_group()
