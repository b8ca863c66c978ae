"""Train a small MLP on a synthetic regression task with DDP and print the falling loss.

The main job of the README (`make run`): `axonml-launch --standalone --nproc-per-node 2
examples/train_mlp.py` runs it on two processes (each trains on its shard of every
global batch; DDP averages the gradients). The same script run plainly (`python
examples/train_mlp.py`) is a world of one. Runs in a few seconds on 2 CPU cores.
Usage: [axonml-launch --standalone --nproc-per-node N] examples/train_mlp.py [--steps 200] [--seed 0]
"""

from __future__ import annotations

import argparse
import time

import axonml as ax
import axonml.collectives as dist
import axonml.nn as nn
from axonml.ddp import DistributedDataParallel


def make_data(n: int, dim: int, seed: int) -> tuple:
    """Targets from a fixed random 2-layer teacher network, plus a little noise."""
    g = ax.Generator().manual_seed(seed)
    x = ax.randn(n, dim, generator=g)
    w1 = ax.randn(dim, 32, generator=g) / dim**0.5
    w2 = ax.randn(32, 1, generator=g) / 32**0.5
    y = (x @ w1).tanh() @ w2 + 0.01 * ax.randn(n, 1, generator=g)
    return x, y


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    dist.init_process_group(backend="auto")  # env:// under axonml-launch, a world of one otherwise
    rank, world = dist.get_rank(), dist.get_world_size()
    say = print if rank == 0 else (lambda *a, **k: None)
    if args.batch_size % world:
        raise SystemExit(f"--batch-size {args.batch_size} must be divisible by the {world} processes")

    ax.manual_seed(args.seed)  # same initial weights everywhere (DDP broadcasts rank 0's anyway)
    x, y = make_data(2048, 16, args.seed + 1)
    dataset = ax.data.TensorDataset(x, y)
    sampler = ax.data.DistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=True, seed=args.seed)
    loader = ax.data.DataLoader(dataset, batch_size=args.batch_size // world, sampler=sampler)
    net = nn.Sequential(nn.Linear(16, 64), nn.GELU(), nn.Linear(64, 64), nn.GELU(), nn.Linear(64, 1))
    model = DistributedDataParallel(net)
    opt = ax.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
    sched = ax.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=args.steps)
    say(f"training an MLP with {net.num_parameters()} parameters for {args.steps} steps on {world} process(es), "
        f"global batch {args.batch_size}")
    step, epoch, t0, first = 0, 0, time.perf_counter(), None
    while step < args.steps:
        sampler.set_epoch(epoch)
        for xb, yb in loader:
            loss = nn.functional.mse_loss(model(xb), yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            first = loss.item() if first is None else first
            if step % 25 == 0 or step == args.steps - 1:
                say(f"step {step:4d}  loss {loss.item():.5f}  lr {sched.get_last_lr()[0]:.2e}")
            step += 1
            if step >= args.steps:
                break
        epoch += 1
    with ax.no_grad():
        final = nn.functional.mse_loss(net(x), y).item()
    # every replica holds the same weights: check it, the point of DDP
    finals = [None] * world
    dist.all_gather_object(finals, final)
    dist.destroy_process_group()
    if len(set(finals)) != 1:
        raise SystemExit(f"rank {rank}: replicas diverged, full-data losses {finals}")
    say(f"full-data loss {final:.5f} (first batch {first:.5f}) in {time.perf_counter() - t0:.1f} s, "
        f"identical on all {world} process(es)")
    if not final < first / 5:
        raise SystemExit(f"loss did not fall enough: {first:.5f} -> {final:.5f}")


if __name__ == "__main__":
    main()
