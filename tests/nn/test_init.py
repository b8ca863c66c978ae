"""nn.init: statistics against the formulas, fans and gains against PyTorch's, in-place
semantics on Parameters, reproducibility, and errors."""

from __future__ import annotations

import math

import numpy as np
import pytest

import axonml as ax
from axonml.nn import init

torch = pytest.importorskip("torch")

BIG = (256, 400)  # 102400 samples: sample mean/std within ~1% of the formulas


def _np(t: ax.Tensor) -> np.ndarray:
    return t.detach().numpy().astype(np.float64)


def param(*shape: int, dtype=None) -> ax.nn.Parameter:
    return ax.nn.Parameter(ax.zeros(*shape, dtype=dtype))


@pytest.mark.parametrize(
    "shape", [(3, 4), (5, 2), (8, 3, 5), (6, 4, 3, 3), (2, 3, 2, 2, 2), (1, 1), (0, 4), (4, 0, 3)]
)
def test_fans_match_torch(shape):
    tw = torch.empty(shape)
    assert init._calculate_fan_in_and_fan_out(ax.zeros(*shape)) == torch.nn.init._calculate_fan_in_and_fan_out(tw)


@pytest.mark.parametrize("shape", [(), (5,)])
def test_fans_need_two_dims(shape):
    with pytest.raises(ValueError, match="fewer than 2 dimensions"):
        init._calculate_fan_in_and_fan_out(ax.zeros(*shape))


@pytest.mark.parametrize(
    "name,param_",
    [("linear", None), ("conv1d", None), ("conv2d", None), ("conv_transpose2d", None), ("sigmoid", None), ("tanh", None),
     ("relu", None), ("leaky_relu", None), ("leaky_relu", 0.2), ("leaky_relu", math.sqrt(5)), ("leaky_relu", 0), ("selu", None)],
)
def test_calculate_gain_matches_torch(name, param_):
    assert init.calculate_gain(name, param_) == pytest.approx(torch.nn.init.calculate_gain(name, param_), rel=1e-12)


def test_calculate_gain_errors():
    with pytest.raises(ValueError, match="unsupported nonlinearity 'swish'"):
        init.calculate_gain("swish")
    with pytest.raises(ValueError, match="not a valid number"):
        init.calculate_gain("leaky_relu", True)


def test_uniform_and_normal_statistics():
    ax.manual_seed(0)
    w = init.uniform_(param(*BIG), -2.0, 3.0)
    a = _np(w)
    assert a.min() >= -2.0 and a.max() < 3.0
    assert a.mean() == pytest.approx(0.5, abs=0.03)
    assert a.std() == pytest.approx(5 / math.sqrt(12), rel=0.01)
    w = init.normal_(param(*BIG), 1.5, 0.5)
    assert _np(w).mean() == pytest.approx(1.5, abs=0.01)
    assert _np(w).std() == pytest.approx(0.5, rel=0.01)


def _truncnorm_moments(mean, std, a, b):
    pdf = lambda x: math.exp(-x * x / 2) / math.sqrt(2 * math.pi)  # noqa: E731
    cdf = lambda x: (1 + math.erf(x / math.sqrt(2))) / 2  # noqa: E731
    al, be = (a - mean) / std, (b - mean) / std
    z = cdf(be) - cdf(al)
    m = mean + std * (pdf(al) - pdf(be)) / z
    var = std**2 * (1 + (al * pdf(al) - be * pdf(be)) / z - ((pdf(al) - pdf(be)) / z) ** 2)
    return m, math.sqrt(var)


@pytest.mark.parametrize(
    "mean,std,a,b", [(0.0, 1.0, -2.0, 2.0), (0.0, 0.02, -0.04, 0.04), (1.0, 2.0, 0.0, 5.0), (0.0, 1.0, 1.0, 3.0)]
)
def test_trunc_normal_statistics(mean, std, a, b):
    ax.manual_seed(1)
    w = _np(init.trunc_normal_(param(*BIG, dtype=ax.float64), mean, std, a, b))
    assert w.min() >= a and w.max() <= b
    m, s = _truncnorm_moments(mean, std, a, b)
    assert w.mean() == pytest.approx(m, abs=0.01 * std + 1e-12)
    assert w.std() == pytest.approx(s, rel=0.015)


def test_trunc_normal_errors():
    with pytest.raises(ValueError, match="lower bound a=2.0 must be below"):
        init.trunc_normal_(param(3, 3), a=2.0, b=-2.0)
    with pytest.raises(ValueError, match="std must be positive"):
        init.trunc_normal_(param(3, 3), std=0.0)


@pytest.mark.parametrize("shape", [(300, 200), (64, 32, 3, 3)])
@pytest.mark.parametrize("gain", [1.0, 2.0])
def test_xavier_statistics(shape, gain):
    ax.manual_seed(2)
    fan_in, fan_out = torch.nn.init._calculate_fan_in_and_fan_out(torch.empty(shape))
    std = gain * math.sqrt(2.0 / (fan_in + fan_out))
    u = _np(init.xavier_uniform_(param(*shape), gain=gain))
    assert np.abs(u).max() <= math.sqrt(3) * std * (1 + 1e-6)
    assert u.std() == pytest.approx(std, rel=0.02)
    n = _np(init.xavier_normal_(param(*shape), gain=gain))
    assert n.std() == pytest.approx(std, rel=0.02)
    assert n.mean() == pytest.approx(0.0, abs=0.02 * std)


@pytest.mark.parametrize("shape", [(300, 200), (64, 32, 3, 3)])
@pytest.mark.parametrize(
    "a,mode,nonlinearity", [(0, "fan_in", "leaky_relu"), (math.sqrt(5), "fan_in", "leaky_relu"), (0, "fan_out", "relu"),
                            (0.1, "fan_out", "tanh"), (0, "FAN_IN", "linear")]
)
def test_kaiming_statistics(shape, a, mode, nonlinearity):
    ax.manual_seed(3)
    tw = torch.empty(shape)
    fan = torch.nn.init._calculate_correct_fan(tw, mode.lower())
    std = torch.nn.init.calculate_gain(nonlinearity, a) / math.sqrt(fan)
    u = _np(init.kaiming_uniform_(param(*shape), a=a, mode=mode, nonlinearity=nonlinearity))
    assert np.abs(u).max() <= math.sqrt(3) * std * (1 + 1e-6)
    assert np.abs(u).max() >= 0.99 * math.sqrt(3) * std
    assert u.std() == pytest.approx(std, rel=0.02)
    n = _np(init.kaiming_normal_(param(*shape), a=a, mode=mode, nonlinearity=nonlinearity))
    assert n.std() == pytest.approx(std, rel=0.02)


def test_kaiming_errors_and_empty():
    with pytest.raises(ValueError, match="mode 'fan_mid' not supported"):
        init.kaiming_uniform_(param(3, 3), mode="fan_mid")
    with pytest.raises(ValueError, match="fewer than 2 dimensions"):
        init.kaiming_normal_(param(3))
    empty = param(0, 3)
    assert init.kaiming_uniform_(empty) is empty


@pytest.mark.parametrize("shape", [(5, 5), (3, 7), (7, 3), (4, 2, 3, 3)])
@pytest.mark.parametrize("gain", [1.0, 0.5])
def test_orthogonal(shape, gain):
    ax.manual_seed(4)
    w = _np(init.orthogonal_(param(*shape, dtype=ax.float64), gain=gain)).reshape(shape[0], -1)
    rows, cols = w.shape
    gram = w @ w.T if rows <= cols else w.T @ w
    np.testing.assert_allclose(gram, gain**2 * np.eye(min(rows, cols)), atol=1e-10)


def test_orthogonal_errors():
    with pytest.raises(ValueError, match="at least 2 dimensions"):
        init.orthogonal_(param(4))


def test_constant_ones_zeros_eye_dirac_match_torch():
    for fn, args in [("constant_", (0.3,)), ("ones_", ()), ("zeros_", ())]:
        a = getattr(init, fn)(param(2, 3), *args)
        t = getattr(torch.nn.init, fn)(torch.empty(2, 3), *args)
        np.testing.assert_array_equal(_np(a), t.numpy())
    for shape in [(3, 3), (2, 5), (5, 2)]:
        np.testing.assert_array_equal(_np(init.eye_(param(*shape))), torch.nn.init.eye_(torch.empty(shape)).numpy())
    for shape, groups in [((4, 4, 3), 1), ((6, 3, 3, 3), 2), ((2, 4, 3, 3), 1), ((4, 2, 3, 5, 3), 2)]:
        np.testing.assert_array_equal(
            _np(init.dirac_(param(*shape), groups)), torch.nn.init.dirac_(torch.empty(shape), groups).numpy()
        )
    with pytest.raises(ValueError, match="2-D tensor"):
        init.eye_(param(2, 2, 2))
    with pytest.raises(ValueError, match="3, 4 or 5-D"):
        init.dirac_(param(2, 2))


def test_sparse():
    ax.manual_seed(5)
    w = _np(init.sparse_(param(10, 50), sparsity=0.3, std=0.1))
    assert ((w == 0).sum(axis=0) >= 3).all()
    with pytest.raises(ValueError, match="2-D tensor"):
        init.sparse_(param(3), 0.1)


def test_in_place_on_parameter_bumps_version_and_views_see_it():
    p = param(4, 3)
    view = p.detach()
    v0 = p._version
    out = init.constant_(p, 2.0)
    assert out is p
    assert p.requires_grad and p.is_leaf and p.grad_fn is None
    assert p._version == v0 + 1
    np.testing.assert_array_equal(view.numpy(), np.full((4, 3), 2.0, np.float32))


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float64"])
def test_low_and_high_precision_dtypes(dtype):
    p = param(16, 8, dtype=dtype)
    init.kaiming_uniform_(p, a=math.sqrt(5))
    assert p.dtype.name == dtype
    assert np.abs(_np(p)).max() <= 1 / math.sqrt(8) * 1.01
    init.trunc_normal_(p, std=0.02)
    assert np.abs(_np(p)).max() <= 2.0


def test_generator_and_manual_seed_reproducible():
    g = ax.Generator().manual_seed(7)
    a = _np(init.normal_(param(5, 5), generator=g))
    g.manual_seed(7)
    b = _np(init.normal_(param(5, 5), generator=g))
    np.testing.assert_array_equal(a, b)
    for fn in (init.uniform_, init.xavier_uniform_, init.kaiming_normal_, init.orthogonal_, init.trunc_normal_):
        ax.manual_seed(11)
        x = _np(fn(param(6, 4)))
        ax.manual_seed(11)
        y = _np(fn(param(6, 4)))
        np.testing.assert_array_equal(x, y)
        g1, g2 = ax.Generator().manual_seed(3), ax.Generator().manual_seed(3)
        np.testing.assert_array_equal(_np(fn(param(6, 4), generator=g1)), _np(fn(param(6, 4), generator=g2)))


def test_rejects_non_float_and_non_tensor():
    with pytest.raises(TypeError, match="floating point tensor"):
        init.uniform_(ax.zeros(3, dtype=ax.int64))
    with pytest.raises(TypeError, match="expects a Tensor"):
        init.normal_(np.zeros(3))
