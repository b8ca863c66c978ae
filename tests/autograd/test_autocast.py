"""Autocast: output dtypes equal PyTorch's CPU autocast on the same ops, matmul-like ops
really compute in the low precision, and gradients reach float32 leaves as float32."""

import numpy as np
import pytest
from helpers import torch

import axonml as ax

LOW = [(ax.bfloat16, torch.bfloat16), (ax.float16, torch.float16)]


def _name(dt):
    return str(dt).split(".")[-1]


def _cases():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 8)).astype(np.float32)
    w = rng.standard_normal((6, 8)).astype(np.float32)
    b3 = rng.standard_normal((2, 4, 8)).astype(np.float32)
    c3 = rng.standard_normal((2, 8, 3)).astype(np.float32)
    img = rng.standard_normal((1, 2, 6, 6)).astype(np.float32)
    k = rng.standard_normal((3, 2, 3, 3)).astype(np.float32)
    seq = rng.standard_normal((1, 2, 9)).astype(np.float32)
    k1 = rng.standard_normal((4, 2, 3)).astype(np.float32)
    tgt = np.array([1, 0, 3, 2])
    return [
        ("matmul", lambda m, a, b: m.matmul(a, b), (x, w.T.copy())),
        ("linear", lambda m, a, b: (ax.linear if m is ax else torch.nn.functional.linear)(a, b), (x, w)),
        ("bmm", lambda m, a, b: m.bmm(a, b), (b3, c3)),
        ("conv2d", lambda m, a, b: (ax.conv2d if m is ax else torch.nn.functional.conv2d)(a, b), (img, k)),
        ("conv1d", lambda m, a, b: (ax.conv1d if m is ax else torch.nn.functional.conv1d)(a, b), (seq, k1)),
        ("softmax(matmul)", lambda m, a, b: m.softmax(m.matmul(a, b), -1), (x, w.T.copy())),
        ("log_softmax(matmul)", lambda m, a, b: m.log_softmax(m.matmul(a, b), -1), (x, w.T.copy())),
        ("sum(matmul)", lambda m, a, b: m.matmul(a, b).sum(), (x, w.T.copy())),
        (
            "layer_norm(matmul)",
            lambda m, a, b: (ax.layer_norm if m is ax else torch.nn.functional.layer_norm)(m.matmul(a, b), (6,)),
            (x, w.T.copy()),
        ),
        ("matmul + float32", lambda m, a, b: m.matmul(a, b) + a[:, :6], (x, w.T.copy())),
        (
            "cross_entropy(matmul)",
            lambda m, a, b: (ax.cross_entropy if m is ax else torch.nn.functional.cross_entropy)(
                m.matmul(a, b), (ax.tensor(tgt) if m is ax else torch.tensor(tgt))
            ),
            (x, w.T.copy()),
        ),
    ]


@pytest.mark.parametrize("low_ax,low_t", LOW, ids=["bf16", "fp16"])
@pytest.mark.parametrize("case", _cases(), ids=lambda c: c[0])
def test_autocast_output_dtype_matches_torch(case, low_ax, low_t):
    name, fn, arrays = case
    ta = [torch.tensor(a) for a in arrays]
    aa = [ax.tensor(a) for a in arrays]
    with torch.autocast("cpu", dtype=low_t):
        t_out = fn(torch, *ta)
    with ax.autocast("cpu", dtype=low_ax):
        a_out = fn(ax, *aa)
    assert _name(a_out.dtype) == _name(t_out.dtype), f"{name}: axonml {a_out.dtype} vs torch {t_out.dtype}"
    tol = 0.05 if low_t is torch.bfloat16 else 5e-3
    np.testing.assert_allclose(
        a_out.detach().float().numpy(), t_out.detach().float().numpy(), rtol=tol, atol=tol * 2, err_msg=name
    )


def test_autocast_really_lowers_precision_and_grads_stay_float32():
    rng = np.random.default_rng(1)
    a = rng.standard_normal((16, 16)).astype(np.float32)
    b = rng.standard_normal((16, 16)).astype(np.float32)
    xa = ax.tensor(a, requires_grad=True)
    with ax.autocast("cpu", dtype=ax.bfloat16):
        y = xa @ ax.tensor(b)
    assert y.dtype == ax.bfloat16
    exact = a @ b
    low = a.astype(np.float32) @ b  # reference in float32
    err = np.abs(y.float().detach().numpy() - exact).max()
    assert err > 1e-4, "the product was not computed in bfloat16"
    assert np.allclose(y.float().detach().numpy(), low, rtol=0.05, atol=0.1)
    y.float().sum().backward()
    assert xa.grad.dtype == ax.float32
    with ax.autocast("cpu", enabled=False):
        assert (xa @ ax.tensor(b)).dtype == ax.float32


def test_autocast_rejects_bad_dtype():
    with pytest.raises(ax.errors.DTypeError, match="bfloat16 or float16"):
        ax.autocast("cpu", dtype=ax.float64)
