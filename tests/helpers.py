"""Oracles shared by the tests: PyTorch on CPU and float64 gradcheck.

``check_vs_torch(ax_fn, torch_fn, arrays)`` runs both functions on the same inputs,
compares outputs, then backpropagates the same random cotangent and compares the input
gradients. Inputs are NumPy arrays; floating ones require grad on both sides.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np
import pytest

import axonml as ax

torch = pytest.importorskip("torch")
torch.set_num_threads(1)


def to_ax(a: np.ndarray, requires_grad: bool | None = None) -> Any:
    t = ax.tensor(a)
    if requires_grad is None:
        requires_grad = a.dtype.kind == "f"
    return t.requires_grad_(True) if requires_grad else t


def to_torch(a: np.ndarray, requires_grad: bool | None = None) -> Any:
    t = torch.tensor(a)
    if requires_grad is None:
        requires_grad = a.dtype.kind == "f"
    return t.requires_grad_(True) if requires_grad else t


def as_np(t: Any) -> np.ndarray:
    if isinstance(t, ax.Tensor):
        d = t.detach().numpy()
    elif hasattr(t, "detach"):
        t = t.detach().cpu()
        d = (t.float() if t.dtype == torch.bfloat16 else t).numpy()
    else:
        d = np.asarray(t)
    return d.astype(np.float64) if d.dtype.kind == "f" or d.dtype.name == "bfloat16" else d


def _flat(out: Any) -> list:
    if isinstance(out, (tuple, list)):
        return list(out)
    return [out]


def check_vs_torch(
    ax_fn: Callable[..., Any],
    torch_fn: Callable[..., Any],
    arrays: Sequence[np.ndarray],
    atol: float = 1e-5,
    rtol: float = 1e-4,
    grad: bool = True,
    seed: int = 0,
) -> None:
    """Outputs and input gradients of ``ax_fn`` and ``torch_fn`` agree on ``arrays``."""
    xa = [to_ax(a) for a in arrays]
    xt = [to_torch(a) for a in arrays]
    oa, ot = _flat(ax_fn(*xa)), _flat(torch_fn(*xt))
    assert len(oa) == len(ot), f"{len(oa)} outputs vs torch's {len(ot)}"
    for i, (a, t) in enumerate(zip(oa, ot)):
        assert tuple(a.shape) == tuple(t.shape), f"output {i}: shape {tuple(a.shape)} vs torch {tuple(t.shape)}"
        assert str(a.dtype).split(".")[-1] == str(t.dtype).split(".")[-1], f"output {i}: dtype {a.dtype} vs torch {t.dtype}"
        np.testing.assert_allclose(as_np(a), as_np(t), atol=atol, rtol=rtol, err_msg=f"output {i}")
    if not grad:
        return
    rng = np.random.default_rng(seed)
    pairs = [(a, t) for a, t in zip(oa, ot) if t.requires_grad]
    if not pairs:
        return
    vs = [
        rng.standard_normal(tuple(t.shape)).astype(as_np(t).dtype if as_np(t).dtype.kind == "f" else np.float64) for _, t in pairs
    ]
    ax.autograd.run_backward  # noqa: B018 - the engine is public
    ax.backward(
        [a for a, _ in pairs],
        [
            ax.tensor(v.astype(np.dtype(str(a.dtype).split(".")[-1]) if a.dtype != ax.bfloat16 else np.float32)).to(a.dtype)
            for (a, _), v in zip(pairs, vs)
        ],
    )
    torch.autograd.backward([t for _, t in pairs], [torch.tensor(v).to(t.dtype) for (_, t), v in zip(pairs, vs)])
    for i, (a, t) in enumerate(zip(xa, xt)):
        if not t.requires_grad:
            continue
        if t.grad is None:
            assert a.grad is None or np.allclose(as_np(a.grad), 0), f"input {i}: axonml has a gradient, torch none"
            continue
        assert a.grad is not None, f"input {i}: no gradient from axonml"
        np.testing.assert_allclose(as_np(a.grad), as_np(t.grad), atol=atol, rtol=rtol, err_msg=f"grad of input {i}")


def gradcheck(fn: Callable[..., Any], arrays: Sequence[np.ndarray], **kw: Any) -> None:
    """float64 finite-difference gradcheck of ``fn`` at ``arrays``."""
    xs = [to_ax(np.asarray(a, dtype=np.float64) if np.asarray(a).dtype.kind == "f" else np.asarray(a)) for a in arrays]
    assert ax.autograd.gradcheck(fn, xs, **kw)


def rand(*shape: int, seed: int = 0, dtype: Any = np.float32) -> np.ndarray:
    return np.random.default_rng(seed + sum(shape)).standard_normal(shape).astype(dtype)
