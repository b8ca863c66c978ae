"""The tcp backend's shared-memory paths between real processes: chunked (staged) collectives,
tensors that live in shared memory (read in place), the synchronous latency path, failures.

Every result is compared bit for bit with a rank-order reduction computed locally.
"""

import pytest
from harness import hosts, run_ranks
from mp_targets import (
    shm_inline_mismatch_and_arguments,
    shm_latency_path,
    shm_mixed_and_lifetime,
    shm_sigkill_resident,
    shm_values,
)
from shm_inline_targets import shm_allreduce_runner, shm_inline_small

pytestmark = pytest.mark.timeout(180)


@pytest.mark.parametrize("n", [2, 3, 4])
def test_staged_and_in_place_collectives_are_bit_exact(n):
    for per_rank in run_ranks(n, shm_values, timeout=150):
        for r in per_rank:
            assert r["transport"] == "shm"
            # the in-place all-reduce, broadcast, all-gather and reduce-scatter ran for the shared
            # tensors (all-reduce: not float16, which the tensor layer upcasts), never when staged
            if r["shared"]:
                all_reduce, broadcast, all_gather, reduce_scatter = r["in_place"]
                assert all_reduce >= 9 and broadcast == 2 * n and all_gather == 4 and reduce_scatter == 8, r
            else:
                assert r["in_place"] == [0, 0, 0, 0], r


def test_shared_tensors_on_sockets_are_ordinary_and_correct():
    results = run_ranks(2, shm_values, (True,), timeout=120, rank_env=hosts(2))
    assert [r for (r,) in results] == [{"transport": "socket", "shared": True, "in_place": [0, 0, 0, 0]}] * 2


def test_mixed_ranks_lifetime_and_mismatch():
    n = 3
    for r in run_ranks(n, shm_mixed_and_lifetime, timeout=90):
        assert r["mixed_ok"] and r["after_destroy"] and r["shared_in_sub"], r
        assert r["swept"] >= 1, r
        assert "collective mismatch" in r["mismatch"] and f"ranks [{n - 1}]" in r["mismatch"], r["mismatch"]


def test_synchronous_small_all_reduce_runs_inline_and_keeps_order():
    for r in run_ranks(2, shm_latency_path, timeout=60):
        assert r == {"inline": True, "values": 3.0, "queued_ok": True, "small": 2.0}, r


def test_sigkill_during_in_place_all_reduce_is_named():
    victim = 1
    results = run_ranks(3, shm_sigkill_resident, victim, timeout=60, expect_killed=(victim,))
    for rank in (0, 2):
        msg, elapsed = results[rank]
        assert f"rank {victim}" in msg, msg
        assert elapsed < 10.0


def test_arguments_and_mismatch_on_the_inline_path():
    for r in run_ranks(2, shm_inline_mismatch_and_arguments, timeout=60):
        assert r["(-1,)"] == "ValueError" and r["(2.5,)"] == "TypeError" and r["(3,)"] != "no error", r
        assert "expected an axonml Tensor" in r["is_shared"]
        assert r["shape"] == ((2, 3), "float64", True, False)
        msg = r["mismatch"]
        assert "collective mismatch" in msg and "barrier" in msg and "all_reduce" in msg, msg


@pytest.mark.parametrize("n", [2, 3])
def test_small_all_reduce_latency_path(n):
    for r in run_ranks(n, shm_allreduce_runner, timeout=120):
        assert r["bad"] == [], r["bad"]
        # one generic entry per (dtype, shape, op): the first call; the two later ones took the runner
        assert r["calls"] == 3 * r["generic_calls"], r
        assert r["queued"], r
        assert r["counted"] >= r["calls"], r  # every call reported to the metrics observer
        msg = r["mismatch"]
        assert "collective mismatch" in msg and "(5,)" in msg and "(6,)" in msg and f"ranks [{n - 1}]" in msg, msg


@pytest.mark.parametrize("n, mismatch", [(2, "sizes"), (3, "ops"), (4, "shapes")])
def test_synchronous_small_gather_scatter_broadcast_inline(n, mismatch):
    total = n * (n - 1) / 2
    for r in run_ranks(n, shm_inline_small, mismatch, timeout=150):
        assert r["bad"] == [], r["bad"]
        assert r["inline"] == 0, r  # the one-phase path ran exactly for the calls that fit it
        assert [op for op, _ in r["metrics"]] == ["all_gather_into_tensor", "reduce_scatter_tensor", "broadcast"], r
        assert r["metrics"][0][1] == n * 4 and r["metrics"][1][1] == n * 4, r  # float32, c = 1: whole output / input
        o = r["ordered"]
        assert o["queued"] and o["pending_done"], o
        assert o["big"] == total * n, o
        assert o["gathered"] == [float(j) for j in range(n)] and o["rs"] == n * (n + 1) / 2 and o["bcast"] == 0.0, o
        msg = r["mismatch"]
        assert r["mismatch_inline"] == 1 and "collective mismatch" in msg, r
        if mismatch == "sizes":
            assert "all_gather_into_tensor" in msg and "counts=(4, 4" in msg and "counts=(6, 6" in msg, msg
        elif mismatch == "ops":
            assert "reduce_scatter_tensor" in msg and "all_gather_into_tensor" in msg and f"ranks [{n - 1}]" in msg, msg
        else:
            assert "broadcast" in msg and "(3, 2)" in msg and "(4, 2)" in msg, msg
