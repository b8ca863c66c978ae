"""Training-step time (forward, backward, AdamW step), AxonML vs PyTorch eager on CPU, for
a small transformer LM (4 layers, width 256, sequence 128, batch 8) and a small CNN.

Run: OMP_NUM_THREADS=1 python bench/train_step.py      Goal (issue 3): ratio <= 1.3x.
The same model code builds both models (bench/models.py); weights are copied so both
compute the same numbers, and the first losses are checked to agree.
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from common import compare, timeit_pair, write_results  # noqa: E402
from models import copy_weights, small_cnn, tiny_gpt  # noqa: E402

import axonml as ax  # noqa: E402

torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


def bench(name: str, tm: torch.nn.Module, am: ax.nn.Module, t_inputs: tuple, a_inputs: tuple, loss_of, iters: int) -> dict:
    copy_weights(tm, am)
    topt = torch.optim.AdamW(tm.parameters(), lr=1e-4)
    aopt = ax.optim.AdamW(am.parameters(), lr=1e-4)

    def step_t():
        loss = loss_of(tm, t_inputs)
        topt.zero_grad()
        loss.backward()
        topt.step()
        return loss

    def step_a():
        loss = loss_of(am, a_inputs)
        aopt.zero_grad()
        loss.backward()
        aopt.step()
        return loss

    lt, la = step_t().item(), step_a().item()
    if not np.isclose(lt, la, rtol=1e-4):
        raise SystemExit(f"{name}: first losses differ: axonml {la} vs torch {lt}")
    return compare(name, *timeit_pair(step_a, step_t, iters=iters, warmup=2))


def main() -> None:
    print(f"threads: {os.environ['OMP_NUM_THREADS']}; ratios are axonml/torch, lower is better")
    rng = np.random.default_rng(0)
    rows = []
    torch.manual_seed(0)
    idx = rng.integers(0, 512, (8, 128))
    tgt = rng.integers(0, 512, (8, 128))
    gpt_loss = lambda m, inp: m(*inp)  # noqa: E731
    rows.append(
        bench(
            "transformer LM 4x256, seq 128, batch 8",
            tiny_gpt(torch),
            tiny_gpt(ax),
            (torch.tensor(idx), torch.tensor(tgt)),
            (ax.tensor(idx), ax.tensor(tgt)),
            gpt_loss,
            iters=20,
        )
    )
    x = rng.standard_normal((32, 3, 32, 32)).astype(np.float32)
    y = rng.integers(0, 10, 32)
    rows.append(
        bench(
            "small CNN, 32x3x32x32",
            small_cnn(torch),
            small_cnn(ax),
            (torch.tensor(x), torch.tensor(y)),
            (ax.tensor(x), ax.tensor(y)),
            lambda m, inp: (ax if isinstance(inp[0], ax.Tensor) else torch).nn.functional.cross_entropy(m(inp[0]), inp[1]),
            iters=20,
        )
    )
    write_results("train_step", "PyTorch eager CPU " + torch.__version__, rows, {"goals": {"ratio_max": 1.3}})


if __name__ == "__main__":
    main()
