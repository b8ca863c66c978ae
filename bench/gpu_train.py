"""Training on one CUDA GPU: AxonML (CuPy, nccl backend) against PyTorch (CUDA, NCCL), in one run.

Run: python bench/gpu_train.py [--iters 20]     (needs a CUDA GPU; exits with a message without one)

Protocol: one process holds, per model, the same weights under each variant, and their
step samples are interleaved (a, b, c, a, b, c, ...), each ending with a device
synchronize. Variants: plain; DDP; DDP under float16 autocast with a GradScaler; FSDP
(fully_shard on each block and the root; FSDP2's ``fully_shard`` for PyTorch). The
process groups are worlds of one (NCCL takes one rank per GPU and these machines have one
GPU), so the DDP and FSDP rows measure each framework's own machinery around a collective
that moves nothing: hooks, buckets, flat buffers, gathers. A step is zero_grad, forward,
backward, AdamW step. Peak memory is read per variant after a reset: AxonML counts live
tensor storage (``ax.memory_stats("cuda")``), PyTorch its caching allocator's allocated
bytes (``torch.cuda.max_memory_allocated``). Models: the transformer LM of bench/models.py
at two sizes, "small" (width 256, 4 layers, sequence 128, batch 8: the per-op overhead of
the framework dominates) and "medium" (width 768, 8 layers, sequence 256, batch 16: the
GPU's arithmetic dominates). The first losses of the two frameworks are checked to agree.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
from types import SimpleNamespace

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import numpy as np  # noqa: E402
from common import _summary, compare, interleaved_samples, write_results  # noqa: E402
from models import copy_weights, tiny_gpt  # noqa: E402

SIZES = {"small": dict(vocab=512, width=256, layers=4, heads=4, seq=128, batch=8),
         "medium": dict(vocab=8192, width=768, layers=8, heads=12, seq=256, batch=16)}
VARIANTS = ("plain", "ddp", "ddp_amp", "fsdp")


def _setup():
    import torch
    import torch.distributed as tdist

    import axonml.collectives as dist
    from axonml.cluster import MemoryStore

    dist.init_process_group("nccl", store=MemoryStore(timeout=60), rank=0, world_size=1, timeout=120)
    torch.cuda.set_device(0)
    tdist.init_process_group("nccl", store=tdist.HashStore(), rank=0, world_size=1)


def _kits() -> dict:
    """What differs between the frameworks, by name: the rest of a step is written once."""
    import torch
    from torch.distributed.fsdp import fully_shard as torch_fully_shard

    import axonml as ax
    from axonml.ddp import DistributedDataParallel
    from axonml.fsdp import fully_shard

    return {
        "ax": SimpleNamespace(
            fw=ax, load=copy_weights, to_gpu=lambda m: m.to("cuda"), ddp=DistributedDataParallel, shard=fully_shard,
            adamw=ax.optim.AdamW, scaler=ax.optim.GradScaler, autocast=lambda: ax.autocast("cuda", dtype=ax.float16),
            tensor=lambda a: ax.tensor(a, device="cuda"), sync=ax.Device("cuda").synchronize),
        "torch": SimpleNamespace(
            fw=torch, load=lambda ref, m: m.load_state_dict(ref.state_dict()), to_gpu=lambda m: m.cuda(),
            ddp=torch.nn.parallel.DistributedDataParallel, shard=torch_fully_shard, adamw=torch.optim.AdamW,
            scaler=lambda: torch.amp.GradScaler("cuda"), autocast=lambda: torch.autocast("cuda", dtype=torch.float16),
            tensor=lambda a: torch.tensor(a, device="cuda"), sync=torch.cuda.synchronize),
    }


def _step(kit: SimpleNamespace, cfg: dict, t_ref, variant: str, ids: np.ndarray, tgt: np.ndarray):
    """A synchronized training step of ``variant`` in the framework of ``kit``; returns the loss."""
    m = tiny_gpt(kit.fw, cfg["vocab"], cfg["width"], cfg["layers"], cfg["heads"], cfg["seq"])
    kit.load(t_ref, m)
    kit.to_gpu(m)
    if variant in ("ddp", "ddp_amp"):
        model = kit.ddp(m)
    elif variant == "fsdp":
        for blk in m.blocks:
            kit.shard(blk)
        model = kit.shard(m)
    else:
        model = m
    opt = kit.adamw(model.parameters(), lr=1e-4)
    scaler = kit.scaler() if variant == "ddp_amp" else None
    x, y = kit.tensor(ids), kit.tensor(tgt)

    def step():
        opt.zero_grad()
        if scaler is None:
            loss = model(x, y)
            loss.backward()
            opt.step()
        else:
            with kit.autocast():
                loss = model(x, y)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
        kit.sync()
        return float(loss.item())

    return step


def _peak(fw: str, step) -> int:
    """Peak device bytes of a few steps of ``step`` (after a reset)."""
    import torch

    import axonml as ax

    if fw == "ax":
        ax.reset_peak_memory_stats("cuda")
        step()
        return ax.memory_stats("cuda")["peak_bytes"]
    torch.cuda.reset_peak_memory_stats()
    step()
    return torch.cuda.max_memory_allocated()


def run_size(name: str, iters: int) -> tuple[list, dict]:
    import torch

    cfg = SIZES[name]
    torch.manual_seed(0)
    t_ref = tiny_gpt(torch, cfg["vocab"], cfg["width"], cfg["layers"], cfg["heads"], cfg["seq"])
    rng = np.random.default_rng(0)
    ids = rng.integers(0, cfg["vocab"], (cfg["batch"], cfg["seq"]))
    tgt = rng.integers(0, cfg["vocab"], (cfg["batch"], cfg["seq"]))
    rows, extra = [], {}
    kits = _kits()
    for variant in VARIANTS:
        fns = None
        gc.collect()  # the previous variant's models (DDP and FSDP hold reference cycles) must not count in this peak
        fns = {fw: _step(kit, cfg, t_ref, variant, ids, tgt) for fw, kit in kits.items()}
        first = {fw: fn() for fw, fn in fns.items()}
        if abs(first["ax"] - first["torch"]) > 2e-2 * abs(first["torch"]):
            raise SystemExit(f"{name}/{variant}: first losses differ: axonml {first['ax']:.5f}, torch {first['torch']:.5f}")
        peaks = {fw: _peak(fw, fn) for fw, fn in fns.items()}
        samples = interleaved_samples(fns, iters, warmup=3)
        row = compare(f"{name} {variant} step", _summary(samples["ax"]), _summary(samples["torch"]))
        row["axonml_peak_mib"], row["peer_peak_mib"] = peaks["ax"] / 2**20, peaks["torch"] / 2**20
        row["first_loss"] = first
        print(f"{'':<44} peak memory: axonml {row['axonml_peak_mib']:.1f} MiB, torch {row['peer_peak_mib']:.1f} MiB")
        rows.append(row)
    return rows, extra


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES))
    args = parser.parse_args()
    import axonml as ax

    if not ax.runtime.cuda_available():
        raise SystemExit("bench/gpu_train.py needs a CUDA GPU with CuPy; none is visible here")
    _setup()
    import torch

    rows = []
    for name in args.sizes:
        rows += run_size(name, args.iters)[0]
    path = write_results("gpu_train", "torch CUDA (nccl, world of one)", rows,
                         {"device": torch.cuda.get_device_name(0), "cupy": __import__("cupy").__version__,
                          "torch": torch.__version__})
    print("wrote", path)


if __name__ == "__main__":
    main()
