"""Reductions (var/std, max/min, amax/amin, argmax/argmin, prod, logsumexp, cumsum/cumprod,
norm, all/any, count_nonzero) against PyTorch, float64 gradcheck and second derivatives."""

import math

import numpy as np
import pytest
from helpers import as_np, check_vs_torch, gradcheck, rand, to_ax, to_torch, torch

import axonml as ax
from axonml.errors import AutogradError, DTypeError, ShapeError


def distinct(*shape, seed=0, dtype=np.float32):
    """Values without ties (a permutation of well-separated numbers), for smooth gradchecks."""
    n = int(np.prod(shape))
    return (np.random.default_rng(seed).permutation(n) * 0.37 - n * 0.15).reshape(shape).astype(dtype)


def tnp(t):
    return as_np(t.float() if t.dtype == torch.bfloat16 else t)


def same(got, expect, rtol=1e-5, atol=1e-6):
    assert got.dtype.name == str(expect.dtype).split(".")[-1], (got.dtype, expect.dtype)
    assert tuple(got.shape) == tuple(expect.shape)
    np.testing.assert_allclose(as_np(got).astype(np.float64), tnp(expect).astype(np.float64), rtol=rtol, atol=atol)


DIMS = [None, 0, -1, (0, 2), (1,), ()]


# -- var / std ------------------------------------------------------------------------------------
@pytest.mark.parametrize("op", ["var", "std"])
@pytest.mark.parametrize("dim", DIMS)
@pytest.mark.parametrize("keepdim", [False, True])
def test_var_std(op, dim, keepdim):
    a = rand(2, 3, 4)
    if dim == ():
        dim = None
    f = lambda x: getattr(x, op)(dim, keepdim=keepdim)  # noqa: E731
    check_vs_torch(f, f, [a])
    gradcheck(f, [a])


@pytest.mark.filterwarnings("ignore:.*degrees of freedom")
@pytest.mark.parametrize("op", ["var", "std"])
def test_var_std_corrections_and_shapes(op):
    a = rand(3, 4)
    for kw in [dict(correction=0), dict(correction=2), dict(unbiased=False), dict(dim=1, correction=0)]:
        check_vs_torch(lambda x: getattr(x, op)(**kw), lambda x: getattr(x, op)(**kw), [a])
    check_vs_torch(lambda x: getattr(x, op)(False), lambda x: getattr(x, op)(False), [a])  # the legacy overload
    check_vs_torch(lambda x: getattr(x, op)(0, False, True), lambda x: getattr(x, op)(0, False, True), [a])
    check_vs_torch(lambda x: getattr(x.t(), op)(1), lambda x: getattr(x.t(), op)(1), [a])  # non-contiguous
    gradcheck(lambda x: getattr(x.t(), op)(1), [a])
    check_vs_torch(lambda x: getattr(x, op)(0), lambda x: getattr(x, op)(0), [rand(1, 5)])  # N - 1 == 0: nan
    check_vs_torch(lambda x: getattr(x, op)(1, correction=4), lambda x: getattr(x, op)(1, correction=4), [a], grad=False)
    check_vs_torch(lambda x: getattr(x, op)(0), lambda x: getattr(x, op)(0), [rand(0, 3)])
    check_vs_torch(lambda x: getattr(x, op)(), lambda x: getattr(x, op)(), [np.full((3,), 2.0, np.float32)])  # std 0 -> grad 0


def test_var_std_low_precision_and_errors():
    a = (rand(64, 32) * 3 + 100).astype(np.float32)
    for dt in ("float16", "bfloat16"):
        for op in ("var", "std"):
            got = getattr(ax.tensor(a).to(dt), op)(0)
            expect = getattr(torch.tensor(a).to(getattr(torch, dt)), op)(0)
            same(got, expect, rtol=2e-2, atol=1e-2)
    with pytest.raises(DTypeError, match="var.*int64"):
        ax.tensor([1, 2]).var()
    with pytest.raises(TypeError, match="unbiased= or correction="):
        ax.ones(3).var(0, unbiased=True, correction=1)
    with pytest.warns(UserWarning, match=r"std\(\): degrees of freedom"):
        ax.ones(1, 3).std(0)
    v, m = ax.var_mean(ax.tensor(a), 1)
    tv, tm = torch.var_mean(torch.tensor(a), 1)
    same(v, tv, rtol=1e-4)
    same(m, tm)
    s, m = ax.std_mean(ax.tensor(a), correction=0)
    ts, tm = torch.std_mean(torch.tensor(a), correction=0)
    same(s, ts, rtol=1e-4)


# -- max / min / amax / amin ---------------------------------------------------------------------------
@pytest.mark.parametrize("op", ["max", "min"])
@pytest.mark.parametrize("shape", [(3, 4), (1, 5), (4,), ()])
def test_max_min_full_and_dim(op, shape):
    a = distinct(*shape)
    f = lambda x: getattr(x, op)()  # noqa: E731
    check_vs_torch(f, f, [a])
    gradcheck(f, [a])
    for d in range(-max(len(shape), 1), max(len(shape), 1)):
        for keepdim in (False, True):
            g = lambda x, d=d, k=keepdim: getattr(x, op)(d, keepdim=k)  # noqa: E731
            check_vs_torch(g, g, [a])
            gradcheck(g, [a])
    if len(shape) == 2:
        check_vs_torch(lambda x: getattr(x.t(), op)(0), lambda x: getattr(x.t(), op)(0), [a])


@pytest.mark.parametrize("op", ["max", "min", "amax", "amin"])
def test_extrema_ties_like_torch(op):
    a = np.array([[1.0, 3.0, 3.0, -1.0], [2.0, 2.0, 2.0, -1.0], [5.0, -1.0, 5.0, -1.0]], np.float32)
    check_vs_torch(lambda x: getattr(x, op)(), lambda x: getattr(x, op)(), [a])  # split evenly
    check_vs_torch(lambda x: getattr(x, op)(1), lambda x: getattr(x, op)(1), [a])  # max: first index; amax: split
    check_vs_torch(lambda x: getattr(x, op)(0, True), lambda x: getattr(x, op)(0, True), [a])


def test_max_result_type_and_elementwise_form():
    r = ax.tensor([[1.0, 5.0], [7.0, 2.0]]).max(1)
    assert type(r).__name__ == "max" and r.values.tolist() == [5.0, 7.0] and r.indices.tolist() == [1, 0]
    v, i = ax.tensor([[1.0, 5.0]]).min(dim=1, keepdim=True)
    assert v.tolist() == [[1.0]] and i.dtype == ax.int64
    check_vs_torch(lambda x, y: x.max(y), lambda x, y: x.max(y), [distinct(3, 4), distinct(4, seed=1)])
    check_vs_torch(lambda x, y: ax.min(x, y), lambda x, y: torch.min(x, y), [distinct(3, 4), distinct(4, seed=1)])
    nan = np.array([1.0, np.nan, 3.0], np.float32)
    same(ax.tensor(nan).max(), torch.tensor(nan).max())
    assert ax.tensor(nan).max(0).indices.item() == torch.tensor(nan).max(0).indices.item() == 1


@pytest.mark.parametrize("op", ["amax", "amin"])
@pytest.mark.parametrize("dim", DIMS + [[0, 1, 2]])
def test_amax_amin(op, dim):
    a = distinct(2, 3, 4)
    for keepdim in (False, True):
        f = lambda x, k=keepdim: getattr(x, op)(dim, k) if dim is not None else getattr(x, op)(keepdim=k)  # noqa: E731
        check_vs_torch(f, f, [a])
        gradcheck(f, [a])


@pytest.mark.parametrize("dt", ["int64", "int32", "uint8", "bool", "float16", "bfloat16"])
def test_extrema_dtypes(dt):
    a = np.array([[3, 1, 2], [0, 5, 1]]).astype(np.float32 if dt == "bfloat16" else dt)
    x, t = ax.tensor(a).to(dt), torch.tensor(a).to(getattr(torch, dt))
    for name, args in [("max", ()), ("min", ()), ("amax", (1,)), ("amin", (0,)), ("max", (1,)), ("aminmax", ())]:
        got, expect = getattr(x, name)(*args), getattr(t, name)(*args)
        for g, e in zip(got if isinstance(got, tuple) else [got], expect if isinstance(expect, tuple) else [expect]):
            same(g, e)
    for name in ("argmax", "argmin"):
        if dt == "bool":
            with pytest.raises(DTypeError, match=name):
                getattr(x, name)()
        else:
            same(getattr(x, name)(), getattr(t, name)())
            same(getattr(x, name)(1, True), getattr(t, name)(1, True))


def test_aminmax():
    a = distinct(3, 4)
    check_vs_torch(lambda x: x.aminmax(), lambda x: x.aminmax(), [a])
    check_vs_torch(lambda x: ax.aminmax(x, dim=1, keepdim=True), lambda x: torch.aminmax(x, dim=1, keepdim=True), [a])
    assert ax.ones(2).aminmax()._fields == ("min", "max")


@pytest.mark.parametrize("op", ["argmax", "argmin"])
def test_argmax_argmin(op):
    a = distinct(3, 4, 2)
    x, t = ax.tensor(a), torch.tensor(a)
    for dim in (None, 0, 1, -1):
        for keepdim in (False, True):
            same(getattr(x, op)(dim, keepdim), getattr(t, op)(dim, keepdim))
    same(getattr(x.transpose(0, 2), op)(1), getattr(t.transpose(0, 2), op)(1))
    same(getattr(ax.tensor(2.0), op)(0), getattr(torch.tensor(2.0), op)(0))
    ties = np.array([1.0, 3.0, 3.0, 0.0])
    assert getattr(ax.tensor(ties), op)().item() == getattr(torch.tensor(ties), op)().item()


def test_empty_extrema_errors():
    with pytest.raises(ShapeError, match=r"max\(\).*empty.*\(0, 3\)"):
        ax.zeros(0, 3).max()
    with pytest.raises(IndexError, match=r"amax\(\).*dim 0.*\(0, 3\)"):
        ax.zeros(0, 3).amax(0)
    with pytest.raises(IndexError, match=r"max\(\).*dim 0"):
        ax.zeros(0, 3).max(0)
    with pytest.raises(ShapeError, match="argmin"):
        ax.zeros(0).argmin()
    same(ax.zeros(0, 3).amax(1), torch.zeros(0, 3).amax(1))
    v, i = ax.zeros(0, 3).max(1)
    assert tuple(v.shape) == (0,) and i.dtype == ax.int64


# -- prod ------------------------------------------------------------------------------------------
ZERO_CASES = [
    np.array([[1.5, 2.0, -3.0], [0.5, -1.2, 2.0]]),
    np.array([[0.0, 2.0, 3.0], [1.0, 0.0, 0.0]]),  # one zero; two zeros
    np.array([[0.0, 0.0, 0.0], [4.0, 0.0, 2.0]]),
]


@pytest.mark.parametrize("case", range(len(ZERO_CASES)))
@pytest.mark.parametrize("dim,keepdim", [(None, False), (0, False), (1, True), (-1, False)])
def test_prod_with_zeros(case, dim, keepdim):
    a = ZERO_CASES[case]
    f = lambda x: x.prod(dim, keepdim) if dim is not None else x.prod()  # noqa: E731
    check_vs_torch(f, f, [a])
    gradcheck(f, [a])
    check_vs_torch(lambda x: x.t().prod(0), lambda x: x.t().prod(0), [a])


def test_prod_dtypes_and_shapes():
    for a in (np.array([[1, -2, 3], [4, 5, 6]]), np.array([True, False]), np.array([7, 9], np.uint8)):
        same(ax.tensor(a).prod(), torch.tensor(a).prod())
        same(ax.tensor(a).prod(0), torch.tensor(a).prod(0))
    same(ax.ones(0).prod(), torch.ones(0).prod())
    same(ax.ones(0, 3).prod(0), torch.ones(0, 3).prod(0))
    h = rand(4, 3) * 0.5 + 1
    same(ax.tensor(h).half().prod(0), torch.tensor(h).half().prod(0), rtol=1e-2)
    same(ax.tensor([1, 2]).prod(dtype=ax.float64), torch.tensor([1, 2]).prod(dtype=torch.float64))
    check_vs_torch(lambda x: x.prod(0), lambda x: x.prod(0), [rand(1, 4)])
    with pytest.raises(TypeError, match="prod"):
        ax.ones(2, 2).prod((0, 1))


# -- logsumexp ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("dim", [0, -1, (0, 1), 1])
@pytest.mark.parametrize("keepdim", [False, True])
def test_logsumexp(dim, keepdim):
    a = rand(3, 4, 2)
    f = lambda x: x.logsumexp(dim, keepdim)  # noqa: E731
    check_vs_torch(f, f, [a])
    gradcheck(f, [a])
    check_vs_torch(lambda x: ax.logsumexp(x * 500 + 1000, dim), lambda x: torch.logsumexp(x * 500 + 1000, dim), [a], rtol=1e-5)


def test_logsumexp_special():
    a = np.array([[-np.inf, -np.inf], [np.inf, 1.0], [1000.0, 1000.0]], np.float32)
    same(ax.tensor(a).logsumexp(1), torch.tensor(a).logsumexp(1))
    same(ax.ones(0, 2).logsumexp(0), torch.ones(0, 2).logsumexp(0))
    same(ax.tensor([[1, 2]]).logsumexp(1), torch.tensor([[1, 2]]).logsumexp(1))
    same(ax.tensor(2.0).logsumexp(0), torch.tensor(2.0).logsumexp(0))
    h = rand(8, 3)
    same(ax.tensor(h).half().logsumexp(0), torch.tensor(h).half().logsumexp(0), rtol=1e-2)


# -- cumsum / cumprod -----------------------------------------------------------------------------------
@pytest.mark.parametrize("op", ["cumsum", "cumprod"])
@pytest.mark.parametrize("dim", [0, 1, -1])
def test_cum(op, dim):
    a = rand(3, 4) * 0.8
    f = lambda x: getattr(x, op)(dim)  # noqa: E731
    check_vs_torch(f, f, [a])
    gradcheck(f, [a])
    check_vs_torch(lambda x: getattr(x.t(), op)(dim), lambda x: getattr(x.t(), op)(dim), [a])
    check_vs_torch(lambda x: getattr(x, op)(0), lambda x: getattr(x, op)(0), [rand(0, 3)])
    check_vs_torch(lambda x: getattr(x, op)(0), lambda x: getattr(x, op)(0), [np.array(1.5, np.float32)])


@pytest.mark.parametrize(
    "row", [[1.0, 0.0, 3.0, 0.0, 2.0], [0.0, 2.0, 3.0, 4.0, 5.0], [2.0, 3.0, 4.0, 5.0, 0.0], [0.0, 0.0, 1.0, 2.0, 3.0]]
)
def test_cumprod_zeros(row):
    a = np.array([row, row[::-1]])
    check_vs_torch(lambda x: x.cumprod(1), lambda x: x.cumprod(1), [a])
    gradcheck(lambda x: x.cumprod(1), [a])


def test_cum_dtypes():
    for a in (np.array([[1, -2, 3], [4, 5, 6]]), np.array([True, False, True]), np.array([200, 100], np.uint8)):
        for op in ("cumsum", "cumprod"):
            same(getattr(ax.tensor(a), op)(0), getattr(torch.tensor(a), op)(0))
    h = rand(16, 2)
    same(ax.tensor(h).half().cumsum(0), torch.tensor(h).half().cumsum(0), rtol=1e-2, atol=1e-2)
    same(ax.tensor([1, 2]).cumsum(0, dtype=ax.float32), torch.tensor([1, 2]).cumsum(0, dtype=torch.float32))
    with pytest.raises(IndexError, match="cumsum.*dimension 2.*2 dim"):
        ax.ones(2, 3).cumsum(2)


# -- norm -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("p", ["fro", 2, 1, math.inf, -math.inf, 0, 3, 1.5, 0.5])
@pytest.mark.parametrize("dim,keepdim", [(None, False), (1, False), ((0, 1), True), (-1, True)])
def test_norm(p, dim, keepdim):
    a = distinct(3, 4)
    if p == "fro" and dim == -1:
        dim = (-1,)
    f = lambda x: x.norm(p, dim, keepdim)  # noqa: E731
    check_vs_torch(f, f, [a])
    gradcheck(f, [a])


@pytest.mark.parametrize("p", [2, 1, math.inf, 3, 1.5, 0.5])
def test_norm_zeros_and_ties(p):
    a = np.array([[0.0, 0.0, 0.0], [1.0, -3.0, 3.0], [0.0, 2.0, -1.0]], np.float32)
    check_vs_torch(lambda x: x.norm(p, 1), lambda x: x.norm(p, 1), [a])
    check_vs_torch(lambda x: x.t().norm(p, 0), lambda x: x.t().norm(p, 0), [a])


def test_norm_dtypes_and_errors():
    h = rand(6, 4)
    same(ax.tensor(h).half().norm(), torch.tensor(h).half().norm(), rtol=1e-2)
    same(ax.tensor(h).bfloat16().norm(dim=0), torch.tensor(h).bfloat16().norm(dim=0), rtol=2e-2)
    same(ax.tensor([3.0, 4.0]).norm(dtype=ax.float64), torch.tensor([3.0, 4.0]).norm(dtype=torch.float64))
    same(ax.ones(0).norm(), torch.ones(0).norm())
    with pytest.raises(DTypeError, match="floating"):
        ax.tensor([3, 4]).norm()
    with pytest.raises(ValueError, match="nuc"):
        ax.ones(2, 2).norm("nuc")
    with pytest.raises(ShapeError, match="inf norm.*empty"):
        ax.ones(0).norm(math.inf)
    with pytest.raises(ShapeError, match="at most 2 dims"):
        ax.ones(2, 2, 2).norm("fro", dim=(0, 1, 2))


# -- all / any / count_nonzero ------------------------------------------------------------------------------
@pytest.mark.parametrize("dt", ["bool", "int64", "uint8", "float32"])
def test_all_any_count_nonzero(dt):
    a = np.array([[1, 0, 2], [3, 4, 5]]).astype(dt)
    x, t = ax.tensor(a).to(dt), torch.tensor(a)
    for op in ("all", "any"):
        for args in [(), (0,), (1, True), ((0, 1),)]:
            same(getattr(x, op)(*args), getattr(t, op)(*args))
    for args in [(), (0,), ((0, 1),)]:
        same(x.count_nonzero(*args), t.count_nonzero(*args))
    same(ax.ones(2, 0).all(1), torch.ones(2, 0).all(1))
    same(ax.ones(2, 0).any(1), torch.ones(2, 0).any(1))


# -- dims and bad input --------------------------------------------------------------------------------------
@pytest.mark.parametrize("op", ["var", "std", "amax", "logsumexp", "all", "count_nonzero", "norm"])
def test_dim_out_of_range_and_duplicates(op):
    x = ax.ones(2, 3)
    call = (lambda d: x.norm(2, d)) if op == "norm" else (lambda d: getattr(x, op)(d))
    with pytest.raises(IndexError, match=rf"{op if op != 'norm' else 'vector_norm'}.*dimension 2 out of range.*2 dim"):
        call(2)
    with pytest.raises(ValueError, match="multiple times"):
        call((0, -2))


def test_reductions_of_0d():
    t = torch.tensor(1.5, requires_grad=True)
    for name, args in [
        ("var", (0, False)),
        ("amax", (0,)),
        ("amin", (-1,)),
        ("logsumexp", (0,)),
        ("norm", (2, 0)),
        ("prod", (0,)),
    ]:
        check_vs_torch(lambda x: getattr(x, name)(*args), lambda x: getattr(x, name)(*args), [np.array(1.5, np.float32)])
    assert t.max(0).indices.item() == ax.tensor(1.5).max(0).indices.item() == 0


# -- second order ------------------------------------------------------------------------------------------
def second_order(ax_fn, torch_fn, a, seed=0):
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


@pytest.mark.parametrize(
    "name,fn",
    [
        ("var", lambda x: x.var(1, keepdim=True) * x),
        ("std", lambda x: x.std(0) * x),
        ("std_all", lambda x: x.std() * x),
        ("logsumexp", lambda x: x.logsumexp(1, keepdim=True) * x),
        ("amax", lambda x: x.amax(0, keepdim=True) * x),
        ("max_dim", lambda x: x.max(1, keepdim=True).values * x),
        ("cumsum", lambda x: x.cumsum(1) * x),
        ("norm2", lambda x: x.norm(dim=1, keepdim=True) * x),
        ("norm1", lambda x: x.norm(1) * x),
        ("norm_inf", lambda x: x.norm(math.inf, 0, True) * x),
    ],
)
def test_second_order(name, fn):
    second_order(fn, fn, distinct(3, 4, dtype=np.float64))


def test_second_order_unsupported_is_clear():
    x = ax.tensor([[1.0, 2.0]], dtype=ax.float64, requires_grad=True)
    with pytest.raises(AutogradError, match="Prod"):
        ax.grad(x.prod(), x, create_graph=True)
    with pytest.raises(AutogradError, match="ord"):
        ax.grad(x.norm(3), x, create_graph=True)
