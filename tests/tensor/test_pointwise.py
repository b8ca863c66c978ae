"""Pointwise ops (math, rounding, clamp, where, maximum, fmod, lerp, comparisons, logical,
bitwise, in-place variants) against PyTorch, float64 gradcheck and second derivatives."""

import math

import numpy as np
import pytest
from helpers import as_np, check_vs_torch, gradcheck, rand, to_ax, to_torch, torch

import axonml as ax
from axonml.errors import AutogradError, DTypeError, ShapeError


def tnp(t):
    """A torch tensor (bfloat16 included) as a NumPy array."""
    return as_np(t.float() if t.dtype == torch.bfloat16 else t)


# -- unary math ---------------------------------------------------------------------------
# op -> map from standard normal samples into the op's smooth domain
DOMAIN = {
    "exp": lambda a: a,
    "exp2": lambda a: a,
    "expm1": lambda a: a,
    "log": lambda a: np.abs(a) + 0.5,
    "log2": lambda a: np.abs(a) + 0.5,
    "log10": lambda a: np.abs(a) + 0.5,
    "log1p": lambda a: np.abs(a) - 0.5,
    "sqrt": lambda a: np.abs(a) + 0.5,
    "rsqrt": lambda a: np.abs(a) + 0.5,
    "reciprocal": lambda a: np.sign(a) * (np.abs(a) + 0.5),
    "square": lambda a: a,
    "abs": lambda a: np.sign(a) * (np.abs(a) + 0.1),
    "sin": lambda a: a,
    "cos": lambda a: a,
    "tan": lambda a: np.tanh(a),
    "tanh": lambda a: a,
    "sigmoid": lambda a: a * 3,
    "asin": lambda a: np.tanh(a) * 0.9,
    "acos": lambda a: np.tanh(a) * 0.9,
    "atan": lambda a: a,
    "frac": lambda a: a * 3 + 0.05,
}
SHAPES = [(3, 4), (0, 3), (1,), (), (2, 1, 3)]


@pytest.mark.parametrize("op", sorted(DOMAIN))
@pytest.mark.parametrize("shape", SHAPES)
def test_unary_vs_torch_and_gradcheck(op, shape):
    a = DOMAIN[op](rand(*shape)).astype(np.float32)
    f = lambda x: getattr(x, op)()  # noqa: E731
    check_vs_torch(f, f, [a])
    gradcheck(f, [a])
    fa = getattr(ax, op)
    assert np.allclose(as_np(fa(ax.tensor(a))), as_np(getattr(torch, op)(torch.tensor(a))), atol=1e-6, equal_nan=True)


@pytest.mark.parametrize("op", sorted(DOMAIN))
def test_unary_noncontiguous(op):
    a = DOMAIN[op](rand(4, 3, seed=5)).astype(np.float32)
    f = lambda x: getattr(x.t(), op)()  # noqa: E731 - a transposed (non-contiguous) view
    check_vs_torch(f, f, [a])


UNARY_ALL = sorted(DOMAIN) + ["sign", "floor", "ceil", "round", "trunc", "nan_to_num"]


@pytest.mark.parametrize("op", UNARY_ALL)
@pytest.mark.parametrize("dt", ["int64", "int32", "uint8", "bool", "float16", "bfloat16", "float64"])
def test_unary_dtypes_match_torch(op, dt):
    a = np.array([[0, 1, 2], [3, 1, 0]]).astype(np.float32 if dt == "bfloat16" else dt)
    t = torch.tensor(a).to(getattr(torch, dt))
    x = ax.tensor(a).to(dt)
    try:
        expect = getattr(torch, op)(t)
    except (RuntimeError, TypeError, NotImplementedError):
        with pytest.raises((DTypeError, TypeError)):
            getattr(ax, op)(x)
        return
    got = getattr(ax, op)(x)
    assert got.dtype.name == str(expect.dtype).split(".")[-1]
    np.testing.assert_allclose(as_np(got).astype(np.float64), tnp(expect).astype(np.float64), rtol=1e-2, equal_nan=True)


def test_special_values_match_torch():
    a = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 1e30, -1e30, -100.0, 100.0], np.float32)
    for op in ["exp", "log", "sqrt", "rsqrt", "reciprocal", "sigmoid", "tanh", "sign", "abs", "log1p", "expm1"]:
        got, expect = as_np(getattr(ax, op)(ax.tensor(a))), as_np(getattr(torch, op)(torch.tensor(a)))
        np.testing.assert_allclose(got, expect, rtol=1e-6, atol=1e-30, err_msg=op)  # torch flushes denormals


@pytest.mark.parametrize("op", ["sign", "floor", "ceil", "trunc", "round"])
def test_steps_have_zero_grad(op):
    a = rand(3, 4) * 3
    f = lambda x: getattr(x, op)()  # noqa: E731
    check_vs_torch(f, f, [a])


@pytest.mark.parametrize("decimals", [0, 1, 2, -1])
def test_round_decimals(decimals):
    a = np.array([2.5, -0.5, 1.25, 1234.5678, 0.125, -3.75], np.float64)
    check_vs_torch(lambda x: x.round(decimals=decimals), lambda x: x.round(decimals=decimals), [a], atol=1e-9)


# -- second order ----------------------------------------------------------------------------
def second_order(ax_fn, torch_fn, a, seed=0):
    """Compare d/dx (g(x) . w) where g = d(f(x) . v)/dx, with create_graph."""
    rng = np.random.default_rng(seed)
    xa, xt = to_ax(a), to_torch(a)
    oa, ot = ax_fn(xa), torch_fn(xt)
    v = rng.standard_normal(tuple(ot.shape))
    w = rng.standard_normal(a.shape)
    (ga,) = ax.grad(oa, xa, ax.tensor(v), create_graph=True)
    (gt,) = torch.autograd.grad(ot, xt, torch.tensor(v), create_graph=True)
    np.testing.assert_allclose(as_np(ga), as_np(gt), rtol=1e-6, atol=1e-9)
    (hga,) = ax.grad((ga * ax.tensor(w)).sum(), xa)
    (hgt,) = torch.autograd.grad((gt * torch.tensor(w)).sum(), xt)
    np.testing.assert_allclose(as_np(hga), as_np(hgt), rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("op", ["exp", "log", "sin", "cos", "tanh", "sigmoid", "sqrt", "abs", "square"])
def test_second_order_unary(op):
    a = DOMAIN[op](rand(3, 4, dtype=np.float64))
    second_order(lambda x: getattr(x, op)() * x, lambda x: getattr(x, op)() * x, a)


def test_second_order_multi():
    a = rand(3, 4, dtype=np.float64)
    second_order(lambda x: x.clamp(-0.5, 0.5) * x, lambda x: x.clamp(-0.5, 0.5) * x, a)
    second_order(lambda x: ax.where(x > 0, x * x, x.exp()), lambda x: torch.where(x > 0, x * x, x.exp()), a)
    second_order(lambda x: ax.maximum(x * x, x.exp() - 1), lambda x: torch.maximum(x * x, x.exp() - 1), a)
    second_order(lambda x: ax.minimum(x * x, x.abs()).sigmoid(), lambda x: torch.minimum(x * x, x.abs()).sigmoid(), a)


def test_no_second_order_raises_clearly():
    x = ax.tensor([0.5, 0.7], dtype=ax.float64, requires_grad=True)
    with pytest.raises(AutogradError, match="Exp2"):
        ax.grad(x.exp2().sum(), x, create_graph=True)


# -- clamp ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("lo,hi", [(-0.5, 0.5), (None, 0.3), (-0.2, None), (0.5, -0.5), (0.0, 0.0)])
def test_clamp_scalar(lo, hi):
    a = np.round(rand(4, 5) * 2, 1)  # many values exactly on the bounds: ties pass the gradient
    f = lambda x: x.clamp(lo, hi)  # noqa: E731
    check_vs_torch(f, f, [a])
    check_vs_torch(lambda x: x.t().clip(lo, hi), lambda x: x.t().clip(lo, hi), [a])


@pytest.mark.parametrize("lo_shape,hi_shape", [((5,), (4, 1)), ((4, 5), None), (None, (1, 5)), ((), ())])
def test_clamp_tensor_bounds(lo_shape, hi_shape):
    a = np.round(rand(4, 5), 1)
    lo = None if lo_shape is None else np.round(rand(*lo_shape, seed=1) - 0.5, 1)
    hi = None if hi_shape is None else np.round(rand(*hi_shape, seed=2) + 0.5, 1)
    arrays = [a] + [b for b in (lo, hi) if b is not None]

    def f(x, *bs):
        it = iter(bs)
        return x.clamp(next(it) if lo is not None else None, next(it) if hi is not None else None)

    check_vs_torch(f, f, arrays)
    smooth = [rand(4, 5, dtype=np.float64)] + [b.astype(np.float64) + 0.013 for b in arrays[1:]]
    gradcheck(f, smooth)


def test_clamp_tensor_bounds_crossed():
    # where min > max the result is max, and only max gets the gradient (as in PyTorch)
    a = np.array([[-2.0, 0.0, 0.3, 2.0], [-2.0, 0.0, 0.3, 2.0]])
    lo = np.array([0.5, -1.0, 0.5, 0.1])
    hi = np.array([[0.2], [1.0]])
    check_vs_torch(lambda x, l, h: x.clamp(l, h), lambda x, l, h: x.clamp(l, h), [a, lo, hi])
    with pytest.raises(ShapeError, match=r"clamp: min/max .* input's shape \(1, 4\)"):
        ax.zeros(1, 4).clamp(ax.zeros(2, 4))


def test_clamp_dtypes_and_errors():
    i = np.array([1, -2, 3])
    for kw in [dict(min=1.5), dict(min=1), dict(max=2), dict(min=0, max=True)]:
        assert ax.clamp(ax.tensor(i), **kw).dtype.name == str(torch.clamp(torch.tensor(i), **kw).dtype).split(".")[-1]
    assert ax.tensor(i).clamp(min=ax.tensor(0.5)).dtype == ax.float32
    with pytest.raises(ValueError, match="at least one of 'min' or 'max'"):
        ax.tensor(i).clamp()
    with pytest.raises(ShapeError, match=r"clamp.*\(3,\).*\(2,\)"):
        ax.tensor(i).clamp(min=ax.tensor([1, 2]))
    np.testing.assert_array_equal(as_np(ax.clamp_min(ax.tensor(i), 0)), [1, 0, 3])
    np.testing.assert_array_equal(as_np(ax.clamp_max(ax.tensor(i), 0)), [0, -2, 0])


# -- where / maximum / minimum --------------------------------------------------------------------
@pytest.mark.parametrize(
    "sx,sy,sc", [((3, 4), (3, 4), (3, 4)), ((4,), (3, 1), (3, 4)), ((1,), (), (2, 3)), ((0, 4), (4,), (0, 4))]
)
def test_where_tensors(sx, sy, sc):
    c = rand(*sc, seed=3) > 0
    f_ax = lambda x, y: ax.where(ax.tensor(c), x, y)  # noqa: E731
    f_t = lambda x, y: torch.where(torch.tensor(c), x, y)  # noqa: E731
    check_vs_torch(f_ax, f_t, [rand(*sx), rand(*sy, seed=1)])
    gradcheck(f_ax, [rand(*sx), rand(*sy, seed=1)])
    check_vs_torch(
        lambda x, y: x.where(ax.tensor(c), y), lambda x, y: x.where(torch.tensor(c), y), [rand(*sx), rand(*sy, seed=1)]
    )


def test_where_scalars_and_promotion():
    c = np.array([True, False, True])
    cases = [
        (1, 2.5),
        (1, 2),
        (np.ones(3, np.float16), 2.5),
        (np.arange(3), 0.5),
        (np.arange(3, dtype=np.int32), np.ones(3)),
        (True, 3),
    ]
    for x, y in cases:
        xa, xt = (
            [ax.tensor(v) if isinstance(v, np.ndarray) else v for v in (x, y)],
            [torch.tensor(v) if isinstance(v, np.ndarray) else v for v in (x, y)],
        )
        got, expect = ax.where(ax.tensor(c), *xa), torch.where(torch.tensor(c), *xt)
        assert got.dtype.name == str(expect.dtype).split(".")[-1], (x, y)
        np.testing.assert_allclose(as_np(got), as_np(expect))
    check_vs_torch(lambda x: ax.where(x > 0, x, 0.0), lambda x: torch.where(x > 0, x, 0.0), [rand(3, 4)])
    check_vs_torch(lambda x: ax.where(x > 0, 1.0, x), lambda x: torch.where(x > 0, 1.0, x), [rand(3, 4)])
    with pytest.raises(DTypeError, match="bool"):
        ax.where(ax.tensor([1, 0]), 1.0, 2.0)
    idx = ax.where(ax.tensor([[True, False], [True, True]]))
    assert [i.tolist() for i in idx] == [[0, 1, 1], [0, 0, 1]] and idx[0].dtype == ax.int64


@pytest.mark.parametrize("op", ["maximum", "minimum"])
@pytest.mark.parametrize("sa,sb", [((3, 4), (3, 4)), ((3, 4), (4,)), ((2, 1), (1, 3)), ((0, 2), (2,))])
def test_maximum_minimum(op, sa, sb):
    a, b = rand(*sa), rand(*sb, seed=1)
    f = lambda x, y: getattr(ax, op)(x, y) if isinstance(x, ax.Tensor) else getattr(torch, op)(x, y)  # noqa: E731
    check_vs_torch(f, f, [a, b])
    gradcheck(f, [a, b])


@pytest.mark.parametrize("op", ["maximum", "minimum"])
def test_maximum_ties_split_gradient(op):
    a = np.array([1.0, 2.0, 3.0, np.nan, 5.0], np.float32)
    b = np.array([1.0, 3.0, 2.0, 1.0, np.nan], np.float32)
    f = lambda x, y: getattr(ax, op)(x, y) if isinstance(x, ax.Tensor) else getattr(torch, op)(x, y)  # noqa: E731
    check_vs_torch(f, f, [a, b])
    assert getattr(ax, op)(ax.tensor([1, 5]), ax.tensor([2.0, 1.0])).dtype == ax.float32
    with pytest.raises(TypeError, match=op):
        getattr(ax, op)(ax.tensor([1.0]), 2)


# -- fmod / remainder / lerp / nan_to_num ------------------------------------------------------------
@pytest.mark.parametrize("op", ["fmod", "remainder"])
def test_mod_float(op):
    a = np.array([[-3.3, 3.3, 5.7], [-7.1, 0.4, 2.2]])
    b = np.array([2.1, -1.3, 2.5])
    f = lambda x, y: getattr(x, op)(y)  # noqa: E731
    check_vs_torch(f, f, [a, b])
    gradcheck(f, [a, b])
    check_vs_torch(lambda x: getattr(x, op)(1.5), lambda x: getattr(x, op)(1.5), [a])


def test_mod_ints_operators_and_zero():
    i = np.array([7, -7, 5, -5])
    for other in (3, -3, np.array([2, 3, -2, -3])):
        o_ax = ax.tensor(other) if isinstance(other, np.ndarray) else other
        o_t = torch.tensor(other) if isinstance(other, np.ndarray) else other
        for op in ("fmod", "remainder"):
            got, expect = getattr(ax, op)(ax.tensor(i), o_ax), getattr(torch, op)(torch.tensor(i), o_t)
            assert got.dtype == ax.int64 and got.tolist() == expect.tolist()
    assert (ax.tensor(i) % 3).tolist() == (torch.tensor(i) % 3).tolist()
    assert (10 % ax.tensor([3, -4])).tolist() == (10 % torch.tensor([3, -4])).tolist()
    assert (ax.tensor(i) % 2.5).dtype == ax.float32
    with pytest.raises(ZeroDivisionError, match="remainder"):
        ax.tensor(i) % 0


@pytest.mark.parametrize("wshape", [None, (4,), (3, 1), ()])
def test_lerp(wshape):
    s, e = rand(3, 4), rand(3, 4, seed=1)
    if wshape is None:
        for w in (0.3, 0.7, 1.0, -0.6):
            check_vs_torch(lambda x, y: x.lerp(y, w), lambda x, y: x.lerp(y, w), [s, e])
        gradcheck(lambda x, y: ax.lerp(x, y, 0.3), [s, e])
        return
    w = rand(*wshape, seed=2)
    check_vs_torch(lambda x, y, z: x.lerp(y, z), lambda x, y, z: x.lerp(y, z), [s, e, w])
    gradcheck(lambda x, y, z: x.lerp(y, z), [s, e, w])


def test_lerp_errors():
    with pytest.raises(DTypeError, match="lerp"):
        ax.lerp(ax.ones(2), ax.ones(2, dtype=ax.float64), 0.5)


def test_nan_to_num():
    a = np.array([np.nan, np.inf, -np.inf, 1.5, -2.0], np.float32)
    check_vs_torch(lambda x: x.nan_to_num(), lambda x: x.nan_to_num(), [a])
    check_vs_torch(lambda x: ax.nan_to_num(x, 1.0, 2.0, -3.0), lambda x: torch.nan_to_num(x, 1.0, 2.0, -3.0), [a])
    for dt in (ax.float16, ax.bfloat16):
        got = ax.tensor(a).to(dt).nan_to_num()
        expect = torch.tensor(a).to(getattr(torch, dt.name)).nan_to_num()
        np.testing.assert_allclose(as_np(got), tnp(expect))


# -- comparisons -------------------------------------------------------------------------------------
CMP = ["eq", "ne", "lt", "le", "gt", "ge"]
OPS = {"eq": "__eq__", "ne": "__ne__", "lt": "__lt__", "le": "__le__", "gt": "__gt__", "ge": "__ge__"}


@pytest.mark.parametrize("op", CMP)
@pytest.mark.parametrize(
    "a,b",
    [
        (np.array([[1.0, 2.0, 3.0]]), np.array([[1.0], [2.5]])),
        (np.array([1, 2, 3]), 2),
        (np.array([1, 2, 3]), 1.5),
        (np.array([1, 2, 3], np.int32), np.array([1.0, 2.5, 3.0], np.float16)),
        (np.array([True, False]), np.array([1, 0], np.uint8)),
        (np.zeros((0, 3)), np.zeros(3)),
    ],
)
def test_comparisons_match_torch(op, a, b):
    A, T = ax.tensor(a), torch.tensor(a)
    bA = ax.tensor(b) if isinstance(b, np.ndarray) else b
    bT = torch.tensor(b) if isinstance(b, np.ndarray) else b
    for got, expect in [(getattr(ax, op)(A, bA), getattr(torch, op)(T, bT)), (getattr(A, OPS[op])(bA), getattr(T, OPS[op])(bT))]:
        assert got.dtype == ax.bool_ and tuple(got.shape) == tuple(expect.shape)
        np.testing.assert_array_equal(as_np(got), as_np(expect))


def test_comparison_operators_reflected_and_nontensor():
    t = ax.tensor([1, 2, 3])
    assert (2 < t).tolist() == [False, False, True] and (2 == t).tolist() == [False, True, False]
    assert (t == None) is False and (t != None) is True  # noqa: E711
    assert (t == "x") is False and (t != "x") is True
    with pytest.raises(TypeError):
        t < "x"  # noqa: B015
    assert {t: 1}[t] == 1 and t in {t} and hash(t) == hash(t)
    assert t.requires_grad is False and (ax.randn(2, requires_grad=True) > 0).requires_grad is False
    with pytest.raises(ShapeError, match=r"\(3,\).*\(2,\)"):
        t == ax.tensor([1, 2])  # noqa: B015


# -- logical / bitwise ----------------------------------------------------------------------------------
@pytest.mark.parametrize("op", ["logical_and", "logical_or", "logical_xor"])
def test_logical(op):
    a, b = np.array([[0.0, 1.5, -2.0]]), np.array([[1], [0]])
    got, expect = getattr(ax, op)(ax.tensor(a), ax.tensor(b)), getattr(torch, op)(torch.tensor(a), torch.tensor(b))
    assert got.dtype == ax.bool_
    np.testing.assert_array_equal(as_np(got), as_np(expect))
    assert ax.logical_not(ax.tensor(a)).tolist() == torch.logical_not(torch.tensor(a)).tolist()


@pytest.mark.parametrize("sym", ["&", "|", "^"])
@pytest.mark.parametrize(
    "a,b",
    [
        (np.array([True, False, True]), np.array([True, True, False])),
        (np.array([5, -3, 12]), np.array([3, 6, -1])),
        (np.array([True, False]), 1),
        (np.array([5, 6], np.uint8), np.array([True, False])),
        (True, np.array([1, 0, 3], np.int32)),
    ],
)
def test_bitwise_operators(sym, a, b):
    def run(mod, x, y):
        x = mod.tensor(x).to(getattr(mod, x.dtype.name)) if isinstance(x, np.ndarray) else x
        y = mod.tensor(y).to(getattr(mod, y.dtype.name)) if isinstance(y, np.ndarray) else y
        return eval(f"x {sym} y")

    got, expect = run(ax, a, b), run(torch, a, b)
    assert got.dtype.name == str(expect.dtype).split(".")[-1]
    assert got.tolist() == expect.tolist()


def test_bitwise_not_and_errors():
    for a in (np.array([True, False]), np.array([5, -3]), np.array([5, 250], np.uint8)):
        assert (~ax.tensor(a)).tolist() == (~torch.tensor(a)).tolist()
        assert ax.bitwise_not(ax.tensor(a)).tolist() == torch.bitwise_not(torch.tensor(a)).tolist()
    with pytest.raises(DTypeError, match="bitwise_and"):
        ax.ones(2) & ax.ones(2)
    with pytest.raises(DTypeError, match="bitwise_not"):
        ~ax.ones(2)


# -- value tests, isclose, equal ------------------------------------------------------------------------
def test_isnan_isinf_isfinite():
    a = np.array([np.nan, np.inf, -np.inf, 0.0, 1.0], np.float32)
    for op in ("isnan", "isinf", "isfinite"):
        for arr in (a, np.array([1, 2]), np.array([True])):
            got, expect = getattr(ax, op)(ax.tensor(arr)), getattr(torch, op)(torch.tensor(arr))
            assert got.dtype == ax.bool_ and got.tolist() == expect.tolist(), op


def test_isclose_allclose_equal():
    a = np.array([1.0, np.nan, np.inf, 2.0, 1e-9])
    b = np.array([1.0 + 1e-7, np.nan, np.inf, 2.1, 0.0])
    for kw in [{}, dict(equal_nan=True), dict(rtol=0.1, atol=0.0)]:
        assert (
            ax.isclose(ax.tensor(a), ax.tensor(b), **kw).tolist()
            == torch.isclose(torch.tensor(a), torch.tensor(b), **kw).tolist()
        )
        assert ax.allclose(ax.tensor(a), ax.tensor(b), **kw) == torch.allclose(torch.tensor(a), torch.tensor(b), **kw)
    assert ax.allclose(ax.ones(2, 3), ax.ones(3)) is True
    assert ax.equal(ax.tensor([1, 2]), ax.tensor([1.0, 2.0])) is True
    assert ax.equal(ax.ones(2), ax.ones(3)) is False and ax.equal(ax.tensor([math.nan]), ax.tensor([math.nan])) is False
    assert ax.tensor([1, 2]).equal(ax.tensor([1, 2]))


# -- in-place --------------------------------------------------------------------------------------------
INPLACE = [
    ("exp_", ()),
    ("log_", ()),
    ("sqrt_", ()),
    ("abs_", ()),
    ("clamp_", (-0.5, 0.5)),
    ("clamp_min_", (0.1,)),
    ("clamp_max_", (0.9,)),
    ("neg_", ()),
    ("sigmoid_", ()),
    ("tanh_", ()),
    ("floor_", ()),
    ("round_", ()),
    ("reciprocal_", ()),
    ("clip_", (0.2, 0.8)),
    ("sin_", ()),
    ("square_", ()),
    ("ceil_", ()),
    ("trunc_", ()),
]


@pytest.mark.parametrize("name,args", INPLACE)
def test_inplace_matches_out_of_place(name, args):
    a = np.abs(rand(3, 4)) + 0.3
    x = ax.tensor(a)
    view = x.reshape(12)
    v0 = x._version
    out = getattr(x, name)(*args)
    assert out is x and x._version == v0 + 1
    expect = getattr(torch.tensor(a), name)(*args)
    np.testing.assert_allclose(as_np(x), as_np(expect), rtol=1e-6)
    np.testing.assert_allclose(as_np(view), as_np(expect).reshape(12), rtol=1e-6)  # views see the write


def test_inplace_lerp_and_autograd():
    a, b = rand(3, 4), rand(3, 4, seed=1)

    def f(mod):
        def run(x, y):
            z = x * 1.0
            z.clamp_(max=1.0)
            z.lerp_(y, 0.25)
            z.abs_()
            return z.sigmoid_()  # the only in-place op whose backward needs its output: last

        return run

    check_vs_torch(f(ax), f(torch), [a, b])


def test_inplace_errors():
    with pytest.raises(DTypeError, match="exp_.*int64"):
        ax.tensor([1, 2]).exp_()
    with pytest.raises(DTypeError, match="clamp_"):
        ax.tensor([1, 2]).clamp_(min=0.5)
    assert ax.tensor([1, 5]).clamp_(max=3).tolist() == [1, 3]
    leaf = ax.ones(3, requires_grad=True)
    with pytest.raises(AutogradError, match="leaf"):
        leaf.exp_()
    with ax.no_grad():
        leaf.clamp_(max=0.5)
    assert leaf.tolist() == [0.5, 0.5, 0.5]


def test_bad_input_types():
    with pytest.raises(TypeError, match="exp"):
        ax.exp(np.ones(3))
    with pytest.raises(TypeError, match="clamp"):
        ax.ones(2).clamp(min="a")
    with pytest.raises(DTypeError, match="abs.*bool"):
        ax.tensor([True]).abs()
