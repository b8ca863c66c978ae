"""Indexing (getitem/setitem) and selection ops against PyTorch, gradcheck, views, errors."""
# ruff: noqa: E731

import numpy as np
import pytest
from helpers import check_vs_torch, gradcheck, rand, torch

import axonml as ax
from axonml.errors import AutogradError, DTypeError, ShapeError
from axonml.tensor.ops import selection

pytestmark = [  # the nested-list index form is deprecated in torch, and warned about here too
    pytest.mark.filterwarnings("ignore:Using a non-tuple sequence:UserWarning"),
    pytest.mark.filterwarnings("ignore:indexing with a list of sequences:FutureWarning"),
]

SHAPE = (3, 4, 5)
_MASK = rand(*SHAPE, seed=7) > 0
_ROWS = np.array([True, False, True])
_MASK2 = rand(3, 4, seed=8) > 0

# index builders: T(value) makes an index tensor of the framework under test
INDEXES = [
    ("int", lambda T: 1),
    ("neg_int", lambda T: -1),
    ("ints", lambda T: (1, -2)),
    ("all_ints", lambda T: (2, 3, -1)),
    ("slice", lambda T: slice(1, None)),
    ("slice_steps", lambda T: (slice(None, None, 2), slice(1, 4, 2))),
    ("slice_clamped", lambda T: (slice(-100, 100), slice(3, 100))),
    ("slice_empty", lambda T: slice(2, 1)),
    ("none", lambda T: (None, 0, None)),
    ("ellipsis", lambda T: (Ellipsis, 1)),
    ("ellipsis_mid", lambda T: (0, Ellipsis, None, 2)),
    ("empty_tuple", lambda T: ()),
    ("list", lambda T: [0, 2, 0]),
    ("nested_list", lambda T: [[0, 1], [2, 2]]),
    ("int_tensor", lambda T: T([[0, 1], [2, 2]])),
    ("neg_tensor", lambda T: T([-1, -3])),
    ("numpy_ints", lambda T: np.array([2, 0])),
    ("empty_list", lambda T: []),
    ("zero_d_tensor", lambda T: T(1)),
    ("slice_then_adv", lambda T: (slice(None), T([3, 0, 3]))),
    ("int_slice_adv", lambda T: (0, slice(None), T([1, 2]))),
    ("adv_adjacent_broadcast", lambda T: (slice(None), T([[0], [2]]), T([1, 4]))),
    ("adv_separated", lambda T: (T([0, 1]), slice(None), T([1, 4]))),
    ("adv_none_adv", lambda T: (T([0, 1]), None, T([1, 3]))),
    ("adv_ellipsis", lambda T: (T([2, 0]), Ellipsis, T([4]))),
    ("adv_with_step", lambda T: (slice(0, 3, 2), T([[1, 1]]), slice(None, None, 3))),
    ("mask_full", lambda T: T(_MASK)),
    ("mask_rows", lambda T: T(_ROWS)),
    ("mask_2d_slice", lambda T: (T(_MASK2), slice(1, 3))),
    ("slice_mask", lambda T: (slice(None), T(_MASK2[0]))),
    ("numpy_mask", lambda T: _ROWS),
    ("mask_and_int_tensor", lambda T: (T(_ROWS), slice(None), T([0, 4]))),
    ("true", lambda T: True),
    ("false", lambda T: (False, 1)),
    ("bool_mixed", lambda T: (None, True, Ellipsis, 2)),
]

_AX_T = lambda v: ax.tensor(v)  # noqa: E731
_TO_T = lambda v: torch.tensor(v)  # noqa: E731


@pytest.mark.parametrize("name,make", INDEXES, ids=[c[0] for c in INDEXES])
def test_getitem_vs_torch(name, make):
    a = rand(*SHAPE, dtype=np.float64)
    check_vs_torch(lambda x: x[make(_AX_T)], lambda x: x[make(_TO_T)], [a], atol=1e-12, rtol=1e-12)
    gradcheck(lambda x: x[make(_AX_T)], [a])


@pytest.mark.parametrize("name,make", INDEXES, ids=[c[0] for c in INDEXES])
def test_setitem_vs_torch(name, make):
    """Values match torch without autograd; with autograd on a non-leaf, the gradients
    of the target and of the value match torch's."""
    a = rand(*SHAPE, dtype=np.float64)
    tgt_shape = torch.tensor(a)[make(_TO_T)].shape
    vshape = tuple(tgt_shape[1:]) if len(tgt_shape) else ()  # broadcast over the first dim
    v = rand(*vshape, seed=3, dtype=np.float64) if vshape else np.asarray(2.5)

    xa, xt = ax.tensor(a), torch.tensor(a)
    xa[make(_AX_T)] = ax.tensor(v)
    xt[make(_TO_T)] = torch.tensor(v)
    np.testing.assert_array_equal(xa.numpy(), xt.numpy())
    xa[make(_AX_T)] = -1.5
    xt[make(_TO_T)] = -1.5
    np.testing.assert_array_equal(xa.numpy(), xt.numpy())

    dup = name in ("list", "nested_list", "int_tensor", "slice_then_adv", "adv_with_step")  # torch: undefined winner

    def f(m, x, val):
        y = x * 2.0
        y[make(_AX_T if m is ax else _TO_T)] = val * 3.0
        return y

    if not dup:
        check_vs_torch(lambda x, val: f(ax, x, val), lambda x, val: f(torch, x, val), [a, v], atol=1e-12)
        gradcheck(lambda x, val: f(ax, x, val), [a, v])


def test_getitem_noncontiguous_and_int_dtypes():
    a = rand(4, 3, 5, dtype=np.float64)
    for make in (lambda T: (1, slice(None, None, 2)), lambda T: (T([2, 0, 2]), 1), lambda T: T(np.arange(5) % 2 == 0)):
        check_vs_torch(lambda x: x.transpose(0, 2)[make(_AX_T)], lambda x: x.transpose(0, 2)[make(_TO_T)], [a])
        gradcheck(lambda x: x.transpose(0, 2)[make(_AX_T)] * 1.0, [a])
    b = np.arange(12).reshape(3, 4)
    for idx in (1, (slice(None), [0, 0, 3]), b % 3 == 0):
        got, want = ax.tensor(b)[idx], torch.tensor(b)[torch.tensor(idx) if isinstance(idx, np.ndarray) else idx]
        assert got.dtype == ax.int64
        np.testing.assert_array_equal(got.numpy(), want.numpy())


def test_getitem_size0_and_size1():
    a = np.zeros((0, 3))
    check_vs_torch(lambda x: x[:, 1], lambda x: x[:, 1], [a])
    check_vs_torch(lambda x: x[[]], lambda x: x[[]], [a])
    check_vs_torch(lambda x: x[..., [2, 0]], lambda x: x[..., [2, 0]], [a])
    b = rand(1, 3, 1, dtype=np.float64)
    for idx in ((0, slice(None), 0), (slice(None), [2, 2], 0), (-1, None, Ellipsis)):
        check_vs_torch(lambda x: x[idx], lambda x: x[idx], [b])
        gradcheck(lambda x: x[idx] * 1.0, [b])
    s = ax.tensor(3.0)
    assert s[None].shape == (1,) and s[...].item() == 3.0 and s[True].shape == (1,)


def test_repeated_indices_accumulate():
    x = ax.zeros(4, requires_grad=True)
    x[[1, 1, 3, 1]].sum().backward()
    assert x.grad.tolist() == [0, 3, 0, 1]


def test_basic_index_is_a_view():
    x = ax.zeros(3, 4)
    v = x[1, 1:]
    assert np.shares_memory(v.numpy(), x.numpy())
    v[0] = 5.0  # write through the view ...
    assert x[1, 1].item() == 5.0 and x._version == v._version == 1
    x[1, 2] = 7.0  # ... and through the base
    assert v[1].item() == 7.0 and v._version == 2
    e = x[0, 0]  # all ints: still a (0-d) view
    x.fill_(1.0)
    assert e.item() == 1.0 and e._version == 3
    adv = x[[0, 1]]  # advanced: a copy
    x.fill_(2.0)
    assert adv.sum().item() == 8.0 and not np.shares_memory(adv.numpy(), x.numpy())


def test_setitem_bumps_version_and_views_see_it():
    x = ax.zeros(2, 3)
    row = x[1]
    x[x == 0] = 4.0
    x[:, [0, 2]] = ax.tensor([1.0, 2.0])
    assert row.tolist() == [1.0, 4.0, 2.0] and x._version == 2
    x[0] = ax.tensor([[9, 8, 7]])  # an int value with a leading unit dim: cast and broadcast
    assert x[0].tolist() == [9.0, 8.0, 7.0]
    x[1] = np.array([5.0, 5.0, 5.0])
    assert row.tolist() == [5.0, 5.0, 5.0]


def test_setitem_autograd_cases():
    w = ax.ones(3, requires_grad=True)
    buf = ax.zeros(2, 3)  # a leaf without grad takes over the value's graph
    buf[1] = w * 2
    assert buf.requires_grad and buf.grad_fn is not None
    buf.sum().backward()
    assert w.grad.tolist() == [2.0, 2.0, 2.0]
    with pytest.raises(AutogradError, match="leaf"):
        w[0] = 1.0
    with ax.no_grad():
        w[0] = 5.0  # allowed without grad, writes in place
    assert w.detach().tolist() == [5.0, 1.0, 1.0]
    w.grad = None
    y = w * 1.0
    y[0] = 0.0  # a non-leaf: position 0 no longer depends on w
    assert y.grad_fn is not None and y._version == 1
    (y * 3.0).sum().backward()
    assert w.grad.tolist() == [0.0, 3.0, 3.0]
    base = w * 1.0
    view = base[1:]
    with pytest.raises(AutogradError, match="views"):
        base[0] = w[0]  # rebasing a tensor that has views is not supported
    assert view.shape == (2,)


def test_setitem_errors():
    x = ax.zeros(3, 4)
    with pytest.raises(ShapeError, match=r"value of shape \(3,\) cannot be broadcast to the indexed shape \(4,\)"):
        x[0] = ax.zeros(3)
    with pytest.raises(IndexError, match="index 3 is out of range for dimension 0 with size 3"):
        x[3] = 1.0
    e = ax.zeros(4).expand(3, 4)
    with pytest.raises(ValueError, match="read-only"):
        e[0, 0] = 1.0


@pytest.mark.parametrize(
    "idx,exc,pattern",
    [
        (5, IndexError, "index 5 is out of range for dimension 0 with size 3"),
        ((0, -6), IndexError, "index -6 is out of range for dimension 1 with size 4"),
        ((slice(None), [0, 4]), IndexError, "index 4 is out of range for dimension 1 with size 4"),
        ([-4], IndexError, "index -4 is out of range for dimension 0 with size 3"),
        (np.array([True, False]), IndexError, r"mask \(2,\) does not match the shape \(3,\)"),
        ((slice(None), np.ones(3, bool)), IndexError, r"mask \(3,\) does not match the shape \(4,\)"),
        ((0, 0, 0), IndexError, "too many indices for tensor of dimension 2"),
        ((Ellipsis, 0, Ellipsis), IndexError, "single ellipsis"),
        (slice(None, None, -1), ValueError, "step must be greater than zero"),
        (1.5, IndexError, "valid indices"),
        ("a", IndexError, "valid indices"),
        (([0, 1], [0, 1, 2]), IndexError, "could not be broadcast"),
    ],
)
def test_index_errors(idx, exc, pattern):
    x = ax.zeros(3, 4)
    with pytest.raises(exc, match=pattern):
        x[idx]
    with pytest.raises(exc, match=pattern):
        x[idx] = 1.0
    with pytest.raises(IndexError, match="float32"):
        x[ax.tensor([0.0])]


def test_second_order_through_indexing():
    a = rand(3, 4, dtype=np.float64)
    x, xt = ax.tensor(a, requires_grad=True), torch.tensor(a, requires_grad=True)
    f = lambda t, T: (t[T([0, 0, 2])][:, 1:] ** 3).sum()  # noqa: E731
    (g,) = ax.grad(f(x, _AX_T), [x], create_graph=True)
    (gt,) = torch.autograd.grad(f(xt, _TO_T), [xt], create_graph=True)
    (g[1:, [0, 3]] ** 2).sum().backward()
    (gt[1:, [0, 3]] ** 2).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), xt.grad.numpy(), rtol=1e-10)


# -- selection ops -------------------------------------------------------------------------
_IDX = [[2, 0, 1, 1], [0, 0, 2, 1]]
OPS = [
    ("index_select", lambda m, x: x.index_select(1, m.tensor([3, 0, 3])), [(2, 4)]),
    ("index_select_neg_dim", lambda m, x: m.index_select(x, -2, m.tensor([1])), [(2, 4)]),
    ("index_select_empty", lambda m, x: x.index_select(0, m.tensor([], dtype=m.int64)), [(2, 4)]),
    ("gather", lambda m, x: x.gather(0, m.tensor(_IDX)), [(3, 4)]),
    ("gather_dim1_small", lambda m, x: x.gather(1, m.tensor([[1, 1], [0, 2]])), [(3, 4)]),
    ("scatter", lambda m, x, s: x.scatter(0, m.tensor([[2, 0, 1, 1], [1, 2, 0, 0]]), s), [(3, 4), (2, 4)]),
    ("scatter_value", lambda m, x: x.scatter(1, m.tensor([[1], [3], [0]]), 9.0), [(3, 4)]),
    ("scatter_add", lambda m, x, s: x.scatter_add(0, m.tensor(_IDX), s), [(3, 4), (2, 4)]),
    ("index_add", lambda m, x, s: x.index_add(1, m.tensor([0, 2, 0]), s, alpha=2.0), [(2, 4), (2, 3)]),
    ("take_along_dim", lambda m, x: m.take_along_dim(x, m.tensor([[0, 2]]), 1), [(3, 4)]),
    ("take_along_dim_flat", lambda m, x: m.take_along_dim(x, m.tensor([5, 0, 5])), [(3, 4)]),
    ("take", lambda m, x: m.take(x, m.tensor([[11, -1], [0, 0]])), [(3, 4)]),
    ("masked_fill", lambda m, x: x.masked_fill(x > 0, -2.0), [(3, 4)]),
    ("masked_fill_bcast", lambda m, x: x.masked_fill(m.tensor([True, False, False, True]), 1.0), [(3, 4)]),
    ("masked_fill_tensor", lambda m, x, v: x.masked_fill(x < 0, v), [(3, 4), ()]),
    ("masked_select", lambda m, x: x.masked_select(x > 0), [(3, 4)]),
    ("masked_select_bcast", lambda m, x: m.masked_select(x, m.tensor([[True], [False], [True]])), [(3, 4)]),
    ("topk", lambda m, x: x.topk(2), [(3, 4)]),
    ("topk_small_dim0", lambda m, x: m.topk(x, 3, dim=0, largest=False), [(3, 4)]),
    ("topk_k0", lambda m, x: x.topk(0), [(3, 4)]),
    ("sort", lambda m, x: x.sort(), [(3, 4)]),
    ("sort_desc_dim0", lambda m, x: m.sort(x, 0, descending=True), [(3, 4)]),
    ("sort_0d", lambda m, x: x.sort(), [()]),
    ("sort_size0", lambda m, x: x.sort(0), [(0, 3)]),
]


@pytest.mark.parametrize("name,fn,shapes", OPS, ids=[c[0] for c in OPS])
def test_selection_ops(name, fn, shapes):
    arrays = [rand(*s, seed=i, dtype=np.float64) if s else np.asarray(0.5) for i, s in enumerate(shapes)]
    check_vs_torch(lambda *a: fn(ax, *a), lambda *a: fn(torch, *a), arrays, atol=1e-12)
    if all(np.prod(s) for s in shapes):
        gradcheck(lambda *a: fn(ax, *a), arrays)


NONCONTIG_OPS = [c for c in OPS[:12] if c[0] != "take_along_dim_flat"]  # torch's flat form needs .view


@pytest.mark.parametrize("name,fn,shapes", NONCONTIG_OPS, ids=[c[0] for c in NONCONTIG_OPS])
def test_selection_ops_noncontiguous(name, fn, shapes):
    """Inputs made non-contiguous by a transpose (same shapes after it)."""
    arrays = [np.ascontiguousarray(rand(*s, seed=i, dtype=np.float64).T) for i, s in enumerate(shapes)]
    tfn = lambda m, *xs: fn(m, *[x.t() for x in xs])  # noqa: E731
    check_vs_torch(lambda *a: tfn(ax, *a), lambda *a: tfn(torch, *a), arrays, atol=1e-12)


def test_sort_stable_and_nan_like_torch():
    a = np.array([[3.0, 1.0, 3.0, np.nan, 1.0, 2.0, 3.0], [0.0, 0.0, -1.0, 0.0, 5.0, np.nan, np.nan]])
    for desc in (False, True):
        got = ax.tensor(a).sort(descending=desc, stable=True)
        want = torch.tensor(a).sort(descending=desc, stable=True)
        np.testing.assert_array_equal(got.indices.numpy(), want.indices.numpy())
        np.testing.assert_array_equal(got.values.numpy(), want.values.numpy())
        want = torch.tensor(a).argsort(dim=1, descending=desc, stable=True)
        np.testing.assert_array_equal(ax.tensor(a).argsort(1, descending=desc).numpy(), want.numpy())
    b = np.array([True, False, True])
    assert ax.tensor(b).sort().indices.tolist() == torch.tensor(b).sort(stable=True).indices.tolist()
    v, i = ax.tensor([1.0, 5.0, 3.0]).topk(2)
    assert v.tolist() == [5.0, 3.0] and i.tolist() == [1, 2] and i.dtype == ax.int64


def test_scatter_src_larger_than_index():
    """src may be larger than index in every dim (only its leading block is used)."""
    a, src = rand(3, 4, dtype=np.float64), rand(2, 5, seed=1, dtype=np.float64)
    got = ax.tensor(a).scatter(0, ax.tensor([[2, 0, 1, 1]]), ax.tensor(src))
    want = torch.tensor(a).scatter(0, torch.tensor([[2, 0, 1, 1]]), torch.tensor(src))
    np.testing.assert_array_equal(got.numpy(), want.numpy())
    gradcheck(lambda x, s: x.scatter(0, ax.tensor([[2, 0, 1, 1]]), s), [a, src])
    gradcheck(lambda x, s: x.scatter(1, ax.tensor([[3], [3]]), s, reduce="add"), [a, src])


def test_topk_gradient_goes_to_picked_positions():
    x = ax.tensor([[1.0, 9.0, 4.0], [7.0, 2.0, 8.0]], requires_grad=True)
    x.topk(2, dim=1).values.sum().backward()
    assert x.grad.tolist() == [[0, 1, 1], [1, 0, 1]]


def test_in_place_variants():
    a, s, s2 = rand(3, 4, dtype=np.float64), rand(2, 4, seed=1, dtype=np.float64), rand(3, 2, seed=2, dtype=np.float64)
    idx = [[2, 0, 1, 1], [0, 0, 2, 1]]
    m = a > 0

    def f(mod, x, src, src2):
        y = x * 1.0
        y.scatter_add_(0, mod.tensor(idx), src)
        y.index_add_(1, mod.tensor([1, 1]), src2)
        y.masked_fill_(mod.tensor(m), 0.5)
        return y.scatter_(1, mod.tensor([[0], [3], [1]]), 2.0)

    check_vs_torch(lambda *xs: f(ax, *xs), lambda *xs: f(torch, *xs), [a, s, s2], atol=1e-12)
    x = ax.tensor(a)
    v = x[1]
    x.masked_fill_(ax.tensor(m), 0.0)  # no grad: in place, views see it, version bumps
    assert x._version == 1 and v.tolist() == np.where(m[1], 0.0, a[1]).tolist()


def test_nonzero_argwhere():
    a = np.array([[0, 1, 0], [2, 0, 3]])
    for as_tuple in (False, True):
        got = ax.tensor(a).nonzero(as_tuple=as_tuple)
        want = torch.tensor(a).nonzero(as_tuple=as_tuple)
        for g, w in zip(got if as_tuple else [got], want if as_tuple else [want]):
            assert g.dtype == ax.int64
            np.testing.assert_array_equal(g.numpy(), w.numpy())
    np.testing.assert_array_equal(ax.argwhere(ax.tensor(a)).numpy(), torch.argwhere(torch.tensor(a)).numpy())
    assert ax.tensor(5.0).nonzero().shape == (1, 0) and ax.zeros(0, 3).nonzero().shape == (0, 2)
    assert [t.tolist() for t in ax.tensor(5.0).nonzero(as_tuple=True)] == [[0]]
    r = ax.tensor(rand(3, 4), requires_grad=True).nonzero()
    assert not r.requires_grad


def test_one_hot():
    x = ax.tensor([[0, 2], [1, 0]])
    got = ax.one_hot(x)
    want = torch.nn.functional.one_hot(torch.tensor([[0, 2], [1, 0]]))
    assert got.dtype == ax.int64 and got.tolist() == want.tolist()
    assert ax.one_hot(ax.tensor([1]), num_classes=4).tolist() == [[0, 1, 0, 0]]
    assert ax.one_hot(ax.zeros(0, dtype=ax.int64), 3).shape == (0, 3)
    with pytest.raises(ValueError, match="not smaller than num_classes"):
        ax.one_hot(ax.tensor([3]), 3)
    with pytest.raises(ValueError, match="non-negative"):
        ax.one_hot(ax.tensor([-1]))
    with pytest.raises(DTypeError, match="integer"):
        ax.one_hot(ax.tensor([1.0]))


def test_searchsorted_and_unique():
    seq = np.array([1.0, 3.0, 5.0, 7.0])
    vals = np.array([[0.0, 3.0], [6.0, 9.0]])
    for right in (False, True):
        got = ax.searchsorted(ax.tensor(seq), ax.tensor(vals), right=right)
        want = torch.searchsorted(torch.tensor(seq), torch.tensor(vals), right=right)
        assert got.dtype == ax.int64 and got.tolist() == want.tolist()
    seq2 = np.array([[1.0, 2.0, 3.0], [0.0, 5.0, 6.0]])
    got = ax.searchsorted(ax.tensor(seq2), ax.tensor(vals), side="right", out_int32=True)
    want = torch.searchsorted(torch.tensor(seq2), torch.tensor(vals), side="right", out_int32=True)
    assert got.dtype == ax.int32 and got.tolist() == want.tolist()
    assert ax.searchsorted(ax.tensor(seq), 4.0).tolist() == 2
    u = np.array([[3, 1, 3], [2, 1, 1]])
    got = ax.unique(ax.tensor(u), return_inverse=True, return_counts=True)
    want = torch.unique(torch.tensor(u), return_inverse=True, return_counts=True)
    for g, w in zip(got, want):
        assert g.tolist() == w.tolist()
    assert ax.tensor(u).unique(dim=1).tolist() == torch.tensor(u).unique(dim=1).tolist()


def test_selection_errors():
    x = ax.zeros(3, 4)
    with pytest.raises(IndexError, match="gather: index 3 is out of range for dimension 0 with size 3"):
        x.gather(0, ax.tensor([[3, 0]]))
    with pytest.raises(IndexError, match="index_select: index -1 is out of range"):
        x.index_select(0, ax.tensor([-1]))
    with pytest.raises(ShapeError, match="index has 1 dims"):
        x.gather(1, ax.tensor([0]))
    with pytest.raises(ShapeError, match="exceeds input shape"):
        x.gather(1, ax.zeros(4, 1, dtype=ax.int64))
    with pytest.raises(DTypeError, match="integer"):
        x.index_select(0, ax.tensor([0.0]))
    with pytest.raises(DTypeError, match="bool"):
        x.masked_fill(ax.ones(3, 4, dtype=ax.int64), 1.0)
    with pytest.raises(ShapeError, match=r"mask of shape \(2, 4\) cannot be broadcast"):
        x.masked_fill(ax.ones(2, 4, dtype=ax.bool), 1.0)
    with pytest.raises(ShapeError, match="0-dimensional"):
        x.masked_fill(x > 0, ax.ones(1))
    with pytest.raises(ValueError, match=r"topk: k \(5\) is out of range for dimension 1 with size 4"):
        x.topk(5)
    with pytest.raises(ShapeError, match=r"source has shape \(3, 2\)"):
        x.index_add(1, ax.tensor([0]), ax.zeros(3, 2))


def test_add_at_uses_cupyx_when_xp_has_no_ufunc_at(monkeypatch):
    """The CuPy path: an array module without ``add.at`` goes to cupyx.scatter_add."""
    calls = []

    class FakeCupyx:
        @staticmethod
        def scatter_add(a, idx, v):
            calls.append(idx)
            np.add.at(a, idx, v)

    class FakeXp:
        add = object()  # no .at

    monkeypatch.setattr(selection.importlib, "import_module", lambda name: FakeCupyx if name == "cupyx" else None)
    t = np.zeros(3)
    selection.add_at(FakeXp, t, (np.array([0, 0, 2]),), np.ones(3))
    assert t.tolist() == [2.0, 0.0, 1.0] and len(calls) == 1
    t = np.zeros(3)
    selection.add_at(np, t, (np.array([1, 1]),), np.ones(2))
    assert t.tolist() == [0.0, 2.0, 0.0] and len(calls) == 1
