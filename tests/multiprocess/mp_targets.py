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
    if rank == victim:
        dist.all_reduce(big, async_op=True)
        time.sleep(0.02)
        os.kill(os.getpid(), signal.SIGKILL)
    t0 = time.monotonic()
    messages = []
    try:
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
