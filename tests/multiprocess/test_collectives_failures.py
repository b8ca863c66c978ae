"""The tcp backend between real processes: failures are loud and bounded, async overlaps,
rendezvous through the environment; and the harness itself."""

import pytest
from harness import RankFailure, hosts, run_ranks
from mp_targets import (
    async_overlap,
    env_world,
    fail_on,
    hang_on,
    late_rank,
    mismatch,
    p2p_tag_mismatch,
    sigkill_mid_collective,
    world_of_one,
)

pytestmark = pytest.mark.timeout(180)


@pytest.mark.parametrize("kind, transport", [("shape", "shm"), ("dtype", "socket"), ("op", "shm"), ("op", "socket")])
def test_mismatch_is_reported_on_every_rank(kind, transport):
    n = 3
    results = run_ranks(n, mismatch, kind, timeout=60, rank_env=hosts(n) if transport == "socket" else None)
    for first, second in results:
        assert "collective mismatch" in first
        if kind == "shape":
            assert "(3,)" in first and "(4,)" in first
        if kind == "dtype":
            assert "float32" in first and "float64" in first
        if kind == "op":
            assert "all_reduce" in first and "broadcast" in first
        assert f"ranks [{n - 1}]" in first
        assert "unusable" in second


@pytest.mark.parametrize("transport", ["shm", "socket"])
def test_sigkill_rank_mid_collective_is_named_by_the_others(transport):
    victim, n = 1, 3
    results = run_ranks(n, sigkill_mid_collective, victim, timeout=60, expect_killed=(victim,),
                        rank_env=hosts(n) if transport == "socket" else None)
    assert results[victim] is None
    for rank in (0, 2):
        (pending, following), elapsed = results[rank]
        assert f"rank {victim}" in pending, pending
        assert elapsed < 10.0
        assert "unusable" in following and f"rank {victim}" in following


def test_late_rank_is_named_by_the_timeout():
    results = run_ranks(2, late_rank, 1, 2.0, 1.0, timeout=60)
    assert results[0].startswith("CollectiveTimeout") and "ranks [1]" in results[0], results[0]
    assert "rank 0" in results[1] and "timed out" in results[1], results[1]


def test_async_all_reduce_overlaps_with_compute():
    for r in run_ranks(2, async_overlap, timeout=120):
        assert r["correct"]
        assert r["done_during_compute"] and r["steps"] >= 3, r


def test_env_rendezvous_through_grpc_store():
    got = run_ranks(3, env_world, init="env", timeout=60)
    assert got == [(r, 3, 6.0, 3) for r in range(3)]


def test_world_of_one_without_environment():
    assert run_ranks(1, world_of_one, init=None, timeout=60) == [(0, 1, "tcp", [3.0, 4.0])]


def test_p2p_tag_mismatch_is_an_error():
    results = run_ranks(2, p2p_tag_mismatch, timeout=60, pg_timeout=10)
    assert "tag 2" in results[1] and "tag 1" in results[1], results[1]


def test_harness_reports_failure_and_hang():
    with pytest.raises(RankFailure, match="deliberate failure on rank 1"):
        run_ranks(3, fail_on, 1, timeout=30)
    with pytest.raises(RankFailure, match=r"rank 1 hung past 6 s; its stacks:(.|\n)*hang_on"):
        run_ranks(2, hang_on, 1, timeout=6)
