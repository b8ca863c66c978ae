"""Semantics of every collective on the in-process threaded backend (world sizes 1-4)."""

import numpy as np
import pytest
from checks import ALL_CHECKS

import axonml as ax
import axonml.collectives as dist
from axonml.collectives.testing import run_threaded
from axonml.data import DistributedSampler

pytestmark = pytest.mark.timeout(60)


@pytest.mark.parametrize("n", [1, 2, 3, 4])
@pytest.mark.parametrize("check", ALL_CHECKS, ids=lambda c: c.__name__.removeprefix("check_"))
def test_collective_semantics(check, n):
    assert run_threaded(n, lambda rank: check(rank, n) or "ok") == ["ok"] * n


def test_run_threaded_returns_results_in_rank_order():
    def body(rank):
        t = ax.tensor([float(rank + 1)])
        dist.all_reduce(t)
        return (dist.get_rank(), dist.get_world_size(), t.item())

    assert run_threaded(3, body) == [(0, 3, 6.0), (1, 3, 6.0), (2, 3, 6.0)]


def test_rank_threads_have_private_state():
    assert not dist.is_initialized()
    run_threaded(2, lambda rank: dist.is_initialized() or 1 / 0)
    assert not dist.is_initialized()


def test_distributed_sampler_reads_world_from_process_group():
    def body(rank):
        sampler = DistributedSampler(list(range(10)), shuffle=False)
        return list(sampler)

    got = run_threaded(3, body)
    assert got == [[0, 3, 6, 9], [1, 4, 7, 0], [2, 5, 8, 1]]


def test_rank_exception_aborts_others_and_is_reraised():
    def body(rank):
        if rank == 1:
            raise KeyError("boom on rank 1")
        dist.all_reduce(ax.ones(2))  # would wait for rank 1 until the timeout without the abort

    with pytest.raises(KeyError, match="boom on rank 1"):
        run_threaded(3, body, timeout=20)


def test_work_from_threaded_backend_is_pending_until_peers_arrive():
    import threading

    gate = threading.Event()

    def body(rank):
        t = ax.ones(3)
        if rank == 0:
            work = dist.all_reduce(t, async_op=True)
            assert not work.is_completed()
            assert work.exception() is None
            gate.set()
            work.wait(timeout=10)
            assert work.is_completed()
        else:
            gate.wait(10)
            dist.all_reduce(t)
        return float(t.numpy()[0])

    assert run_threaded(2, body) == [2.0, 2.0]


def test_float16_sum_accumulates_in_float32_on_one_rank_list():
    # 2048 + 1 + 1: float16 accumulation would give 2048
    def body(rank):
        t = ax.from_numpy(np.array([2048.0 if rank == 0 else 1.0], dtype=np.float16))
        dist.all_reduce(t)
        return float(t.numpy()[0])

    assert run_threaded(3, body) == [2050.0] * 3


def test_threaded_worlds_are_released():
    from axonml.collectives.backends.threaded import current_worlds

    before = set(current_worlds())

    def body(rank):
        g = dist.new_group([0, 1])
        dist.all_reduce(ax.ones(1), group=g)

    run_threaded(2, body)
    assert set(current_worlds()) == before
