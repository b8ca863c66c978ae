"""Rank functions of the synchronous one-phase (inline) all-gather, reduce-scatter and broadcast
on shared memory (tests/multiprocess/test_shm_collectives.py)."""

from __future__ import annotations

import numpy as np

import axonml as ax
import axonml.collectives as dist
from axonml.collectives.api import resolve_group
from axonml.collectives.process_group import set_collective_observer
from axonml.collectives.types import ReduceOp
from axonml.errors import CollectiveError


def _rank_order(xs: list, op: ReduceOp) -> np.ndarray:
    """The reduction the backend promises: ranks combined in rank order (AVG: the sum / n)."""
    fn = {ReduceOp.SUM: np.add, ReduceOp.AVG: np.add, ReduceOp.MAX: np.maximum, ReduceOp.MIN: np.minimum,
          ReduceOp.PRODUCT: np.multiply}[op]
    acc = fn(xs[0], xs[1])
    for x in xs[2:]:
        acc = fn(acc, x)
    return acc / len(xs) if op is ReduceOp.AVG else acc


def _values(rank: int, count: int, dtype: str) -> np.ndarray:
    return ((np.arange(count) % 977) * (rank + 1) + rank).astype(dtype)


def shm_inline_small(rank: int, n: int, mismatch: str) -> dict:
    """Every size around the one-phase threshold: bit-exact results, the inline path taken exactly
    when the data fits it, metrics reported, order kept behind async work; then a mismatch."""
    pg = resolve_group(None, "test")
    inline = [0]
    orig = pg._inline

    def counting(*a: object) -> object:
        inline[0] += 1
        return orig(*a)

    pg._inline = counting
    seen: list = []
    previous = set_collective_observer(lambda op, nbytes, s, size: seen.append((op, nbytes)))
    small = pg.shm.small_bytes
    bad: list = []
    expect_inline = 0

    def check(name: str, got: np.ndarray, want: np.ndarray) -> None:
        if got.dtype != want.dtype or got.shape != want.shape or got.tobytes() != want.tobytes():
            bad.append(f"{name}: {got[:4]} != {want[:4]}")

    try:
        for dtype in ("float32", "float64", "int64"):
            isz = np.dtype(dtype).itemsize
            edge = small // (n * isz)  # elements per rank at which n ranks' blocks exactly fill the one-phase path
            for c in (1, 7, edge - 1, edge, edge + 1):
                fits = n * c * isz <= small
                # all_gather_into_tensor (output (n, c)) and all_gather into a list
                out = ax.zeros(n, c, dtype=dtype)
                dist.all_gather_into_tensor(out, ax.from_numpy(_values(rank, c, dtype)))
                want = np.stack([_values(j, c, dtype) for j in range(n)])
                check(f"all_gather_into_tensor c={c} {dtype}", out.numpy(), want)
                lst = [ax.zeros(c, dtype=dtype) for _ in range(n)]
                dist.all_gather(lst, ax.from_numpy(_values(rank, c, dtype)))
                for j in range(n):
                    check(f"all_gather[{j}] c={c} {dtype}", lst[j].numpy(), want[j])
                # reduce_scatter_tensor: n*c elements in, c out
                ops = (ReduceOp.SUM, ReduceOp.MAX) + ((ReduceOp.AVG,) if dtype != "int64" else ())
                for op in ops:
                    res = ax.zeros(c, dtype=dtype)
                    dist.reduce_scatter_tensor(res, ax.from_numpy(_values(rank, n * c, dtype)), op)
                    full = _rank_order([_values(j, n * c, dtype) for j in range(n)], op)
                    check(f"reduce_scatter_tensor {op.name} c={c} {dtype}", res.numpy(), full[rank * c:(rank + 1) * c])
                # broadcast of n*c elements from the last rank
                t = ax.from_numpy(_values(rank, n * c, dtype))
                dist.broadcast(t, n - 1)
                check(f"broadcast c={c} {dtype}", t.numpy(), _values(n - 1, n * c, dtype))
                expect_inline += (3 + len(ops)) if fits else 0
        # uneven: reduce_scatter with list segments of different lengths, raw all-gather with counts
        counts = [3 + 5 * j for j in range(n)]
        res = ax.zeros(counts[rank], dtype="float32")
        segs = [ax.from_numpy(_values(rank, cj, "float32") + j) for j, cj in enumerate(counts)]
        dist.reduce_scatter(res, segs)
        check("reduce_scatter uneven", res.numpy(),
              _rank_order([_values(i, counts[rank], "float32") + rank for i in range(n)], ReduceOp.SUM))
        flat = np.zeros(sum(counts), np.float64)
        pg.allgather(flat, _values(rank, counts[rank], "float64"), counts, {"op": "all_gather", "dtype": "float64",
                                                                          "shapes": ((counts[rank],),), "sync": True})
        check("all_gather uneven", flat, np.concatenate([_values(j, cj, "float64") for j, cj in enumerate(counts)]))
        expect_inline += 2
        firsts: dict = {}
        for op, nbytes in seen:  # the first sample of each op (float32, c = 1)
            if op in ("all_gather_into_tensor", "reduce_scatter_tensor", "broadcast"):
                firsts.setdefault(op, (op, nbytes))
        metrics = list(firsts.values())
        # order behind async work: a large async all-reduce, then small synchronous ones (queued, not inline)
        before = inline[0]
        extra = before - expect_inline
        big = ax.from_numpy(np.full(2_000_000, float(rank), np.float32))
        pending = dist.all_reduce(big, async_op=True)
        out = ax.zeros(n, 5)
        dist.all_gather_into_tensor(out, ax.full((5,), float(rank)))
        queued = pending.is_completed() and inline[0] == before
        res = ax.zeros(5)
        dist.reduce_scatter_tensor(res, ax.full((n * 5,), float(rank + 1)))
        # mixed: rank 0 queues behind its own async work while the others run inline
        if rank == 0:
            pending = dist.all_reduce(big, async_op=True)
        else:
            dist.all_reduce(big)
        b = ax.full((9,), float(rank))
        dist.broadcast(b, 0)
        ordered = {"queued": queued, "big": float(big.numpy()[0]), "gathered": out.numpy()[:, 0].tolist(),
                   "rs": float(res.numpy()[0]), "bcast": float(b.numpy()[-1]),
                   "pending_done": rank != 0 or pending.is_completed()}
    finally:
        set_collective_observer(previous)
    result = {"bad": bad, "inline": extra, "metrics": metrics, "ordered": ordered}
    # last (the group breaks): a mismatch on the inline path, named on every rank
    before = inline[0]
    try:
        if mismatch == "sizes":
            c = 4 if rank == 0 else 6
            dist.all_gather_into_tensor(ax.zeros(n * c), ax.ones(c))
        elif mismatch == "ops":
            if rank == n - 1:
                dist.reduce_scatter_tensor(ax.zeros(4), ax.ones(4 * n))
            else:
                dist.all_gather_into_tensor(ax.zeros(4 * n), ax.ones(4))
        else:
            dist.broadcast(ax.zeros(3 + (rank == 1), 2), 0)
        result["mismatch"] = "no error"
    except CollectiveError as e:
        result["mismatch"] = str(e)
    result["mismatch_inline"] = inline[0] - before
    return result


def shm_allreduce_runner(rank: int, n: int) -> dict:
    """The synchronous small all-reduce's latency path (a runner built by the first call of each
    (op, shape, dtype), used by the later ones without the group's generic entry): bit-exact
    results for every op, dtype and shape, metrics reported, non-contiguous and queued calls
    still right; last, a shape mismatch on that path, named on every rank."""
    pg = resolve_group(None, "test")
    entered = [0]
    generic = pg.allreduce

    def counting(*a: object, **k: object) -> object:
        entered[0] += 1
        return generic(*a, **k)

    pg.allreduce = counting
    seen: list = []
    previous = set_collective_observer(lambda op, nbytes, s, size: seen.append((op, nbytes)))
    bad: list = []
    calls = 0
    try:
        for dtype, ops in (("float32", (ReduceOp.SUM, ReduceOp.AVG, ReduceOp.MIN, ReduceOp.MAX, ReduceOp.PRODUCT)),
                           ("float64", (ReduceOp.SUM, ReduceOp.AVG)), ("int32", (ReduceOp.SUM, ReduceOp.MAX))):
            for shape in ((5,), (3, 4)):
                for op in ops:
                    for it in range(3):  # the first call builds the runner, the others use it
                        xs = [(_values(j, int(np.prod(shape)), dtype) + it).reshape(shape) for j in range(n)]
                        t = ax.from_numpy(xs[rank].copy())
                        dist.all_reduce(t, op)
                        calls += 1
                        want = _rank_order(xs, op).astype(dtype)
                        if t.numpy().tobytes() != want.tobytes():
                            bad.append(f"{dtype} {shape} {op.name} call {it}: {t.numpy().ravel()[:3]} != {want.ravel()[:3]}")
        generic_calls = entered[0]
        # a non-contiguous tensor of a cached shape and dtype: not the runner's (it needs contiguous data)
        base = ax.from_numpy(np.tile(_values(rank, 5, "float32")[:, None], (1, 2)))
        col = base[:, 0]
        dist.all_reduce(col)
        want = _rank_order([_values(j, 5, "float32") for j in range(n)], ReduceOp.SUM)
        if col.numpy().tobytes() != want.tobytes() or not (base.numpy()[:, 1] == _values(rank, 5, "float32")).all():
            bad.append(f"non-contiguous: {base.numpy()}")
        # queued behind async work: the runner declines, the call keeps its place
        big = ax.from_numpy(np.full(2_000_000, float(rank), np.float32))
        pending = dist.all_reduce(big, async_op=True)
        small = ax.from_numpy(_values(rank, 5, "float32"))
        dist.all_reduce(small)
        queued = pending.is_completed() and small.numpy().tobytes() == want.tobytes()
        counted = sum(1 for op, nbytes in seen if op == "all_reduce" and nbytes < 1000)
    finally:
        set_collective_observer(previous)
        pg.allreduce = generic
    out = {"bad": bad, "calls": calls, "generic_calls": generic_calls, "queued": queued, "counted": counted}
    try:  # both ranks built a runner for (5,) float32 SUM; now one rank all-reduces another shape
        dist.all_reduce(ax.ones(5 if rank != n - 1 else 6))
        out["mismatch"] = "no error"
    except CollectiveError as e:
        out["mismatch"] = str(e)
    return out
