"""Models, data and the single-process oracle shared by the DDP tests (threaded and
multi-process). The parity model's layers are batch-separable (Linear, Conv2d,
LayerNorm, Embedding): a mean loss over shards averages to the mean over the whole batch,
which BatchNorm's batch statistics would not."""

from __future__ import annotations

from typing import Any

import numpy as np

import axonml as ax
from axonml import nn
from axonml.nn import functional as F

N_CLASSES = 5
VOCAB = 16


class ParityNet(nn.Module):
    """Conv2d + Embedding + LayerNorm + two Linear layers; ``forward(img, tok)`` -> logits."""

    def __init__(self, extra_unused: bool = False) -> None:
        super().__init__()
        self.emb = nn.Embedding(VOCAB, 6)
        self.conv = nn.Conv2d(1, 3, 3, padding=1)
        self.ln = nn.LayerNorm(3 * 36 + 6)
        self.fc1 = nn.Linear(3 * 36 + 6, 32)
        self.fc2 = nn.Linear(32, N_CLASSES)
        if extra_unused:
            self.spare = nn.Linear(32, 7)  # never used in forward

    def forward(self, img: Any, tok: Any) -> Any:
        a = self.conv(img).relu().flatten(1)  # (B, 108)
        e = self.emb(tok).mean(1)  # (B, 6)
        h = self.ln(ax.cat([a, e], 1))
        return self.fc2(F.gelu(self.fc1(h)))


def init_params(model: nn.Module, seed: int) -> nn.Module:
    """Overwrite every parameter with seeded normal values (no global RNG: thread-safe)."""
    rng = np.random.default_rng(seed)
    state = {k: (rng.standard_normal(v.shape) * 0.3).astype(v.numpy().dtype) for k, v in model.state_dict().items()}
    for k in state:
        if k.endswith("running_var"):
            state[k] = np.abs(state[k]) + 0.5
    model.load_state_dict(state)
    return model


def make_data(n: int, seed: int = 123) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    img = rng.standard_normal((n, 1, 6, 6)).astype(np.float32)
    tok = rng.integers(0, VOCAB, (n, 4))
    y = rng.integers(0, N_CLASSES, n)
    return img, tok, y


def loss_of(model: Any, img: np.ndarray, tok: np.ndarray, y: np.ndarray) -> Any:
    return F.cross_entropy(model(ax.tensor(img), ax.tensor(tok)), ax.tensor(y))


def snapshot(model: nn.Module) -> dict:
    return {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}


def oracle_steps(seed: int, data: tuple, batches: list[np.ndarray], lr: float = 0.1, momentum: float = 0.9) -> list[dict]:
    """Train ParityNet in one process on each global batch (index arrays); snapshots after each step."""
    model = init_params(ParityNet(), seed)
    opt = ax.optim.SGD(model.parameters(), lr=lr, momentum=momentum)
    out = []
    for idx in batches:
        opt.zero_grad()
        loss_of(model, data[0][idx], data[1][idx], data[2][idx]).backward()
        opt.step()
        out.append(snapshot(model))
    return out


def max_diff(a: dict, b: dict) -> float:
    return max(float(np.max(np.abs(a[k] - b[k]))) for k in a)
