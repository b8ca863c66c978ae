"""Offered gradient buffers (engine.offer_grad_buffer / claim_grad_buffer): Linear computes
its weight's gradient straight into an offered array, at most once per offer, only into a
leaf without a gradient; anything else leaves the usual result. Oracle: the same backward
without an offer."""

import numpy as np
import pytest

import axonml as ax
from axonml.autograd import offer_grad_buffer
from axonml.nn import functional as F


def _setup(seed: int = 0, dtype=np.float32):
    rng = np.random.default_rng(seed)
    x = ax.tensor(rng.standard_normal((5, 4)).astype(dtype))
    w = ax.nn.Parameter(ax.tensor(rng.standard_normal((3, 4)).astype(dtype)))
    b = ax.nn.Parameter(ax.tensor(rng.standard_normal(3).astype(dtype)))
    return x, w, b


def _reference(tied: bool = False) -> tuple:
    x, w, b = _setup()
    y = F.linear(x, w, b)
    if tied:
        y = F.linear(y @ w, w, b)
    (y * y).sum().backward()
    return w.grad.numpy().copy(), b.grad.numpy().copy()


def test_linear_weight_gradient_is_computed_in_the_offered_buffer():
    gw, gb = _reference()
    x, w, b = _setup()
    loss = (F.linear(x, w, b) ** 2).sum()
    buf = np.full((3, 4), np.nan, np.float32)
    assert offer_grad_buffer(w, buf)
    loss.backward()
    assert w.grad._data is buf  # no copy: .grad is a tensor over the buffer
    np.testing.assert_array_equal(buf, gw)
    np.testing.assert_array_equal(b.grad.numpy(), gb)


def test_an_offer_is_taken_once_when_the_weight_is_used_twice():
    gw, _ = _reference(tied=True)
    x, w, b = _setup()
    y = F.linear(x, w, b)
    loss = (F.linear(y @ w, w, b) ** 2).sum()
    buf = np.zeros((3, 4), np.float32)
    offer_grad_buffer(w, buf)
    loss.backward()
    np.testing.assert_allclose(w.grad.numpy(), gw, rtol=1e-6)  # both contributions, none overwritten


@pytest.mark.parametrize("case", ["grad exists", "wrong dtype", "wrong shape", "withdrawn"])
def test_an_unsuitable_or_withdrawn_offer_is_not_taken(case):
    gw, _ = _reference()
    x, w, b = _setup()
    loss = (F.linear(x, w, b) ** 2).sum()
    buf = np.full((3, 4), np.nan, np.float64 if case == "wrong dtype" else np.float32)
    if case == "wrong shape":
        buf = np.full((4, 3), np.nan, np.float32)
    if case == "grad exists":
        w.grad = ax.ones(3, 4)
    offer_grad_buffer(w, buf)
    if case == "withdrawn":
        offer_grad_buffer(w, None)
    loss.backward()
    assert np.isnan(buf).all()  # untouched
    want = gw + 1.0 if case == "grad exists" else gw
    np.testing.assert_allclose(w.grad.numpy(), want, rtol=1e-6)


def test_no_offer_to_a_leaf_outside_any_graph():
    _, w, _ = _setup()
    assert not offer_grad_buffer(w, np.zeros((3, 4), np.float32))


def test_an_offer_that_is_not_an_array_is_refused():
    x, w, b = _setup()
    F.linear(x, w, b)
    with pytest.raises(TypeError, match="must be an array"):
        offer_grad_buffer(w, [[0.0] * 4] * 3)
