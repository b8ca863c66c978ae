"""Normalizations (norm.py), embedding and pad (nn_ops.py) against PyTorch and float64 gradcheck."""

import numpy as np
import pytest
import torch.nn.functional as F
from helpers import as_np, check_vs_torch, gradcheck, rand, torch

import axonml as ax
from axonml.errors import DTypeError, ShapeError
from axonml.tensor.ops.nn_ops import embedding, pad
from axonml.tensor.ops.norm import batch_norm, group_norm, instance_norm, layer_norm, rms_norm


# -- layer_norm / rms_norm ----------------------------------------------------------------
@pytest.mark.parametrize("shape,ns", [((2, 3, 4, 5), (4, 5)), ((3, 5), (5,)), ((4,), 4), ((2, 1, 1), (1,))])
@pytest.mark.parametrize("affine", [True, False])
def test_layer_norm(shape, ns, affine):
    nshape = (ns,) if isinstance(ns, int) else ns
    arrays = [rand(*shape)] + ([rand(*nshape, seed=1), rand(*nshape, seed=2)] if affine else [])
    f = lambda x, *wb: layer_norm(x, ns, *wb)
    check_vs_torch(f, lambda x, *wb: F.layer_norm(x, nshape, *wb), arrays)
    gradcheck(f, arrays)


def test_layer_norm_noncontiguous_weight_only():
    f = lambda x, w: layer_norm(x.transpose(0, 2), (3,), w, eps=1e-3)
    check_vs_torch(f, lambda x, w: F.layer_norm(x.transpose(0, 2), (3,), w, eps=1e-3), [rand(3, 4, 2), rand(3, seed=1)])


@pytest.mark.parametrize("eps", [None, 1e-3])
@pytest.mark.parametrize("shape,ns", [((2, 3, 5), (5,)), ((2, 3, 4), (3, 4))])
def test_rms_norm(shape, ns, eps):
    arrays = [rand(*shape), rand(*ns, seed=1)]
    check_vs_torch(lambda x, w: rms_norm(x, ns, w, eps), lambda x, w: F.rms_norm(x, ns, w, eps), arrays)
    check_vs_torch(
        lambda x: rms_norm(x.transpose(0, 1), shape[-1:], eps=eps),
        lambda x: F.rms_norm(x.transpose(0, 1), shape[-1:], eps=eps),
        arrays[:1],
    )
    gradcheck(lambda x, w: rms_norm(x, ns, w, eps), arrays)


# -- group_norm / instance_norm -------------------------------------------------------------
@pytest.mark.parametrize("shape,groups", [((2, 6, 3, 2), 3), ((2, 6, 3, 2), 1), ((3, 4, 5), 4), ((4, 6), 2), ((1, 2, 3), 2)])
def test_group_norm(shape, groups):
    c = shape[1]
    arrays = [rand(*shape), rand(c, seed=1), rand(c, seed=2)]
    f = lambda x, w, b: group_norm(x, groups, w, b)
    check_vs_torch(f, lambda x, w, b: F.group_norm(x, groups, w, b), arrays)
    check_vs_torch(lambda x: group_norm(x, groups), lambda x: F.group_norm(x, groups), arrays[:1])
    gradcheck(f, arrays)


def test_instance_norm_with_running_stats():
    x, w, b = rand(3, 4, 5, 2), rand(4, seed=1), rand(4, seed=2)
    rm, rv = rand(4, seed=3), np.abs(rand(4, seed=4)) + 0.5
    am, av, tm, tv = ax.tensor(rm.copy()), ax.tensor(rv.copy()), torch.tensor(rm.copy()), torch.tensor(rv.copy())
    for _ in range(2):
        check_vs_torch(
            lambda x, w, b: instance_norm(x, am, av, w, b, momentum=0.2),
            lambda x, w, b: F.instance_norm(x, tm, tv, w, b, momentum=0.2),
            [x, w, b],
        )
    np.testing.assert_allclose(am.numpy(), tm.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(av.numpy(), tv.numpy(), rtol=1e-5, atol=1e-6)
    f = lambda x, w, b: instance_norm(x, am, av, w, b, use_input_stats=False)
    check_vs_torch(f, lambda x, w, b: F.instance_norm(x, tm, tv, w, b, use_input_stats=False), [x, w, b])
    gradcheck(lambda x, w, b: instance_norm(x, weight=w, bias=b), [x, w, b])


# -- batch_norm ---------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(4, 3), (3, 3, 5), (2, 3, 4, 2)])
@pytest.mark.parametrize("training", [True, False])
def test_batch_norm_running_stats(shape, training):
    rm, rv = rand(3, seed=5), np.abs(rand(3, seed=6)) + 0.5
    am, av, tm, tv = ax.tensor(rm.copy()), ax.tensor(rv.copy()), torch.tensor(rm.copy()), torch.tensor(rv.copy())
    for step in range(3):  # the running statistics evolve the same over several calls
        arrays = [rand(*shape, seed=step), rand(3, seed=1), rand(3, seed=2)]
        check_vs_torch(
            lambda x, w, b: batch_norm(x, am, av, w, b, training=training, momentum=0.3),
            lambda x, w, b: F.batch_norm(x, tm, tv, w, b, training=training, momentum=0.3),
            arrays,
        )
        np.testing.assert_allclose(am.numpy(), tm.numpy(), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(av.numpy(), tv.numpy(), rtol=1e-5, atol=1e-6)
    assert am._version == (3 if training else 0)
    if training:
        assert not np.allclose(am.numpy(), rm)
    stats = (None, None) if training else (ax.tensor(rm).double(), ax.tensor(rv).double())
    gradcheck(lambda x, w, b: batch_norm(x, *stats, w, b, training=training), [rand(*shape), rand(3, seed=1), rand(3, seed=2)])


def test_batch_norm_without_affine_or_stats():
    x = rand(5, 3, 2)
    check_vs_torch(lambda a: batch_norm(a, None, None, training=True), lambda a: F.batch_norm(a, None, None, training=True), [x])
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        batch_norm(ax.randn(1, 3), None, None, training=True)
    with pytest.raises(ValueError, match="running_mean and running_var are required"):
        batch_norm(ax.randn(4, 3), None, None)


# -- low precision and autocast -------------------------------------------------------------
NORMS = [
    (lambda x: layer_norm(x, (6,), ax.ones(6), ax.zeros(6)), lambda x: F.layer_norm(x, (6,), torch.ones(6), torch.zeros(6))),
    (lambda x: rms_norm(x, (6,)), lambda x: F.rms_norm(x, (6,))),
    (lambda x: group_norm(x, 3), lambda x: F.group_norm(x, 3)),
    (
        lambda x: batch_norm(x, ax.zeros(3), ax.ones(3), training=True),
        lambda x: F.batch_norm(x, torch.zeros(3), torch.ones(3), training=True),
    ),
]


@pytest.mark.parametrize("i", range(len(NORMS)))
@pytest.mark.parametrize("autocast", [False, True])
def test_norms_bfloat16_and_cpu_autocast(i, autocast):
    # PyTorch's CPU autocast leaves these norms in the input dtype (computing in float32)
    fa, ft = NORMS[i]
    x = rand(2, 3, 6, 6)
    for dt_ax, dt_t in [(ax.bfloat16, torch.bfloat16), (ax.float32, torch.float32)]:
        with ax.autocast("cpu", enabled=autocast):
            ya = fa(ax.tensor(x).to(dt_ax))
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            yt = ft(torch.tensor(x).to(dt_t))
        assert str(ya.dtype).split(".")[-1] == str(yt.dtype).split(".")[-1]
        np.testing.assert_allclose(as_np(ya), yt.float().numpy(), rtol=1e-2, atol=1e-2)


def test_rms_norm_default_eps_is_that_of_the_compute_dtype():
    x = np.full((1, 4), 1e-4, np.float32)  # mean(x^2) = 1e-8, comparable to float32's eps
    for dt_ax, dt_t in [(ax.bfloat16, torch.bfloat16), (ax.float32, torch.float32), (ax.float64, torch.float64)]:
        ya, yt = rms_norm(ax.tensor(x).to(dt_ax), (4,)), F.rms_norm(torch.tensor(x).to(dt_t), (4,))
        np.testing.assert_allclose(as_np(ya), yt.double().numpy(), rtol=1e-2)


def test_norm_errors():
    with pytest.raises(ShapeError, match=r"normalized_shape=\[4\].*\[\*, 4\].*\(2, 3\)"):
        layer_norm(ax.randn(2, 3), (4,))
    with pytest.raises(ShapeError, match=r"weight of shape \(3,\), got \(4,\)"):
        layer_norm(ax.randn(2, 3), (3,), ax.ones(4))
    with pytest.raises(DTypeError, match="float64"):
        layer_norm(ax.randn(2, 3), (3,), ax.ones(3).double())
    with pytest.raises(ShapeError, match="divisible by num_groups=4"):
        group_norm(ax.randn(2, 6, 3), 4)
    with pytest.raises(DTypeError, match="floating point"):
        batch_norm(ax.arange(6).reshape(2, 3), ax.zeros(3), ax.ones(3))
    with pytest.raises(ValueError, match="more than 1 spatial element"):
        instance_norm(ax.randn(2, 3, 1))


# -- embedding ------------------------------------------------------------------------------
IDX = np.array([[1, 2, 1], [6, 0, 1]])


@pytest.mark.parametrize(
    "kw",
    [{}, dict(padding_idx=1), dict(padding_idx=-1), dict(scale_grad_by_freq=True), dict(scale_grad_by_freq=True, padding_idx=0)],
)
def test_embedding(kw):
    w = rand(7, 3)
    check_vs_torch(lambda w: embedding(ax.tensor(IDX), w, **kw), lambda w: F.embedding(torch.tensor(IDX), w, **kw), [w])
    if not kw:  # padding_idx and scale_grad_by_freq deliberately alter the true gradient
        gradcheck(lambda w: embedding(ax.tensor(IDX), w), [w])


def test_embedding_repeated_indices_int32_and_shapes():
    w = rand(5, 2)
    for idx in [np.array([3, 3, 3, 0], np.int32), np.array(4), np.zeros((2, 0), np.int64)]:
        check_vs_torch(lambda w: embedding(ax.tensor(idx), w), lambda w: F.embedding(torch.tensor(idx), w), [w])


def test_embedding_max_norm_renormalizes_in_place():
    w = rand(7, 4) * 3
    aw, tw = ax.tensor(w.copy()), torch.tensor(w.copy())
    ya = embedding(ax.tensor(IDX[:, :2]), aw, max_norm=1.5, norm_type=1.0)
    yt = F.embedding(torch.tensor(IDX[:, :2]), tw, max_norm=1.5, norm_type=1.0)
    np.testing.assert_allclose(ya.numpy(), yt.numpy(), rtol=1e-5)
    np.testing.assert_allclose(aw.numpy(), tw.numpy(), rtol=1e-5)
    assert aw._version == 1


def test_embedding_errors():
    w = ax.randn(5, 2)
    with pytest.raises(IndexError, match=r"index 7 is out of range for 5 embeddings"):
        embedding(ax.tensor([1, 7]), w)
    with pytest.raises(IndexError, match=r"index -1 .*5 embeddings"):
        embedding(ax.tensor([-1, 2]), w)
    with pytest.raises(DTypeError, match="float32"):
        embedding(ax.tensor([1.0]), w)
    with pytest.raises(ValueError, match="padding_idx=5"):
        embedding(ax.tensor([1]), w, padding_idx=5)
    with pytest.raises(NotImplementedError, match="sparse"):
        embedding(ax.tensor([1]), w, sparse=True)


# -- pad ------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["constant", "reflect", "replicate", "circular"])
@pytest.mark.parametrize(
    "shape,p",
    [
        ((3, 5), (1, 2)),
        ((2, 3, 4, 5), (1, 2, 3, 1)),
        ((2, 4, 5), (0, 3, -1, 2)),
        ((1, 4, 5), (-1, -2, 0, 1)),
        ((1, 1, 3, 3, 4), (1, 1, 2, 0, 1, 2)),
    ],
)
def test_pad_modes(mode, shape, p):
    f = lambda x: pad(x, p, mode=mode)
    check_vs_torch(f, lambda x: F.pad(x, p, mode=mode), [rand(*shape)])
    gradcheck(f, [rand(*shape)])


def test_pad_constant_value_noncontiguous_and_int():
    x = rand(2, 3, 4)
    f = lambda a: pad(a.transpose(0, 2), (1, 2, 0, 0, 1, 1), value=2.5)
    check_vs_torch(f, lambda a: F.pad(a.transpose(0, 2), (1, 2, 0, 0, 1, 1), value=2.5), [x])
    check_vs_torch(lambda a: pad(a, (2, -3)), lambda a: F.pad(a, (2, -3)), [x])
    ai = np.arange(6).reshape(2, 3)
    np.testing.assert_array_equal(pad(ax.tensor(ai), (1, 1), value=7).numpy(), F.pad(torch.tensor(ai), (1, 1), value=7).numpy())


def test_pad_autocast_reflect_in_float32():
    x = rand(1, 2, 4, 4)
    for mode in ["constant", "reflect", "replicate", "circular"]:
        with ax.autocast("cpu"):
            ya = pad(ax.tensor(x).bfloat16(), (1, 1, 1, 1), mode=mode)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            yt = F.pad(torch.tensor(x).bfloat16(), (1, 1, 1, 1), mode=mode)
        assert str(ya.dtype).split(".")[-1] == str(yt.dtype).split(".")[-1], mode
        np.testing.assert_array_equal(as_np(ya), yt.float().numpy())


def test_pad_errors():
    with pytest.raises(ShapeError, match=r"reflect padding \(3, 0\) must be smaller than the size 3"):
        pad(ax.randn(2, 3), (3, 0), mode="reflect")
    with pytest.raises(ShapeError, match="more than once"):
        pad(ax.randn(2, 3), (4, 0), mode="circular")
    with pytest.raises(ValueError, match="even length"):
        pad(ax.randn(2, 3), (1, 1, 1))
    with pytest.raises(NotImplementedError, match="2-D or 3-D input"):
        pad(ax.randn(2, 3, 4, 5, 6), (1, 1), mode="replicate")
    with pytest.raises(ValueError, match="mode"):
        pad(ax.randn(3), (1, 1), mode="edge")
    with pytest.raises(ShapeError, match="leaves no elements"):
        pad(ax.randn(2, 3), (-2, -2))
