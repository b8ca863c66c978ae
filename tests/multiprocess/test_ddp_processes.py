"""DistributedDataParallel between real processes (tcp backend; one parity run on mpi).

Parity oracle: one process trained on each step's global batch (the union of the ranks'
DistributedSampler shards) gives, step by step, the parameters every DDP rank holds.
Each spawn runs many settings, to keep the number of process starts small.
"""

import os
import subprocess
import sys

import numpy as np
import pytest
from ddp_targets import N_SAMPLES, SEED, features, global_batches, gpu_parity, killed_mid_training, parity
from harness import run_ranks

from axonml.collectives.backends import nccl_support

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "ddp"))
from ddp_helpers import make_data, max_diff, oracle_steps  # noqa: E402

pytestmark = pytest.mark.timeout(240)

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
STEPS, BATCH = 3, 12
CONFIGS = [
    {"bucket_cap_mb": 1e-5, "gradient_as_bucket_view": False, "shuffle": True, "seed": 1},
    {"bucket_cap_mb": 25, "gradient_as_bucket_view": True, "shuffle": True, "seed": 2},
    {"bucket_cap_mb": 1e-5, "gradient_as_bucket_view": True, "shuffle": False, "seed": 0, "set_to_none": False},
    {"bucket_cap_mb": 25, "gradient_as_bucket_view": False, "shuffle": False, "seed": 0},
]


@pytest.mark.parametrize("world", [1, 2, 3, 4])
def test_parity_with_one_process_step_by_step(world):
    results = run_ranks(world, parity, CONFIGS, STEPS, BATCH, timeout=120)
    data = make_data(N_SAMPLES)
    for c, cfg in enumerate(CONFIGS):
        ref = oracle_steps(SEED, data, global_batches(world, STEPS, BATCH, cfg["shuffle"], cfg["seed"]))
        for rank, per_cfg in enumerate(results):
            for step, (got, want) in enumerate(zip(per_cfg[c], ref)):
                assert max_diff(got, want) < 2e-6, (cfg, rank, step, max_diff(got, want))
            assert max_diff(per_cfg[c][-1], results[0][c][-1]) == 0.0  # replicas are bitwise equal


def test_no_sync_unused_mismatch_overlap_and_join():
    world = 2
    results = run_ranks(world, features, timeout=150)
    for rank, res in enumerate(results):
        assert "parameter 0 is '0.weight' of shape (3, 4)" in res["mismatch"] and f"rank {world - 1}" in \
            res["mismatch"], res["mismatch"]
        assert res["no_sync_after_diff"] < 2e-6
        assert "spare.weight" in res["unused_error"] and "find_unused_parameters=True" in res["unused_error"]
        assert max(res["unused_flag_diffs"]) < 2e-6 and res["unused_grad_is_none"]
        assert res["join"] < 2e-6
        for rec in res["overlap"]:
            # when backward reaches the first layer, every bucket but the first layer's was launched
            assert rec["launched"] == rec["without_first_layer"] == rec["launch_times_before"] >= 6, rec
        # and communication really ran during backward: some all-reduce had finished by then
        assert sum(rec["finished"] for rec in res["overlap"]) > 0, res["overlap"]
    assert not np.allclose(results[0]["no_sync_inside"], results[1]["no_sync_inside"])
    assert np.array_equal(results[0]["no_sync_after"], results[1]["no_sync_after"])


def test_rank_killed_mid_training_is_named_by_the_others():
    victim, world = 1, 3
    results = run_ranks(world, killed_mid_training, victim, timeout=90, expect_killed=(victim,))
    assert results[victim] is None
    for rank in (0, 2):
        message, elapsed = results[rank]
        assert f"rank {victim}" in message and "DistributedDataParallel" in message, message
        assert elapsed < 15.0


_MPIEXEC = os.path.join(os.path.dirname(sys.executable), "mpiexec")


@pytest.mark.skipif(not os.path.exists(_MPIEXEC), reason="mpiexec is missing (pip install mpi4py mpich)")
def test_parity_on_the_mpi_backend():
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PMI_", "OMPI_", "AXONML_"))
           and k not in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")}
    env.update(PYTHONPATH=REPO, OMP_NUM_THREADS="1")
    proc = subprocess.run([_MPIEXEC, "-n", "2", sys.executable, os.path.join(HERE, "ddp_targets.py")],
                          capture_output=True, text=True, timeout=120, env=env, cwd=REPO)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    for r in range(2):
        assert f"OK rank {r}" in out, out


@pytest.mark.skipif(not nccl_support.nccl_available(), reason="needs CuPy, NCCL and a CUDA GPU")
def test_parity_on_a_gpu_with_nccl():
    got = run_ranks(1, gpu_parity, 3, 12, backend="nccl", rank_env={0: {"LOCAL_RANK": "0"}}, timeout=180,
                    pg_timeout=60)[0]
    ref = oracle_steps(SEED, make_data(N_SAMPLES), [np.arange(i * 12, (i + 1) * 12) for i in range(3)])
    for step, (a, b) in enumerate(zip(got, ref)):
        assert max_diff(a, b) < 1e-5, step
