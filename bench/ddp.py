"""DistributedDataParallel step time: AxonML DDP (tcp backend) vs PyTorch DDP (gloo), and
AxonML DDP vs AxonML in one process at the same per-rank batch, in one run.

Run: python bench/ddp.py [--iters 20]      (2 ranks, OMP_NUM_THREADS=1 per rank)

Protocol (issue 5): two rank processes on this machine, one BLAS thread each. Each rank
holds four copies of a model with the same weights: AxonML under DDP, PyTorch under DDP,
AxonML alone, PyTorch alone. Samples are interleaved (axonml DDP, torch DDP, axonml
single, torch single, ...) with a barrier before each, so load bursts hit all alike and
the "single" steps run while the other rank runs its own, i.e. with the machine as busy
as under DDP: the DDP/single ratio is then the cost of the communication that overlap
did not hide. A single-process step with the other core idle is measured as well (in the
parent, after the ranks) and reported for reference. A step is zero_grad, forward,
backward (with DDP's all-reduces), AdamW step. Models: the small transformer LM of
bench/models.py (4 layers, width 256, sequence 128, per-rank batch 8) and a 4-layer
1024-wide MLP (per-rank batch 64). The first losses of AxonML and PyTorch are checked to
agree. Goals: AxonML DDP <= PyTorch DDP; AxonML DDP <= 1.15x AxonML single.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile

os.environ.setdefault("OMP_NUM_THREADS", "1")
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import numpy as np  # noqa: E402
from common import (  # noqa: E402
    _summary,
    compare,
    free_port,
    interleaved_samples,
    read_rank_results,
    timeit,
    train_step,
    write_results,
)
from models import copy_weights, tiny_gpt  # noqa: E402

WORLD = 2
GPT_BATCH, MLP_BATCH, WIDTH = 8, 64, 1024
# *_view: DDP with gradient_as_bucket_view=True (gradients live in the buckets: no copy in)
VARIANTS = ("ax_ddp", "torch_ddp", "ax_single", "torch_single", "ax_ddp_view", "torch_ddp_view")


def mlp(fw):
    nn = fw.nn
    layers = []
    for i in range(4):
        layers.append(nn.Linear(WIDTH, WIDTH))
        if i < 3:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def _inputs(kind: str, rank: int):
    rng = np.random.default_rng(100 + rank)
    if kind == "gpt":
        return rng.integers(0, 512, (GPT_BATCH, 128)), rng.integers(0, 512, (GPT_BATCH, 128))
    return (rng.standard_normal((MLP_BATCH, WIDTH)).astype(np.float32),
            rng.standard_normal((MLP_BATCH, WIDTH)).astype(np.float32))


def _build(kind: str, rank: int):
    """The four (step function, first loss) pairs of one model on one rank."""
    import torch

    import axonml as ax
    from axonml.ddp import DistributedDataParallel

    torch.manual_seed(0)
    make = tiny_gpt if kind == "gpt" else mlp
    t_ref = make(torch)
    a, b = _inputs(kind, rank)
    steps = {}
    for name in VARIANTS:
        if name.startswith("ax"):
            m = make(ax)
            copy_weights(t_ref, m)
            model = DistributedDataParallel(m, gradient_as_bucket_view=name.endswith("view")) if "ddp" in name else m
            opt = ax.optim.AdamW(model.parameters(), lr=1e-4)
            xa, xb = ax.tensor(a), ax.tensor(b)
            if kind == "gpt":
                def loss_fn(model=model, xa=xa, xb=xb):
                    return model(xa, xb)
            else:
                def loss_fn(model=model, xa=xa, xb=xb):
                    return ax.nn.functional.mse_loss(model(xa), xb)
        else:
            m = make(torch)
            m.load_state_dict(t_ref.state_dict())
            model = (torch.nn.parallel.DistributedDataParallel(m, gradient_as_bucket_view=name.endswith("view"))
                     if "ddp" in name else m)
            opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
            ta, tb = torch.tensor(a), torch.tensor(b)
            if kind == "gpt":
                def loss_fn(model=model, ta=ta, tb=tb):
                    return model(ta, tb)
            else:
                def loss_fn(model=model, ta=ta, tb=tb):
                    return torch.nn.functional.mse_loss(model(ta), tb)
        steps[name] = train_step(opt, loss_fn)
    return steps


def rank_main(rank: int, port_ax: int, port_torch: int, iters: int, out_path: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(WORLD), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port_ax))
    import torch
    import torch.distributed as tdist

    import axonml.collectives as dist

    torch.set_num_threads(1)
    dist.init_process_group("tcp", timeout=300)
    tdist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port_torch}", rank=rank, world_size=WORLD)
    result = {}
    for kind in ("gpt", "mlp"):
        steps = _build(kind, rank)
        first = {name: float(steps[name]().item()) for name in VARIANTS}
        # 2 warm-up rounds (and the bucket rebuild after the first DDP iteration); steps are in VARIANTS order
        samples = interleaved_samples(steps, iters, 2, before=dist.barrier)
        result[kind] = {"first_loss": first, "samples": samples}
    with open(out_path, "w") as f:
        json.dump(result, f)
    tdist.destroy_process_group()
    dist.destroy_process_group()


def _alone(kind: str, iters: int) -> dict:
    """AxonML's single-process step in this process, with the other core idle."""
    import torch

    import axonml as ax

    torch.set_num_threads(1)
    torch.manual_seed(0)
    make = tiny_gpt if kind == "gpt" else mlp
    m = make(ax)
    copy_weights(make(torch), m)
    opt = ax.optim.AdamW(m.parameters(), lr=1e-4)
    a, b = _inputs(kind, 0)
    xa, xb = ax.tensor(a), ax.tensor(b)

    def step():
        opt.zero_grad()
        loss = m(xa, xb) if kind == "gpt" else ax.nn.functional.mse_loss(m(xa), xb)
        loss.backward()
        opt.step()

    return timeit(step, iters=iters, warmup=2)


def main() -> None:
    import multiprocessing as mp

    import torch

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iters", type=int, default=20)
    args = parser.parse_args()
    tmp = tempfile.mkdtemp(prefix="axonml-bench-ddp-")
    outs = [os.path.join(tmp, f"rank{r}.json") for r in range(WORLD)]
    ctx = mp.get_context("spawn")
    port_ax, port_torch = free_port(), free_port()
    procs = [ctx.Process(target=rank_main, args=(r, port_ax, port_torch, args.iters, outs[r])) for r in range(WORLD)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(1800)
    if any(p.exitcode != 0 for p in procs):
        raise SystemExit(f"a rank failed: exit codes {[p.exitcode for p in procs]}")
    per_rank = read_rank_results(outs, tmp)

    print(f"2 ranks, OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}; ratios are ours/peer (lower is better); "
          "timings of rank 0 (the slower rank's median is in the JSON)")
    rows, extra = [], {"per_rank_medians_ms": {}, "first_losses": {}}
    names = {"gpt": f"transformer LM 4x256 seq 128, batch {GPT_BATCH}/rank", "mlp": f"MLP 4x{WIDTH}, batch {MLP_BATCH}/rank"}
    for kind in ("gpt", "mlp"):
        fl = per_rank[0][kind]["first_loss"]
        if not np.isclose(fl["ax_ddp"], fl["torch_ddp"], rtol=1e-4) or not np.isclose(fl["ax_single"], fl["ax_ddp"]):
            raise SystemExit(f"{kind}: first losses disagree: {fl}")
        extra["first_losses"][kind] = fl
        s = {name: _summary(per_rank[0][kind]["samples"][name]) for name in VARIANTS}
        extra["per_rank_medians_ms"][kind] = {
            name: [statistics.median(pr[kind]["samples"][name]) * 1e3 for pr in per_rank] for name in VARIANTS}
        rows.append(compare(f"{names[kind]}: axonml DDP vs torch DDP (gloo)", s["ax_ddp"], s["torch_ddp"]))
        rows.append(compare(f"{names[kind]}: axonml DDP vs axonml single", s["ax_ddp"], s["ax_single"]))
        rows.append(compare(f"{names[kind]}: (ref) torch DDP vs torch single", s["torch_ddp"], s["torch_single"]))
        rows.append(compare(f"{names[kind]}: (ref) axonml single vs torch single", s["ax_single"], s["torch_single"]))
        rows.append(compare(f"{names[kind]}: gradient_as_bucket_view, axonml DDP vs torch DDP", s["ax_ddp_view"],
                            s["torch_ddp_view"]))
        rows.append(compare(f"{names[kind]}: gradient_as_bucket_view, axonml DDP vs axonml single", s["ax_ddp_view"],
                            s["ax_single"]))
    for kind in ("gpt", "mlp"):
        alone = _alone(kind, args.iters)
        ddp = _summary(per_rank[0][kind]["samples"]["ax_ddp"])
        rows.append(compare(f"{names[kind]}: (ref) axonml DDP vs axonml single, other core idle", ddp, alone))
    write_results("ddp", "PyTorch DDP gloo " + torch.__version__, rows,
                  {"goals": {"axonml_ddp_vs_torch_ddp_max": 1.0, "axonml_ddp_vs_single_max": 1.15}, **extra})


if __name__ == "__main__":
    main()
