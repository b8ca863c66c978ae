"""FSDP on 2 ranks (CPU): peak memory per rank and step time of the small transformer LM
(4 layers, width 256, sequence 128, batch 8 per rank, AdamW) under AxonML FULL_SHARD,
SHARD_GRAD_OP and DDP (when ``axonml.ddp`` exists), and PyTorch FSDP2
(``torch.distributed.fsdp.fully_shard``, gloo) with and without reshard-after-forward.

Run: OMP_NUM_THREADS=1 python bench/fsdp.py [--iters 20]

Goals (issue 6): FULL_SHARD model-state memory at most 0.6x DDP's at 2 ranks (scaling
like 1/N); step time at most 1.0x PyTorch FSDP's.

Memory is measured per configuration alone (AxonML's tensor-storage statistics:
``axonml.memory_stats`` / ``reset_peak_memory_stats``): *model state* is what a rank holds
after an optimizer step (parameters, gradients, optimizer state), *peak* is the maximum
during a step (plus activations and FSDP's gathered units). PyTorch has no allocator
statistics on CPU, so its model state is counted from its tensors (local shards of
parameters and gradients, optimizer state); its peak is not reported. Step times are
measured with all models alive and samples interleaved (AxonML, PyTorch, AxonML, ...),
each step timed on every rank and the slower rank's time kept.
"""

from __future__ import annotations

import argparse
import gc
import os
import shutil
import statistics
import sys
import tempfile
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import multiprocessing as mp  # noqa: E402

import numpy as np  # noqa: E402

VOCAB, WIDTH, LAYERS, SEQ, BATCH = 512, 256, 4, 128, 8


def _data(rank: int, step: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(100 * rank + step)
    return rng.integers(0, VOCAB, (BATCH, SEQ)), rng.integers(0, VOCAB, (BATCH, SEQ))


def _worker(rank: int, world: int, store: str, torch_store: str, iters: int, queue: mp.Queue) -> None:
    import torch
    import torch.distributed as tdist
    from models import copy_weights, tiny_gpt

    import axonml as ax
    import axonml.collectives as dist
    from axonml.fsdp import fully_shard

    torch.set_num_threads(1)
    dist.init_process_group("tcp", init_method=f"file://{store}", rank=rank, world_size=world, timeout=300)
    tdist.init_process_group("gloo", init_method=f"file://{torch_store}", rank=rank, world_size=world)
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard as torch_fully_shard

    mesh = init_device_mesh("cpu", (world,))
    try:
        import axonml.ddp as axddp
    except ImportError:
        axddp = None

    def torch_model(reshard: bool):
        torch.manual_seed(0)
        m = tiny_gpt(torch, VOCAB, WIDTH, LAYERS, heads=4, seq=SEQ)
        for b in m.blocks:
            torch_fully_shard(b, mesh=mesh, reshard_after_forward=reshard)
        torch_fully_shard(m, mesh=mesh, reshard_after_forward=reshard)
        return m, torch.optim.AdamW(m.parameters(), lr=1e-4)

    def ax_model(kind: str):
        torch.manual_seed(0)
        ref = tiny_gpt(torch, VOCAB, WIDTH, LAYERS, heads=4, seq=SEQ)
        m = tiny_gpt(ax, VOCAB, WIDTH, LAYERS, heads=4, seq=SEQ)
        copy_weights(ref, m)
        del ref
        if kind == "ddp":
            m = axddp.DistributedDataParallel(m)
        else:
            for b in m.blocks:
                fully_shard(b, reshard_after_forward=kind == "full")
            fully_shard(m, reshard_after_forward=kind == "full")
        return m, ax.optim.AdamW(m.parameters(), lr=1e-4)

    def ax_step(model, opt, step):
        idx, tgt = _data(rank, step)
        opt.zero_grad()
        loss = model(ax.tensor(idx), ax.tensor(tgt))
        loss.backward()
        opt.step()
        return float(loss.item())

    def torch_step(model, opt, step):
        idx, tgt = _data(rank, step)
        opt.zero_grad()
        loss = model(torch.tensor(idx), torch.tensor(tgt))
        loss.backward()
        opt.step()
        return float(loss.item())

    def torch_state_bytes(model, opt) -> int:
        total = 0
        for p in model.parameters():
            local = p.to_local() if hasattr(p, "to_local") else p
            total += local.numel() * local.element_size()
            if p.grad is not None:
                g = p.grad.to_local() if hasattr(p.grad, "to_local") else p.grad
                total += g.numel() * g.element_size()
        for st in opt.state.values():
            for v in st.values():
                if torch.is_tensor(v):
                    v = v.to_local() if hasattr(v, "to_local") else v
                    total += v.numel() * v.element_size()
        return total

    ax_kinds = ["full", "grad_op"] + (["ddp"] if axddp is not None else [])
    result: dict = {"memory": {}, "times": {}, "loss": {}}
    # -- memory, one configuration at a time ---------------------------------------------------------
    for kind in ax_kinds:
        gc.collect()
        dist.barrier()
        base = ax.memory_stats("cpu")["current_bytes"]
        model, opt = ax_model(kind)
        result["loss"][kind] = ax_step(model, opt, 0)
        ax_step(model, opt, 1)
        ax.reset_peak_memory_stats("cpu")
        ax_step(model, opt, 2)
        stats = ax.memory_stats("cpu")
        result["memory"][kind] = {"model_state": stats["current_bytes"] - base, "peak": stats["peak_bytes"] - base}
        del model, opt
        gc.collect()
    for reshard in (True, False):
        model, opt = torch_model(reshard)
        result["loss"][f"torch_{reshard}"] = torch_step(model, opt, 0)
        torch_step(model, opt, 1)
        result["memory"][f"torch_{reshard}"] = {"model_state": torch_state_bytes(model, opt)}
        del model, opt
        gc.collect()
    # -- step times, interleaved ---------------------------------------------------------------------
    configs = [(k, *ax_model(k), ax_step) for k in ax_kinds]
    configs += [(f"torch_{r}", *torch_model(r), torch_step) for r in (True, False)]
    times: dict = {name: [] for name, *_ in configs}
    for it in range(iters + 3):
        for name, model, opt, step in configs:
            dist.barrier()
            t0 = time.perf_counter()
            step(model, opt, it)
            dt = time.perf_counter() - t0
            if it >= 3:  # warm-up excluded
                times[name].append(dt)
    result["times"] = times
    queue.put((rank, result))
    tdist.destroy_process_group()
    dist.destroy_process_group()


def _summary(samples: list) -> dict:
    s = sorted(samples)
    return {"median_s": statistics.median(s), "p95_s": s[min(len(s) - 1, int(round(0.95 * (len(s) - 1))))],
            "min_s": s[0], "samples": len(s)}


def main() -> None:
    from common import write_results

    parser = argparse.ArgumentParser()
    parser.add_argument("--iters", type=int, default=20)
    args = parser.parse_args()
    world = 2
    tmp = tempfile.mkdtemp(prefix="axonml-bench-fsdp-")
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(r, world, os.path.join(tmp, "store"), os.path.join(tmp, "tstore"),
                                               args.iters, queue)) for r in range(world)]
    for p in procs:
        p.start()
    try:
        results = dict(queue.get(timeout=1800) for _ in range(world))
        for p in procs:
            p.join(60)
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
        shutil.rmtree(tmp, ignore_errors=True)
    mib = 1 << 20
    # the slower rank per iteration
    names = list(results[0]["times"])
    step = {n: _summary([max(results[r]["times"][n][i] for r in range(world)) for i in range(len(results[0]["times"][n]))])
            for n in names}
    mem = {n: {k: max(results[r]["memory"][n][k] for r in range(world)) for k in results[0]["memory"][n]}
           for n in results[0]["memory"]}
    label = {"full": "AxonML FULL_SHARD", "grad_op": "AxonML SHARD_GRAD_OP", "ddp": "AxonML DDP",
             "torch_True": "PyTorch FSDP2 (reshard)", "torch_False": "PyTorch FSDP2 (no reshard)"}
    print(f"2 ranks, transformer LM {LAYERS}x{WIDTH}, seq {SEQ}, batch {BATCH}/rank, AdamW; threads "
          f"{os.environ['OMP_NUM_THREADS']}")
    print(f"first losses: {results[0]['loss']}")
    rows = []
    ddp_state = mem.get("ddp", {}).get("model_state")
    ddp_peak = mem.get("ddp", {}).get("peak")
    peers = {"full": "torch_True", "grad_op": "torch_False", "ddp": "torch_True"}
    for n in names:
        row = {"name": label[n], "unit": "ms", "median": step[n]["median_s"] * 1e3, "p95": step[n]["p95_s"] * 1e3,
               "model_state_mib": mem[n]["model_state"] / mib}
        if "peak" in mem[n]:
            row["peak_mib"] = mem[n]["peak"] / mib
        if n in peers:
            row["step_ratio_vs_torch_fsdp"] = step[n]["median_s"] / step[peers[n]]["median_s"]
            if ddp_state:
                row["model_state_ratio_vs_ddp"] = mem[n]["model_state"] / ddp_state
                row["peak_ratio_vs_ddp"] = mem[n]["peak"] / ddp_peak
        rows.append(row)
        extra = "".join(f"  {k} {v:.2f}" for k, v in row.items() if k.endswith("ratio_vs_torch_fsdp") or k.endswith("vs_ddp"))
        peak = f" peak {row['peak_mib']:7.1f} MiB" if "peak_mib" in row else " " * 18
        print(f"{row['name']:<28} step {row['median']:8.1f} ms (p95 {row['p95']:8.1f})  model state "
              f"{row['model_state_mib']:6.1f} MiB{peak}{extra}")
    import torch

    write_results("fsdp", f"PyTorch FSDP2 (gloo, CPU) {torch.__version__}", rows,
                  {"goals": {"full_shard_model_state_vs_ddp_max": 0.6, "step_ratio_vs_torch_fsdp_max": 1.0},
                   "world_size": world, "first_losses": results[0]["loss"],
                   "note": "shared 2-core machine: rerun on a quiet machine for final numbers"})


if __name__ == "__main__":
    main()
