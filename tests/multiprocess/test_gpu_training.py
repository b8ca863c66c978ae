"""DDP and FSDP on a real CUDA GPU with the ``nccl`` backend, in spawned processes.

A world of one: NCCL refuses two ranks on one GPU and the lent GPU machines have one
(tests/multiprocess/test_nccl_backend.py covers the multi-rank logic of the backend on a
fake runtime). The oracle is the same training on the CPU. Skipped without a GPU (CI).
"""

import os
import sys

import numpy as np
import pytest
from harness import run_ranks

import axonml as ax
from axonml.collectives.backends import nccl_support

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fsdp"))  # fsdp_models

pytestmark = [pytest.mark.timeout(300),
              pytest.mark.skipif(not nccl_support.nccl_available(), reason="needs CuPy, NCCL and a CUDA GPU")]


def _one(target, *args):
    return run_ranks(1, target, *args, backend="nccl", timeout=240, pg_timeout=120)[0]


def test_ddp_matches_one_cpu_process():
    import gpu_targets

    diffs = _one(gpu_targets.ddp_parity)
    assert len(diffs) == 2 and all(d < 2e-5 for d in diffs.values()), diffs


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_ddp_with_autocast_and_grad_scaler(dtype):
    import gpu_targets

    r = _one(gpu_targets.ddp_amp, dtype)
    assert r["on_gpu"]
    # averaging over one rank changes nothing; cuBLAS may pick other kernels for the bucket-view gradients
    assert r["diff"] < 1e-6 and np.allclose(r["losses"], r["ddp_losses"], rtol=1e-6, atol=0), r
    assert r["losses"][-1] < r["losses"][0] - 0.1, r["losses"]
    assert r["scales"][0] == r["scales"][1] == 2.0**10, r["scales"]  # no overflow in normal training
    assert r["inf_skipped"] and r["inf_scale"] == 2.0**9, r
    assert r["vs_cpu_fp32"] < (2e-2 if dtype == "float16" else 6e-2), r["vs_cpu_fp32"]


def test_ddp_compression_hooks_on_gpu_buckets():
    import gpu_targets

    d = _one(gpu_targets.ddp_hooks)
    # one rank: compressing to 16 bits and back rounds each averaged gradient once per step
    assert 0 < d["fp16_compress_hook"] < 2e-3 and 0 < d["bf16_compress_hook"] < 1.5e-2, d


@pytest.mark.parametrize("strategy, mp", [("full", None), ("grad_op", None), ("NO_SHARD", None), ("full", "float16")])
def test_fsdp_matches_the_cpu_reference(strategy, mp):
    import gpu_targets

    r = _one(gpu_targets.fsdp_parity, strategy, mp)
    assert r["diff"] < (1e-5 if mp is None else 5e-3), r
    assert r["peak_bytes"] > 0


def test_fsdp_checkpoint_from_gpu_loads_on_cpu(tmp_path):
    import fsdp_models
    import gpu_targets

    import axonml.fsdp as fsdp

    path = str(tmp_path / "ckpt")
    r = _one(gpu_targets.fsdp_checkpoint, path)
    assert r["devices"] == ["cuda:0"]
    # resume on the CPU (no process group: a world of one) and take the same third step
    model = fsdp_models.shard_model(fsdp_models.make_model(11))
    opt = fsdp_models.make_opt(model, "adamw", 0.05)
    fsdp.load_sharded_checkpoint(path, model, opt)
    assert {str(p.device) for p in model.parameters()} == {"cpu"}
    x, y = fsdp_models.local_batch(2, 0, 1)
    opt.zero_grad()
    model(x, y).backward()
    opt.step()
    got = fsdp_models.full_params(model)
    assert max(float(np.max(np.abs(got[k] - r["after"][k]))) for k in got) < 1e-5
    plain = fsdp_models.make_model(12)
    fsdp.load_sharded_checkpoint(path, plain)  # into a plain single-process model
    assert all(v.device == ax.Device("cpu") for v in plain.state_dict().values())
