"""Benchmark conventions (../shared/DESIGN.md section 6): warm-up excluded, median and
p95 over at least 20 timed iterations, the peer measured in the same run, ratios
reported and written as JSON under bench/results/."""

from __future__ import annotations

import json
import os
import platform
import socket
import statistics
import time
from typing import Any, Callable

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def timeit(fn: Callable[[], Any], iters: int = 20, warmup: int = 3, inner: int = 1, min_time: float = 0.0) -> dict:
    """Time ``fn`` (``inner`` calls per sample); returns seconds per call: median, p95, min."""
    for _ in range(warmup):
        fn()
    samples = []
    start = time.perf_counter()
    while len(samples) < iters or time.perf_counter() - start < min_time:
        t0 = time.perf_counter()
        for _ in range(inner):
            fn()
        samples.append((time.perf_counter() - t0) / inner)
    samples.sort()
    return {
        "median_s": statistics.median(samples),
        "p95_s": samples[min(len(samples) - 1, int(round(0.95 * (len(samples) - 1))))],
        "min_s": samples[0],
        "samples": len(samples),
    }


def timeit_pair(
    fn_ours: Callable[[], Any], fn_peer: Callable[[], Any], iters: int = 20, warmup: int = 3, inner: int = 1
) -> tuple[dict, dict]:
    """Time two functions with their samples interleaved (ours, peer, ours, ...), so a
    burst of load on this shared machine hits both sides alike; returns (ours, peer)."""
    for _ in range(warmup):
        fn_ours()
        fn_peer()
    a: list = []
    b: list = []
    for _ in range(iters):
        for fn, out in ((fn_ours, a), (fn_peer, b)):
            t0 = time.perf_counter()
            for _ in range(inner):
                fn()
            out.append((time.perf_counter() - t0) / inner)
    return _summary(a), _summary(b)


def interleaved_samples(
    fns: dict[str, Callable[[], Any]], iters: int, warmup: int, before: Callable[[], Any] | None = None
) -> dict[str, list]:
    """Seconds per call of each function, samples interleaved (a, b, c, a, b, c, ...) after ``warmup``
    untimed rounds; ``before`` (a barrier that keeps ranks in step) runs, untimed, before every call."""
    for _ in range(warmup):
        for fn in fns.values():
            if before is not None:
                before()
            fn()
    samples: dict[str, list] = {name: [] for name in fns}
    for _ in range(iters):
        for name, fn in fns.items():
            if before is not None:
                before()
            t0 = time.perf_counter()
            fn()
            samples[name].append(time.perf_counter() - t0)
    return samples


def train_step(opt: Any, loss_fn: Callable[[], Any]) -> Callable[[], Any]:
    """A step function: zero_grad, ``loss_fn()`` (the forward), backward, optimizer step; it returns the loss."""

    def step() -> Any:
        opt.zero_grad()
        loss = loss_fn()
        loss.backward()
        opt.step()
        return loss

    return step


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def read_rank_results(paths: list[str], folder: str) -> list:
    """Load each rank's JSON result (rank order), deleting the files and then their ``folder``."""
    results = []
    for path in paths:
        with open(path) as f:
            results.append(json.load(f))
        os.unlink(path)
    os.rmdir(folder)
    return results


def _summary(samples: list) -> dict:
    samples = sorted(samples)
    return {
        "median_s": statistics.median(samples),
        "p95_s": samples[min(len(samples) - 1, int(round(0.95 * (len(samples) - 1))))],
        "min_s": samples[0],
        "samples": len(samples),
    }


def compare(name: str, ours: dict, peer: dict, unit: str = "ms") -> dict:
    """A result row: both timings and the ratio ours/peer of medians (lower is better)."""
    scale = {"ms": 1e3, "us": 1e6, "s": 1.0}[unit]
    row = {
        "name": name,
        "unit": unit,
        "axonml_median": ours["median_s"] * scale,
        "axonml_p95": ours["p95_s"] * scale,
        "peer_median": peer["median_s"] * scale,
        "peer_p95": peer["p95_s"] * scale,
        "ratio": ours["median_s"] / peer["median_s"],
    }
    print(
        f"{name:<44} axonml {row['axonml_median']:9.3f} {unit} (p95 {row['axonml_p95']:9.3f})  "
        f"peer {row['peer_median']:9.3f} {unit} (p95 {row['peer_p95']:9.3f})  ratio {row['ratio']:5.2f}x"
    )
    return row


def write_results(bench: str, peer: str, rows: list, extra: dict | None = None) -> str:
    os.makedirs(RESULTS, exist_ok=True)
    path = os.path.join(RESULTS, f"{bench}.json")
    doc = {
        "benchmark": bench,
        "peer": peer,
        "machine": {"platform": platform.platform(), "processor": platform.processor(), "cpus": os.cpu_count()},
        "threads": os.environ.get("OMP_NUM_THREADS"),
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "rows": rows,
        **(extra or {}),
    }
    with open(path, "w") as f:
        json.dump(doc, f, indent=2)
    print(f"wrote {path}")
    return path
