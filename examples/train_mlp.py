"""Train a small MLP on a synthetic regression task and print the falling loss.

The main job of the README (`make run`). Runs in a few seconds on 2 CPU cores.
Usage: python examples/train_mlp.py [--steps 200] [--seed 0]
"""

from __future__ import annotations

import argparse
import time

import axonml as ax
import axonml.nn as nn


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

    ax.manual_seed(args.seed)
    x, y = make_data(2048, 16, args.seed + 1)
    loader = ax.data.DataLoader(
        ax.data.TensorDataset(x, y), batch_size=args.batch_size, shuffle=True, generator=ax.Generator().manual_seed(args.seed)
    )
    model = nn.Sequential(nn.Linear(16, 64), nn.GELU(), nn.Linear(64, 64), nn.GELU(), nn.Linear(64, 1))
    opt = ax.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
    sched = ax.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=args.steps)
    print(f"training an MLP with {model.num_parameters()} parameters for {args.steps} steps")
    step, t0, first = 0, time.perf_counter(), None
    while step < args.steps:
        for xb, yb in loader:
            loss = nn.functional.mse_loss(model(xb), yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            first = loss.item() if first is None else first
            if step % 25 == 0 or step == args.steps - 1:
                print(f"step {step:4d}  loss {loss.item():.5f}  lr {sched.get_last_lr()[0]:.2e}")
            step += 1
            if step >= args.steps:
                break
    with ax.no_grad():
        final = nn.functional.mse_loss(model(x), y).item()
    print(f"full-data loss {final:.5f} (first batch {first:.5f}) in {time.perf_counter() - t0:.1f} s")
    if not final < first / 5:
        raise SystemExit(f"loss did not fall enough: {first:.5f} -> {final:.5f}")


if __name__ == "__main__":
    main()
