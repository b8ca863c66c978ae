"""Layers and functional names beyond the core set: transposed convolutions, instance
norm, the composite losses and distances of ``nn.functional``, against PyTorch (and a
float64 gradcheck for the composites)."""

from __future__ import annotations

import numpy as np
import pytest
import torch.nn.functional as TF
from helpers import check_vs_torch, gradcheck
from layer_oracle import compare, rnd

import axonml as ax
import axonml.nn.functional as F
from axonml import nn

torch = pytest.importorskip("torch")
tnn = torch.nn


def test_functional_names_are_torch_names():
    missing = [n for n in F.__all__ if not hasattr(TF, n)]
    assert missing == []
    for name in ("linear", "conv2d", "cross_entropy", "layer_norm", "batch_norm", "embedding", "pad", "dropout", "softmax",
                 "gelu", "max_pool2d", "scaled_dot_product_attention", "one_hot", "interpolate"):
        assert callable(getattr(F, name))


# -- transposed convolution ------------------------------------------------------------
@pytest.mark.parametrize(
    "kw", [dict(kernel_size=3), dict(kernel_size=3, stride=2, padding=1, output_padding=1),
           dict(kernel_size=(2, 3), stride=(2, 1), dilation=(1, 2), bias=False), dict(kernel_size=3, groups=2)]
)
def test_conv_transpose2d(kw):
    compare(nn.ConvTranspose2d(4, 6, **kw), tnn.ConvTranspose2d(4, 6, **kw), [rnd(2, 4, 5, 4)])


@pytest.mark.parametrize("kw", [dict(kernel_size=3), dict(kernel_size=4, stride=3, padding=1, output_padding=2)])
def test_conv_transpose1d(kw):
    compare(nn.ConvTranspose1d(2, 3, **kw), tnn.ConvTranspose1d(2, 3, **kw), [rnd(2, 2, 6)])


def test_conv_transpose_output_size():
    a, t = nn.ConvTranspose2d(3, 2, 3, stride=2, padding=1).double(), tnn.ConvTranspose2d(3, 2, 3, stride=2, padding=1).double()
    a.load_state_dict({k: v.detach().numpy() for k, v in t.state_dict().items()})
    x = rnd(1, 3, 4, 4)
    for size in [(7, 7), (8, 8), (1, 2, 8, 7)]:
        ya, yt = a(ax.tensor(x), output_size=size), t(torch.tensor(x), output_size=size)
        assert tuple(ya.shape) == tuple(yt.shape)
        np.testing.assert_allclose(ya.detach().numpy(), yt.detach().numpy(), rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match="valid sizes range from 7 to 8"):
        a(ax.tensor(x), output_size=(9, 9))
    with pytest.raises(ValueError, match='only "zeros" padding mode'):
        nn.ConvTranspose2d(3, 2, 3, padding_mode="reflect")
    with pytest.raises(ValueError, match="output_padding"):
        nn.ConvTranspose1d(3, 2, 3, stride=2, output_padding=2)
    assert tuple(nn.ConvTranspose2d(6, 4, 3, groups=2).weight.shape) == tuple(tnn.ConvTranspose2d(6, 4, 3, groups=2).weight.shape)


# -- instance norm ---------------------------------------------------------------------
@pytest.mark.parametrize("cls,tcls,shape", [(nn.InstanceNorm1d, tnn.InstanceNorm1d, (2, 3, 6)),
                                            (nn.InstanceNorm2d, tnn.InstanceNorm2d, (2, 3, 4, 5)),
                                            (nn.InstanceNorm2d, tnn.InstanceNorm2d, (3, 4, 5))])
@pytest.mark.parametrize("kwargs", [{}, {"affine": True}, {"track_running_stats": True}, {"affine": True, "momentum": 0.3}])
def test_instance_norm(cls, tcls, shape, kwargs):
    al, tl = cls(3, **kwargs), tcls(3, **kwargs)
    with torch.no_grad():
        for p in tl.parameters():
            p.normal_()
    compare(al, tl, [rnd(*shape) * 2 + 1], train=True)
    compare(al, tl, [rnd(*shape, seed=1)], train=False)


def test_instance_norm_errors():
    with pytest.raises(ValueError, match="expected 2D"):
        nn.InstanceNorm1d(3)(ax.zeros(2, 3, 4, 5))
    with pytest.raises(ValueError, match="match num_features"):
        nn.InstanceNorm2d(3, affine=True)(ax.zeros(2, 4, 3, 3))


# -- distances -------------------------------------------------------------------------
@pytest.mark.parametrize("p,dim", [(2.0, 1), (1.0, -1), (3.0, 0)])
def test_normalize(p, dim):
    arrays = [rnd(3, 4)]
    check_vs_torch(lambda x: F.normalize(x, p, dim), lambda x: TF.normalize(x, p, dim), arrays)
    gradcheck(lambda x: F.normalize(x, p, dim), arrays)


@pytest.mark.parametrize("s1,s2,dim", [((3, 4), (3, 4), 1), ((2, 3, 4), (1, 3, 4), -1), ((4,), (4,), 0)])
def test_cosine_similarity(s1, s2, dim):
    arrays = [rnd(*s1), rnd(*s2, seed=1)]
    check_vs_torch(lambda a, b: F.cosine_similarity(a, b, dim), lambda a, b: TF.cosine_similarity(a, b, dim), arrays)
    gradcheck(lambda a, b: F.cosine_similarity(a, b, dim), arrays)


@pytest.mark.parametrize("p,keepdim", [(2.0, False), (1.0, True), (3.0, False)])
def test_pairwise_distance(p, keepdim):
    arrays = [rnd(3, 4), rnd(3, 4, seed=1)]
    check_vs_torch(lambda a, b: F.pairwise_distance(a, b, p, keepdim=keepdim),
                   lambda a, b: TF.pairwise_distance(a, b, p, keepdim=keepdim), arrays)
    gradcheck(lambda a, b: F.pairwise_distance(a, b, p, keepdim=keepdim), arrays)


# -- composite losses --------------------------------------------------------------------
def _sign(*shape: int, seed: int = 0) -> np.ndarray:
    return np.where(np.random.default_rng(seed).random(shape) < 0.5, -1.0, 1.0)


EXTRA_LOSSES = [
    ("SoftMarginLoss", {}, lambda: [rnd(4, 3), _sign(4, 3)]),
    ("MarginRankingLoss", {"margin": 0.3}, lambda: [rnd(6), rnd(6, seed=1), _sign(6)]),
    ("HingeEmbeddingLoss", {"margin": 0.5}, lambda: [rnd(4, 3), _sign(4, 3)]),
    ("PoissonNLLLoss", {}, lambda: [rnd(4, 3), np.abs(rnd(4, 3, seed=1)) * 3]),
    ("PoissonNLLLoss", {"log_input": False, "full": True},
     lambda: [np.abs(rnd(4, 3)) + 0.1, np.round(np.abs(rnd(4, 3, seed=1)) * 3)]),
    ("TripletMarginLoss", {}, lambda: [rnd(5, 4), rnd(5, 4, seed=1), rnd(5, 4, seed=2)]),
    ("TripletMarginLoss", {"p": 1.0, "swap": True, "margin": 2.0}, lambda: [rnd(5, 4), rnd(5, 4, seed=1), rnd(5, 4, seed=2)]),
    ("MultiLabelSoftMarginLoss", {}, lambda: [rnd(4, 5), (rnd(4, 5, seed=1) > 0).astype(np.float64)]),
    ("CosineEmbeddingLoss", {"margin": 0.2}, lambda: [rnd(5, 4), rnd(5, 4, seed=1), _sign(5).astype(np.int64)]),
]


@pytest.mark.parametrize("name,kwargs,data", EXTRA_LOSSES)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_extra_loss(name, kwargs, data, reduction):
    # torch's fused soft_margin_loss refuses a target that requires grad
    grad_inputs = (0,) if name == "SoftMarginLoss" else None
    compare(getattr(nn, name)(reduction=reduction, **kwargs), getattr(tnn, name)(reduction=reduction, **kwargs), data(),
            grad_inputs=grad_inputs)


def test_multilabel_soft_margin_weight():
    w = np.abs(rnd(5, seed=3)) + 0.5
    compare(nn.MultiLabelSoftMarginLoss(weight=ax.tensor(w)), tnn.MultiLabelSoftMarginLoss(weight=torch.tensor(w)),
            [rnd(4, 5), (rnd(4, 5, seed=1) > 0).astype(np.float64)])


def test_composite_losses_gradcheck():
    x, y = rnd(3, 4), _sign(3, 4)
    gradcheck(lambda a: F.soft_margin_loss(a, ax.tensor(y)), [x])
    gradcheck(lambda a, b, c: F.triplet_margin_loss(a, b, c, swap=True), [rnd(3, 4), rnd(3, 4, seed=1), rnd(3, 4, seed=2)])
    gradcheck(lambda a: F.poisson_nll_loss(a, ax.tensor(np.abs(y) * 2), full=True), [x])


def test_composite_loss_errors():
    with pytest.raises(ValueError, match="'avg' is not a valid value for reduction"):
        F.soft_margin_loss(ax.zeros(3), ax.ones(3), reduction="avg")
    with pytest.raises(ValueError, match="same number of dims"):
        F.margin_ranking_loss(ax.zeros(3), ax.zeros(3), ax.zeros(1, 3))
    with pytest.raises(ValueError, match="margin must be greater than 0"):
        nn.TripletMarginLoss(margin=0.0)
