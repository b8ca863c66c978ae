"""interpolate, pixel_shuffle/unshuffle and unfold/fold (spatial.py) against PyTorch and gradcheck."""

import numpy as np
import pytest
import torch.nn.functional as F
from helpers import as_np, check_vs_torch, gradcheck, rand, torch

import axonml as ax
from axonml.errors import ShapeError
from axonml.tensor.ops.spatial import fold, interpolate, pixel_shuffle, pixel_unshuffle, unfold

SIZES_2D = [
    dict(size=(5, 7)),
    dict(scale_factor=2),
    dict(scale_factor=(0.5, 1.7)),
    dict(size=3),
    dict(scale_factor=1.3, recompute_scale_factor=True),
    dict(size=1),
]


@pytest.mark.parametrize(
    "mode,ac", [("nearest", None), ("nearest-exact", None), ("area", None), ("bilinear", False), ("bilinear", True)]
)
@pytest.mark.parametrize("kw", SIZES_2D)
def test_interpolate_2d(mode, ac, kw):
    kw = dict(kw, mode=mode) if ac is None else dict(kw, mode=mode, align_corners=ac)
    check_vs_torch(lambda a: interpolate(a, **kw), lambda a: F.interpolate(a, **kw), [rand(2, 3, 6, 5)])


@pytest.mark.parametrize(
    "mode,ac", [("nearest", None), ("nearest-exact", None), ("area", None), ("linear", False), ("linear", True)]
)
@pytest.mark.parametrize("kw", [dict(size=9), dict(scale_factor=0.6), dict(scale_factor=2.5)])
def test_interpolate_1d(mode, ac, kw):
    kw = dict(kw, mode=mode) if ac is None else dict(kw, mode=mode, align_corners=ac)
    check_vs_torch(lambda a: interpolate(a, **kw), lambda a: F.interpolate(a, **kw), [rand(2, 3, 7)])


@pytest.mark.parametrize("n,o", [(5, 3), (7, 3), (10, 3), (17, 11), (33, 100)])
def test_interpolate_nearest_index_rounding(n, o):
    # the source index is floor(dst * scale) in float32, as PyTorch computes it
    check_vs_torch(lambda a: interpolate(a, size=o), lambda a: F.interpolate(a, size=o), [rand(1, 1, n)])
    check_vs_torch(lambda a: interpolate(a, scale_factor=o / n), lambda a: F.interpolate(a, scale_factor=o / n), [rand(1, 1, n)])


def test_interpolate_gradcheck_noncontiguous_bfloat16():
    gradcheck(lambda a: interpolate(a, scale_factor=1.5, mode="bilinear"), [rand(1, 2, 3, 4)])
    gradcheck(lambda a: interpolate(a, size=(5, 3), mode="bilinear", align_corners=True), [rand(1, 2, 3, 4)])
    gradcheck(lambda a: interpolate(a, size=(5, 3)) + interpolate(a, size=(5, 3), mode="area"), [rand(1, 2, 3, 4)])
    f = lambda a: interpolate(a.transpose(2, 3), size=(4, 6), mode="bilinear")
    check_vs_torch(f, lambda a: F.interpolate(a.transpose(2, 3), size=(4, 6), mode="bilinear"), [rand(1, 2, 3, 5)])
    x = rand(1, 2, 4, 4)
    ya = interpolate(ax.tensor(x).bfloat16(), scale_factor=2, mode="bilinear")
    yt = F.interpolate(torch.tensor(x).bfloat16(), scale_factor=2, mode="bilinear")
    assert ya.dtype == ax.bfloat16
    np.testing.assert_allclose(as_np(ya), yt.float().numpy(), rtol=2e-2, atol=2e-2)


def test_interpolate_errors():
    x = ax.randn(1, 2, 4, 4)
    with pytest.raises(ValueError, match="exactly one of size and scale_factor"):
        interpolate(x)
    with pytest.raises(ValueError, match="align_corners"):
        interpolate(x, size=3, align_corners=True)
    with pytest.raises(NotImplementedError, match="needs \\[3\\]-D input"):
        interpolate(x, size=3, mode="linear")
    with pytest.raises(NotImplementedError, match="bicubic"):
        interpolate(x, size=3, mode="bicubic")


# -- unfold / fold ----------------------------------------------------------------------------
BLOCKS = [dict(kernel_size=2), dict(kernel_size=(3, 2), dilation=(1, 2), padding=1, stride=(2, 1)), dict(kernel_size=3, stride=2)]


@pytest.mark.parametrize("kw", BLOCKS)
@pytest.mark.parametrize("shape", [(2, 3, 6, 7), (2, 5, 5)])
def test_unfold_fold(kw, shape):
    check_vs_torch(lambda a: unfold(a, **kw), lambda a: F.unfold(a, **kw), [rand(*shape)])
    gradcheck(lambda a: unfold(a, **kw), [rand(*shape)])
    cols = rand(*F.unfold(torch.zeros(shape), **kw).shape)
    check_vs_torch(lambda a: fold(a, shape[-2:], **kw), lambda a: F.fold(a, shape[-2:], **kw), [cols])
    gradcheck(lambda a: fold(a, shape[-2:], **kw), [cols])


def test_unfold_fold_errors():
    with pytest.raises(ShapeError, match="smaller than the kernel"):
        unfold(ax.randn(1, 1, 2, 2), 3)
    with pytest.raises(ShapeError, match=r"expected \(N, C\*4, 9\)"):
        fold(ax.randn(1, 8, 10), (4, 4), 2)


# -- pixel shuffle --------------------------------------------------------------------------
def test_pixel_shuffle_roundtrip():
    check_vs_torch(lambda a: pixel_shuffle(a, 2), lambda a: F.pixel_shuffle(a, 2), [rand(2, 8, 3, 2)])
    check_vs_torch(lambda a: pixel_unshuffle(a, 3), lambda a: F.pixel_unshuffle(a, 3), [rand(2, 6, 3)])
    gradcheck(lambda a: pixel_shuffle(a, 2), [rand(1, 4, 2, 3)])
    x = ax.randn(1, 2, 4, 6)
    np.testing.assert_array_equal(pixel_shuffle(pixel_unshuffle(x, 2), 2).numpy(), x.numpy())
    with pytest.raises(ShapeError, match="divisible by r\\*r"):
        pixel_shuffle(ax.randn(1, 3, 2, 2), 2)
