"""Adam/AdamW on a CUDA GPU (one fused kernel per parameter) equal the CPU path. Skipped without a GPU."""

import numpy as np
import pytest

import axonml as ax

pytestmark = pytest.mark.skipif(not ax.runtime.cuda_available(), reason="needs a CUDA GPU")

CASES = [
    ("AdamW", dict(lr=1e-2, weight_decay=0.1)),
    ("Adam", dict(lr=1e-2, weight_decay=0.05)),  # coupled decay
    ("Adam", dict(lr=3e-3, betas=(0.3, 0.99), maximize=True)),  # the other lerp branch, maximize
    ("AdamW", dict(lr=1e-2, amsgrad=True)),  # the unfused path on the GPU
]


@pytest.mark.parametrize("name,kw", CASES, ids=[f"{n}-{i}" for i, (n, _) in enumerate(CASES)])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_gpu_update_equals_cpu(name, kw, dtype):
    rng = np.random.default_rng(0)
    shapes = [(7, 5), (13,), (3, 4, 2)]
    runs = {}
    for dev in ("cpu", "cuda"):
        params = [ax.tensor(rng.standard_normal(s), dtype=dtype, device=dev, requires_grad=True) for s in shapes]
        opt = getattr(ax.optim, name)(params, **kw)
        grads = np.random.default_rng(1)
        for _ in range(5):
            for p in params:
                p.grad = ax.tensor(grads.standard_normal(p.shape), dtype=dtype, device=dev)
            opt.step()
        assert all(st["step"].device == ax.Device("cpu") for st in opt.state.values())  # as in PyTorch
        runs[dev] = [p.detach().numpy() for p in params] + [opt.state[p]["exp_avg_sq"].numpy() for p in params]
        rng = np.random.default_rng(0)
    for a, b in zip(runs["cpu"], runs["cuda"]):
        # same operations in the same order without fused multiply-adds: equal up to the last bit
        np.testing.assert_allclose(b, a, rtol=2e-7 if dtype == "float32" else 1e-15, atol=0)
