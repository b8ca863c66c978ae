"""Shape ops (axonml.tensor.ops.shape and shape_join) against PyTorch, gradcheck, views."""

import numpy as np
import pytest
from helpers import check_vs_torch, gradcheck, rand, torch

import axonml as ax
from axonml.errors import ShapeError

# (name, fn(m, *tensors), input shapes): m is the module, axonml or torch
CASES = [
    ("squeeze_all", lambda m, x: x.squeeze(), [(3, 1, 4, 1)]),
    ("squeeze_dim", lambda m, x: x.squeeze(1), [(3, 1, 4, 1)]),
    ("squeeze_neg", lambda m, x: x.squeeze(-1), [(3, 1, 4, 1)]),
    ("squeeze_tuple", lambda m, x: x.squeeze((1, 3)), [(3, 1, 4, 1)]),
    ("squeeze_not1", lambda m, x: x.squeeze(0), [(3, 1, 4, 1)]),
    ("squeeze_0d", lambda m, x: x.squeeze(), [()]),
    ("unsqueeze", lambda m, x: x.unsqueeze(1), [(3, 4)]),
    ("unsqueeze_neg", lambda m, x: x.unsqueeze(-1), [(3, 4)]),
    ("unsqueeze_0d", lambda m, x: x.unsqueeze(0), [()]),
    ("flatten", lambda m, x: x.flatten(), [(2, 3, 4)]),
    ("flatten_mid", lambda m, x: x.flatten(1, 2), [(2, 3, 4, 2)]),
    ("flatten_neg", lambda m, x: x.flatten(-2), [(2, 3, 4)]),
    ("flatten_0d", lambda m, x: x.flatten(), [()]),
    ("ravel", lambda m, x: x.ravel(), [(2, 3)]),
    ("unflatten", lambda m, x: x.unflatten(1, (3, -1)), [(2, 12)]),
    ("narrow", lambda m, x: x.narrow(1, 1, 2), [(3, 4)]),
    ("narrow_neg", lambda m, x: x.narrow(-1, -3, 2), [(3, 4)]),
    ("narrow_empty", lambda m, x: x.narrow(0, 3, 0), [(3, 4)]),
    ("select", lambda m, x: x.select(1, -1), [(3, 4)]),
    ("cat0", lambda m, x, y: m.cat([x, y]), [(2, 3), (4, 3)]),
    ("cat1", lambda m, x, y: m.cat([x, y, x], dim=-1), [(2, 3), (2, 1)]),
    ("cat_size0", lambda m, x, y: m.cat([x, y], 1), [(2, 0), (2, 3)]),
    ("cat_legacy_empty", lambda m, x, y: m.cat([x, y], 1), [(0,), (2, 3)]),
    ("concat", lambda m, x, y: m.concat([x, y]), [(1, 3), (2, 3)]),
    ("stack", lambda m, x, y: m.stack([x, y]), [(2, 3), (2, 3)]),
    ("stack_neg", lambda m, x, y: m.stack((x, y, x), dim=-1), [(2, 3), (2, 3)]),
    ("stack_0d", lambda m, x, y: m.stack([x, y]), [(), ()]),
    ("hstack", lambda m, x, y: m.hstack([x, y]), [(2, 3), (2, 1)]),
    ("hstack_1d", lambda m, x, y: m.hstack([x, y]), [(2,), (3,)]),
    ("vstack", lambda m, x, y: m.vstack([x, y]), [(3,), (2, 3)]),
    ("dstack", lambda m, x, y: m.dstack([x, y]), [(2, 3), (2, 3)]),
    ("split_int", lambda m, x: x.split(2), [(5, 3)]),
    ("split_list", lambda m, x: x.split([1, 0, 2], dim=1), [(2, 3)]),
    ("split_size1", lambda m, x: x.split(1, -1), [(2, 3)]),
    ("chunk", lambda m, x: x.chunk(3), [(5, 2)]),
    ("chunk_fewer", lambda m, x: x.chunk(4, 1), [(2, 6)]),
    ("unbind", lambda m, x: x.unbind(1), [(2, 3)]),
    ("unbind_1d", lambda m, x: x.unbind(), [(3,)]),
    ("repeat", lambda m, x: x.repeat(2, 3), [(2, 3)]),
    ("repeat_newdims", lambda m, x: x.repeat(2, 1, 3), [(3,)]),
    ("repeat_0d", lambda m, x: x.repeat(3), [()]),
    ("repeat_zero", lambda m, x: x.repeat(0, 2), [(2, 3)]),
    ("tile", lambda m, x: x.tile((2,)), [(2, 3)]),
    ("repeat_interleave", lambda m, x: x.repeat_interleave(2), [(2, 3)]),
    ("repeat_interleave_dim", lambda m, x: x.repeat_interleave(3, dim=1), [(2, 3)]),
    ("repeat_interleave_tensor", lambda m, x: x.repeat_interleave(m.tensor([1, 0, 3]), dim=-1), [(2, 3)]),
    ("flip", lambda m, x: x.flip(0), [(3, 4)]),
    ("flip_multi", lambda m, x: x.flip((0, -1)), [(2, 3, 4)]),
    ("fliplr", lambda m, x: m.fliplr(x), [(3, 4)]),
    ("flipud", lambda m, x: m.flipud(x), [(3, 4)]),
    ("roll_flat", lambda m, x: x.roll(2), [(3, 4)]),
    ("roll_dim", lambda m, x: x.roll(-1, 1), [(3, 4)]),
    ("roll_multi", lambda m, x: x.roll((1, 5), (0, 1)), [(3, 4)]),
    ("tril", lambda m, x: x.tril(), [(4, 4)]),
    ("tril_k", lambda m, x: x.tril(-1), [(3, 5)]),
    ("triu", lambda m, x: x.triu(), [(2, 4, 3)]),
    ("triu_k", lambda m, x: x.triu(2), [(4, 5)]),
    ("movedim", lambda m, x: x.movedim(0, -1), [(2, 3, 4)]),
    ("movedim_multi", lambda m, x: m.movedim(x, (0, 1), (2, 0)), [(2, 3, 4)]),
    ("moveaxis", lambda m, x: m.moveaxis(x, -1, 0), [(2, 3, 4)]),
    ("swapaxes", lambda m, x: x.swapaxes(0, 2), [(2, 3, 4)]),
    ("swapdims", lambda m, x: m.swapdims(x, -1, 1), [(2, 3, 4)]),
    ("diagonal", lambda m, x: x.diagonal(), [(3, 4)]),
    ("diagonal_offset", lambda m, x: x.diagonal(1), [(3, 4)]),
    ("diagonal_negoff", lambda m, x: x.diagonal(-1, 0, 2), [(3, 2, 4)]),
    ("diagonal_dims", lambda m, x: x.diagonal(0, -1, 0), [(3, 2, 4)]),
    ("diag_1d", lambda m, x: m.diag(x), [(3,)]),
    ("diag_1d_k", lambda m, x: m.diag(x, -2), [(3,)]),
    ("diag_2d", lambda m, x: m.diag(x, 1), [(3, 4)]),
    ("view_as", lambda m, x, y: x.view_as(y), [(2, 6), (3, 4)]),
    ("reshape_as", lambda m, x, y: x.reshape_as(y), [(2, 6), (4, 3)]),
    ("broadcast_to", lambda m, x: x.broadcast_to((2, 3, 4)), [(3, 1)]),
    ("broadcast_tensors", lambda m, x, y: m.broadcast_tensors(x, y), [(3, 1), (2, 1, 4)]),
    ("meshgrid_ij", lambda m, x, y: m.meshgrid(x, y, indexing="ij"), [(3,), (2,)]),
    ("meshgrid_xy", lambda m, x, y, z: m.meshgrid(x, y, z, indexing="xy"), [(3,), (2,), (4,)]),
    ("atleast_1d", lambda m, x: m.atleast_1d(x), [()]),
    ("atleast_2d", lambda m, x: m.atleast_2d(x), [(3,)]),
    ("atleast_3d", lambda m, x, y: m.atleast_3d(x, y), [(3,), (2, 3)]),
    ("size0", lambda m, x: x.unsqueeze(0).flatten(1).flip(1).roll(1).repeat(2, 1), [(0, 3)]),
]


def _check(fn, shapes, seed=0, grad=True):
    arrays = [rand(*s, seed=seed + i, dtype=np.float64) if s else np.asarray(0.25 + i) for i, s in enumerate(shapes)]
    check_vs_torch(lambda *a: fn(ax, *a), lambda *a: fn(torch, *a), arrays, atol=1e-10, rtol=1e-10)
    if grad and any(np.prod(s) for s in shapes):
        gradcheck(lambda *a: fn(ax, *a), arrays)


@pytest.mark.parametrize("name,fn,shapes", CASES, ids=[c[0] for c in CASES])
def test_vs_torch_and_gradcheck(name, fn, shapes):
    _check(fn, shapes)


NONCONTIG = [
    ("squeeze", lambda m, x: x.unsqueeze(1).squeeze(1)),
    ("flatten", lambda m, x: x.flatten()),
    ("narrow", lambda m, x: x.narrow(0, 1, 2)),
    ("cat", lambda m, x: m.cat([x, x], 1)),
    ("stack", lambda m, x: m.stack([x, x], 1)),
    ("split", lambda m, x: x.split(2, 1)),
    ("unbind", lambda m, x: x.unbind(0)),
    ("repeat", lambda m, x: x.repeat(2, 1)),
    ("repeat_interleave", lambda m, x: x.repeat_interleave(2, 0)),
    ("flip", lambda m, x: x.flip(1)),
    ("roll", lambda m, x: x.roll(1, 0)),
    ("tril", lambda m, x: x.tril(1)),
    ("diagonal", lambda m, x: x.diagonal()),
]


@pytest.mark.parametrize("name,fn", NONCONTIG, ids=[c[0] for c in NONCONTIG])
def test_noncontiguous_input(name, fn):
    """The same ops on a transposed (non-contiguous) input."""
    _check(lambda m, x: fn(m, x.t()), [(3, 4)])


def test_cat_promotes_dtypes_like_torch():
    for a, b in [(np.arange(3), np.ones(2, np.float32)), (np.ones(2, np.bool_), np.arange(2, dtype=np.int32)),
                 (np.ones(2, np.float16), np.ones(2, np.float64)), (np.ones(2, np.uint8), np.ones(2, np.int8))]:
        got = ax.cat([ax.from_numpy(a), ax.from_numpy(b)])
        want = torch.cat([torch.tensor(a), torch.tensor(b)])
        assert str(got.dtype).split(".")[-1] == str(want.dtype).split(".")[-1]
        np.testing.assert_array_equal(got.numpy(), want.numpy())
    # the gradient of a promoted input comes back in its own dtype
    x = ax.ones(2, dtype=ax.float32, requires_grad=True)
    ax.cat([x, ax.ones(1, dtype=ax.float64)]).sum().backward()
    assert x.grad.dtype == ax.float32 and x.grad.tolist() == [1.0, 1.0]


def test_cat_stack_errors_name_tensor_and_shapes():
    with pytest.raises(ShapeError, match=r"tensor 2 has shape \(2, 4\) but tensor 0 has shape \(2, 3\)"):
        ax.cat([ax.zeros(2, 3), ax.zeros(5, 3), ax.zeros(2, 4)])
    with pytest.raises(ShapeError, match=r"tensor 1 has 1 dims"):
        ax.cat([ax.zeros(2, 3), ax.zeros(3)])
    with pytest.raises(ShapeError, match="zero-dimensional"):
        ax.cat([ax.zeros(()), ax.zeros(())])
    with pytest.raises(ValueError, match="non-empty"):
        ax.cat([])
    with pytest.raises(TypeError, match="element 1"):
        ax.cat([ax.zeros(2), 3])
    with pytest.raises(ShapeError, match=r"\(2, 3\) at entry 0 and \(3, 2\) at entry 1"):
        ax.stack([ax.zeros(2, 3), ax.zeros(3, 2)])
    with pytest.raises(IndexError, match="dimension 2 out of range"):
        ax.cat([ax.zeros(2, 3)], dim=2)


def test_shape_op_errors():
    x = ax.zeros(3, 4)
    with pytest.raises(ShapeError, match=r"sum to the size of dimension 0 \(3\)"):
        x.split([1, 1])
    with pytest.raises(ShapeError, match="do not multiply up"):
        x.unflatten(1, (3, 2))
    with pytest.raises(IndexError, match=r"start \(2\) \+ length \(3\) exceeds dimension 0 of size 3"):
        x.narrow(0, 2, 3)
    with pytest.raises(IndexError, match="index 4 is out of range for dimension 1 with size 4"):
        x.select(1, 4)
    with pytest.raises(ShapeError, match="number of repeat dims"):
        x.repeat(2)
    with pytest.raises(ShapeError, match="at least 2 dims"):
        ax.zeros(3).tril()
    with pytest.raises(ShapeError, match=r"\(3, 1\) and \(4, 2\)"):
        ax.broadcast_tensors(ax.zeros(3, 1), ax.zeros(4, 2))
    with pytest.raises(IndexError, match="out of range"):
        x.unsqueeze(3)
    with pytest.raises(ValueError, match="start_dim"):
        ax.zeros(2, 3, 4).flatten(2, 1)
    with pytest.raises(ValueError, match="same dimension"):
        x.diagonal(0, 1, -1)
    with pytest.raises(ValueError, match="repeated"):
        x.flip((0, -2))


def _shares(view, base):
    return np.shares_memory(view.numpy(), base.numpy())


@pytest.mark.parametrize(
    "make",
    [
        lambda x: x.unsqueeze(0),
        lambda x: x[None].squeeze(0),
        lambda x: x.narrow(1, 1, 2),
        lambda x: x.select(0, 1),
        lambda x: x.diagonal(),
        lambda x: x.split(1)[1],
        lambda x: x.chunk(2, 1)[0],
        lambda x: x.unbind(1)[2],
        lambda x: x.movedim(0, 1),
        lambda x: x.flatten(),
    ],
)
def test_views_share_storage_and_version(make):
    x = ax.zeros(3, 4)
    v = make(x)
    assert _shares(v, x)
    v.add_(1.0)  # a write through the view is seen by the base...
    assert x.sum().item() == v.numel()
    assert x._version == v._version == 1
    x.mul_(3.0)  # ...and a write to the base through the view
    assert float(v.sum().item()) == 3.0 * v.numel()
    assert v._version == 2


def test_copies_do_not_alias():
    x = ax.zeros(3, 4)
    for y in (x.flip(0), x.roll(1), x.repeat(1, 1), x.tril(), ax.cat([x]), ax.stack([x]), ax.diag(x)):
        assert not _shares(y, x)


def test_diagonal_write_through_and_grad():
    x = ax.zeros(3, 3)
    x.diagonal().fill_(2.0)
    assert x.tolist() == [[2, 0, 0], [0, 2, 0], [0, 0, 2]]
    w = ax.ones(3, 3, requires_grad=True)
    (w.diagonal(1) * 5).sum().backward()
    assert w.grad.tolist() == [[0, 5, 0], [0, 0, 5], [0, 0, 0]]


def test_split_pieces_partial_gradient():
    """Pieces that get no gradient contribute zeros."""
    x = ax.tensor(rand(5, 2, dtype=np.float64), requires_grad=True)
    a, b, c = x.split(2)
    (b * 3).sum().backward()
    assert x.grad.tolist() == [[0, 0], [0, 0], [3, 3], [3, 3], [0, 0]]


def test_split_chunk_unbind_size0():
    assert [t.shape for t in ax.zeros(0).split(2)] == [(0,)]
    assert [t.shape for t in ax.zeros(0).chunk(3)] == [(0,)] * 3
    assert [t.shape for t in ax.zeros(3, 0).chunk(2, 1)] == [(3, 0)] * 2
    assert ax.zeros(0, 3).unbind() == ()


def test_repeat_interleave_counts_only():
    got = ax.repeat_interleave(ax.tensor([2, 0, 1]))
    assert got.dtype == ax.int64 and got.tolist() == torch.repeat_interleave(torch.tensor([2, 0, 1])).tolist()


def test_second_order_through_views():
    """cat/split/squeeze/narrow backward are differentiable (create_graph)."""
    x = ax.tensor(rand(4, 3, dtype=np.float64), requires_grad=True)
    xt = torch.tensor(x.detach().numpy(), requires_grad=True)

    def f(m, t):
        a, b = t.split([1, 3])
        y = m.cat([b.narrow(0, 1, 2), a.unsqueeze(0).squeeze(0) ** 3], 0)
        return (m.stack([y, y * y]) ** 2).sum()

    (g,) = ax.grad(f(ax, x), [x], create_graph=True)
    (gt,) = torch.autograd.grad(f(torch, xt), [xt], create_graph=True)
    np.testing.assert_allclose(g.detach().numpy(), gt.detach().numpy(), rtol=1e-10)
    (g * g).sum().backward()
    (gt * gt).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), xt.grad.numpy(), rtol=1e-10)


def test_int_and_bool_inputs():
    a = np.arange(12).reshape(3, 4)
    for fn in (lambda m, x: x.flip(1), lambda m, x: x.tril(), lambda m, x: m.cat([x, x]), lambda m, x: x.repeat_interleave(2, 0),
               lambda m, x: (x > 5).triu(), lambda m, x: m.stack([x > 3, x > 7], 1)):
        got, want = fn(ax, ax.tensor(a)), fn(torch, torch.tensor(a))
        assert str(got.dtype).split(".")[-1] == str(want.dtype).split(".")[-1]
        np.testing.assert_array_equal(got.numpy(), want.numpy())


def test_in_place_tril_triu_and_numpy_split_size():
    x = ax.ones(3, 3)
    v = x[0]
    x.triu_(1)
    assert x.tolist() == [[0, 1, 1], [0, 0, 1], [0, 0, 0]] and v.tolist() == [0, 1, 1] and x._version == 1
    w = ax.tensor(rand(3, 3, dtype=np.float64), requires_grad=True)
    y = w * 1.0
    y.tril_(-1)
    y.sum().backward()
    assert w.grad.tolist() == [[0, 0, 0], [1, 0, 0], [1, 1, 0]]
    assert [t.shape for t in ax.zeros(5).split(np.int64(2))] == [(2,), (2,), (1,)]
    with pytest.raises(ShapeError, match="0-d"):
        ax.tensor(1.0).chunk(2)
