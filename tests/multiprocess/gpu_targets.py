"""Rank bodies for DDP and FSDP on a real CUDA GPU (tests/multiprocess/test_gpu_training.py).

Each runs in a spawned process inside an ``nccl`` process group. The models and data are
those of the CPU tests; ``ax.set_default_device("cuda")`` puts them on the GPU, and the
oracle is the same training in one process on the CPU. Importable without CuPy.
"""

from __future__ import annotations

import copy
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fsdp"))

import ddp_targets  # noqa: E402
import fsdp_models  # noqa: E402
from ddp_helpers import ParityNet, init_params, loss_of, make_data, max_diff, oracle_steps, snapshot  # noqa: E402

import axonml as ax  # noqa: E402
from axonml.ddp import DistributedDataParallel, comm_hooks  # noqa: E402

GPU = ax.Device("cuda:0")


def _on_gpu(model) -> bool:
    return all(p.device == GPU for p in model.parameters())


def ddp_parity(rank: int, world: int, steps: int = 4, batch: int = 8) -> dict:
    """DDP on the GPU (tiny and default buckets, gradient_as_bucket_view on and off) against
    one CPU process on the global batches: the largest parameter difference per config."""
    configs = [dict(bucket_cap_mb=0.0005, gradient_as_bucket_view=False, shuffle=True, seed=3),
               dict(bucket_cap_mb=25, gradient_as_bucket_view=True, shuffle=False, seed=0)]
    ax.set_default_device("cuda")
    try:
        runs = ddp_targets.parity(rank, world, configs, steps, batch)
    finally:
        ax.set_default_device(None)
    data = make_data(ddp_targets.N_SAMPLES)
    out = {}
    for cfg, snaps in zip(configs, runs):
        batches = ddp_targets.global_batches(world, steps, batch, cfg["shuffle"], cfg["seed"])
        oracle = oracle_steps(ddp_targets.SEED, data, batches)
        out[f"bucket={cfg['bucket_cap_mb']},view={cfg['gradient_as_bucket_view']}"] = max(
            max_diff(a, b) for a, b in zip(snaps, oracle))
    return out


def _amp_step(model, opt, scaler, dtype, img, tok, y) -> float:
    opt.zero_grad()
    with ax.autocast("cuda", dtype=dtype):
        loss = loss_of(model, img, tok, y)
    scaler.scale(loss).backward()
    scaler.step(opt)
    scaler.update()
    return float(loss.item())


def ddp_amp(rank: int, world: int, dtype_name: str, steps: int = 6) -> dict:
    """autocast + GradScaler under DDP on the GPU equals the same without DDP (a world of one
    averages over one rank), the loss falls, a poisoned gradient skips the step and halves
    the scale, and the float32 model after AMP training is near the float32 CPU run."""
    dtype = getattr(ax, dtype_name)
    img, tok, y = make_data(ddp_targets.N_SAMPLES)
    ax.set_default_device("cuda")
    try:
        base = init_params(ParityNet(), ddp_targets.SEED)
        plain, wrapped = copy.deepcopy(base), copy.deepcopy(base)
        ddp = DistributedDataParallel(wrapped, bucket_cap_mb=0.001)
        res = {"on_gpu": _on_gpu(plain) and _on_gpu(wrapped), "losses": [], "diff": 0.0}
        runs = []
        for model in (plain, ddp):
            opt = ax.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
            scaler = ax.optim.GradScaler(init_scale=2.0**10)
            losses = [_amp_step(model, opt, scaler, dtype, img[:32], tok[:32], y[:32]) for _ in range(steps)]
            runs.append((losses, snapshot(plain if model is plain else wrapped), scaler.get_scale()))
        res["losses"] = runs[0][0]
        res["ddp_losses"] = runs[1][0]
        res["diff"] = max_diff(runs[0][1], runs[1][1])
        res["scales"] = [runs[0][2], runs[1][2]]
        # an infinite gradient: GradScaler must skip the optimizer step and back off
        opt = ax.optim.SGD(ddp.parameters(), lr=0.05)
        scaler = ax.optim.GradScaler(init_scale=2.0**10)
        before = snapshot(wrapped)
        opt.zero_grad()
        with ax.autocast("cuda", dtype=dtype):
            loss = loss_of(ddp, img[:8], tok[:8], y[:8])
        scaler.scale(loss * float("inf")).backward()
        scaler.step(opt)
        scaler.update()
        res["inf_skipped"] = max_diff(before, snapshot(wrapped)) == 0.0
        res["inf_scale"] = scaler.get_scale()
    finally:
        ax.set_default_device(None)
    cpu = init_params(ParityNet(), ddp_targets.SEED)
    opt = ax.optim.SGD(cpu.parameters(), lr=0.05, momentum=0.9)
    for _ in range(steps):
        opt.zero_grad()
        loss_of(cpu, img[:32], tok[:32], y[:32]).backward()
        opt.step()
    res["vs_cpu_fp32"] = max_diff(runs[0][1], snapshot(cpu))
    return res


def ddp_hooks(rank: int, world: int, steps: int = 3) -> dict:
    """The fp16 and bf16 compression hooks on GPU buckets: parity with plain DDP within the
    rounding of the compressed dtype."""
    img, tok, y = make_data(ddp_targets.N_SAMPLES)
    ax.set_default_device("cuda")
    out = {}
    try:
        for name in (None, "fp16_compress_hook", "bf16_compress_hook"):
            model = init_params(ParityNet(), ddp_targets.SEED)
            ddp = DistributedDataParallel(model, bucket_cap_mb=0.001)
            if name is not None:
                ddp.register_comm_hook(None, getattr(comm_hooks, name))
            opt = ax.optim.SGD(ddp.parameters(), lr=0.1)
            for s in range(steps):
                opt.zero_grad()
                loss_of(ddp, img[s * 8:(s + 1) * 8], tok[s * 8:(s + 1) * 8], y[s * 8:(s + 1) * 8]).backward()
                opt.step()
            out[name or "none"] = snapshot(model)
    finally:
        ax.set_default_device(None)
    return {k: max_diff(out["none"], v) for k, v in out.items() if k != "none"}


def fsdp_parity(rank: int, world: int, strategy: str, mp: str | None, steps: int = 3) -> dict:
    """FSDP on the GPU against the one-process CPU reference of the CPU tests."""
    mp_dtype = None if mp is None else getattr(ax, mp)
    ax.set_default_device("cuda")
    try:
        ax.reset_peak_memory_stats("cuda")
        got = fsdp_models.fsdp_run(rank, world, steps, strategy=strategy, mp_dtype=mp_dtype)
        peak = ax.memory_stats("cuda")["peak_bytes"]
    finally:
        ax.set_default_device(None)
    ref = fsdp_models.reference_run(steps, world, mp_dtype=mp_dtype)
    diff = max(max(float(np.max(np.abs(g[k] - r[k]))) for k in r) for g, r in zip(got, ref))
    return {"diff": diff, "peak_bytes": int(peak)}


def fsdp_checkpoint(rank: int, world: int, path: str) -> dict:
    """Train one step on GPU shards and write a sharded checkpoint (model and AdamW state); the
    test loads it on the CPU. Returns the full parameters and the devices of the shards."""
    import axonml.fsdp as fsdp

    ax.set_default_device("cuda")
    try:
        model = fsdp_models.shard_model(fsdp_models.make_model(3))
        opt = fsdp_models.make_opt(model, "adamw", 0.05)
        for step in range(2):
            x, yb = fsdp_models.local_batch(step, rank, world)
            opt.zero_grad()
            model(x, yb).backward()
            opt.step()
        fsdp.save_sharded_checkpoint(path, model, opt)
        x, yb = fsdp_models.local_batch(2, rank, world)  # the step after the checkpoint, for the resume check
        opt.zero_grad()
        model(x, yb).backward()
        opt.step()
        return {"devices": sorted({str(p.device) for p in model.parameters()}), "after": fsdp_models.full_params(model)}
    finally:
        ax.set_default_device(None)
