"""A small CNN learns a synthetic image task within a bounded number of steps."""

import numpy as np

import axonml as ax
import axonml.nn as nn


def _bars(n, rng):
    """8x8 single-channel images with one horizontal (class 0) or vertical (class 1) bar."""
    x = rng.normal(0, 0.3, (n, 1, 8, 8)).astype(np.float32)
    y = rng.integers(0, 2, n)
    pos = rng.integers(0, 8, n)
    for i in range(n):
        if y[i] == 0:
            x[i, 0, pos[i], :] += 2.0
        else:
            x[i, 0, :, pos[i]] += 2.0
    return x, y


def test_cnn_learns_bars():
    ax.manual_seed(0)
    rng = np.random.default_rng(0)
    model = nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(8, 8, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 2),
    )
    opt = ax.optim.Adam(model.parameters(), lr=0.02)
    loss_fn = nn.CrossEntropyLoss()
    for step in range(150):
        x, y = _bars(32, rng)
        loss = loss_fn(model(ax.tensor(x)), ax.tensor(y))
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    x, y = _bars(256, rng)
    with ax.no_grad():
        logits = model(ax.tensor(x))
        test_loss = loss_fn(logits, ax.tensor(y)).item()
        acc = (logits.argmax(dim=1).numpy() == y).mean()
    assert test_loss < 0.15, test_loss
    assert acc > 0.95, acc
