"""Functions the multi-process tests run on every rank: ``fn(rank, world_size, *args)``."""

from __future__ import annotations

import os
import signal
import time

import numpy as np
from collectives.checks import ALL_CHECKS

import axonml as ax
import axonml.collectives as dist
from axonml.collectives.api import resolve_group
from axonml.collectives.shared_memory import is_shared, shared_empty
from axonml.collectives.types import ReduceOp
from axonml.errors import CollectiveError


def all_checks(rank: int, n: int, names: tuple = ()) -> str:
    """Run the checks (all, or those named); return the transport the world group used."""
    for check in ALL_CHECKS:
        if not names or check.__name__ in names:
            check(rank, n)
    return getattr(resolve_group(None, "test"), "transport", "n/a")


def fail_on(rank: int, n: int, bad: int) -> str:
    if rank == bad:
        raise ValueError(f"deliberate failure on rank {rank}")
    dist.all_reduce(ax.ones(3))
    return "ok"


def hang_on(rank: int, n: int, bad: int) -> str:
    if rank == bad:
        time.sleep(600)
    return "ok"


def mismatch(rank: int, n: int, kind: str) -> list[str]:
    """Every rank issues an all_reduce, except that one rank differs by ``kind``."""
    odd = rank == n - 1
    t = ax.ones(4 if (kind == "shape" and odd) else 3, dtype=ax.float64 if (kind == "dtype" and odd) else ax.float32)
    out = []
    try:
        if kind == "op" and odd:
            dist.broadcast(t, src=0)
        else:
            dist.all_reduce(t)
        out.append("no error")
    except CollectiveError as e:
        out.append(str(e))
    try:
        dist.all_reduce(ax.ones(1))
        out.append("no error")
    except CollectiveError as e:
        out.append(str(e))
    return out


def sigkill_mid_collective(rank: int, n: int, victim: int) -> tuple[list[str], float] | None:
    big = ax.from_numpy(np.ones(8_000_000, dtype=np.float32))
    if rank == victim:  # many queued all-reduces: the death falls in the middle of one, however fast they are
        for _ in range(100):
            dist.all_reduce(big, async_op=True)
        time.sleep(0.02)
        os.kill(os.getpid(), signal.SIGKILL)
    t0 = time.monotonic()
    messages = []
    try:
        for _ in range(100):
            dist.all_reduce(big)
        messages.append("no error")
    except CollectiveError as e:
        messages.append(str(e))
    elapsed = time.monotonic() - t0
    try:
        dist.all_reduce(ax.ones(2))
        messages.append("no error")
    except CollectiveError as e:
        messages.append(str(e))
    return messages, elapsed


def late_rank(rank: int, n: int, late: int, delay: float, timeout: float) -> str:
    """Rank ``late`` joins a collective ``delay`` seconds late, in a group whose timeout is
    ``timeout`` (a new group: the world's bootstrap keeps a generous timeout)."""
    group = dist.new_group(timeout=timeout)
    if rank == late:
        time.sleep(delay)
    try:
        dist.all_reduce(ax.ones(3), group=group)
        return "no error"
    except CollectiveError as e:
        return f"{type(e).__name__}: {e}"


def async_overlap(rank: int, n: int) -> dict:
    """An all-reduce on 64 MiB runs while this thread multiplies matrices: the compute loop
    must make progress while the all-reduce is pending, and the all-reduce must complete
    while the loop still runs (is_completed() seen True between two matmuls)."""
    big = ax.from_numpy(np.full(16 * 1024 * 1024, float(rank + 1), dtype=np.float32))
    a = np.random.default_rng(rank).standard_normal((256, 256)) / 16
    dist.barrier()
    work = dist.all_reduce(big, async_op=True)
    steps, t0 = 0, time.monotonic()
    done_during_compute = False
    while time.monotonic() - t0 < 60:
        a = np.tanh(a @ a)  # NumPy releases the GIL: the comm thread keeps going
        steps += 1
        if work.is_completed():
            done_during_compute = True
            break
    window = time.monotonic() - t0
    work.wait()
    ok = bool((big.numpy() == n * (n + 1) / 2).all())
    return {"done_during_compute": done_during_compute, "steps": steps, "window_s": window, "correct": ok}


def env_world(rank: int, n: int) -> tuple:
    t = ax.tensor([float(rank + 1)])
    dist.all_reduce(t)
    objs = [None] * n
    dist.all_gather_object(objs, os.getpid())
    return dist.get_rank(), dist.get_world_size(), t.item(), len(set(objs))


def world_of_one(rank: int, n: int) -> tuple:
    for v in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "LOCAL_RANK"):
        os.environ.pop(v, None)
    dist.init_process_group()
    t = ax.tensor([3.0, 4.0])
    dist.all_reduce(t)
    out = (dist.get_rank(), dist.get_world_size(), dist.get_backend(), t.tolist())
    dist.destroy_process_group()
    return out


def p2p_tag_mismatch(rank: int, n: int) -> str:
    try:
        if rank == 0:
            dist.send(ax.ones(4), dst=1, tag=1)
            dist.barrier()
        else:
            dist.recv(ax.zeros(4), src=0, tag=2)
        return "no error"
    except CollectiveError as e:
        return str(e)


# -- shared-memory paths (tests/multiprocess/test_shm_*.py) ---------------------------------------------

_NP_UFUNC = {ReduceOp.SUM: np.add, ReduceOp.AVG: np.add, ReduceOp.PRODUCT: np.multiply, ReduceOp.MIN: np.minimum,
             ReduceOp.MAX: np.maximum, ReduceOp.BXOR: np.bitwise_xor}


def _data(seed: int, r: int, size: int, dtype: str) -> np.ndarray:
    rng = np.random.default_rng([seed, r])
    if np.dtype(dtype).kind == "f":
        return rng.standard_normal(size).astype(dtype)
    return rng.integers(1, 100, size).astype(dtype)


def _ordered(op: ReduceOp, parts: list) -> np.ndarray:
    """Rank-order reduction: what every path of every backend must return, bit for bit."""
    acc = parts[0].copy()
    for p in parts[1:]:
        _NP_UFUNC[op](acc, p, out=acc)
    if op is ReduceOp.AVG:
        acc /= len(parts)
    return acc


def _slot(n: int) -> tuple[int, int]:
    """The staging slot and the small all-reduce limit of a shared-memory group of ``n`` ranks."""
    shm = resolve_group(None, "test").shm
    return (shm.slot, shm.small_bytes) if shm is not None else (1 << 20, 64 << 10)


def _shm_cases(n: int) -> list:
    slot, small = _slot(n)
    f32 = [small // 4 - 1, small // 4 + 1, slot // 4 * n + 3, (5 * slot) // 8 * n + 7, 3 * slot // 4 * n // 2 + 1]
    return ([(op, "float32", s) for s in f32 for op in (ReduceOp.SUM, ReduceOp.AVG)]
            + [(ReduceOp.MAX, "float64", slot // 8 * n + 5), (ReduceOp.PRODUCT, "float64", 3 * slot // 16 * n + 1),
               (ReduceOp.BXOR, "int32", slot // 4 * n + 11), (ReduceOp.MIN, "int8", slot * n + 13),
               (ReduceOp.SUM, "float16", slot // 2 + 17)])


def _alloc(shared: bool, size: int, dtype: str, group=None) -> ax.Tensor:
    if shared:
        return shared_empty(size, dtype=getattr(ax, dtype), group=group)
    return ax.from_numpy(np.empty(size, dtype))


def _count_calls(module, name: str, counts: dict) -> None:
    fn = getattr(module, name)

    def counted(*args, **kw):
        counts[name] = counts.get(name, 0) + 1
        return fn(*args, **kw)

    setattr(module, name, counted)


def shm_values(rank: int, n: int, modes: tuple = (False, True)) -> list[dict]:
    """Every large shared-memory collective on random data, staged (private tensors) then in
    place (``shared_empty`` tensors): results equal the rank-order reference bit for bit;
    returns which paths ran in each mode."""
    from axonml.collectives.backends import shm_collectives

    counts: dict = {}
    names = ("_allreduce_resident", "_broadcast_resident", "_allgather_resident", "_reduce_scatter_resident")
    for name in names:
        _count_calls(shm_collectives, name, counts)
    out = []
    for shared in modes:
        counts.clear()
        _shm_values(rank, n, shared)
        out.append({"transport": resolve_group(None, "test").transport, "shared": shared,
                    "in_place": [counts.get(name, 0) for name in names]})
    return out


def _shm_values(rank: int, n: int, shared: bool) -> None:
    group = resolve_group(None, "test")
    seed = 0
    for op, dtype, size in _shm_cases(n):
        seed += 1
        t = _alloc(shared, size, dtype)
        t.numpy()[:] = _data(seed, rank, size, dtype)
        if dtype == "float16":  # reduced through a float32 copy by the tensor layer
            want = _ordered(op, [_data(seed, r, size, dtype).astype(np.float32) for r in range(n)]).astype(np.float16)
        else:
            want = _ordered(op, [_data(seed, r, size, dtype) for r in range(n)])
        dist.all_reduce(t, op=op)
        assert t.numpy().tobytes() == want.tobytes(), (op, dtype, size, shared)
        if shared and dtype != "float16":
            assert is_shared(t) == (group.transport == "shm")
    for size in (_slot(n)[0] // 4 + 3, 3 * _slot(n)[0] // 8 + 1):  # per-rank elements
        seed += 1
        # all-gather: the input is this rank's slice of the output (as FSDP does), or its own tensor
        full = _alloc(shared, size * n, "float32")
        full.numpy()[rank * size:(rank + 1) * size] = _data(seed, rank, size, "float32")
        dist.all_gather_into_tensor(full, full[rank * size:(rank + 1) * size])
        assert full.numpy().tobytes() == np.concatenate([_data(seed, r, size, "float32") for r in range(n)]).tobytes()
        inp = _alloc(shared, size, "float64")
        inp.numpy()[:] = _data(seed, rank, size, "float64")
        got = _alloc(False, size * n, "float64")
        dist.all_gather_into_tensor(got, inp)
        assert got.numpy().tobytes() == np.concatenate([_data(seed, r, size, "float64") for r in range(n)]).tobytes()
        # reduce-scatter: into a separate output, and in place (the output is this rank's slice of the input)
        for op in (ReduceOp.SUM, ReduceOp.AVG):
            big = _alloc(shared, size * n, "float32")
            big.numpy()[:] = _data(seed, rank, size * n, "float32")
            want = _ordered(op, [_data(seed, r, size * n, "float32") for r in range(n)])[rank * size:(rank + 1) * size]
            shard = _alloc(False, size, "float32")
            dist.reduce_scatter_tensor(shard, big, op=op)
            assert shard.numpy().tobytes() == want.tobytes(), (op, size)
            dist.reduce_scatter_tensor(big[rank * size:(rank + 1) * size], big, op=op)
            assert big.numpy()[rank * size:(rank + 1) * size].tobytes() == want.tobytes(), (op, size, "in place")
        for root in range(n):
            b = _alloc(shared, size, "float32")
            b.numpy()[:] = _data(seed + root, rank, size, "float32")
            dist.broadcast(b, src=root)
            assert b.numpy().tobytes() == _data(seed + root, root, size, "float32").tobytes()


def shm_mixed_and_lifetime(rank: int, n: int) -> dict:
    """Only some ranks pass shared tensors (staged, still right); arenas go when every rank
    dropped its tensor; a shared tensor outlives its group; a mismatch on the in-place path."""
    import gc

    group = resolve_group(None, "test")
    size = _slot(n)[0] // 2 + 5
    out = {}
    shared = shared_empty(size)  # a collective: every rank allocates, odd ranks pass private memory
    t = shared if rank % 2 == 0 else _alloc(False, size, "float32")
    t.numpy()[:] = rank + 1
    dist.all_reduce(t)
    out["mixed_ok"] = bool((t.numpy() == n * (n + 1) / 2).all())
    arenas = group.shm.arenas
    before = len(arenas._live)
    del t, shared
    gc.collect()
    dist.barrier()  # every rank dropped its tensor
    keep = shared_empty(8)  # creating an arena sweeps the released ones
    out["swept"] = before - (len(arenas._live) - 1)
    sub = dist.new_group()
    x = shared_empty(size, group=sub)
    out["shared_in_sub"] = is_shared(x, group=sub) and not is_shared(x)
    x.numpy()[:] = rank
    dist.destroy_process_group(sub)
    dist.all_reduce(x)  # world group: staged (x is ordinary memory to it)
    out["after_destroy"] = bool((x.numpy() == n * (n - 1) / 2).all())
    big = shared_empty(size + 1)
    try:
        dist.all_reduce(big[:size + (rank == n - 1)])  # the check rides on the entry phase of the in-place path
        out["mismatch"] = "no error"
    except CollectiveError as e:
        out["mismatch"] = str(e)
    del keep
    return out


def shm_latency_path(rank: int, n: int) -> dict:
    """The synchronous small all-reduce runs in the caller's thread when the group is idle and
    queues behind pending async work otherwise (results in submission order)."""
    group = resolve_group(None, "test")
    a = np.full(16, float(rank + 1), np.float32)
    work = group.allreduce([a], ReduceOp.SUM, {"op": "all_reduce", "dtype": "float32", "shapes": ((16,),), "sync": True})
    inline = work is group._done_work
    big = ax.from_numpy(np.full(3_000_000, float(rank), np.float32))
    pending = dist.all_reduce(big, async_op=True)
    small = ax.from_numpy(np.full(7, float(rank + 1), np.float32))
    dist.all_reduce(small, op=ReduceOp.MAX)
    queued_ok = pending.is_completed() and bool((big.numpy() == n * (n - 1) / 2).all())
    return {"inline": inline, "values": float(a[0]), "queued_ok": queued_ok, "small": float(small.numpy()[0])}


def shm_sigkill_resident(rank: int, n: int, victim: int) -> tuple[str, float]:
    """A rank dies in the middle of an in-place all-reduce: the others name it within seconds."""
    big = shared_empty(8_000_000)
    big.numpy()[:] = 1.0
    if rank == victim:
        dist.all_reduce(big, async_op=True)
        time.sleep(0.02)
        os.kill(os.getpid(), signal.SIGKILL)
    t0 = time.monotonic()
    try:
        for _ in range(50):
            dist.all_reduce(big)
        msg = "no error"
    except CollectiveError as e:
        msg = str(e)
    return msg, time.monotonic() - t0


def shm_inline_mismatch_and_arguments(rank: int, n: int) -> dict:
    """Bad arguments of shared_empty / is_shared raise before any communication; a barrier on
    one rank against an all-reduce on the other (both on the inline path) is named on both."""
    out = {}
    for args, kw, exc in (((-1,), {}, ValueError), ((2.5,), {}, TypeError), ((3,), {"dtype": "complex"}, Exception)):
        try:
            shared_empty(*args, **kw)
            out[str(args)] = "no error"
        except exc as e:
            out[str(args)] = type(e).__name__
    try:
        is_shared(np.zeros(3))
        out["is_shared"] = "no error"
    except TypeError as e:
        out["is_shared"] = str(e)
    t = shared_empty(2, 3, dtype=ax.float64)
    out["shape"] = (tuple(t.shape), t.dtype.name, is_shared(t), is_shared(ax.zeros(4)))
    try:
        if rank == 0:
            dist.barrier()
        else:
            dist.all_reduce(ax.ones(4))
        out["mismatch"] = "no error"
    except CollectiveError as e:
        out["mismatch"] = str(e)
    return out
