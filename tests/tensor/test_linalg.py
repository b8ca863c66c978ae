"""bmm, dot/outer/inner/kron, einsum, tensordot, add* forms, linear/bilinear, trace, cross:
values and gradients against PyTorch, gradcheck, second order, autocast dtypes, errors."""

import numpy as np
import pytest
from helpers import check_vs_torch, gradcheck, rand, torch

import axonml as ax
from axonml.errors import ShapeError

F = torch.nn.functional


def _both(fa, ft, arrays, second_order=False):
    check_vs_torch(fa, ft, arrays)
    gradcheck(fa, arrays)
    if second_order:
        _check_double_backward(fa, ft, arrays)


def _check_double_backward(fa, ft, arrays):
    """d/dx of |grad f|^2 agrees with PyTorch (exercises differentiable_backward)."""
    xa = [ax.tensor(a.astype(np.float64), requires_grad=True) for a in arrays]
    xt = [torch.tensor(a.astype(np.float64), requires_grad=True) for a in arrays]
    ga = ax.grad((fa(*xa) ** 2).sum(), xa, create_graph=True)
    gt = torch.autograd.grad((ft(*xt) ** 2).sum(), xt, create_graph=True)
    sum((g * g).sum() for g in ga).backward()
    sum((g * g).sum() for g in gt).backward()
    for a, t in zip(xa, xt):
        np.testing.assert_allclose(a.grad.numpy(), t.grad.numpy(), rtol=1e-7, atol=1e-9)


def test_bmm():
    a, b = rand(2, 3, 4), rand(2, 4, 5, seed=1)
    _both(ax.bmm, torch.bmm, [a, b], second_order=True)
    check_vs_torch(lambda x, y: x.bmm(y.transpose(1, 2)), lambda x, y: x.bmm(y.transpose(1, 2)), [a, rand(2, 5, 4, seed=2)])
    check_vs_torch(ax.bmm, torch.bmm, [rand(0, 3, 4), rand(0, 4, 2)])
    check_vs_torch(ax.bmm, torch.bmm, [rand(2, 3, 0), rand(2, 0, 2)])


def test_bmm_errors():
    with pytest.raises(ShapeError, match=r"3-D.*\(3, 4\)"):
        ax.bmm(ax.randn(3, 4), ax.randn(3, 4, 2))
    with pytest.raises(ShapeError, match=r"\(2, 3, 4\) and \(3, 4, 5\)"):
        ax.bmm(ax.randn(2, 3, 4), ax.randn(3, 4, 5))
    with pytest.raises(ShapeError, match=r"\(2, 3, 4\) and \(2, 5, 5\)"):
        ax.bmm(ax.randn(2, 3, 4), ax.randn(2, 5, 5))


def test_vector_products():
    a, b = rand(5), rand(5, seed=1)
    _both(ax.dot, torch.dot, [a, b], second_order=True)
    _both(ax.vdot, torch.vdot, [a, b])
    _both(ax.outer, torch.outer, [a, rand(3, seed=2)])
    _both(ax.ger, torch.ger, [a, rand(3, seed=2)])
    check_vs_torch(lambda x, y: x.dot(y) + x.outer(y).sum(), lambda x, y: x.dot(y) + x.outer(y).sum(), [a, b])
    with pytest.raises(ShapeError, match="inconsistent tensor sizes 5 and 4"):
        ax.dot(ax.randn(5), ax.randn(4))
    with pytest.raises(ShapeError, match="1-D"):
        ax.dot(ax.randn(2, 2), ax.randn(2, 2))


@pytest.mark.parametrize("sa,sb", [((4,), (4,)), ((3, 4), (4,)), ((2, 3, 4), (5, 4)), ((), (3, 2)), ((3,), ())])
def test_inner(sa, sb):
    _both(ax.inner, torch.inner, [rand(*sa), rand(*sb, seed=1)])


@pytest.mark.parametrize("sa,sb", [((2, 3), (3, 2)), ((3,), (2,)), ((2, 1, 2), (3, 2)), ((2,), (2, 3))])
def test_kron(sa, sb):
    _both(ax.kron, torch.kron, [rand(*sa), rand(*sb, seed=1)])


def test_mv_addmv():
    m, v, c = rand(3, 4), rand(4, seed=1), rand(3, seed=2)
    _both(ax.mv, torch.mv, [m, v])
    _both(
        lambda i, m, v: ax.addmv(i, m, v, beta=0.5, alpha=2.0),
        lambda i, m, v: torch.addmv(i, m, v, beta=0.5, alpha=2.0),
        [c, m, v],
    )
    with pytest.raises(ShapeError, match=r"\(3, 4\) and \(3,\)"):
        ax.mv(ax.randn(3, 4), ax.randn(3))


@pytest.mark.parametrize("beta,alpha", [(1, 1), (0.5, 2.0), (0, 1.5)])
@pytest.mark.parametrize("ishape", [(3, 5), (5,), (1, 5)])
def test_addmm(beta, alpha, ishape):
    fa = lambda i, a, b: ax.addmm(i, a, b, beta=beta, alpha=alpha)  # noqa: E731
    ft = lambda i, a, b: torch.addmm(i, a, b, beta=beta, alpha=alpha)  # noqa: E731
    arrays = [rand(*ishape), rand(3, 4, seed=1), rand(4, 5, seed=2)]
    check_vs_torch(fa, ft, arrays)
    gradcheck(fa, arrays)
    nc = [rand(*ishape), rand(4, 3, seed=3), rand(5, 4, seed=4)]  # transposed (non-contiguous) operands
    check_vs_torch(lambda i, a, b: fa(i, a.t(), b.t()), lambda i, a, b: ft(i, a.t(), b.t()), nc)


def test_addmm_beta_zero_ignores_nan_and_inplace():
    i = ax.full((2, 2), float("nan"))
    out = ax.addmm(i, ax.ones(2, 3), ax.ones(3, 2), beta=0)
    np.testing.assert_array_equal(out.numpy(), 3.0)
    x = ax.zeros(2, 2)
    assert x.addmm_(ax.ones(2, 3), ax.ones(3, 2)) is x
    np.testing.assert_array_equal(x.numpy(), 3.0)
    with pytest.raises(ShapeError, match=r"\(4, 2\).*\(2, 2\)"):
        ax.addmm(ax.zeros(4, 2), ax.ones(2, 3), ax.ones(3, 2))


@pytest.mark.parametrize("ishape", [(2, 3, 5), (3, 5), (1,)])
def test_baddbmm_addbmm(ishape):
    b1, b2 = rand(2, 3, 4, seed=1), rand(2, 4, 5, seed=2)
    fa = lambda i, a, b: ax.baddbmm(i, a, b, beta=0.5, alpha=-1.5)  # noqa: E731
    ft = lambda i, a, b: torch.baddbmm(i, a, b, beta=0.5, alpha=-1.5)  # noqa: E731
    _both(fa, ft, [rand(*ishape), b1, b2])
    if len(ishape) <= 2:
        fa2 = lambda i, a, b: ax.addbmm(i, a, b, beta=2.0, alpha=0.5)  # noqa: E731
        ft2 = lambda i, a, b: torch.addbmm(i, a, b, beta=2.0, alpha=0.5)  # noqa: E731
        _both(fa2, ft2, [rand(*ishape), b1, b2])
    check_vs_torch(lambda i, a, b: i.baddbmm(a, b), lambda i, a, b: i.baddbmm(a, b), [rand(*ishape), b1, b2])


EINSUMS = [
    ("ij,jk->ik", [(3, 4), (4, 5)]),
    ("ij,jk", [(3, 4), (4, 5)]),
    ("bij,bjk->bik", [(2, 3, 4), (2, 4, 5)]),
    ("bhqd,bhkd->bhqk", [(2, 2, 3, 4), (2, 2, 5, 4)]),
    ("ii->i", [(3, 3)]),
    ("ii", [(3, 3)]),
    ("iij->j", [(3, 3, 2)]),
    ("ij->", [(3, 4)]),
    ("ij->ji", [(3, 4)]),
    ("i,j->ij", [(3,), (4,)]),
    ("i,i", [(3,), (3,)]),
    ("i,i->", [(3,), (1,)]),
    ("ij,j->ij", [(3, 1), (4,)]),
    ("...ij,...jk->...ik", [(2, 1, 3, 4), (5, 4, 2)]),
    ("...ij->ij", [(2, 3, 4)]),
    ("b...,b...->b", [(2, 3, 4), (2, 3, 4)]),
    ("Ab,ab->A", [(2, 3), (4, 3)]),
    ("ij,jk,kl->il", [(2, 3), (3, 4), (4, 2)]),
    ("ij,ij,ij->i", [(2, 3), (2, 3), (2, 3)]),
    ("ijk,jil->kl", [(2, 3, 4), (3, 2, 5)]),
    ("i j , j k -> i k", [(2, 3), (3, 2)]),
    ("ij,kj->ik", [(0, 3), (2, 3)]),
]


@pytest.mark.parametrize("eq,shapes", EINSUMS, ids=[e[0] for e in EINSUMS])
def test_einsum(eq, shapes):
    arrays = [rand(*s, seed=i) for i, s in enumerate(shapes)]
    fa = lambda *xs: ax.einsum(eq, *xs)  # noqa: E731
    ft = lambda *xs: torch.einsum(eq, *xs)  # noqa: E731
    check_vs_torch(fa, ft, arrays)
    if all(a.size for a in arrays):
        gradcheck(fa, arrays)
        _check_double_backward(fa, ft, arrays)


def test_einsum_list_operands_and_noncontiguous():
    a, b = rand(4, 3), rand(5, 4, seed=1)
    check_vs_torch(
        lambda x, y: ax.einsum("ij,jk->ik", [x.t(), y.t()]), lambda x, y: torch.einsum("ij,jk->ik", [x.t(), y.t()]), [a, b]
    )


def test_einsum_errors():
    a = ax.randn(2, 3)
    with pytest.raises(ValueError, match="names 2 operand.*1 were given"):
        ax.einsum("ij,jk->ik", a)
    with pytest.raises(ShapeError, match="subscript j has size 4 for operand 1.*size 3"):
        ax.einsum("ij,jk->ik", a, ax.randn(4, 5))
    with pytest.raises(ValueError, match="output subscript i appears more than once"):
        ax.einsum("ij->iij", a)
    with pytest.raises(ValueError, match="output subscript k does not appear"):
        ax.einsum("ij->k", a)
    with pytest.raises(ShapeError, match="operand 0 has 2 dim.*names 3"):
        ax.einsum("ijk->i", a)
    with pytest.raises(ShapeError, match="repeated for operand 0.*2 != 3"):
        ax.einsum("ii->i", a)
    with pytest.raises(ValueError, match="invalid subscript '1'"):
        ax.einsum("i1->i", a)


@pytest.mark.parametrize(
    "sa,sb,dims",
    [
        ((2, 3, 4), (3, 4, 5), 2),
        ((3, 4), (4, 5), 1),
        ((2, 3), (4, 5), 0),
        ((2, 3, 4), (4, 2, 5), ([0, 2], [1, 0])),
        ((3, 4), (4, 3), ([1], [0])),
    ],
)
def test_tensordot(sa, sb, dims):
    _both(
        lambda a, b: ax.tensordot(a, b, dims=dims), lambda a, b: torch.tensordot(a, b, dims=dims), [rand(*sa), rand(*sb, seed=1)]
    )


def test_tensordot_errors():
    with pytest.raises(ShapeError, match="dimension 1 of a \\(size 3\\).*size 4"):
        ax.tensordot(ax.randn(2, 3), ax.randn(4, 5), dims=([1], [0]))


@pytest.mark.parametrize("xshape", [(4, 3), (3,), (2, 5, 3), (0, 3)])
@pytest.mark.parametrize("bias", [True, False])
def test_linear(xshape, bias):
    x, w, b = rand(*xshape), rand(6, 3, seed=1), rand(6, seed=2)
    arrays = [x, w, b] if bias else [x, w]
    _both(ax.linear, F.linear, arrays, second_order=bool(np.prod(xshape)))
    # transposed (non-contiguous) weight, the way tied embeddings are often used
    check_vs_torch(lambda x, w, *b: ax.linear(x, w.t().t(), *b), lambda x, w, *b: F.linear(x, w.t().t(), *b), arrays)
    check_vs_torch(
        lambda x, w, *b: ax.linear(x.transpose(0, -1).transpose(0, -1), w, *b),
        lambda x, w, *b: F.linear(x.transpose(0, -1).transpose(0, -1), w, *b),
        arrays,
    )


def test_linear_1d_weight_and_errors():
    _both(ax.linear, F.linear, [rand(4, 3), rand(3, seed=1)])
    with pytest.raises(ShapeError, match=r"\(4, 3\) has 3 features but weight of shape \(6, 2\) expects 2"):
        ax.linear(ax.randn(4, 3), ax.randn(6, 2))
    with pytest.raises(ShapeError, match=r"bias of shape \(5,\).*out_features=6"):
        ax.linear(ax.randn(4, 3), ax.randn(6, 3), ax.randn(5))


def test_bilinear():
    _both(ax.bilinear, F.bilinear, [rand(4, 3), rand(4, 2, seed=1), rand(5, 3, 2, seed=2), rand(5, seed=3)])
    _both(ax.bilinear, F.bilinear, [rand(2, 4, 3), rand(2, 4, 2, seed=1), rand(5, 3, 2, seed=2)])


def test_trace():
    _both(ax.trace, torch.trace, [rand(3, 4)])
    _both(ax.trace, torch.trace, [rand(4, 3)])
    check_vs_torch(lambda x: x.trace(), lambda x: x.trace(), [np.arange(9).reshape(3, 3).astype(np.int32)])
    with pytest.raises(ShapeError, match="2-D"):
        ax.trace(ax.randn(2, 2, 2))


@pytest.mark.parametrize("sa,sb,dim", [((4, 3), (4, 3), 1), ((3, 5), (3, 5), 0), ((2, 3, 4), (3, 1), 1), ((3,), (2, 3), -1)])
def test_cross(sa, sb, dim):
    _both(
        lambda a, b: ax.cross(a, b, dim=dim),
        lambda a, b: (
            torch.linalg.cross(a, b, dim=dim) if len(sa) == len(sb) else torch.cross(*torch.broadcast_tensors(a, b), dim=dim)
        ),
        [rand(*sa), rand(*sb, seed=1)],
    )


def test_cross_default_dim_and_errors():
    a, b = rand(3, 3), rand(3, 3, seed=1)
    with pytest.warns(UserWarning, match="first dimension of size 3"):
        got = ax.cross(ax.tensor(a), ax.tensor(b))
    np.testing.assert_allclose(got.numpy(), np.cross(a, b, axis=0), rtol=1e-6)
    with pytest.raises(ShapeError, match="size 3"):
        ax.cross(ax.randn(4, 2), ax.randn(4, 2), dim=1)


def test_autocast_dtypes_match_torch():
    x3, w = rand(2, 3, 4), rand(5, 4, seed=1)
    cases = [
        ("linear", lambda m, x, w: m.linear(x[0], w) if m is ax else F.linear(x[0], w)),
        ("bmm", lambda m, x, w: m.bmm(x, x.transpose(1, 2))),
        ("baddbmm", lambda m, x, w: m.baddbmm(x[:, :, :3], x, x[:, :3].transpose(1, 2))),
        ("addmm", lambda m, x, w: m.addmm(x[0, :, :1], x[0], w.t())),
        ("einsum2", lambda m, x, w: m.einsum("bij,kj->bik", x, w)),
        ("einsum1", lambda m, x, w: m.einsum("bij->j", x)),
        ("dot", lambda m, x, w: m.dot(x[0, 0], x[0, 1])),
        ("mv", lambda m, x, w: m.mv(x[0], x[0, 0])),
        ("outer", lambda m, x, w: m.outer(x[0, 0], x[0, 1])),
        ("trace", lambda m, x, w: m.trace(x[0])),
        ("inner_nd", lambda m, x, w: m.inner(x, w)),
        ("bilinear", lambda m, x, w: (m if m is ax else F).bilinear(x[0, :, :1], x[1], x[:1, :1, :])),
    ]
    for indt in ("float32", "bfloat16", "float64"):
        xa, wa = ax.tensor(x3).to(indt), ax.tensor(w).to(indt)
        xt, wt = torch.tensor(x3).to(getattr(torch, indt)), torch.tensor(w).to(getattr(torch, indt))
        with ax.autocast("cpu", dtype=ax.bfloat16), torch.autocast("cpu", dtype=torch.bfloat16):
            for name, f in cases:
                got, want = f(ax, xa, wa), f(torch, xt, wt)
                assert got.dtype.name == str(want.dtype).split(".")[-1], (name, indt)
                assert tuple(got.shape) == tuple(want.shape), name


def test_half_precision_products():
    for dt in ("float16", "bfloat16"):
        x, w, b = rand(4, 3), rand(5, 3, seed=1), rand(5, seed=2)
        xa, wa, ba = (ax.tensor(a).to(dt).requires_grad_() for a in (x, w, b))
        xt, wt, bt = (torch.tensor(a).to(getattr(torch, dt)).requires_grad_() for a in (x, w, b))
        ya, yt = ax.linear(xa, wa, ba), F.linear(xt, wt, bt)
        assert ya.dtype.name == dt
        np.testing.assert_allclose(ya.float().detach().numpy(), yt.float().detach().numpy(), atol=3e-2, rtol=2e-2)
        ya.sum().backward()
        yt.sum().backward()
        np.testing.assert_allclose(wa.grad.float().numpy(), wt.grad.float().numpy(), atol=3e-2, rtol=2e-2)
