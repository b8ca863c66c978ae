"""Launcher overhead: time from the command's start to the first training step, and to the
job's end, for a 2-process job: ``axonml-launch`` running an AxonML script against
``torchrun`` running the equivalent PyTorch script (gloo), in one run.

Run: python bench/launch.py [--repeats 20] [--steps 10]

Both scripts build the same MLP (64 -> 256 -> 256 -> 1), initialise the default process
group from the launcher's environment, and train ``--steps`` steps: forward, backward, an
all-reduce (average) of each gradient, an SGD step. Rank 0 writes the wall-clock time at
the end of its first step into a file; the benchmark starts its clock just before it
starts the launcher and stops it when the launcher exits. Runs of the two launchers are
interleaved (ours, peer, ours, ...), so a burst of load on this shared machine hits both
alike; median and p95 over ``--repeats`` runs each, and the ratio ours/peer of the medians
(lower is better, the goal is at most 1). Both launchers give each worker one thread.

With ``--worker axonml|torch`` this file is the worker script itself.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
BIN = os.path.dirname(sys.executable)


def worker(kind: str, steps: int, marker: str) -> None:
    """One rank of the benchmark job (run by the launcher)."""
    if kind == "axonml":
        import axonml as ax
        import axonml.collectives as dist
        import axonml.nn as nn

        dist.init_process_group(backend="tcp")
        ax.manual_seed(0)
        model = nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 1))
        opt = ax.optim.SGD(model.parameters(), lr=0.01)
        x, y = ax.randn(32, 64), ax.randn(32, 1)
        mse, avg = nn.functional.mse_loss, dist.ReduceOp.AVG
    else:
        import torch
        import torch.distributed as dist
        import torch.nn as nn

        dist.init_process_group(backend="gloo")
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 1))
        opt = torch.optim.SGD(model.parameters(), lr=0.01)
        x, y = torch.randn(32, 64), torch.randn(32, 1)
        mse, avg = nn.functional.mse_loss, dist.ReduceOp.AVG
    for step in range(steps):
        loss = mse(model(x), y)
        opt.zero_grad()
        loss.backward()
        for p in model.parameters():
            dist.all_reduce(p.grad, op=avg)
        opt.step()
        if step == 0 and dist.get_rank() == 0:
            with open(marker + ".tmp", "w") as f:
                f.write(repr(time.time()))
            os.replace(marker + ".tmp", marker)
    dist.barrier()  # gloo aborts when a rank tears down while its peer still sends
    dist.destroy_process_group()


def run_once(kind: str, steps: int, tmp: str) -> tuple[float, float]:
    """Start one job; returns (seconds to the first step, seconds to the end)."""
    marker = os.path.join(tmp, f"{kind}-{time.monotonic_ns()}.first")
    script = [os.path.abspath(__file__), "--worker", kind, "--steps", str(steps), "--marker", marker]
    if kind == "axonml":
        cmd = [os.path.join(BIN, "axonml-launch"), "--standalone", "--nproc-per-node", "2", *script]
    else:
        cmd = [os.path.join(BIN, "torchrun"), "--standalone", "--nproc-per-node", "2", *script]
    env = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS="1")
    start = time.time()
    done = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, timeout=300)
    end = time.time()
    if done.returncode != 0:
        raise RuntimeError(f"{kind} job failed with exit code {done.returncode}:\n{done.stderr[-3000:]}")
    with open(marker) as f:
        first = float(f.read())
    return first - start, end - start


FAILED_RUNS = {"axonml": 0, "torch": 0}


def run_retrying(kind: str, steps: int, tmp: str, tries: int = 3) -> tuple[float, float]:
    """:func:`run_once`, run again when the job fails (counted in the results: torch's gloo
    sometimes aborts at exit with "terminate called without an active exception")."""
    for attempt in range(tries):
        try:
            return run_once(kind, steps, tmp)
        except RuntimeError as e:
            FAILED_RUNS[kind] += 1
            print(f"{kind} run failed (attempt {attempt + 1} of {tries}): {str(e).splitlines()[0]}", flush=True)
            if attempt == tries - 1:
                raise
    raise AssertionError("unreachable")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--worker", choices=("axonml", "torch"), help=argparse.SUPPRESS)
    ap.add_argument("--marker", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args.worker, args.steps, args.marker)
        return
    sys.path.insert(0, HERE)
    from common import _summary, compare, write_results

    samples: dict[str, dict[str, list[float]]] = {k: {"first": [], "end": []} for k in ("axonml", "torch")}
    with tempfile.TemporaryDirectory(prefix="axonml-bench-launch-") as tmp:
        for kind in ("axonml", "torch"):  # warm-up: page cache, .pyc files
            run_retrying(kind, args.steps, tmp)
        for i in range(args.repeats):
            for kind in ("axonml", "torch"):
                first, end = run_retrying(kind, args.steps, tmp)
                samples[kind]["first"].append(first)
                samples[kind]["end"].append(end)
            print(f"run {i + 1}/{args.repeats}: axonml first {samples['axonml']['first'][-1]:.2f} s end "
                  f"{samples['axonml']['end'][-1]:.2f} s | torchrun first {samples['torch']['first'][-1]:.2f} s end "
                  f"{samples['torch']['end'][-1]:.2f} s", flush=True)
    rows = [
        compare("2-process job: start -> first training step", _summary(samples["axonml"]["first"]),
                _summary(samples["torch"]["first"]), unit="s"),
        compare(f"2-process job: start -> end ({args.steps} steps)", _summary(samples["axonml"]["end"]),
                _summary(samples["torch"]["end"]), unit="s"),
    ]
    write_results("launch", "torchrun (torch 2.13, gloo)", rows, {"repeats": args.repeats, "steps": args.steps,
                                                                      "failed_runs_retried": FAILED_RUNS})


if __name__ == "__main__":
    main()
