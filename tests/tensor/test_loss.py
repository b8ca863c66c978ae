"""Losses against PyTorch (values and gradients) and gradcheck: every reduction, class
weights, ignore_index, label smoothing, probability targets, 1-D and N-d inputs."""

import warnings

import numpy as np
import pytest
from helpers import check_vs_torch, gradcheck, rand, torch

import axonml as ax
from axonml.errors import DTypeError, ShapeError

F = torch.nn.functional

REDUCTIONS = ["mean", "sum", "none"]
# input shape -> class-index target shape
SHAPES = [((5,), ()), ((4, 5), (4,)), ((3, 4, 2), (3, 2)), ((2, 3, 2, 2), (2, 2, 2))]


def _targets(tshape, c, seed=0, ignore=True):
    t = np.random.default_rng(seed).integers(0, c, size=tshape).astype(np.int64)
    if ignore and t.size > 2:
        t.reshape(-1)[1] = -100
    return t


@pytest.mark.parametrize("xshape,tshape", SHAPES, ids=[str(s[0]) for s in SHAPES])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("smoothing", [0.0, 0.2])
def test_cross_entropy_class_indices(xshape, tshape, reduction, weighted, smoothing):
    c = xshape[0] if len(xshape) == 1 else xshape[1]
    x, t = rand(*xshape) * 2, _targets(tshape, c)
    kw = dict(reduction=reduction, label_smoothing=smoothing)
    if weighted:
        w = np.linspace(0.5, 2.0, c).astype(np.float32)
        fa = lambda x: ax.cross_entropy(x, ax.tensor(t), weight=ax.tensor(w), **kw)  # noqa: E731
        ft = lambda x: F.cross_entropy(x, torch.tensor(t), weight=torch.tensor(w), **kw)  # noqa: E731
        fa64 = lambda x: ax.cross_entropy(x, ax.tensor(t), weight=ax.tensor(w.astype(np.float64)), **kw)  # noqa: E731
    else:
        fa = fa64 = lambda x: ax.cross_entropy(x, ax.tensor(t), **kw)  # noqa: E731
        ft = lambda x: F.cross_entropy(x, torch.tensor(t), **kw)  # noqa: E731
    check_vs_torch(fa, ft, [x])
    gradcheck(fa64, [x])


@pytest.mark.parametrize("xshape,tshape", SHAPES, ids=[str(s[0]) for s in SHAPES])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("weighted", [False, True])
def test_nll_loss(xshape, tshape, reduction, weighted):
    c = xshape[0] if len(xshape) == 1 else xshape[1]
    x, t = rand(*xshape), _targets(tshape, c, seed=1)
    w = np.linspace(2.0, 0.5, c)
    wkw = (lambda m: dict(weight=m.tensor(w))) if weighted else (lambda m: {})
    fa = lambda x: ax.nll_loss(x, ax.tensor(t), reduction=reduction, **wkw(ax))  # noqa: E731
    ft = lambda x: F.nll_loss(x, torch.tensor(t), reduction=reduction, **{k: v.float() for k, v in wkw(torch).items()})  # noqa: E731
    check_vs_torch(fa, ft, [x])
    gradcheck(fa, [x])


@pytest.mark.parametrize("xshape", [(5,), (4, 5), (3, 4, 2)])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("weighted,smoothing", [(False, 0.0), (True, 0.0), (False, 0.3), (True, 0.1)])
def test_cross_entropy_probabilities(xshape, reduction, weighted, smoothing):
    c = xshape[0] if len(xshape) == 1 else xshape[1]
    x = rand(*xshape)
    y = np.random.default_rng(2).random(xshape).astype(np.float32)
    y = y / y.sum(axis=0 if len(xshape) == 1 else 1, keepdims=True)
    w = np.linspace(0.5, 2.0, c)
    kw = dict(reduction=reduction, label_smoothing=smoothing)
    fa = lambda x, y: ax.cross_entropy(x, y, weight=ax.tensor(w).to(x.dtype) if weighted else None, **kw)  # noqa: E731
    ft = lambda x, y: F.cross_entropy(x, y, weight=torch.tensor(w).to(x.dtype) if weighted else None, **kw)  # noqa: E731
    check_vs_torch(fa, ft, [x, y])  # gradients for input and target
    gradcheck(fa, [x, y])


def test_cross_entropy_noncontiguous_and_methods_of_use():
    x = rand(5, 4)  # used transposed: (4, 5) non-contiguous
    t = _targets((4,), 5)
    check_vs_torch(lambda x: ax.cross_entropy(x.t(), ax.tensor(t)), lambda x: F.cross_entropy(x.t(), torch.tensor(t)), [x])
    x3 = rand(2, 3, 4)  # (N, d, C) permuted to (N, C, d)
    t3 = _targets((2, 3), 4)
    check_vs_torch(
        lambda x: ax.cross_entropy(x.permute(0, 2, 1), ax.tensor(t3)),
        lambda x: F.cross_entropy(x.permute(0, 2, 1), torch.tensor(t3)),
        [x3],
    )
    # nll_loss after log_softmax equals cross_entropy
    a = ax.tensor(rand(4, 5))
    np.testing.assert_allclose(
        ax.nll_loss(ax.log_softmax(a, 1), ax.tensor(t)).item(), ax.cross_entropy(a, ax.tensor(t)).item(), rtol=1e-6
    )


def test_cross_entropy_all_ignored_and_empty():
    x = rand(3, 4)
    ign = np.full(3, -100)
    for red in REDUCTIONS:
        for fa, ft in [(ax.cross_entropy, F.cross_entropy), (ax.nll_loss, F.nll_loss)]:
            check_vs_torch(
                lambda x: fa(x, ax.tensor(ign), reduction=red), lambda x: ft(x, torch.tensor(ign), reduction=red), [x], grad=False
            )
        check_vs_torch(
            lambda x: ax.cross_entropy(x, ax.tensor(ign), reduction=red, label_smoothing=0.1),
            lambda x: F.cross_entropy(x, torch.tensor(ign), reduction=red, label_smoothing=0.1),
            [x],
            grad=False,
        )
        check_vs_torch(
            lambda x: ax.cross_entropy(x, ax.zeros(0, dtype=ax.int64), reduction=red),
            lambda x: F.cross_entropy(x, torch.zeros(0, dtype=torch.long), reduction=red),
            [rand(0, 4)],
            grad=False,
        )
    # a custom ignore_index, and ignored rows get no gradient
    t = np.array([1, 3, 0])
    check_vs_torch(
        lambda x: ax.cross_entropy(x, ax.tensor(t), ignore_index=3),
        lambda x: F.cross_entropy(x, torch.tensor(t), ignore_index=3),
        [x],
    )
    xa = ax.tensor(x, requires_grad=True)
    ax.cross_entropy(xa, ax.tensor(t), ignore_index=3).backward()
    assert np.all(xa.grad.numpy()[1] == 0)


def test_class_loss_errors():
    x = ax.randn(4, 3)
    with pytest.raises(IndexError, match="target 5 is out of bounds for 3 classes"):
        ax.cross_entropy(x, ax.tensor([0, 1, 5, 2]))
    with pytest.raises(IndexError, match="target -1 is out of bounds"):
        ax.nll_loss(x, ax.tensor([0, -1, 1, 2]))
    with pytest.raises(ShapeError, match=r"input batch_size \(4\).*target batch_size \(2\)"):
        ax.cross_entropy(x, ax.tensor([0, 1]))
    with pytest.raises(ShapeError, match=r"\(2, 3\) does not fit input of shape \(2, 3, 2\).*\(2, 2\)"):
        ax.cross_entropy(ax.randn(2, 3, 2), ax.zeros(2, 3, dtype=ax.int64))
    with pytest.raises(DTypeError, match=r"float32 target.*class probabilities.*\(4, 3\)"):
        ax.cross_entropy(x, ax.tensor([0.0, 1.0, 2.0, 1.0]))
    with pytest.raises(DTypeError, match="int64.*float32"):
        ax.nll_loss(x, ax.randn(4, 3))
    with pytest.raises(DTypeError, match="bool"):
        ax.cross_entropy(x, ax.tensor([True, False, True, False]))
    with pytest.raises(DTypeError, match="floating point input"):
        ax.cross_entropy(ax.tensor([[1, 2]]), ax.tensor([0]))
    with pytest.raises(ShapeError, match=r"one entry per class \(3\).*\(2,\)"):
        ax.cross_entropy(x, ax.tensor([0, 1, 2, 0]), weight=ax.ones(2))
    with pytest.raises(ValueError, match="reduction.*'avg'"):
        ax.cross_entropy(x, ax.tensor([0, 1, 2, 0]), reduction="avg")
    with pytest.raises(ValueError, match="label_smoothing.*1.5"):
        ax.cross_entropy(x, ax.tensor([0, 1, 2, 0]), label_smoothing=1.5)
    with pytest.raises(ShapeError, match="0-d"):
        ax.cross_entropy(ax.tensor(1.0), ax.tensor(0))


def test_int32_and_uint8_targets_accepted():
    x = rand(4, 3)
    t = np.array([0, 2, 1, 1])
    want = F.cross_entropy(torch.tensor(x), torch.tensor(t)).item()
    for dt in (np.int32, np.uint8):
        assert abs(ax.cross_entropy(ax.tensor(x), ax.tensor(t.astype(dt))).item() - want) < 1e-6


def test_class_loss_half_precision_and_autocast():
    x = rand(6, 5) * 3
    t = _targets((6,), 5)
    for dt in ("float16", "bfloat16"):
        xa = ax.tensor(x).to(dt).requires_grad_()
        xt = torch.tensor(x).to(getattr(torch, dt)).requires_grad_()
        la, lt = ax.cross_entropy(xa, ax.tensor(t)), F.cross_entropy(xt, torch.tensor(t))
        assert la.dtype.name == dt
        assert abs(la.float().item() - lt.float().item()) < 2e-2
        la.backward()
        lt.backward()
        assert xa.grad.dtype.name == dt
        np.testing.assert_allclose(xa.grad.float().numpy(), xt.grad.float().numpy(), atol=1e-2)
    with ax.autocast("cpu", dtype=ax.bfloat16):
        xa = ax.tensor(x).to("bfloat16").requires_grad_()
        loss = ax.cross_entropy(xa, ax.tensor(t))
        assert loss.dtype == ax.float32
        assert ax.nll_loss(xa, ax.tensor(t)).dtype == ax.float32
        assert ax.mse_loss(xa, xa.detach()).dtype == ax.float32
        assert ax.binary_cross_entropy_with_logits(xa, ax.ones(6, 5)).dtype == ax.float32
        loss.backward()
        assert xa.grad.dtype == ax.bfloat16


def test_legacy_size_average_reduce():
    x, t = rand(4, 3), np.array([0, 1, 2, 1])
    for sa, red in [(False, None), (None, False), (True, True)]:
        with pytest.warns(UserWarning, match="deprecated"):
            got = ax.cross_entropy(ax.tensor(x), ax.tensor(t), size_average=sa, reduce=red)
        with pytest.warns(UserWarning):
            want = F.cross_entropy(torch.tensor(x), torch.tensor(t), size_average=sa, reduce=red)
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-6)


# -- regression and binary losses ----------------------------------------------------------------------
PAIR = [
    ("mse", ax.mse_loss, F.mse_loss, {}),
    ("l1", ax.l1_loss, F.l1_loss, {}),
    ("smooth_l1", ax.smooth_l1_loss, F.smooth_l1_loss, {}),
    ("smooth_l1_b0.5", ax.smooth_l1_loss, F.smooth_l1_loss, {"beta": 0.5}),
    ("smooth_l1_b0", ax.smooth_l1_loss, F.smooth_l1_loss, {"beta": 0.0}),
    ("huber", ax.huber_loss, F.huber_loss, {}),
    ("huber_d0.3", ax.huber_loss, F.huber_loss, {"delta": 0.3}),
    ("bce_logits", ax.binary_cross_entropy_with_logits, F.binary_cross_entropy_with_logits, {}),
    ("kl_log_target", ax.kl_div, F.kl_div, {"log_target": True}),
]


@pytest.mark.filterwarnings("ignore:.*batchmean")
@pytest.mark.parametrize("name,fa,ft,kw", PAIR, ids=[p[0] for p in PAIR])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_pair_losses(name, fa, ft, kw, reduction):
    x, y = rand(3, 4) * 2, rand(3, 4, seed=5) * 2
    if name == "bce_logits":
        y = np.random.default_rng(1).random((3, 4)).astype(np.float32)
    f_a = lambda x, y: fa(x, y, reduction=reduction, **kw)  # noqa: E731
    f_t = lambda x, y: ft(x, y, reduction=reduction, **kw)  # noqa: E731
    check_vs_torch(f_a, f_t, [x, y])
    gradcheck(f_a, [x, y])
    check_vs_torch(lambda x, y: f_a(x.t(), y.t()), lambda x, y: f_t(x.t(), y.t()), [x, y])  # non-contiguous
    check_vs_torch(f_a, f_t, [rand(4), rand(4, seed=1)])  # 1-D
    check_vs_torch(f_a, f_t, [rand(0, 3), rand(0, 3, seed=1)], grad=False)


@pytest.mark.parametrize("reduction", REDUCTIONS + ["batchmean"])
@pytest.mark.parametrize("log_target", [False, True])
def test_kl_div(reduction, log_target):
    x = np.log(np.random.default_rng(0).dirichlet(np.ones(5), size=3)).astype(np.float32)
    y = np.random.default_rng(1).dirichlet(np.ones(5), size=3).astype(np.float32)
    if log_target:
        y = np.log(y)
    fa = lambda x, y: ax.kl_div(x, y, reduction=reduction, log_target=log_target)  # noqa: E731
    ft = lambda x, y: F.kl_div(x, y, reduction=reduction, log_target=log_target)  # noqa: E731
    if reduction == "mean":
        with pytest.warns(UserWarning, match="batchmean"):
            fa(ax.tensor(x), ax.tensor(y))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the 'mean' warning, from both libraries
        check_vs_torch(fa, ft, [x, y])
        gradcheck(fa, [x, y])


def test_kl_div_zero_target():
    x, y = np.log(np.full((2, 3), 1 / 3)), np.array([[0.0, 0.5, 0.5], [1.0, 0.0, 0.0]])
    check_vs_torch(
        lambda x: ax.kl_div(x, ax.tensor(y), reduction="sum"), lambda x: F.kl_div(x, torch.tensor(y), reduction="sum"), [x]
    )


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("wshape", [None, (3, 4), (4,), (3, 1)])
def test_binary_cross_entropy(reduction, wshape):
    x = 1 / (1 + np.exp(-rand(3, 4) * 2))
    y = np.random.default_rng(1).random((3, 4)).astype(np.float32)
    w = None if wshape is None else np.abs(rand(*wshape, seed=2)) + 0.1
    fa = lambda x, y: ax.binary_cross_entropy(x, y, weight=None if w is None else ax.tensor(w).to(x.dtype), reduction=reduction)  # noqa: E731
    ft = lambda x, y: F.binary_cross_entropy(x, y, weight=None if w is None else torch.tensor(w).to(x.dtype), reduction=reduction)  # noqa: E731
    check_vs_torch(fa, ft, [x, y])
    gradcheck(fa, [x, y])


def test_binary_cross_entropy_edges():
    x = np.array([0.0, 1.0, 0.5, 1e-30], dtype=np.float32)
    y = np.array([1.0, 0.0, 1.0, 0.0], dtype=np.float32)
    check_vs_torch(
        lambda x: ax.binary_cross_entropy(x, ax.tensor(y), reduction="none"),
        lambda x: F.binary_cross_entropy(x, torch.tensor(y), reduction="none"),
        [x],
    )
    with pytest.raises(ValueError, match="between 0 and 1"):
        ax.binary_cross_entropy(ax.tensor([1.5]), ax.tensor([1.0]))
    with pytest.raises(ShapeError, match=r"target size \(3,\) must be the same as input size \(3, 1\)"):
        ax.binary_cross_entropy(ax.rand(3, 1), ax.rand(3))


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("weighted,pos", [(True, False), (False, True), (True, True)])
def test_bce_with_logits_weights(reduction, weighted, pos):
    x, y = rand(3, 4) * 3, np.random.default_rng(1).random((3, 4)).astype(np.float32)
    w, pw = np.abs(rand(3, 1, seed=2)) + 0.1, np.abs(rand(4, seed=3)) * 3
    kw = lambda m: dict(weight=m.tensor(w) if weighted else None, pos_weight=m.tensor(pw) if pos else None)  # noqa: E731
    fa = lambda x, y: ax.binary_cross_entropy_with_logits(
        x, y, reduction=reduction, **{k: v if v is None else v.to(x.dtype) for k, v in kw(ax).items()}
    )  # noqa: E731
    ft = lambda x, y: F.binary_cross_entropy_with_logits(
        x, y, reduction=reduction, **{k: v if v is None else v.to(x.dtype) for k, v in kw(torch).items()}
    )  # noqa: E731
    check_vs_torch(fa, ft, [x, y])
    gradcheck(fa, [x, y])
    big = np.tile(np.array([[-200.0, 200.0, 0.0, 50.0]], dtype=np.float32), (3, 1))  # stays finite
    check_vs_torch(fa, ft, [big, np.tile(np.array([[1.0, 0.0, 0.5, 1.0]], dtype=np.float32), (3, 1))])


@pytest.mark.parametrize("name", ["mse_loss", "l1_loss", "huber_loss"])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_weighted_regression(name, reduction):
    x, y, w = rand(3, 4), rand(3, 4, seed=1), np.abs(rand(3, 4, seed=2))
    fa = lambda x, y, w: getattr(ax, name)(x, y, reduction=reduction, weight=w)  # noqa: E731
    ft = lambda x, y, w: getattr(F, name)(x, y, reduction=reduction, weight=w)  # noqa: E731
    check_vs_torch(fa, ft, [x, y, w])
    gradcheck(fa, [x, y, w])
    with pytest.raises(ShapeError, match=r"weight \(4,\) and input \(3, 4\)"):
        getattr(ax, name)(ax.tensor(x), ax.tensor(y), weight=ax.ones(4))


def test_regression_broadcast_warns_and_errors():
    x, y = rand(3, 4), rand(4, seed=1)
    with pytest.warns(UserWarning, match="target size"):
        check_vs_torch(lambda x, y: ax.mse_loss(x, y), lambda x, y: F.mse_loss(x, y), [x, y])
    with pytest.raises(ShapeError, match=r"\(5,\).*\(3, 4\)"):
        ax.l1_loss(ax.tensor(x), ax.randn(5))
    with pytest.raises(ValueError, match="beta must be >= 0"):
        ax.smooth_l1_loss(ax.tensor(x), ax.tensor(x), beta=-1.0)
    with pytest.raises(ValueError, match="reduction"):
        ax.mse_loss(ax.tensor(x), ax.tensor(x), reduction="mean_all")
    with pytest.raises(DTypeError, match="floating point input"):
        ax.mse_loss(ax.tensor([1, 2]), ax.tensor([1, 2]))
    check_vs_torch(
        lambda x: ax.mse_loss(x, ax.tensor([1, 2, 3])), lambda x: F.mse_loss(x, torch.tensor([1.0, 2.0, 3.0])), [rand(3)]
    )


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("margin", [0.0, 0.3])
def test_cosine_embedding_loss(reduction, margin):
    a, b = rand(5, 4), rand(5, 4, seed=1)
    y = np.array([1, -1, 1, -1, -1])
    fa = lambda a, b: ax.cosine_embedding_loss(a, b, ax.tensor(y), margin=margin, reduction=reduction)  # noqa: E731
    ft = lambda a, b: F.cosine_embedding_loss(a, b, torch.tensor(y), margin=margin, reduction=reduction)  # noqa: E731
    check_vs_torch(fa, ft, [a, b])
    gradcheck(fa, [a, b])
