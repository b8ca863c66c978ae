"""Convolutions and pooling against PyTorch (values and gradients) and float64 gradcheck."""

import numpy as np
import pytest
import torch.nn.functional as F
from helpers import as_np, check_vs_torch, gradcheck, rand, torch

import axonml as ax
from axonml.errors import AutogradError, DTypeError, ShapeError
from axonml.tensor.ops.conv import conv1d, conv2d, conv_transpose1d, conv_transpose2d
from axonml.tensor.ops.pool import (
    adaptive_avg_pool1d,
    adaptive_avg_pool2d,
    adaptive_max_pool1d,
    adaptive_max_pool2d,
    avg_pool1d,
    avg_pool2d,
    max_pool1d,
    max_pool2d,
)

# (input shape, weight shape, kwargs): strides, paddings, dilations, groups, depthwise,
# odd sizes, batch of 1, unbatched, 'same' with an even kernel
CONV2D = [
    ((2, 3, 6, 5), (4, 3, 3, 3), {}),
    ((2, 4, 7, 6), (6, 2, 3, 2), dict(stride=(2, 1), padding=(1, 2), dilation=(1, 2), groups=2)),
    ((1, 3, 5, 5), (6, 1, 3, 3), dict(groups=3, padding=1)),  # depthwise, multiplier 2
    ((3, 5, 5), (2, 3, 2, 2), dict(padding="same", dilation=2)),  # unbatched, even kernel
    ((2, 4, 9, 7), (4, 4, 3, 3), dict(stride=3, padding="valid")),
    ((1, 2, 4, 4), (3, 2, 4, 4), dict(padding=(0, 1))),  # kernel as large as the input
    ((2, 2, 5, 6), (2, 2, 1, 1), dict(stride=2)),
]


@pytest.mark.parametrize("xs,ws,kw", CONV2D)
@pytest.mark.parametrize("bias", [True, False])
def test_conv2d(xs, ws, kw, bias):
    arrays = [rand(*xs), rand(*ws, seed=1)] + ([rand(ws[0], seed=2)] if bias else [])
    f = lambda *a: conv2d(*a, **kw)
    check_vs_torch(f, lambda *a: F.conv2d(*a, **kw), arrays)
    gradcheck(f, arrays)


@pytest.mark.filterwarnings("ignore:Using padding='same'")
@pytest.mark.parametrize(
    "xs,ws,kw",
    [
        ((2, 4, 9), (6, 2, 3), dict(stride=2, padding=1, dilation=2, groups=2)),
        ((3, 8), (2, 3, 4), dict(padding="same")),
        ((1, 3, 7), (3, 1, 2), dict(groups=3, stride=3)),
    ],
)
def test_conv1d(xs, ws, kw):
    arrays = [rand(*xs), rand(*ws, seed=1), rand(ws[0], seed=2)]
    f = lambda *a: conv1d(*a, **kw)
    check_vs_torch(f, lambda *a: F.conv1d(*a, **kw), arrays)
    gradcheck(f, arrays)


@pytest.mark.parametrize(
    "xs,ws,kw",
    [
        ((2, 4, 5, 4), (4, 3, 3, 2), dict(stride=(2, 3), padding=(1, 0), output_padding=(1, 2), groups=2)),
        ((1, 2, 3, 3), (2, 3, 3, 3), dict(padding=1, output_padding=1, dilation=2)),  # output_padding >= stride
        ((3, 4, 4), (3, 2, 2, 2), dict(stride=2)),  # unbatched
    ],
)
def test_conv_transpose2d(xs, ws, kw):
    c_out = ws[1] * kw.get("groups", 1)
    arrays = [rand(*xs), rand(*ws, seed=1), rand(c_out, seed=2)]
    f = lambda *a: conv_transpose2d(*a, **kw)
    check_vs_torch(f, lambda *a: F.conv_transpose2d(*a, **kw), arrays)
    gradcheck(f, arrays)


def test_conv_transpose1d():
    kw = dict(stride=2, padding=1, output_padding=1)
    arrays = [rand(2, 4, 6), rand(4, 3, 3, seed=1)]
    f = lambda *a: conv_transpose1d(*a, **kw)
    check_vs_torch(f, lambda *a: F.conv_transpose1d(*a, **kw), arrays)
    gradcheck(f, arrays)


def test_conv_noncontiguous_and_empty_batch():
    # a transposed input and a permuted weight
    f = lambda x, w: conv2d(x.transpose(2, 3), w.permute(1, 0, 2, 3), padding=1)
    check_vs_torch(
        f, lambda x, w: F.conv2d(x.transpose(2, 3), w.permute(1, 0, 2, 3), padding=1), [rand(2, 3, 5, 4), rand(3, 4, 3, 3)]
    )
    check_vs_torch(lambda x, w: conv2d(x, w), lambda x, w: F.conv2d(x, w), [rand(0, 3, 5, 4), rand(2, 3, 3, 3)])


def test_conv_saved_input_modified_in_place():
    x = ax.randn(1, 2, 4, 4)
    w = ax.randn(3, 2, 3, 3, requires_grad=True)
    y = conv2d(x, w)
    x.add_(1.0)
    with pytest.raises(AutogradError, match="inplace"):
        y.sum().backward()


def test_conv_autocast():
    x, w, b = rand(2, 3, 6, 6), rand(4, 3, 3, 3, seed=1), rand(4, seed=2)
    with ax.autocast("cpu", dtype=ax.bfloat16):
        y = conv2d(ax.tensor(x), ax.tensor(w), ax.tensor(b), padding=1)
        y64 = conv2d(ax.tensor(x).double(), ax.tensor(w).double())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        yt = F.conv2d(torch.tensor(x), torch.tensor(w), torch.tensor(b), padding=1)
    assert y.dtype == ax.bfloat16 and yt.dtype == torch.bfloat16
    assert y64.dtype == ax.float64  # float64 is not autocast, as in PyTorch
    np.testing.assert_allclose(as_np(y), yt.float().detach().numpy(), rtol=2e-2, atol=2e-2)
    # gradients come back in the inputs' dtypes
    xa, wa = ax.tensor(x).requires_grad_(), ax.tensor(w).requires_grad_()
    with ax.autocast("cpu"):
        conv2d(xa, wa).sum().backward()
    assert xa.grad.dtype == ax.float32 and wa.grad.dtype == ax.float32


def test_conv_errors():
    x = ax.randn(2, 5, 8, 8)
    with pytest.raises(ShapeError, match=r"5 channels.*\(4, 3, 3, 3\).*groups=1.*in_channels=3"):
        conv2d(x, ax.randn(4, 3, 3, 3))
    with pytest.raises(ShapeError, match=r"divisible by groups=2"):
        conv2d(ax.randn(2, 4, 8, 8), ax.randn(3, 2, 3, 3), groups=2)
    with pytest.raises(ShapeError, match=r"padded input size per channel \(4, 4\).*kernel size \(5, 5\)"):
        conv2d(ax.randn(1, 3, 2, 2), ax.randn(1, 3, 5, 5), padding=1)
    with pytest.raises(ShapeError, match=r"bias must have shape \(4,\)"):
        conv2d(ax.randn(1, 3, 5, 5), ax.randn(4, 3, 3, 3), ax.randn(3))
    with pytest.raises(DTypeError, match="float64"):
        conv2d(ax.randn(1, 3, 5, 5), ax.randn(4, 3, 3, 3).double())
    with pytest.raises(ShapeError, match=r"3-D \(unbatched\) or 4-D"):
        conv2d(ax.randn(5, 5), ax.randn(4, 3, 3, 3))
    with pytest.raises(ValueError, match="strided"):
        conv1d(ax.randn(1, 3, 5), ax.randn(4, 3, 3), stride=2, padding="same")
    with pytest.raises(ValueError, match="output_padding"):
        conv_transpose2d(ax.randn(1, 3, 5, 5), ax.randn(3, 2, 3, 3), stride=2, output_padding=2)


# -- pooling ------------------------------------------------------------------------------
MAXPOOL = [
    dict(kernel_size=2),
    dict(kernel_size=3, stride=2, padding=1),
    dict(kernel_size=(3, 2), stride=(2, 3), padding=(1, 1), dilation=(2, 1), ceil_mode=True),
    dict(kernel_size=3, stride=2, ceil_mode=True),
]


@pytest.mark.parametrize("kw", MAXPOOL)
@pytest.mark.parametrize("shape", [(2, 3, 7, 8), (2, 6, 5)])
def test_max_pool2d(kw, shape):
    x = rand(*shape)
    check_vs_torch(lambda a: max_pool2d(a, return_indices=True, **kw), lambda a: F.max_pool2d(a, return_indices=True, **kw), [x])
    gradcheck(lambda a: max_pool2d(a, **kw), [x])


@pytest.mark.parametrize("kw", [k for k in MAXPOOL if "dilation" not in k] + [dict(kernel_size=(2, 3), stride=1, padding=1)])
@pytest.mark.parametrize("cip,div", [(True, None), (False, None), (True, 5)])
def test_avg_pool2d(kw, cip, div):
    x = rand(2, 3, 7, 8)
    f = lambda a: avg_pool2d(a, count_include_pad=cip, divisor_override=div, **kw)
    check_vs_torch(f, lambda a: F.avg_pool2d(a, count_include_pad=cip, divisor_override=div, **kw), [x])
    gradcheck(f, [x[:1, :2]])


@pytest.mark.parametrize(
    "kw", [dict(kernel_size=2), dict(kernel_size=3, stride=2, padding=1, ceil_mode=True), dict(kernel_size=2, stride=1)]
)
@pytest.mark.parametrize("shape", [(2, 3, 11), (3, 8)])
def test_pool1d(kw, shape):
    x = rand(*shape)
    check_vs_torch(lambda a: max_pool1d(a, return_indices=True, **kw), lambda a: F.max_pool1d(a, return_indices=True, **kw), [x])
    check_vs_torch(lambda a: max_pool1d(a, dilation=2, **kw), lambda a: F.max_pool1d(a, dilation=2, **kw), [x])
    check_vs_torch(
        lambda a: avg_pool1d(a, count_include_pad=False, **kw), lambda a: F.avg_pool1d(a, count_include_pad=False, **kw), [x]
    )
    gradcheck(lambda a: max_pool1d(a, **kw) + avg_pool1d(a, **kw), [x])


@pytest.mark.parametrize("size", [1, 3, (2, 5), (None, 4), (7, 9), (4, 2)])
def test_adaptive_pool2d(size):
    x = rand(2, 3, 7, 9)
    check_vs_torch(lambda a: adaptive_avg_pool2d(a, size), lambda a: F.adaptive_avg_pool2d(a, size), [x])
    check_vs_torch(lambda a: adaptive_max_pool2d(a, size, True), lambda a: F.adaptive_max_pool2d(a, size, True), [x])
    gradcheck(lambda a: adaptive_avg_pool2d(a, size) + adaptive_max_pool2d(a, size), [x[:1, :2]])


def test_adaptive_pool1d_unbatched():
    x = rand(3, 10)
    check_vs_torch(lambda a: adaptive_avg_pool1d(a, 4), lambda a: F.adaptive_avg_pool1d(a, 4), [x])
    check_vs_torch(lambda a: adaptive_max_pool1d(a, 4, True), lambda a: F.adaptive_max_pool1d(a, 4, True), [x])
    check_vs_torch(lambda a: adaptive_avg_pool2d(a, (2, 3)), lambda a: F.adaptive_avg_pool2d(a, (2, 3)), [rand(2, 5, 7)])
    gradcheck(lambda a: adaptive_avg_pool1d(a, 3) * adaptive_max_pool1d(a, 3), [x])


def test_pool_noncontiguous_and_bfloat16():
    x = rand(2, 3, 6, 7)
    f = lambda a: max_pool2d(a.transpose(2, 3), 2) + avg_pool2d(a.transpose(2, 3), 2)
    check_vs_torch(f, lambda a: F.max_pool2d(a.transpose(2, 3), 2) + F.avg_pool2d(a.transpose(2, 3), 2), [x])
    for fa, ft in [(max_pool2d, F.max_pool2d), (avg_pool2d, F.avg_pool2d)]:
        ya, yt = fa(ax.tensor(x).bfloat16(), 3, 2, 1), ft(torch.tensor(x).bfloat16(), 3, 2, 1)
        assert ya.dtype == ax.bfloat16
        np.testing.assert_allclose(as_np(ya), yt.float().numpy(), rtol=1e-2, atol=1e-2)


def test_pool_nan_propagates():
    x = np.ones((1, 1, 4, 4), np.float32)
    x[0, 0, 1, 1] = np.nan
    y = max_pool2d(ax.tensor(x), 2)
    assert np.isnan(y.numpy()[0, 0, 0, 0]) and not np.isnan(y.numpy()[0, 0, 1, 1])


def test_pool_errors():
    with pytest.raises(ValueError, match="at most half"):
        max_pool2d(ax.randn(1, 1, 5, 5), 3, padding=2)
    with pytest.raises(ShapeError, match="too small"):
        max_pool2d(ax.randn(1, 1, 2, 2), 3)
    with pytest.raises(DTypeError, match="int64"):
        avg_pool2d(ax.arange(16).reshape(1, 1, 4, 4), 2)
    with pytest.raises(ShapeError, match=r"3-D \(unbatched\) or 4-D"):
        max_pool2d(ax.randn(4, 4), 2)
