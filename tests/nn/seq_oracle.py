"""Module-level PyTorch oracle for the sequence-layer tests (attention, Transformer, RNN).

``compare_modules(am, tm, fn, arrays)`` copies ``tm``'s weights into ``am`` through a
state dict, runs ``fn(module, T, *inputs)`` on both (``T`` turns a NumPy array into a
tensor of that library without grad: use it for masks and states that take no gradient),
compares every output, backpropagates the same random cotangents and compares the
gradients of the inputs and of every parameter, by name.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np
from helpers import as_np, to_ax, to_torch

import axonml as ax

torch = __import__("pytest").importorskip("torch")


def load_from_torch(am: Any, tm: Any) -> None:
    am.load_state_dict({k: v.detach().numpy() for k, v in tm.state_dict().items()})


def _flatten(out: Any) -> list:
    if out is None:
        return [None]
    if isinstance(out, (tuple, list)):
        return [y for o in out for y in _flatten(o)]
    return [out]


def _ax_const(a: np.ndarray) -> Any:
    return ax.tensor(a)


def _torch_const(a: np.ndarray) -> Any:
    return torch.tensor(a)


def compare_modules(
    am: Any,
    tm: Any,
    fn: Callable[..., Any],
    arrays: Sequence[np.ndarray],
    atol: float = 1e-9,
    rtol: float = 1e-7,
    grad: bool = True,
    seed: int = 0,
    load: bool = True,
) -> tuple[list, list]:
    """Outputs and gradients (inputs and parameters) of two same-structure modules agree."""
    if load:
        load_from_torch(am, tm)
    xa = [to_ax(a) for a in arrays]
    xt = [to_torch(a) for a in arrays]
    oa, ot = _flatten(fn(am, _ax_const, *xa)), _flatten(fn(tm, _torch_const, *xt))
    assert len(oa) == len(ot), f"{len(oa)} outputs vs torch's {len(ot)}"
    for i, (a, t) in enumerate(zip(oa, ot)):
        if t is None or a is None:
            assert a is None and t is None, f"output {i}: {a!r} vs torch {t!r}"
            continue
        assert tuple(a.shape) == tuple(t.shape), f"output {i}: shape {tuple(a.shape)} vs torch {tuple(t.shape)}"
        assert str(a.dtype).split(".")[-1] == str(t.dtype).split(".")[-1], f"output {i}: dtype {a.dtype} vs {t.dtype}"
        np.testing.assert_allclose(as_np(a), as_np(t), atol=atol, rtol=rtol, err_msg=f"output {i}")
    if not grad:
        return oa, ot
    rng = np.random.default_rng(seed)
    pairs = [(a, t) for a, t in zip(oa, ot) if t is not None and t.requires_grad]
    vs = [rng.standard_normal(tuple(t.shape)) for _, t in pairs]
    # NaN outputs (fully masked rows) get no cotangent, on both sides
    vs = [np.where(np.isnan(as_np(t)), 0.0, v) for (_, t), v in zip(pairs, vs)]
    ax.backward([a for a, _ in pairs], [ax.tensor(v).to(a.dtype) for (a, _), v in zip(pairs, vs)])
    torch.autograd.backward([t for _, t in pairs], [torch.tensor(v).to(t.dtype) for (_, t), v in zip(pairs, vs)])
    for i, (a, t) in enumerate(zip(xa, xt)):
        if t.requires_grad:
            _check_grad(a.grad, t.grad, f"input {i}", atol, rtol)
    aparams = dict(am.named_parameters())
    tparams = dict(tm.named_parameters())
    assert sorted(aparams) == sorted(tparams), f"parameter names differ: {sorted(aparams)} vs {sorted(tparams)}"
    for name, tp in tparams.items():
        _check_grad(aparams[name].grad, tp.grad, f"parameter {name}", atol, rtol)
    return oa, ot


def _check_grad(ga: Any, gt: Any, what: str, atol: float, rtol: float) -> None:
    if gt is None:
        assert ga is None or np.allclose(as_np(ga), 0), f"{what}: axonml has a gradient, torch none"
        return
    assert ga is not None, f"{what}: no gradient from axonml"
    np.testing.assert_allclose(as_np(ga), as_np(gt), atol=atol, rtol=rtol, err_msg=f"grad of {what}")


def rng_array(*shape: int, seed: int = 0, dtype: Any = np.float64) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


__all__ = ["compare_modules", "load_from_torch", "rng_array", "to_ax", "to_torch"]
