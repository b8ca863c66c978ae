"""The fast paths of convolution (conv_fast.py: flat-shift columns, 1x1) and max pooling
(separable max, tie and NaN rules), against PyTorch and float64 gradcheck."""

import numpy as np
import pytest
import torch.nn.functional as F
from helpers import as_np, check_vs_torch, gradcheck, rand, torch

import axonml as ax
from axonml.tensor.ops.conv import conv1d, conv2d, conv_transpose2d
from axonml.tensor.ops.conv_fast import Geometry
from axonml.tensor.ops.pool import max_pool1d, max_pool2d

# wide enough inputs that the columns use the buffer's rows (flat shift, junk columns but
# for the second): stride 1 along W, strided H, dilation, groups, asymmetric padding
FLAT = [
    ((2, 3, 5, 12), (4, 3, 3, 3), dict(padding=1)),
    ((2, 4, 7, 16), (6, 2, 3, 3), dict(stride=(2, 1), padding=(0, 2), groups=2)),
    ((1, 2, 6, 20), (3, 2, 2, 3), dict(dilation=(1, 2), padding=(1, 2))),
    ((2, 3, 4, 10), (2, 3, 3, 2), dict(padding="same")),  # padding (0, 1): right only
    ((1, 2, 5, 20), (3, 2, 3, 3), dict(padding=3)),  # padding wider than the kernel
]


def _geometry(xs: tuple, ws: tuple, kw: dict) -> Geometry:
    p = kw.get("padding", 0)
    if p == "same":
        d = kw.get("dilation", (1, 1))
        pad = tuple((dd * (k - 1) // 2, dd * (k - 1) - dd * (k - 1) // 2) for k, dd in zip(ws[2:], d))
    else:
        pad = tuple((v, v) for v in ((p, p) if isinstance(p, int) else p))
    s = kw.get("stride", 1)
    d = kw.get("dilation", 1)
    return Geometry(xs, ws[2:], (s, s) if isinstance(s, int) else s, pad, (d, d) if isinstance(d, int) else d)


@pytest.mark.filterwarnings("ignore:Using padding='same'")
@pytest.mark.parametrize("xs,ws,kw", FLAT)
def test_conv2d_flat_rows(xs, ws, kw):
    assert _geometry(xs, ws, kw).flat  # the case under test
    arrays = [rand(*xs), rand(*ws, seed=1), rand(ws[0], seed=2)]
    f = lambda *a: conv2d(*a, **kw)
    check_vs_torch(f, lambda *a: F.conv2d(*a, **kw), arrays)
    gradcheck(f, [a[:1] if i == 0 else a for i, a in enumerate(arrays)])


def test_conv_transpose_and_1d_flat_rows():
    kw = dict(stride=(2, 1), padding=1, output_padding=(1, 0))
    arrays = [rand(2, 3, 3, 12), rand(3, 2, 3, 3, seed=1), rand(2, seed=2)]
    check_vs_torch(lambda *a: conv_transpose2d(*a, **kw), lambda *a: F.conv_transpose2d(*a, **kw), arrays)
    gradcheck(lambda *a: conv_transpose2d(*a, **kw), arrays)
    arrays = [rand(2, 3, 16), rand(4, 3, 3, seed=1)]
    check_vs_torch(lambda *a: conv1d(*a, padding=1), lambda *a: F.conv1d(*a, padding=1), arrays)


@pytest.mark.parametrize("bias", [True, False])
def test_conv_1x1(bias):
    arrays = [rand(2, 5, 3, 4), rand(3, 5, 1, 1, seed=1)] + ([rand(3, seed=2)] if bias else [])
    check_vs_torch(conv2d, F.conv2d, arrays)
    gradcheck(conv2d, arrays)
    # a transposed (non-contiguous) input and a 1x1 conv1d
    check_vs_torch(lambda x, w: conv2d(x.transpose(2, 3), w), lambda x, w: F.conv2d(x.transpose(2, 3), w), arrays[:2])
    check_vs_torch(conv1d, F.conv1d, [rand(2, 4, 6), rand(3, 4, 1, seed=1)])


@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")
def test_conv_flat_rows_with_inf_input_and_weight():
    # an inf in the last input column is read by a junk column of kernel offset j=0; the true
    # gradient there is finite and must stay so (0 * inf must not leak in)
    x = rand(2, 2, 4, 12)
    x[0, 1, 2, -1] = np.inf
    assert _geometry(x.shape, (3, 2, 3, 3), dict(padding=1)).junk
    w = rand(3, 2, 3, 3, seed=1)
    check_vs_torch(lambda a, b: conv2d(a, b, padding=1), lambda a, b: F.conv2d(a, b, padding=1), [x, w])
    xa, wa = ax.tensor(x), ax.tensor(w).requires_grad_()
    conv2d(xa, wa, padding=1).sum().backward()
    assert np.isfinite(as_np(wa.grad)[:, :, :, 0]).all()
    # likewise an inf weight: the input gradient stays finite where PyTorch's is (no padding:
    # im2col multiplies padding zeros by the weight, so inf * 0 there differs from PyTorch's
    # direct convolution, as it always did)
    w[1, 0, 0, 2] = -np.inf
    assert _geometry((2, 2, 4, 12), w.shape, {}).junk
    check_vs_torch(conv2d, F.conv2d, [rand(2, 2, 4, 12), w])


# -- max pooling ---------------------------------------------------------------------------
POOLS = [
    dict(kernel_size=2),  # kernel == stride: the benchmark CNN's case
    dict(kernel_size=(2, 3), stride=(2, 3)),
    dict(kernel_size=3, stride=2, padding=1),  # overlapping windows
    dict(kernel_size=2, stride=1, dilation=2, padding=1, ceil_mode=True),
]


def _ties(*shape: int, seed: int = 0) -> np.ndarray:
    """Values from a small set, so that most windows hold several equal maxima."""
    return np.random.default_rng(seed).integers(-1, 2, shape).astype(np.float32)


@pytest.mark.parametrize("kw", POOLS)
def test_max_pool_ties_go_to_the_first_max(kw):
    x = _ties(2, 3, 8, 9)
    f = lambda a: max_pool2d(a, return_indices=True, **kw)
    check_vs_torch(f, lambda a: F.max_pool2d(a, return_indices=True, **kw), [x])
    # after ReLU most windows are all zeros
    x = np.maximum(rand(2, 3, 8, 8), 0)
    check_vs_torch(lambda a: max_pool2d(F_relu(a), **kw), lambda a: F.max_pool2d(F.relu(a), **kw), [x])


def F_relu(a):  # noqa: N802 - mirrors F.relu in the lambdas above
    return ax.nn.functional.relu(a)


@pytest.mark.parametrize("kw", POOLS)
def test_max_pool_nan_takes_the_last_nan(kw):
    x = rand(1, 2, 6, 6)
    x[0, 0, 0, 0] = x[0, 0, 1, 1] = x[0, 1, 2, 3] = x[0, 1, 3, 2] = x[0, 1, 5, 5] = np.nan
    f = lambda a: max_pool2d(a, return_indices=True, **kw)
    check_vs_torch(f, lambda a: F.max_pool2d(a, return_indices=True, **kw), [x])


@pytest.mark.parametrize("kw", [dict(kernel_size=2), dict(kernel_size=3, stride=2, padding=1)])
def test_max_pool_all_minus_inf_windows(kw):
    # every element -inf: PyTorch takes the first element inside the input, never the padding
    x = np.full((1, 2, 5, 6), -np.inf, np.float32)
    x[0, 1, 1:3, 1:3] = 1.0
    check_vs_torch(lambda a: max_pool2d(a, return_indices=True, **kw), lambda a: F.max_pool2d(a, return_indices=True, **kw), [x])


@pytest.mark.parametrize("kw", POOLS)
def test_max_pool_gradcheck_and_nonfinite_grad(kw):
    gradcheck(lambda a: max_pool2d(a, **kw), [rand(1, 2, 7, 8)])
    x = rand(1, 2, 7, 8)
    xa, xt = ax.tensor(x).requires_grad_(), torch.tensor(x).requires_grad_()
    ya, yt = max_pool2d(xa, **kw), F.max_pool2d(xt, **kw)
    g = rand(*yt.shape, seed=3)
    g.flat[0], g.flat[-1] = np.inf, np.nan
    ya.backward(ax.tensor(g))
    yt.backward(torch.tensor(g))
    np.testing.assert_allclose(as_np(xa.grad), as_np(xt.grad), rtol=1e-6)  # NaN and inf where torch has them


def test_max_pool_output_changed_in_place_keeps_the_gradient():
    # the output may be changed in place outside autograd; the gradient must not change
    x = rand(2, 3, 6, 6)
    xa, xt = ax.tensor(x).requires_grad_(), torch.tensor(x).requires_grad_()
    ya, yt = max_pool2d(xa, 2), F.max_pool2d(xt, 2)
    with ax.no_grad():
        ya.mul_(-1.0)
    with torch.no_grad():
        yt.mul_(-1.0)
    ya.sum().backward()
    yt.sum().backward()
    np.testing.assert_array_equal(as_np(xa.grad), as_np(xt.grad))


def test_max_pool_fast_path_dtypes_and_1d():
    x = _ties(2, 3, 8, 8)
    for dt, tdt in [(ax.bfloat16, torch.bfloat16), (ax.float16, torch.float16), (ax.float64, torch.float64)]:
        xa, xt = ax.tensor(x).to(dt).requires_grad_(), torch.tensor(x).to(tdt).requires_grad_()
        ya, yt = max_pool2d(xa, 2), F.max_pool2d(xt, 2)
        assert ya.dtype == dt
        ya.sum().backward()
        yt.sum().backward()
        np.testing.assert_array_equal(as_np(ya), as_np(yt))
        np.testing.assert_array_equal(as_np(xa.grad), as_np(xt.grad))
    x1 = _ties(2, 3, 10)
    check_vs_torch(lambda a: max_pool1d(a, 2, return_indices=True), lambda a: F.max_pool1d(a, 2, return_indices=True), [x1])
    check_vs_torch(lambda a: max_pool2d(a, 2), lambda a: F.max_pool2d(a, 2), [rand(0, 3, 4, 4)])
