"""A tiny training job for the resume test: run N steps (optionally saving a checkpoint
at the end), or load a checkpoint and continue; print the final parameters' digest.

python resume_job.py --steps N [--save PATH] [--load PATH] --out FILE
"""

import argparse

import numpy as np

import axonml as ax
import axonml.nn as nn


def build():
    ax.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Dropout(0.2), nn.Linear(16, 1))
    opt = ax.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.01)
    sched = ax.optim.lr_scheduler.StepLR(opt, step_size=3, gamma=0.5)
    return model, opt, sched


def train(model, opt, sched, steps):
    for _ in range(steps):
        x = ax.randn(16, 8)  # data drawn from the default generator: its state is checkpointed
        y = x.sum(dim=1, keepdim=True)
        loss = nn.functional.mse_loss(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, required=True)
    ap.add_argument("--save")
    ap.add_argument("--load")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    model, opt, sched = build()
    start = 0
    if a.load:
        state = ax.load_checkpoint(a.load, model=model, optimizer=opt, scheduler=sched)
        start = state["step"]
    train(model, opt, sched, a.steps)
    if a.save:
        ax.save_checkpoint(
            a.save, model=model, optimizer=opt, scheduler=sched, step=start + a.steps, metadata={"note": "resume test"}
        )
    np.savez(a.out, **{k: v.numpy() for k, v in model.state_dict().items()})


if __name__ == "__main__":
    main()
