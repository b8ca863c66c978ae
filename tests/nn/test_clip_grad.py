"""Gradient clipping and parameter/vector conversion against ``torch.nn.utils``."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from helpers import torch

import axonml as ax
from axonml import nn
from axonml.nn.utils import (
    clip_grad_norm,
    clip_grad_norm_,
    clip_grad_value_,
    clip_grads_with_norm_,
    get_total_norm,
    parameters_to_vector,
    vector_to_parameters,
)

SHAPES = [(3, 4), (5,), (), (2, 0), (1, 1, 6)]
NONEMPTY = [s for s in SHAPES if 0 not in s]  # PyTorch refuses inf norms of empty tensors


def make(grads: list, dtype=np.float32, with_none: bool = True) -> tuple:
    """The same parameters with the same gradients in both frameworks (one without a grad)."""
    ax_ps, t_ps = [], []
    for g in grads:
        a = nn.Parameter(ax.zeros(*g.shape, dtype=str(np.dtype(dtype))))
        t = torch.zeros(g.shape, dtype=getattr(torch, str(np.dtype(dtype))), requires_grad=True)
        a.grad = ax.tensor(np.asarray(g, dtype=dtype))
        t.grad = torch.tensor(np.asarray(g, dtype=dtype))
        ax_ps.append(a)
        t_ps.append(t)
    if with_none:
        ax_ps.append(nn.Parameter(ax.zeros(2)))
        t_ps.append(torch.zeros(2, requires_grad=True))
    return ax_ps, t_ps


def rand_grads(seed: int = 0, scale: float = 1.0, shapes: list = SHAPES) -> list:
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(s) * scale for s in shapes]


def grads_of(ps) -> list:
    out = []
    for p in ps:
        if p.grad is None:
            out.append(None)
        else:
            g = p.grad.detach()
            out.append(g.numpy().astype(np.float64) if g.dtype != torch.bfloat16 else g.float().numpy())
    return out


def assert_same_grads(a_ps, t_ps, rtol=1e-6):
    for ga, gt in zip(grads_of(a_ps), grads_of(t_ps)):
        if gt is None:
            assert ga is None
        else:
            np.testing.assert_allclose(ga, gt, rtol=rtol, atol=1e-7)


@pytest.mark.parametrize("norm_type", [2.0, 1, math.inf, 3.0, -math.inf, 0.0, "inf"])
@pytest.mark.parametrize("max_norm", [0.5, 1e4])
def test_clip_grad_norm_matches_torch(norm_type, max_norm):
    a_ps, t_ps = make(rand_grads(1, scale=2.0, shapes=NONEMPTY if float(norm_type) in (math.inf, -math.inf) else SHAPES))
    total = clip_grad_norm_(a_ps, max_norm, norm_type=norm_type)
    t_total = torch.nn.utils.clip_grad_norm_(t_ps, max_norm, norm_type=norm_type)
    assert isinstance(total, ax.Tensor) and total.shape == () and total.dtype == ax.float32
    np.testing.assert_allclose(float(total), float(t_total), rtol=1e-6)
    assert_same_grads(a_ps, t_ps)


@pytest.mark.parametrize("dtype", [np.float64, np.float16])
def test_clip_grad_norm_dtypes(dtype):
    a_ps, t_ps = make(rand_grads(2, scale=3.0), dtype=dtype)
    total = clip_grad_norm_(a_ps, 1.0)
    t_total = torch.nn.utils.clip_grad_norm_(t_ps, 1.0)
    assert total.dtype.name == str(t_total.dtype).replace("torch.", "")
    tol = 1e-12 if dtype == np.float64 else 2e-3
    np.testing.assert_allclose(float(total), float(t_total), rtol=tol)
    assert_same_grads(a_ps, t_ps, rtol=tol)


def test_clip_grad_norm_single_tensor_and_generator():
    g = np.array([3.0, 4.0], dtype=np.float32)
    (a,), (t,) = make([g], with_none=False)
    total = clip_grad_norm_(a, 1.0)
    torch.nn.utils.clip_grad_norm_(t, 1.0)
    assert float(total) == pytest.approx(5.0)
    np.testing.assert_allclose(a.grad.numpy(), t.grad.numpy(), rtol=1e-6)
    with pytest.warns(UserWarning, match="empty generator"):
        assert float(clip_grad_norm_((p for p in []), 1.0)) == 0.0


@pytest.mark.parametrize("bad", [math.inf, math.nan])
@pytest.mark.parametrize("norm_type", [2.0, math.inf])
def test_nonfinite(bad, norm_type):
    grads = rand_grads(3, shapes=NONEMPTY)
    grads[0][1, 2] = bad
    a_ps, t_ps = make(grads)
    with pytest.raises(RuntimeError, match=f"total norm of order {norm_type} .* is non-finite"):
        clip_grad_norm_(a_ps, 1.0, norm_type, error_if_nonfinite=True)
    # nothing was scaled by the refused call
    np.testing.assert_allclose(a_ps[1].grad.numpy(), grads[1].astype(np.float32))
    total = clip_grad_norm_(a_ps, 1.0, norm_type)
    t_total = torch.nn.utils.clip_grad_norm_(t_ps, 1.0, norm_type)
    np.testing.assert_equal(float(total), float(t_total))
    for ga, gt in zip(grads_of(a_ps), grads_of(t_ps)):
        if gt is not None:
            np.testing.assert_allclose(ga, gt, rtol=1e-6, equal_nan=True)


def test_empty_gradients_contribute_nothing():
    """PyTorch raises for inf norms of empty tensors; an empty gradient adds nothing here."""
    a_ps, _ = make([np.zeros((2, 0)), np.array([3.0, -4.0])], with_none=False)
    assert float(get_total_norm([p.grad for p in a_ps], norm_type=math.inf)) == 4.0
    assert float(get_total_norm([p.grad for p in a_ps], norm_type=-math.inf)) == 3.0
    assert float(get_total_norm([a_ps[0].grad], norm_type=2)) == 0.0


def test_get_total_norm_and_clip_grads_with_norm():
    a_ps, t_ps = make(rand_grads(4))
    total = get_total_norm([p.grad for p in a_ps if p.grad is not None], norm_type=1.0)
    t_total = torch.nn.utils.get_total_norm([p.grad for p in t_ps if p.grad is not None], norm_type=1.0)
    np.testing.assert_allclose(float(total), float(t_total), rtol=1e-6)
    clip_grads_with_norm_(a_ps, 2.0, total)
    torch.nn.utils.clip_grads_with_norm_(t_ps, 2.0, t_total)
    assert_same_grads(a_ps, t_ps)
    assert float(get_total_norm([])) == 0.0


def test_clip_grad_norm_mixed_dtypes_promotes():
    a = nn.Parameter(ax.zeros(2))
    b = nn.Parameter(ax.zeros(2, dtype=ax.float64))
    a.grad = ax.tensor([3.0, 0.0])
    b.grad = ax.tensor([0.0, 4.0], dtype=ax.float64)
    total = clip_grad_norm_([a, b], 1.0)
    assert total.dtype == ax.float64 and float(total) == pytest.approx(5.0)
    assert a.grad.dtype == ax.float32 and float(b.grad.numpy()[1]) == pytest.approx(0.8, rel=1e-6)


def test_clip_bumps_grad_version():
    (a,), _ = make([np.ones(3)], with_none=False)
    v = a.grad._version
    clip_grad_norm_([a], 0.1)
    clip_grad_value_([a], 0.01)
    assert a.grad._version == v + 2


def test_deprecated_clip_grad_norm():
    (a,), _ = make([np.full(4, 2.0)], with_none=False)
    with pytest.warns(FutureWarning, match="clip_grad_norm_"):
        assert float(clip_grad_norm(a, 1.0)) == pytest.approx(4.0)


@pytest.mark.parametrize("clip_value", [0.3, 2.0])
def test_clip_grad_value_matches_torch(clip_value):
    a_ps, t_ps = make(rand_grads(5, scale=1.5))
    assert clip_grad_value_(a_ps, clip_value) is None
    torch.nn.utils.clip_grad_value_(t_ps, clip_value)
    assert_same_grads(a_ps, t_ps, rtol=0)


def test_clip_grad_value_non_contiguous_grad():
    p = nn.Parameter(ax.zeros(4, 3))
    p.grad = ax.tensor(np.arange(12.0, dtype=np.float32).reshape(3, 4) - 6).t()
    clip_grad_value_(p, 2.5)
    want = np.clip((np.arange(12.0).reshape(3, 4) - 6).T, -2.5, 2.5)
    np.testing.assert_allclose(p.grad.numpy(), want)


def test_parameters_to_vector_and_back_match_torch():
    rng = np.random.default_rng(6)
    arrays = [rng.standard_normal(s).astype(np.float32) for s in [(2, 3), (4,), (1, 2, 2)]]
    a_ps = [nn.Parameter(ax.tensor(x)) for x in arrays]
    t_ps = [torch.tensor(x, requires_grad=True) for x in arrays]
    vec = parameters_to_vector(a_ps)
    t_vec = torch.nn.utils.parameters_to_vector(t_ps)
    np.testing.assert_array_equal(vec.detach().numpy(), t_vec.detach().numpy())
    # differentiable: d(sum(vec * w))/dp is w, reshaped
    w = rng.standard_normal(vec.shape).astype(np.float32)
    (vec * ax.tensor(w)).sum().backward()
    (t_vec * torch.tensor(w)).sum().backward()
    for a, t in zip(a_ps, t_ps):
        np.testing.assert_allclose(a.grad.numpy(), t.grad.numpy())
    new = np.arange(vec.shape[0], dtype=np.float32)
    new_ax = ax.tensor(new)
    vector_to_parameters(new_ax, a_ps)
    with torch.no_grad():
        torch.nn.utils.vector_to_parameters(torch.tensor(new), t_ps)
    for a, t in zip(a_ps, t_ps):
        np.testing.assert_array_equal(a.detach().numpy(), t.detach().numpy())
    new_ax._data[0] = 100.0  # parameters view the vector, as in PyTorch
    assert float(a_ps[0].detach().numpy()[0, 0]) == 100.0


def test_vector_to_parameters_errors():
    ps = [nn.Parameter(ax.zeros(2, 2)), nn.Parameter(ax.zeros(3))]
    with pytest.raises(TypeError, match="expected axonml.Tensor"):
        vector_to_parameters(np.zeros(7), ps)
    with pytest.raises(ValueError, match=r"vec has shape \(6,\), but the parameters hold 7 elements"):
        vector_to_parameters(ax.zeros(6), ps)
    with pytest.raises(ValueError, match="got no parameters"):
        parameters_to_vector([])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        vector_to_parameters(ax.zeros(7), ps)
