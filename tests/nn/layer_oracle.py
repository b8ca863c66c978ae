"""The layer oracle shared by the layer tests: build the torch layer and the axonml layer
with the same structure, copy torch's state in through ``load_state_dict`` (NumPy values),
run both on the same inputs and compare outputs, input gradients, parameter gradients and
buffers."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import as_np

import axonml as ax
from axonml import nn

torch = pytest.importorskip("torch")


def sync(al: nn.Module, tl) -> None:
    """Copy torch's state into the axonml layer (NumPy values through load_state_dict)."""
    al.load_state_dict({k: v.detach().numpy() for k, v in tl.state_dict().items()})


def rnd(*shape: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed + 7 * len(shape) + sum(shape)).standard_normal(shape)


def compare(al, tl, arrays, *, train: bool = True, atol: float = 1e-9, rtol: float = 1e-7, grad: bool = True,
            transpose: bool = False, double: bool = True, grad_inputs: tuple | None = None) -> None:
    """Run both layers on the same inputs (float arrays require grad) and compare outputs,
    input grads, parameter grads and buffers. ``transpose`` feeds a non-contiguous input;
    ``grad_inputs`` limits which inputs require grad (default: every floating one)."""
    if double:
        tl.double()
        al.double()
    sync(al, tl)
    al.train(train)
    tl.train(train)
    xa, xt, leaves_a, leaves_t = [], [], [], []
    for i, a in enumerate(arrays):
        a = np.asarray(a)
        if a.dtype.kind == "f":
            a = a.astype(np.float64 if double else np.float32)
        rg = grad and a.dtype.kind == "f" and (grad_inputs is None or i in grad_inputs)
        if transpose and a.ndim >= 2:
            # a non-contiguous view of a leaf holding the transposed data
            at = np.ascontiguousarray(a.swapaxes(-1, -2))
            la, lt = ax.tensor(at, requires_grad=rg), torch.tensor(at, requires_grad=rg)
            xa.append(la.transpose(-1, -2))
            xt.append(lt.transpose(-1, -2))
            assert not xa[-1].is_contiguous()
        else:
            la, lt = ax.tensor(a, requires_grad=rg), torch.tensor(a, requires_grad=rg)
            xa.append(la)
            xt.append(lt)
        leaves_a.append(la)
        leaves_t.append(lt)
    oa, ot = al(*xa), tl(*xt)
    oa = list(oa) if isinstance(oa, tuple) else [oa]
    ot = list(ot) if isinstance(ot, tuple) else [ot]
    for i, (a, t) in enumerate(zip(oa, ot)):
        assert tuple(a.shape) == tuple(t.shape), f"output {i}: {tuple(a.shape)} vs torch {tuple(t.shape)}"
        assert a.dtype.name == str(t.dtype).split(".")[-1], f"output {i}: {a.dtype} vs torch {t.dtype}"
        np.testing.assert_allclose(as_np(a), as_np(t), atol=atol, rtol=rtol, err_msg=f"output {i}")
    abuf = dict(al.named_buffers())
    for name, b in tl.named_buffers():
        np.testing.assert_allclose(as_np(abuf[name]), as_np(b), atol=atol, rtol=rtol, err_msg=f"buffer {name}")
    if not grad:
        return
    pairs = [(a, t) for a, t in zip(oa, ot) if t.requires_grad]
    rng = np.random.default_rng(1)
    cot = [rng.standard_normal(tuple(t.shape)).astype(as_np(t).dtype) for _, t in pairs]
    ax.backward([a for a, _ in pairs], [ax.tensor(c).to(a.dtype) for (a, _), c in zip(pairs, cot)])
    torch.autograd.backward([t for _, t in pairs], [torch.tensor(c).to(t.dtype) for (_, t), c in zip(pairs, cot)])
    for i, (a, t) in enumerate(zip(leaves_a, leaves_t)):
        if not t.requires_grad or t.grad is None:
            continue
        assert a.grad is not None, f"input {i}: no gradient from axonml"
        np.testing.assert_allclose(as_np(a.grad), as_np(t.grad), atol=atol, rtol=rtol, err_msg=f"grad of input {i}")
    pa = dict(al.named_parameters())
    for name, p in tl.named_parameters():
        if p.grad is None:
            assert pa[name].grad is None or np.allclose(as_np(pa[name].grad), 0), name
            continue
        assert pa[name].grad is not None, f"no gradient for parameter {name}"
        np.testing.assert_allclose(as_np(pa[name].grad), as_np(p.grad), atol=atol, rtol=rtol, err_msg=f"grad of {name}")
