"""Memory statistics, activation checkpointing (memory and RNG replay) and GradScaler."""

import gc

import numpy as np
import pytest
from helpers import torch

import axonml as ax


def _cur():
    return ax.memory_stats("cpu")["current_bytes"]


def test_memory_stats_count_storage_once_and_free():
    gc.collect()
    base = _cur()
    x = ax.zeros(1000, dtype=ax.float32)
    assert _cur() - base == 4000
    v = x.reshape(10, 100)[1:3]  # views share the storage
    t = x.reshape(10, 100).transpose(0, 1)
    assert _cur() - base == 4000
    del x, v, t
    assert _cur() == base


def test_peak_memory_and_reset():
    base = _cur()
    ax.reset_peak_memory_stats()
    y = ax.ones(2000, dtype=ax.float64)
    del y
    st = ax.memory_stats()
    assert st["peak_bytes"] >= base + 16000 and st["current_bytes"] == base
    ax.reset_peak_memory_stats()
    assert ax.memory_stats()["peak_bytes"] == base


def test_saved_activations_count_until_backward():
    w = ax.randn(256, 256, requires_grad=True)
    x = ax.randn(64, 256)
    gc.collect()
    base = _cur()
    y = ((x @ w) * (x @ w)).sum()  # the products are saved for backward
    held = _cur() - base
    assert held >= 2 * 64 * 256 * 4
    y.backward()
    del y
    gc.collect()
    assert _cur() - base == w.grad.nbytes


def _mlp_block(ws):
    def block(h):
        for w in ws:
            h = (h @ w) * (h @ w).sigmoid() if hasattr(h, "sigmoid") else (h @ w) * (h @ w)
        return h

    return block


def test_checkpoint_lowers_peak_and_keeps_gradients():
    ax.manual_seed(0)
    ws = [(ax.randn(128, 128) * 0.05).requires_grad_() for _ in range(6)]
    x = ax.randn(256, 128, requires_grad=True)
    block = _mlp_block(ws)

    def run(use_ckpt):
        for w in ws:
            w.grad = None
        x.grad = None
        gc.collect()
        ax.reset_peak_memory_stats()
        base = _cur()
        h = ax.autograd.checkpoint(block, x) if use_ckpt else block(x)
        peak_fwd = ax.memory_stats()["peak_bytes"] - base
        h.sum().backward()
        return peak_fwd, [w.grad.numpy().copy() for w in ws] + [x.grad.numpy().copy()]

    p_plain, g_plain = run(False)
    p_ckpt, g_ckpt = run(True)
    assert p_ckpt < p_plain / 3, (p_ckpt, p_plain)
    for a, b in zip(g_plain, g_ckpt):
        np.testing.assert_allclose(a, b, rtol=1e-6)


def test_checkpoint_replays_rng_for_dropout():
    w = ax.randn(8, 8, requires_grad=True)

    def block(h):
        return ax.nn.functional.dropout(h @ w, p=0.5, training=True)  # draws from the default generator

    x = ax.randn(4, 8)
    ax.manual_seed(3)
    block(x).sum().backward()
    g_plain = w.grad.numpy().copy()
    w.grad = None
    ax.manual_seed(3)
    ax.autograd.checkpoint(block, x).sum().backward()
    np.testing.assert_allclose(w.grad.numpy(), g_plain)


def test_checkpoint_sequential_and_input_without_grad():
    ws = [ax.randn(6, 6, requires_grad=True) for _ in range(4)]
    fns = [lambda h, w=w: h @ w for w in ws]
    x = ax.randn(3, 6)  # no grad on the input: parameters must still get gradients
    ax.autograd.checkpoint_sequential(fns, 2, x).sum().backward()
    g = [w.grad.numpy().copy() for w in ws]
    for w in ws:
        w.grad = None
    h = x
    for f in fns:
        h = f(h)
    h.sum().backward()
    for a, w in zip(g, ws):
        np.testing.assert_allclose(a, w.grad.numpy(), rtol=1e-6)


class _Opt:
    """A minimal optimizer: plain SGD over one param group."""

    def __init__(self, params, lr=0.1):
        self.param_groups = [{"params": list(params), "lr": lr}]
        self.steps = 0

    def step(self):
        self.steps += 1
        with ax.no_grad():
            for p in self.param_groups[0]["params"]:
                p.sub_(p.grad * self.param_groups[0]["lr"])


def test_grad_scaler_follows_torch():
    tp = torch.nn.Parameter(torch.ones(3))
    topt = torch.optim.SGD([tp], lr=0.1)
    ts = torch.amp.GradScaler("cpu", init_scale=8.0, growth_interval=2)
    p = ax.ones(3, requires_grad=True)
    opt = _Opt([p])
    s = ax.optim.grad_scaler.GradScaler(init_scale=8.0, growth_interval=2)
    for step in range(7):
        bad = step in (2, 5)
        tl = (tp * (float("inf") if bad else 1.0)).sum()
        al = (p * (float("inf") if bad else 1.0)).sum()
        ts.scale(tl).backward()
        s.scale(al).backward()
        ts.step(topt)
        s.step(opt)
        ts.update()
        s.update()
        topt.zero_grad()
        p.grad = None
        assert s.get_scale() == ts.get_scale(), step
        np.testing.assert_allclose(p.detach().numpy(), tp.detach().numpy())
    assert opt.steps == 5
    state = s.state_dict()
    s2 = ax.optim.grad_scaler.GradScaler()
    s2.load_state_dict(state)
    assert s2.get_scale() == s.get_scale()


def test_cuda_request_without_gpu_is_a_clear_error():
    if ax.runtime.cuda_available():
        pytest.skip("a GPU is present")
    with pytest.raises(ax.errors.DeviceError, match="(CuPy|GPU)"):
        ax.zeros(2, device="cuda")


@pytest.mark.skipif(not ax.runtime.cuda_available(), reason="needs a CUDA GPU")
def test_cuda_matches_cpu():
    a = np.random.default_rng(0).standard_normal((64, 32)).astype(np.float32)
    w = np.random.default_rng(1).standard_normal((32, 16)).astype(np.float32)
    xc = ax.tensor(a, requires_grad=True)
    wc = ax.tensor(w, requires_grad=True)
    xg = ax.tensor(a, device="cuda", requires_grad=True)
    wg = ax.tensor(w, device="cuda", requires_grad=True)
    ((xc @ wc) * 2).sum().backward()
    ((xg @ wg) * 2).sum().backward()
    assert xg.grad.device == ax.Device("cuda:0")
    np.testing.assert_allclose(wg.grad.cpu().numpy(), wc.grad.numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(xg.to("cpu").detach().numpy(), a)
