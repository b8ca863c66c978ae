"""Every standard layer against PyTorch: the same structure, torch's weights copied in
through the state dict, then outputs, input gradients, parameter gradients and buffers
compared, in train and eval mode."""

from __future__ import annotations

import math

import numpy as np
import pytest
from helpers import as_np
from layer_oracle import compare, rnd, sync

import axonml as ax
from axonml import nn

torch = pytest.importorskip("torch")
tnn = torch.nn

# both libraries warn on KLDivLoss(reduction='mean') and torch on an even 'same' kernel
pytestmark = [
    pytest.mark.filterwarnings("ignore:.*batchmean.*:UserWarning"),
    pytest.mark.filterwarnings("ignore:Using padding='same':UserWarning"),
]


# -- linear family -------------------------------------------------------------------
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("shape", [(5, 4), (2, 3, 4), (4,), (0, 4)])
def test_linear(bias, shape):
    compare(nn.Linear(4, 3, bias=bias), tnn.Linear(4, 3, bias=bias), [rnd(*shape)])


def test_linear_noncontiguous_input_and_float32():
    compare(nn.Linear(4, 3), tnn.Linear(4, 3), [rnd(3, 4)], transpose=True)
    compare(nn.Linear(4, 3), tnn.Linear(4, 3), [rnd(2, 4)], double=False, atol=1e-5, rtol=1e-5)


def test_linear_default_init_and_seed():
    ax.manual_seed(0)
    a = nn.Linear(50, 20)
    ax.manual_seed(0)
    b = nn.Linear(50, 20)
    np.testing.assert_array_equal(a.weight.detach().numpy(), b.weight.detach().numpy())
    bound = 1 / math.sqrt(50)  # kaiming_uniform(a=sqrt(5)) gives 1/sqrt(fan_in), like the bias
    w = a.weight.detach().numpy()
    assert np.abs(w).max() <= bound and np.abs(w).max() > 0.95 * bound
    assert np.abs(a.bias.detach().numpy()).max() <= bound
    assert a.weight.dtype is ax.float32 and nn.Linear(2, 2, dtype=ax.float64).weight.dtype is ax.float64


def test_bilinear():
    compare(nn.Bilinear(3, 4, 2), tnn.Bilinear(3, 4, 2), [rnd(5, 3), rnd(5, 4)])
    compare(nn.Bilinear(3, 4, 2, bias=False), tnn.Bilinear(3, 4, 2, bias=False), [rnd(2, 5, 3), rnd(2, 5, 4)])


@pytest.mark.parametrize(
    "ax_layer,torch_layer,shape",
    [
        (nn.Identity(54, x=1), tnn.Identity(54, x=1), (2, 3)),
        (nn.Flatten(), tnn.Flatten(), (2, 3, 4, 5)),
        (nn.Flatten(0, 2), tnn.Flatten(0, 2), (2, 3, 4, 5)),
        (nn.Flatten(-2), tnn.Flatten(-2), (2, 3, 4)),
        (nn.Unflatten(1, (3, 4)), tnn.Unflatten(1, (3, 4)), (2, 12, 5)),
        (nn.Unflatten(-1, (2, -1)), tnn.Unflatten(-1, (2, -1)), (2, 12)),
    ],
)
def test_identity_flatten_unflatten(ax_layer, torch_layer, shape):
    compare(ax_layer, torch_layer, [rnd(*shape)])


def test_flatten_unflatten_errors():
    with pytest.raises(ValueError, match="does not match the size 12"):
        nn.Unflatten(1, (5, 2))(ax.zeros(2, 12))
    with pytest.raises(IndexError, match="dimension 4 out of range"):
        nn.Flatten(4)(ax.zeros(2, 3))


# -- embedding -----------------------------------------------------------------------
@pytest.mark.parametrize("padding_idx", [None, 0, -1])
def test_embedding(padding_idx):
    ids = np.array([[0, 2, 9], [9, 9, 1]])
    compare(nn.Embedding(10, 3, padding_idx=padding_idx), tnn.Embedding(10, 3, padding_idx=padding_idx), [ids])


def test_embedding_init_and_from_pretrained():
    ax.manual_seed(0)
    e = nn.Embedding(2000, 8, padding_idx=3)
    w = e.weight.detach().numpy()
    assert np.all(w[3] == 0) and abs(w.std() - 1) < 0.03 and abs(w.mean()) < 0.03
    pre = ax.randn(4, 3)
    fe = nn.Embedding.from_pretrained(pre)
    assert not fe.weight.requires_grad and fe.num_embeddings == 4 and fe.embedding_dim == 3
    np.testing.assert_array_equal(fe(ax.tensor([1, 3])).numpy(), pre.numpy()[[1, 3]])
    assert nn.Embedding.from_pretrained(pre, freeze=False).weight.requires_grad
    with pytest.raises(ValueError, match="padding_idx=10 must be within"):
        nn.Embedding(10, 3, padding_idx=10)
    with pytest.raises(ValueError, match="expects a 2-D Tensor"):
        nn.Embedding.from_pretrained(ax.zeros(3))
    with pytest.raises(NotImplementedError, match="dense gradients only"):
        nn.Embedding(3, 2, sparse=True)


def test_embedding_max_norm():
    te = tnn.Embedding(6, 4, max_norm=1.0).double()
    ae = nn.Embedding(6, 4, max_norm=1.0).double()
    sync(ae, te)
    ids = np.array([1, 4, 4])
    oa, ot = ae(ax.tensor(ids)), te(torch.tensor(ids))
    np.testing.assert_allclose(as_np(oa), as_np(ot), rtol=1e-7)
    np.testing.assert_allclose(as_np(ae.weight), as_np(te.weight), rtol=1e-7)  # renormalised in place


# -- normalisation -------------------------------------------------------------------
@pytest.mark.parametrize(
    "args,kwargs,shape",
    [((4,), {}, (3, 4)), ((4,), {}, (2, 3, 4)), (((3, 4),), {}, (2, 3, 4)), ((4,), {"elementwise_affine": False}, (2, 4)),
     ((4,), {"bias": False}, (2, 4)), ((4,), {"eps": 1e-3}, (2, 4))],
)
def test_layer_norm(args, kwargs, shape):
    al, tl = nn.LayerNorm(*args, **kwargs), tnn.LayerNorm(*args, **kwargs)
    with torch.no_grad():
        for p in tl.parameters():
            p.normal_()
    compare(al, tl, [rnd(*shape)])


@pytest.mark.parametrize("kwargs", [{}, {"eps": 1e-6}, {"elementwise_affine": False}])
@pytest.mark.parametrize("normalized_shape,shape", [(4, (3, 4)), ((2, 4), (3, 2, 4))])
def test_rms_norm(kwargs, normalized_shape, shape):
    al, tl = nn.RMSNorm(normalized_shape, **kwargs), tnn.RMSNorm(normalized_shape, **kwargs)
    with torch.no_grad():
        for p in tl.parameters():
            p.normal_()
    compare(al, tl, [rnd(*shape)])


@pytest.mark.parametrize("groups,channels,shape", [(2, 4, (3, 4, 5)), (1, 3, (2, 3, 2, 2)), (3, 3, (2, 3)), (2, 4, (2, 4, 3, 2))])
@pytest.mark.parametrize("affine", [True, False])
def test_group_norm(groups, channels, shape, affine):
    al, tl = nn.GroupNorm(groups, channels, affine=affine), tnn.GroupNorm(groups, channels, affine=affine)
    with torch.no_grad():
        for p in tl.parameters():
            p.normal_()
    compare(al, tl, [rnd(*shape)])


def test_group_norm_errors():
    with pytest.raises(ValueError, match=r"num_channels \(5\) must be divisible by num_groups \(2\)"):
        nn.GroupNorm(2, 5)


@pytest.mark.parametrize(
    "cls,tcls,shape",
    [(nn.BatchNorm1d, tnn.BatchNorm1d, (6, 3)), (nn.BatchNorm1d, tnn.BatchNorm1d, (4, 3, 5)),
     (nn.BatchNorm2d, tnn.BatchNorm2d, (2, 3, 4, 5))],
)
@pytest.mark.parametrize(
    "kwargs", [{}, {"momentum": None}, {"momentum": 0.3}, {"affine": False}, {"track_running_stats": False}, {"bias": False}]
)
def test_batch_norm_train_then_eval(cls, tcls, shape, kwargs):
    al, tl = cls(3, **kwargs), tcls(3, **kwargs)
    with torch.no_grad():
        for p in tl.parameters():
            p.normal_()
    # three training steps (running stats accumulate; compare() checks the buffers each time)
    for step in range(3):
        compare(al, tl, [rnd(*shape, seed=step) * (step + 1) + step], train=True)
        tl.zero_grad()
        al.zero_grad()
    if kwargs.get("track_running_stats", True):
        assert int(al.num_batches_tracked.item()) == 3
    compare(al, tl, [rnd(*shape, seed=5)], train=False)


def test_batch_norm_running_stats_accumulate_without_reload():
    """Several training steps in axonml alone give torch's running statistics."""
    for momentum in (0.1, None):
        al, tl = nn.BatchNorm1d(3, momentum=momentum).double(), tnn.BatchNorm1d(3, momentum=momentum).double()
        for step in range(4):
            x = rnd(5, 3, seed=step) * (step + 1)
            al(ax.tensor(x))
            tl(torch.tensor(x))
        for name, b in tl.named_buffers():
            np.testing.assert_allclose(as_np(dict(al.named_buffers())[name]), as_np(b), rtol=1e-10, err_msg=name)
        al.eval()
        tl.eval()
        x = rnd(2, 3, seed=9)
        np.testing.assert_allclose(as_np(al(ax.tensor(x))), as_np(tl(torch.tensor(x))), rtol=1e-10)


def test_batch_norm_errors():
    with pytest.raises(ValueError, match=r"expected 4D input \(got 3D input"):
        nn.BatchNorm2d(3)(ax.zeros(2, 3, 4))
    with pytest.raises(ValueError, match="expected 2D or 3D input"):
        nn.BatchNorm1d(3)(ax.zeros(2, 3, 4, 5))


# -- dropout -------------------------------------------------------------------------
@pytest.mark.parametrize("cls,tcls,shape", [(nn.Dropout, tnn.Dropout, (4, 5)), (nn.Dropout1d, tnn.Dropout1d, (2, 3, 4)),
                                            (nn.Dropout2d, tnn.Dropout2d, (2, 3, 4, 4))])
def test_dropout_p0_and_eval_are_identity(cls, tcls, shape):
    compare(cls(0.0), tcls(0.0), [rnd(*shape)], train=True)
    compare(cls(0.7), tcls(0.7), [rnd(*shape)], train=False)


def test_dropout_statistics_and_seed():
    p = 0.3
    d = nn.Dropout(p)
    x = ax.ones(200, 500, requires_grad=True)
    ax.manual_seed(0)
    y = d(x)
    out = y.detach().numpy()
    kept = out != 0
    assert abs(kept.mean() - (1 - p)) < 0.01
    np.testing.assert_allclose(out[kept], 1 / (1 - p), rtol=1e-6)
    y.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), out)  # gradient is the same mask and scale
    ax.manual_seed(0)
    np.testing.assert_array_equal(d(ax.ones(200, 500)).numpy(), out)


def test_dropout2d_zeroes_whole_channels():
    ax.manual_seed(1)
    y = nn.Dropout2d(0.5)(ax.ones(8, 16, 3, 3)).numpy()
    per_channel = y.reshape(8, 16, 9)
    assert np.all((per_channel == 0).all(-1) | (per_channel == 2.0).all(-1))
    assert 0.3 < (per_channel == 0).all(-1).mean() < 0.7


def test_dropout_errors():
    with pytest.raises(ValueError, match="between 0 and 1, but got 1.5"):
        nn.Dropout(1.5)


# -- convolution ---------------------------------------------------------------------
CONV2D_CASES = [
    dict(kernel_size=3),
    dict(kernel_size=3, stride=2, padding=1),
    dict(kernel_size=(2, 3), stride=(2, 1), padding=(1, 0), dilation=(1, 2)),
    dict(kernel_size=3, groups=2, bias=False),
    dict(kernel_size=1, groups=2),
    dict(kernel_size=3, padding="same"),
    dict(kernel_size=4, padding="same"),
    dict(kernel_size=(3, 2), padding="same", dilation=2),
    dict(kernel_size=3, padding="valid"),
    dict(kernel_size=3, padding=1, padding_mode="reflect"),
    dict(kernel_size=3, padding=(2, 1), padding_mode="replicate"),
    dict(kernel_size=3, padding=1, padding_mode="circular", stride=2),
    dict(kernel_size=4, padding="same", padding_mode="reflect"),
]


@pytest.mark.parametrize("kw", CONV2D_CASES)
def test_conv2d(kw):
    compare(nn.Conv2d(4, 6, **kw), tnn.Conv2d(4, 6, **kw), [rnd(2, 4, 7, 6)])


@pytest.mark.parametrize(
    "kw", [dict(kernel_size=3), dict(kernel_size=3, stride=2, padding=2, dilation=2), dict(kernel_size=2, padding="same"),
           dict(kernel_size=3, groups=2), dict(kernel_size=3, padding=2, padding_mode="circular"),
           dict(kernel_size=3, padding=1, padding_mode="reflect")]
)
def test_conv1d(kw):
    compare(nn.Conv1d(4, 2, **kw), tnn.Conv1d(4, 2, **kw), [rnd(3, 4, 9)])


def test_conv_unbatched_and_noncontiguous():
    compare(nn.Conv2d(2, 3, 3, padding=1), tnn.Conv2d(2, 3, 3, padding=1), [rnd(2, 5, 5)])
    compare(nn.Conv2d(2, 3, 3), tnn.Conv2d(2, 3, 3), [rnd(1, 2, 5, 6)], transpose=True)


def test_conv_init_matches_torch_bounds():
    ax.manual_seed(0)
    c = nn.Conv2d(8, 16, 3)
    bound = 1 / math.sqrt(8 * 9)
    w = c.weight.detach().numpy()
    assert w.shape == (16, 8, 3, 3) and np.abs(w).max() <= bound and np.abs(c.bias.detach().numpy()).max() <= bound


def test_conv_errors():
    with pytest.raises(ValueError, match=r"in_channels \(3\) must be divisible by groups \(2\)"):
        nn.Conv2d(3, 4, 3, groups=2)
    with pytest.raises(ValueError, match="invalid padding string 'full'"):
        nn.Conv2d(3, 4, 3, padding="full")
    with pytest.raises(ValueError, match="not supported for strided convolutions"):
        nn.Conv1d(3, 4, 3, padding="same", stride=2)
    with pytest.raises(ValueError, match="padding_mode must be one of"):
        nn.Conv2d(3, 4, 3, padding_mode="mirror")
    with pytest.raises(ValueError, match="kernel_size must be an int or a tuple of 2 ints"):
        nn.Conv2d(3, 4, (3, 3, 3))


# -- pooling -------------------------------------------------------------------------
@pytest.mark.parametrize(
    "ax_layer,torch_layer,shape",
    [
        (nn.MaxPool2d(2), tnn.MaxPool2d(2), (2, 3, 6, 6)),
        (nn.MaxPool2d(3, stride=2, padding=1), tnn.MaxPool2d(3, stride=2, padding=1), (1, 2, 7, 5)),
        (nn.MaxPool2d(2, ceil_mode=True), tnn.MaxPool2d(2, ceil_mode=True), (1, 2, 5, 5)),
        (nn.MaxPool2d((2, 3), dilation=(2, 1)), tnn.MaxPool2d((2, 3), dilation=(2, 1)), (1, 2, 7, 7)),
        (nn.MaxPool1d(3, stride=1, padding=1), tnn.MaxPool1d(3, stride=1, padding=1), (2, 3, 6)),
        (nn.MaxPool1d(2, ceil_mode=True), tnn.MaxPool1d(2, ceil_mode=True), (2, 3, 7)),
        (nn.AvgPool2d(2), tnn.AvgPool2d(2), (2, 3, 6, 6)),
        (nn.AvgPool2d(3, 2, 1, count_include_pad=False), tnn.AvgPool2d(3, 2, 1, count_include_pad=False), (1, 2, 7, 6)),
        (nn.AvgPool2d(3, 2, 1, ceil_mode=True), tnn.AvgPool2d(3, 2, 1, ceil_mode=True), (1, 2, 6, 6)),
        (nn.AvgPool2d(2, divisor_override=3), tnn.AvgPool2d(2, divisor_override=3), (1, 2, 4, 4)),
        (nn.AvgPool1d(3, 2, 1), tnn.AvgPool1d(3, 2, 1), (2, 3, 8)),
        (nn.AdaptiveAvgPool2d((2, 3)), tnn.AdaptiveAvgPool2d((2, 3)), (2, 3, 5, 7)),
        (nn.AdaptiveAvgPool2d(1), tnn.AdaptiveAvgPool2d(1), (2, 3, 4, 4)),
        (nn.AdaptiveAvgPool2d((None, 2)), tnn.AdaptiveAvgPool2d((None, 2)), (1, 3, 4, 5)),
        (nn.AdaptiveAvgPool1d(3), tnn.AdaptiveAvgPool1d(3), (2, 3, 7)),
        (nn.AdaptiveMaxPool2d((2, 2)), tnn.AdaptiveMaxPool2d((2, 2)), (2, 3, 5, 5)),
        (nn.AdaptiveMaxPool1d(2), tnn.AdaptiveMaxPool1d(2), (2, 3, 5)),
        (nn.MaxPool2d(2), tnn.MaxPool2d(2), (3, 4, 4)),  # unbatched
    ],
)
def test_pooling(ax_layer, torch_layer, shape):
    compare(ax_layer, torch_layer, [rnd(*shape)])


def test_max_pool_return_indices():
    compare(nn.MaxPool2d(2, return_indices=True), tnn.MaxPool2d(2, return_indices=True), [rnd(1, 2, 4, 6)])
    compare(nn.MaxPool1d(2, return_indices=True), tnn.MaxPool1d(2, return_indices=True), [rnd(1, 2, 6)])


# -- activations ---------------------------------------------------------------------
ACTIVATIONS = [
    ("ReLU", ()), ("ReLU6", ()), ("SiLU", ()), ("Mish", ()), ("SELU", ()), ("Hardswish", ()), ("Hardsigmoid", ()),
    ("Sigmoid", ()), ("Tanh", ()), ("LogSigmoid", ()), ("Softsign", ()), ("Tanhshrink", ()), ("GELU", ()), ("GELU", ("tanh",)),
    ("LeakyReLU", ()), ("LeakyReLU", (0.2,)), ("ELU", ()), ("ELU", (0.5,)), ("CELU", (0.7,)), ("Hardtanh", ()),
    ("Hardtanh", (-2.0, 0.5)), ("Threshold", (0.1, -3.0)), ("Softplus", ()), ("Softplus", (2.0, 1.0)), ("Hardshrink", ()),
    ("Softshrink", (0.3,)), ("GLU", ()), ("GLU", (1,)), ("Softmax", (1,)), ("Softmax", (-1,)), ("LogSoftmax", (1,)),
    ("Softmin", (0,)), ("PReLU", ()), ("PReLU", (4,)),
]


@pytest.mark.parametrize("name,args", ACTIVATIONS)
def test_activation(name, args):
    x = rnd(3, 4, 6)
    x[0, 0, :3] = [0.1, 0.3, 2.0]  # values near thresholds are where variants differ
    compare(getattr(nn, name)(*args), getattr(tnn, name)(*args), [x])


@pytest.mark.parametrize("name", ["ReLU", "ReLU6", "SiLU", "ELU", "Hardtanh", "LeakyReLU", "SELU", "Mish"])
def test_inplace_activation_on_intermediate(name):
    """inplace=True on a non-leaf gives the same values and gradients as torch."""
    xa, xt = ax.tensor(rnd(3, 4), requires_grad=True), torch.tensor(rnd(3, 4), requires_grad=True)
    ya = getattr(nn, name)(inplace=True)(xa * 1.5)
    yt = getattr(tnn, name)(inplace=True)(xt * 1.5)
    np.testing.assert_allclose(as_np(ya), as_np(yt), rtol=1e-12)
    (ya * ya).sum().backward()
    (yt * yt).sum().backward()
    np.testing.assert_allclose(as_np(xa.grad), as_np(xt.grad), rtol=1e-10)


def test_activation_errors():
    with pytest.raises(ValueError, match="approximate must be 'none' or 'tanh'"):
        nn.GELU("erf")
    with pytest.raises(ValueError, match="max_val"):
        nn.Hardtanh(1.0, -1.0)


# -- losses --------------------------------------------------------------------------
def _idx(*shape: int, high: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, high, shape)


def _probs(*shape: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).dirichlet(np.ones(shape[-1]), shape[:-1])


LOSS_CASES = [
    ("MSELoss", {}, lambda: [rnd(4, 3), rnd(4, 3, seed=1)]),
    ("L1Loss", {}, lambda: [rnd(4, 3), rnd(4, 3, seed=1)]),
    ("SmoothL1Loss", {}, lambda: [rnd(4, 3), rnd(4, 3, seed=1)]),
    ("SmoothL1Loss", {"beta": 0.5}, lambda: [rnd(4, 3), rnd(4, 3, seed=1)]),
    ("HuberLoss", {"delta": 0.7}, lambda: [rnd(4, 3), rnd(4, 3, seed=1)]),
    ("CrossEntropyLoss", {}, lambda: [rnd(5, 4), _idx(5, high=4)]),
    ("CrossEntropyLoss", {"label_smoothing": 0.1}, lambda: [rnd(5, 4), _idx(5, high=4)]),
    ("CrossEntropyLoss", {"ignore_index": 2}, lambda: [rnd(6, 4), np.array([2, 0, 2, 1, 3, 3])]),
    ("CrossEntropyLoss", {"weight": "w4"}, lambda: [rnd(5, 4), _idx(5, high=4)]),
    ("CrossEntropyLoss", {"weight": "w4", "label_smoothing": 0.2, "ignore_index": 1}, lambda: [rnd(2, 4, 3), _idx(2, 3, high=4)]),
    ("CrossEntropyLoss", {}, lambda: [rnd(3, 4), np.abs(rnd(3, 4, seed=2)) / np.abs(rnd(3, 4, seed=2)).sum(1, keepdims=True)]),
    ("NLLLoss", {}, lambda: [rnd(5, 4), _idx(5, high=4)]),
    ("NLLLoss", {"weight": "w4", "ignore_index": 0}, lambda: [rnd(2, 4, 3), _idx(2, 3, high=4)]),
    ("BCELoss", {}, lambda: [1 / (1 + np.exp(-rnd(4, 3))), np.random.default_rng(0).random((4, 3))]),
    ("BCELoss", {"weight": "w3"}, lambda: [1 / (1 + np.exp(-rnd(4, 3))), np.random.default_rng(0).random((4, 3))]),
    ("BCEWithLogitsLoss", {}, lambda: [rnd(4, 3) * 5, np.random.default_rng(0).random((4, 3))]),
    ("BCEWithLogitsLoss", {"weight": "w3", "pos_weight": "w3"}, lambda: [rnd(4, 3), np.random.default_rng(0).random((4, 3))]),
    ("KLDivLoss", {}, lambda: [np.log(_probs(3, 4, seed=0)), _probs(3, 4, seed=1)]),
    ("KLDivLoss", {"log_target": True}, lambda: [rnd(3, 4), rnd(3, 4, seed=3)]),
]


@pytest.mark.parametrize("name,kwargs,data", LOSS_CASES)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_loss(name, kwargs, data, reduction):
    ka, kt = {"reduction": reduction}, {"reduction": reduction}
    for k, v in kwargs.items():
        if isinstance(v, str) and v.startswith("w"):
            w = np.abs(rnd(int(v[1:]), seed=4)) + 0.5
            ka[k], kt[k] = ax.tensor(w), torch.tensor(w)
        else:
            ka[k] = kt[k] = v
    compare(getattr(nn, name)(**ka), getattr(tnn, name)(**kt), data())


def test_kl_div_batchmean():
    inp = np.log(np.random.default_rng(0).dirichlet(np.ones(4), 3))
    tgt = np.random.default_rng(1).dirichlet(np.ones(4), 3)
    compare(nn.KLDivLoss(reduction="batchmean"), tnn.KLDivLoss(reduction="batchmean"), [inp, tgt])


def test_loss_weight_is_a_buffer_and_legacy_args():
    w = ax.ones(4)
    loss = nn.CrossEntropyLoss(weight=w)
    assert list(loss.state_dict()) == list(tnn.CrossEntropyLoss(weight=torch.ones(4)).state_dict()) == ["weight"]
    bce = nn.BCEWithLogitsLoss(pos_weight=ax.ones(3))
    assert list(bce.state_dict()) == list(tnn.BCEWithLogitsLoss(pos_weight=torch.ones(3)).state_dict())
    with pytest.warns(UserWarning, match="reduction='sum'"):
        assert nn.MSELoss(size_average=False).reduction == "sum"
    with pytest.warns(UserWarning):
        assert nn.L1Loss(reduce=False).reduction == "none"
    with pytest.raises(ValueError, match="'avg' is not a valid value for reduction"):
        nn.MSELoss(reduction="avg")
    with pytest.raises(ValueError, match="label_smoothing must be between"):
        nn.CrossEntropyLoss(label_smoothing=1.5)


# -- a small model end to end --------------------------------------------------------
def test_small_cnn_end_to_end():
    def build(lib):
        return lib.Sequential(
            lib.Conv2d(1, 4, 3, padding=1), lib.BatchNorm2d(4), lib.ReLU(), lib.MaxPool2d(2),
            lib.Conv2d(4, 4, 3, padding="same", groups=2), lib.GELU(), lib.AdaptiveAvgPool2d(1), lib.Flatten(),
            lib.Dropout(0.0), lib.Linear(4, 3), lib.LayerNorm(3),
        )

    am, tm = build(nn), build(tnn)
    compare(am, tm, [rnd(2, 1, 6, 6)], train=True)
    compare(am, tm, [rnd(2, 1, 6, 6, seed=1)], train=False)
