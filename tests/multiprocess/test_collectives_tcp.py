"""The tcp backend between real processes: every collective on shared memory and on sockets."""

import pytest
from harness import hosts, run_ranks
from mp_targets import all_checks

pytestmark = pytest.mark.timeout(180)


@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_every_collective_shared_memory(n):
    assert run_ranks(n, all_checks, timeout=120) == ["shm" if n > 1 else "socket"] * n


@pytest.mark.parametrize("n", [2, 3, 4])
def test_every_collective_sockets(n):
    assert run_ranks(n, all_checks, timeout=120, rank_env=hosts(n)) == ["socket"] * n


def test_eight_ranks_small():
    names = ("check_all_reduce_large", "check_objects", "check_p2p", "check_async_and_coalesced", "check_groups",
             "check_reduce_scatter", "check_all_to_all", "check_gathers")
    assert run_ranks(8, all_checks, names, timeout=150) == ["shm"] * 8


def test_without_divergence_check():
    names = ("check_async_and_coalesced", "check_broadcast_reduce", "check_p2p")
    env = {"AXONML_CHECK_COLLECTIVES": "0"}
    assert run_ranks(3, all_checks, names, timeout=60, env=env) == ["shm"] * 3
    assert run_ranks(2, all_checks, names, timeout=60, env=env, rank_env=hosts(2)) == ["socket"] * 2
