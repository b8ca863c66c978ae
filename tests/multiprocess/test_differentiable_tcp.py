"""Differentiable collectives between real processes on the tcp backend (2 ranks).

Shared memory and sockets: every case's outputs and gradients equal the single-process
reference, finite differences agree, and the closed-form checks pass.
"""

import numpy as np
import pytest
from collectives.differentiable_checks import CASES, mp_target, reference
from harness import hosts, run_ranks

pytestmark = pytest.mark.timeout(120)


@pytest.mark.parametrize("transport", ["shm", "socket"])
def test_differentiable_collectives_two_processes(transport):
    n = 2
    results = run_ranks(n, mp_target, timeout=90, rank_env=hosts(n) if transport == "socket" else None)
    for name in CASES:
        for r, (y_ref, g_ref) in enumerate(reference(n, name)):
            y, g = results[r][name]
            np.testing.assert_allclose(y, y_ref, rtol=1e-12, atol=1e-12, err_msg=f"{name}: output of rank {r}")
            np.testing.assert_allclose(g, g_ref, rtol=1e-12, atol=1e-12, err_msg=f"{name}: gradient of rank {r}")
    for r in range(n):
        assert results[r]["transport"] == transport
        assert max(results[r]["fd"].values()) < 1e-6, results[r]["fd"]
