"""Train with a checkpoint after every step, and resume from it after a restart.

The pattern for jobs run by ``axonml-launch --max-restarts N``: when a worker fails, the
launcher stops every worker and starts them again (``AXONML_RESTART_COUNT`` grows); each
then loads the last checkpoint and continues from the step after it, so no completed
step is lost and none is applied twice. The data of a step depend only on the step
number, so an interrupted run ends with the same parameters as an uninterrupted one.

Usage::

    python examples/train_resume.py --steps 20 --ckpt-dir /tmp/ckpt           # a world of one
    axonml-launch --standalone --nproc-per-node 2 --max-restarts 3 \\
        examples/train_resume.py --steps 20 --ckpt-dir /tmp/ckpt               # two workers

Each rank trains on its shard of the global batch; gradients are averaged over the ranks
(by ``axonml.ddp.DistributedDataParallel`` when it exists, else by an ``all_reduce`` of
each gradient), so any world size computes the global batch's gradient. Rank 0 writes the
checkpoint (atomically) into ``--ckpt-dir``, which every node must see (a shared
filesystem on a real cluster). ``--out`` saves the final parameters (safetensors).
"""

from __future__ import annotations

import argparse
import os
import time

import axonml as ax
import axonml.collectives as dist
import axonml.nn as nn

try:  # DDP is used when this AxonML has it
    import axonml.ddp as ddp
except ImportError:
    ddp = None


def step_batch(step: int, global_batch: int, seed: int) -> tuple:
    """The global batch of ``step``: inputs and targets of a fixed teacher, drawn from a
    generator seeded by (seed, step), so that a resumed run sees the same data."""
    teacher = ax.Generator().manual_seed(seed)
    w = ax.randn(8, 1, generator=teacher)
    g = ax.Generator().manual_seed(seed * 1_000_003 + step + 1)
    x = ax.randn(global_batch, 8, generator=g)
    y = (x @ w).tanh() + 0.1 * x[:, :1]
    return x, y


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--global-batch", type=int, default=24, help="divisible by the world size")
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--ckpt-dir", required=True, help="where the checkpoint lives (shared by all nodes)")
    ap.add_argument("--out", default="", help="save the final parameters here (safetensors)")
    ap.add_argument("--sleep", type=float, default=0.0, help="seconds of pretend work per step")
    args = ap.parse_args()

    dist.init_process_group()  # a world of one when started without a launcher
    rank, world = dist.get_rank(), dist.get_world_size()
    if args.global_batch % world:
        raise SystemExit(f"--global-batch {args.global_batch} must be divisible by the world size {world}")
    shard = args.global_batch // world

    ax.manual_seed(args.seed)
    net = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 1))
    opt = ax.optim.SGD(net.parameters(), lr=args.lr, momentum=0.9)
    model = ddp.DistributedDataParallel(net) if ddp is not None and world > 1 else net

    ckpt = os.path.join(args.ckpt_dir, "last.safetensors")
    start = 0
    if os.path.exists(ckpt):
        start = ax.load_checkpoint(ckpt, model=net, optimizer=opt)["step"]
        print(f"rank {rank}: resumed from the checkpoint of step {start} "
              f"(restart {os.environ.get('AXONML_RESTART_COUNT', '0')}, world size {world})", flush=True)
    if rank == 0:
        os.makedirs(args.ckpt_dir, exist_ok=True)

    for step in range(start, args.steps):
        x, y = step_batch(step, args.global_batch, args.seed)
        xs, ys = x[rank * shard:(rank + 1) * shard], y[rank * shard:(rank + 1) * shard]
        loss = nn.functional.mse_loss(model(xs), ys)
        opt.zero_grad()
        loss.backward()
        if world > 1 and model is net:  # no DDP: average the gradients ourselves
            for p in net.parameters():
                dist.all_reduce(p.grad, op=dist.ReduceOp.AVG)
        opt.step()
        if rank == 0:
            ax.save_checkpoint(ckpt, model=net, optimizer=opt, step=step + 1)
        print(f"rank {rank}: step {step} loss {loss.item():.6f}", flush=True)
        if args.sleep:
            time.sleep(args.sleep)

    if rank == 0 and args.out:
        ax.save(net.state_dict(), args.out)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
