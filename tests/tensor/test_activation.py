"""Activations, softmax family, GLU/PReLU and the dropout family against PyTorch and gradcheck."""

import math

import numpy as np
import pytest
from helpers import check_vs_torch, gradcheck, rand, torch

import axonml as ax
from axonml.errors import AutogradError, DTypeError, ShapeError
from axonml.tensor.ops.activation import erf_array

F = torch.nn.functional

# (name, axonml function, torch function); both take the input only
UNARY = [
    ("relu", ax.relu, F.relu),
    ("relu6", lambda x: ax.relu6(x * 4), lambda x: F.relu6(x * 4)),
    ("leaky_relu", lambda x: ax.leaky_relu(x, 0.2), lambda x: F.leaky_relu(x, 0.2)),
    ("elu", lambda x: ax.elu(x, 0.7), lambda x: F.elu(x, 0.7)),
    ("selu", ax.selu, F.selu),
    ("celu", lambda x: ax.celu(x, 1.5), lambda x: F.celu(x, 1.5)),
    ("gelu", ax.gelu, F.gelu),
    ("gelu_tanh", lambda x: ax.gelu(x, approximate="tanh"), lambda x: F.gelu(x, approximate="tanh")),
    ("silu", ax.silu, F.silu),
    ("mish", ax.mish, F.mish),
    ("softplus", ax.softplus, F.softplus),
    (
        "softplus_beta",
        lambda x: ax.softplus(x * 10, beta=2.0, threshold=5.0),
        lambda x: F.softplus(x * 10, beta=2.0, threshold=5.0),
    ),
    ("softsign", ax.softsign, F.softsign),
    ("hardtanh", lambda x: ax.hardtanh(x, -0.5, 0.8), lambda x: F.hardtanh(x, -0.5, 0.8)),
    ("hardsigmoid", lambda x: ax.hardsigmoid(x * 3), lambda x: F.hardsigmoid(x * 3)),
    ("hardswish", lambda x: ax.hardswish(x * 3), lambda x: F.hardswish(x * 3)),
    ("logsigmoid", lambda x: ax.logsigmoid(x * 10), lambda x: F.logsigmoid(x * 10)),
    ("threshold", lambda x: ax.threshold(x, 0.3, -2.0), lambda x: F.threshold(x, 0.3, -2.0)),
    ("hardshrink", lambda x: ax.hardshrink(x, 0.4), lambda x: F.hardshrink(x, 0.4)),
    ("softshrink", lambda x: ax.softshrink(x, 0.4), lambda x: F.softshrink(x, 0.4)),
    ("tanhshrink", ax.tanhshrink, F.tanhshrink),
    ("rrelu_eval", ax.rrelu, F.rrelu),
]
IDS = [u[0] for u in UNARY]


@pytest.mark.parametrize("name,fa,ft", UNARY, ids=IDS)
def test_unary_vs_torch_and_gradcheck(name, fa, ft):
    a = rand(3, 5) * 2
    check_vs_torch(fa, ft, [a])
    check_vs_torch(fa, ft, [a.astype(np.float64)], atol=1e-9, rtol=1e-7)  # torch uses some float32 constants
    check_vs_torch(lambda x: fa(x.t()), lambda x: ft(x.t()), [a])  # non-contiguous input
    check_vs_torch(fa, ft, [rand(2, 0, 3)])  # size 0
    check_vs_torch(fa, ft, [np.array(0.7, dtype=np.float32)])  # 0-d
    gradcheck(fa, [a])


@pytest.mark.parametrize("name,fa,ft", UNARY, ids=IDS)
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_unary_half_precision(name, fa, ft, dtype):
    a = rand(4, 6) * 3
    xa = ax.tensor(a).to(dtype).requires_grad_()
    xt = torch.tensor(a).to(getattr(torch, dtype)).requires_grad_()
    ya, yt = fa(xa), ft(xt)
    assert ya.dtype.name == dtype
    np.testing.assert_allclose(ya.float().detach().numpy(), yt.float().detach().numpy(), atol=2e-2, rtol=2e-2)
    ya.sum().backward()
    yt.sum().backward()
    assert xa.grad.dtype.name == dtype
    np.testing.assert_allclose(xa.grad.float().numpy(), xt.grad.float().numpy(), atol=3e-2, rtol=3e-2)


def test_extreme_values_stay_finite():
    a = np.array([-1e4, -100.0, -30.0, 0.0, 30.0, 100.0, 1e4], dtype=np.float32)
    for fa, ft in [
        (ax.silu, F.silu),
        (ax.softplus, F.softplus),
        (ax.logsigmoid, F.logsigmoid),
        (ax.mish, F.mish),
        (ax.elu, F.elu),
        (ax.gelu, F.gelu),
    ]:
        with np.errstate(over="raise", invalid="raise", divide="raise"):  # the stable forms never overflow
            check_vs_torch(fa, ft, [a])


def test_erf_accuracy():
    xs = np.concatenate([np.linspace(-7, 7, 20001), np.geomspace(1e-30, 1, 200), [0.0, -0.0]])
    ref = np.array([math.erf(v) for v in xs])
    got64 = erf_array(np, xs)
    assert np.abs(got64 - ref).max() <= 3e-16
    nz = ref != 0
    assert (np.abs(got64 - ref)[nz] / np.abs(ref[nz])).max() < 2e-15
    got32 = erf_array(np, xs.astype(np.float32))
    assert got32.dtype == np.float32
    assert np.abs(got32 - ref).max() < 1.5e-7
    special = erf_array(np, np.array([np.nan, np.inf, -np.inf, 1e300]))
    assert np.isnan(special[0]) and list(special[1:]) == [1.0, -1.0, 1.0]


def test_integer_inputs():
    a = np.array([-3, -1, 0, 2, 9], dtype=np.int64)
    for fa, ft in [
        (ax.relu, F.relu),
        (ax.relu6, F.relu6),
        (ax.hardtanh, F.hardtanh),
        (lambda x: ax.threshold(x, 1, 5), lambda x: F.threshold(x, 1, 5)),
    ]:
        check_vs_torch(fa, ft, [a])
    with pytest.raises(DTypeError, match="gelu.*int64"):
        ax.gelu(ax.tensor(a))


def test_inplace_variants():
    a = rand(3, 4)
    for name in ["relu", "elu", "leaky_relu", "hardtanh", "selu", "celu", "rrelu"]:
        x = ax.tensor(a)
        y = getattr(ax, name + "_")(x)
        assert y is x
        np.testing.assert_allclose(x.numpy(), getattr(F, name)(torch.tensor(a)).numpy(), rtol=1e-6, atol=1e-6)
    x = ax.tensor(a)
    assert ax.silu(x, inplace=True) is x and x.relu_() is x
    x = ax.tensor(a)
    ax.threshold_(x, 0.0, 1.0)
    np.testing.assert_allclose(x.numpy(), np.where(a > 0, a, 1.0))
    leaf = ax.tensor(a, requires_grad=True)
    with pytest.raises(AutogradError, match="leaf"):
        ax.relu(leaf, inplace=True)
    # in place on a non-leaf keeps the graph
    x = ax.tensor(a, requires_grad=True)
    xt = torch.tensor(a, requires_grad=True)
    (ax.relu_(x * 2) * 3).sum().backward()
    (F.relu(xt * 2, inplace=True) * 3).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), xt.grad.numpy())


def test_methods():
    a = rand(3, 4)
    check_vs_torch(
        lambda x: x.relu() + x.softmax(-1) + x.log_softmax(dim=0) + x.hardshrink(0.3),
        lambda x: x.relu() + x.softmax(-1) + x.log_softmax(dim=0) + x.hardshrink(0.3),
        [a],
    )
    check_vs_torch(lambda x: x.softmax(1, dtype=ax.float64), lambda x: x.softmax(1, dtype=torch.float64), [a])


def test_activation_errors():
    x = ax.randn(3, 4)
    with pytest.raises(ValueError, match="approximate.*'fast'"):
        ax.gelu(x, approximate="fast")
    with pytest.raises(ValueError, match="lambd.*-1"):
        ax.softshrink(x, -1.0)
    with pytest.raises(ValueError, match="min_val"):
        ax.hardtanh(x, 1.0, -1.0)
    with pytest.raises(TypeError, match="relu"):
        ax.relu(np.ones(3))


# -- softmax family --------------------------------------------------------------------------------
SOFTMAXES = [(ax.softmax, F.softmax), (ax.log_softmax, F.log_softmax), (ax.softmin, F.softmin)]


@pytest.mark.parametrize("fa,ft", SOFTMAXES, ids=["softmax", "log_softmax", "softmin"])
@pytest.mark.parametrize("shape", [(2, 3, 4), (2, 1, 3), (5,), (1,)])
def test_softmax_every_dim(fa, ft, shape):
    a = rand(*shape) * 3
    for dim in range(-len(shape), len(shape)):
        check_vs_torch(lambda x, d=dim: fa(x, d), lambda x, d=dim: ft(x, d), [a])
        gradcheck(lambda x, d=dim: fa(x, d), [a])


@pytest.mark.parametrize("fa,ft", SOFTMAXES, ids=["softmax", "log_softmax", "softmin"])
def test_softmax_edge_shapes(fa, ft):
    for dim in range(3):
        check_vs_torch(lambda x, d=dim: fa(x, d), lambda x, d=dim: ft(x, d), [rand(2, 0, 3)])
    check_vs_torch(lambda x: fa(x, 0), lambda x: ft(x, 0), [np.array(1.5, dtype=np.float32)])
    check_vs_torch(lambda x: fa(x, -1), lambda x: ft(x, -1), [np.array(1.5, dtype=np.float32)])
    a = rand(4, 3)
    check_vs_torch(lambda x: fa(x.t(), 1), lambda x: ft(x.t(), 1), [a])  # non-contiguous
    gradcheck(lambda x: fa(x.t(), 0), [a])


def test_softmax_stability_and_masking():
    a = np.array([[1000.0, 1001.0, 999.0], [-1000.0, -1002.0, -1001.0]], dtype=np.float32)
    check_vs_torch(lambda x: ax.softmax(x, -1), lambda x: F.softmax(x, -1), [a])
    check_vs_torch(lambda x: ax.log_softmax(x, -1), lambda x: F.log_softmax(x, -1), [a])
    m = np.array([[0.0, -np.inf, 0.5], [-np.inf, 1.0, -np.inf]], dtype=np.float32)  # attention masks
    check_vs_torch(lambda x: ax.softmax(x, -1), lambda x: F.softmax(x, -1), [m])


def test_softmax_dtype_argument_and_ints():
    a = np.array([1, -2, 3])
    check_vs_torch(lambda x: ax.softmax(x, 0, dtype=ax.float64), lambda x: F.softmax(x, 0, dtype=torch.float64), [a])
    with pytest.raises(DTypeError, match="softmax.*int64"):
        ax.softmax(ax.tensor(a), 0)
    with pytest.raises(IndexError, match="dimension 2 out of range"):
        ax.softmax(ax.randn(2, 3), 2)
    with pytest.warns(UserWarning, match="Implicit dimension"):
        y = ax.softmax(ax.randn(2, 3))
    np.testing.assert_allclose(y.sum(1).numpy(), 1, rtol=1e-6)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_softmax_half_and_autocast(dtype):
    a = rand(3, 7) * 4
    for fa, ft in SOFTMAXES:
        ya = fa(ax.tensor(a).to(dtype), -1)
        yt = ft(torch.tensor(a).to(getattr(torch, dtype)), -1)
        assert ya.dtype.name == dtype
        np.testing.assert_allclose(ya.float().numpy(), yt.float().numpy(), atol=2e-2, rtol=1e-2)
    with ax.autocast("cpu", dtype=ax.bfloat16), torch.autocast("cpu", dtype=torch.bfloat16):
        for indt in ("float32", "bfloat16"):
            for fa, ft in SOFTMAXES:
                got = fa(ax.tensor(a).to(indt), -1).dtype.name
                want = str(ft(torch.tensor(a).to(getattr(torch, indt)), -1).dtype).split(".")[-1]
                assert got == want


# -- GLU, PReLU ------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape,dim", [((4, 6), -1), ((4, 6), 0), ((2, 4, 3), 1), ((6,), 0), ((2, 0, 4), 2)])
def test_glu(shape, dim):
    a = rand(*shape)
    check_vs_torch(lambda x: ax.glu(x, dim), lambda x: F.glu(x, dim), [a])
    if a.size:
        gradcheck(lambda x: ax.glu(x, dim), [a])


def test_glu_errors():
    with pytest.raises(ShapeError, match="even.*size 3"):
        ax.glu(ax.randn(2, 3), 1)
    with pytest.raises(ShapeError, match="0-d"):
        ax.glu(ax.tensor(1.0))


@pytest.mark.parametrize("shape,nw", [((4, 3), 3), ((4, 3), 1), ((2, 3, 5), 3), ((2, 3, 2, 2), 3), ((5,), 1), ((), 1)])
def test_prelu(shape, nw):
    a, w = rand(*shape), np.abs(rand(nw, seed=4)) * 0.5
    check_vs_torch(ax.prelu, F.prelu, [a, w])
    gradcheck(ax.prelu, [a, w])
    check_vs_torch(lambda x, w: x.prelu(w), lambda x, w: x.prelu(w), [a, w])


def test_prelu_errors_and_autocast():
    with pytest.raises(ShapeError, match="weight has 2 elements.*3 channel"):
        ax.prelu(ax.randn(4, 3), ax.ones(2))
    with ax.autocast("cpu", dtype=ax.bfloat16):
        assert ax.prelu(ax.randn(4, 3), ax.ones(3)).dtype == ax.bfloat16


# -- second order ------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["relu", "leaky_relu", "hardtanh", "dropout"])
def test_second_order_piecewise_linear(name):
    a = rand(3, 4)
    fa = {
        "relu": ax.relu,
        "leaky_relu": lambda x: ax.leaky_relu(x, 0.1),
        "hardtanh": ax.hardtanh,
        "dropout": lambda x: ax.dropout(x, 0.0) * 1.0,
    }[name]
    ft = {"relu": F.relu, "leaky_relu": lambda x: F.leaky_relu(x, 0.1), "hardtanh": F.hardtanh, "dropout": lambda x: x * 1.0}[
        name
    ]
    xa, xt = ax.tensor(a, requires_grad=True), torch.tensor(a, requires_grad=True)
    (ga,) = ax.grad((fa(xa) * xa * xa).sum(), xa, create_graph=True)
    (gt,) = torch.autograd.grad((ft(xt) * xt * xt).sum(), xt, create_graph=True)
    (ga * ga).sum().backward()
    (gt * gt).sum().backward()
    np.testing.assert_allclose(xa.grad.numpy(), xt.grad.numpy(), rtol=1e-5, atol=1e-5)


# -- dropout family --------------------------------------------------------------------------------------
def test_dropout_reproducible_and_scaled():
    x = ax.ones(200, 50, requires_grad=True)
    ax.manual_seed(3)
    y1 = ax.dropout(x, 0.3)
    ax.manual_seed(3)
    y2 = ax.dropout(x, 0.3)
    np.testing.assert_array_equal(y1.detach().numpy(), y2.detach().numpy())
    vals = np.unique(y1.detach().numpy())
    np.testing.assert_allclose(vals, [0.0, 1 / 0.7], rtol=1e-6)
    frac = (y1.detach().numpy() == 0).mean()
    assert abs(frac - 0.3) < 0.02
    y1.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), y1.detach().numpy())  # grad = mask / (1 - p)
    g = ax.Generator().manual_seed(7)
    g2 = ax.Generator().manual_seed(7)
    np.testing.assert_array_equal(
        ax.dropout(x, 0.5, generator=g).detach().numpy(), ax.dropout(x, 0.5, generator=g2).detach().numpy()
    )


def test_dropout_limits_and_errors():
    x = ax.randn(4, 5, requires_grad=True)
    assert ax.dropout(x, 0.5, training=False) is x
    assert ax.dropout(x, 0.0) is x
    y = ax.dropout(x, 1.0)
    assert np.all(y.detach().numpy() == 0)
    y.sum().backward()
    assert np.all(x.grad.numpy() == 0)
    for p in (-0.1, 1.5):
        with pytest.raises(ValueError, match=f"probability p.*{p}"):
            ax.dropout(x, p)
    with pytest.raises(DTypeError):
        ax.dropout(ax.tensor([1, 2]), 0.5)
    z = ax.randn(4, 5)
    ax.manual_seed(0)
    assert ax.dropout(z, 0.5, inplace=True) is z
    assert (z.numpy() == 0).any()


@pytest.mark.parametrize(
    "name,shape", [("dropout1d", (4, 6, 5)), ("dropout1d", (6, 5)), ("dropout2d", (3, 8, 2, 2)), ("dropout3d", (2, 8, 2, 2, 2))]
)
def test_feature_dropout(name, shape):
    x = ax.ones(*shape, requires_grad=True)
    ax.manual_seed(0)
    y = getattr(ax, name)(x, 0.5).detach().numpy()
    lead = len(shape) - int(name[7])
    per_channel = y.reshape(shape[:lead] + (-1,))
    assert np.all(per_channel.min(-1) == per_channel.max(-1))  # whole channels kept or zeroed
    assert set(np.unique(y)) <= {0.0, 2.0}
    with pytest.raises(ShapeError, match=name):
        getattr(ax, name)(ax.ones(3), 0.5)


def test_alpha_dropout_keeps_statistics():
    ax.manual_seed(0)
    x = ax.randn(400, 500)
    y = ax.alpha_dropout(x, 0.2, training=True).numpy()
    assert abs(y.mean()) < 0.02 and abs(y.std() - 1) < 0.02
    assert ax.alpha_dropout(x, 0.2) is x  # training defaults to False, as in PyTorch
    f = ax.feature_alpha_dropout(ax.randn(8, 16, 4), 0.5, training=True).numpy()
    assert f.shape == (8, 16, 4)
    a = rand(3, 4)
    gradcheck(lambda t: ax.alpha_dropout(t, 0.3, training=True, generator=ax.Generator().manual_seed(1)), [a])


def test_rrelu_training():
    a = rand(50, 40)
    ax.manual_seed(1)
    y = ax.rrelu(ax.tensor(a), 0.1, 0.3, training=True).numpy()
    neg = a < 0
    slopes = y[neg] / a[neg]
    assert slopes.min() >= 0.1 and slopes.max() <= 0.3 and slopes.std() > 0.03
    np.testing.assert_array_equal(y[~neg], a[~neg])
    gradcheck(lambda t: ax.rrelu(t, 0.1, 0.3, training=True, generator=ax.Generator().manual_seed(2)), [rand(3, 4)])
