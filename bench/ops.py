"""Per-op overhead and MLP / matmul-block forward+backward, AxonML vs PyTorch eager (CPU).

Run: OMP_NUM_THREADS=1 python bench/ops.py   (both frameworks on one thread)
Goals (issue 2): per-op overhead <= 2x PyTorch's; MLP forward+backward <= 1.3x.
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from common import compare, timeit_pair, write_results  # noqa: E402

import axonml as ax  # noqa: E402

torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


def small_ops() -> list:
    rng = np.random.default_rng(0)
    a = rng.standard_normal((32, 32)).astype(np.float32)
    b = rng.standard_normal((32, 32)).astype(np.float32)
    xa, xb = ax.tensor(a), ax.tensor(b)
    ta, tb = torch.tensor(a), torch.tensor(b)
    ra, rt = ax.tensor(a, requires_grad=True), torch.tensor(a, requires_grad=True)
    cases = [
        ("add 32x32", lambda: xa + xb, lambda: ta + tb),
        ("add 32x32 (requires_grad)", lambda: ra + xb, lambda: rt + tb),
        ("matmul 32x32", lambda: xa @ xb, lambda: ta @ tb),
        ("softmax 32x32 (dim=-1)", lambda: ax.softmax(xa, -1), lambda: torch.softmax(ta, -1)),
    ]
    rows = []
    for name, f_ax, f_t in cases:
        rows.append(compare(name, *timeit_pair(f_ax, f_t, iters=30, warmup=200, inner=2000), unit="us"))
    return rows


def mlp_fwd_bwd(width: int = 1024, batch: int = 64, layers: int = 4) -> dict:
    rng = np.random.default_rng(1)
    ws = [(rng.standard_normal((width, width)) / np.sqrt(width)).astype(np.float32) for _ in range(layers)]
    bs = [np.zeros(width, np.float32) for _ in range(layers)]
    x = rng.standard_normal((batch, width)).astype(np.float32)
    aw = [ax.tensor(w, requires_grad=True) for w in ws]
    ab = [ax.tensor(b, requires_grad=True) for b in bs]
    tw = [torch.tensor(w, requires_grad=True) for w in ws]
    tbs = [torch.tensor(b, requires_grad=True) for b in bs]
    xa, xt = ax.tensor(x), torch.tensor(x)

    def run_ax():
        h = xa
        for w, b in zip(aw, ab):
            h = (h @ w + b).relu()
        h.mean().backward()
        for p in aw + ab:
            p.grad = None

    def run_t():
        h = xt
        for w, b in zip(tw, tbs):
            h = torch.relu(h @ w + b)
        h.mean().backward()
        for p in tw + tbs:
            p.grad = None

    return compare(f"MLP {layers}x{width}, batch {batch}: fwd+bwd", *timeit_pair(run_ax, run_t, iters=30, warmup=5))


def matmul_block(n: int = 2048) -> dict:
    rng = np.random.default_rng(2)
    x = rng.standard_normal((n, n)).astype(np.float32)
    w1 = (rng.standard_normal((n, n)) / np.sqrt(n)).astype(np.float32)
    w2 = (rng.standard_normal((n, n)) / np.sqrt(n)).astype(np.float32)
    xa, a1, a2 = ax.tensor(x), ax.tensor(w1, requires_grad=True), ax.tensor(w2, requires_grad=True)
    xt, t1, t2 = torch.tensor(x), torch.tensor(w1, requires_grad=True), torch.tensor(w2, requires_grad=True)

    def run_ax():
        ((xa @ a1).relu() @ a2).sum().backward()
        a1.grad = a2.grad = None

    def run_t():
        (torch.relu(xt @ t1) @ t2).sum().backward()
        t1.grad = t2.grad = None

    return compare(f"matmul block {n}x{n} (2 matmuls + relu): fwd+bwd", *timeit_pair(run_ax, run_t, iters=20, warmup=2))


def main() -> None:
    print(f"threads: {os.environ['OMP_NUM_THREADS']} (torch {torch.get_num_threads()}); ratios are axonml/torch, lower is better")
    rows = small_ops()
    rows.append(mlp_fwd_bwd())
    rows.append(matmul_block())
    write_results(
        "ops", "PyTorch eager CPU " + torch.__version__, rows, {"goals": {"per_op_ratio_max": 2.0, "mlp_ratio_max": 1.3}}
    )


if __name__ == "__main__":
    main()
