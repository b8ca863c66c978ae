"""Differentiable collectives (axonml.collectives.differentiable) on the threaded backend.

Oracles: a single process computing the same global loss from every rank's input
(values and gradients), central finite differences of the global loss, closed forms.
"""

import numpy as np
import pytest
from differentiable_checks import CASES, check_closed_form, finite_difference, local_loss, reference, run_case, x_of

import axonml as ax
import axonml.collectives as dist
import axonml.collectives.differentiable as dcol
from axonml.collectives import ReduceOp
from axonml.collectives.testing import run_threaded
from axonml.errors import AutogradError, CollectiveError, DTypeError, ShapeError

pytestmark = pytest.mark.timeout(60)


def _compare(got, want, name):
    for r, ((y, g), (y_ref, g_ref)) in enumerate(zip(got, want)):
        assert y.shape == y_ref.shape, (name, r, y.shape, y_ref.shape)
        np.testing.assert_allclose(y, y_ref, rtol=1e-12, atol=1e-12, err_msg=f"{name}: output of rank {r}")
        np.testing.assert_allclose(g, g_ref, rtol=1e-12, atol=1e-12, err_msg=f"{name}: gradient of rank {r}")


@pytest.mark.parametrize("n", [1, 2, 3, 4])
@pytest.mark.parametrize("name", list(CASES))
def test_values_and_gradients_match_single_process(name, n):
    _compare(run_threaded(n, lambda rank: run_case(rank, n, name)), reference(n, name), name)


@pytest.mark.parametrize("n", [2, 3])
@pytest.mark.parametrize("name", ["all_reduce_avg", "all_gather_dim_last", "all_gather_transposed", "reduce_scatter_sum_dim0",
                                  "reduce_scatter_avg_dim1", "broadcast_src_last", "all_to_all_uneven"])
def test_finite_differences_of_global_loss(name, n):
    errors = run_threaded(n, lambda rank: finite_difference(rank, n, name))
    assert max(errors) < 1e-6, errors


@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_closed_form_values_dtypes_out_of_place(n):
    run_threaded(n, lambda rank: check_closed_form(rank, n))


@pytest.mark.parametrize("name", ["all_reduce_sum", "all_reduce_avg", "all_gather_dim0", "reduce_scatter_avg_dim1",
                                  "broadcast_src_last", "all_to_all_uneven"])
def test_second_order_matches_single_process(name):
    """g_r = dL/dx_r with create_graph (the backward collectives record a graph), then
    M = sum_r |g_r|^2 backpropagated through them."""
    n = 3
    case = CASES[name]

    def body(rank):
        x = ax.tensor(x_of(rank, case.shape(rank, n)), requires_grad=True)
        (g,) = ax.grad(local_loss(case.dist(x, rank, n), rank), [x], create_graph=True)
        assert g.requires_grad
        (g * g).sum().backward()
        return x.grad.numpy()

    got = run_threaded(n, body)
    xs = [ax.tensor(x_of(r, case.shape(r, n)), requires_grad=True) for r in range(n)]
    total = sum((local_loss(case.ref(xs, r, n), r) for r in range(1, n)), local_loss(case.ref(xs, 0, n), 0))
    gs = ax.grad(total, xs, create_graph=True, allow_unused=True)  # broadcast: only the source is used
    sum(((g * g).sum() for g in gs if g is not None), ax.zeros((), dtype=ax.float64)).backward()
    for r in range(n):
        want = xs[r].grad.numpy() if xs[r].grad is not None else np.zeros(tuple(xs[r].shape))
        np.testing.assert_allclose(got[r], want, rtol=1e-12, atol=1e-12, err_msg=f"{name} rank {r}")


def test_subgroup_gradients_stay_in_group():
    """World of 3, group of world ranks [0, 2]: rank 1 takes no part; src is a world rank."""

    def body(rank):
        sub = dist.new_group([0, 2])
        if rank == 1:
            return None
        x = ax.tensor([float(rank + 1), 1.0], requires_grad=True)
        y = dcol.all_gather_tensor(x, group=sub)  # [1, 1, 3, 1] on ranks 0 and 2
        b = dcol.broadcast(x, src=2, group=sub)  # [3, 1]
        ((y * y).sum() * (rank + 1) + b.sum()).backward()
        return y.detach().numpy(), x.grad.numpy()

    got = run_threaded(3, body)
    assert got[1] is None
    for r in (0, 2):
        np.testing.assert_array_equal(got[r][0], [1.0, 1.0, 3.0, 1.0])
    # d/dx_r of sum_s (s + 1) |y|^2 = (1 + 3) * 2 x_r; broadcast adds 2 (one per member) to x_2
    np.testing.assert_array_equal(got[0][1], 4 * 2 * np.array([1.0, 1.0]))
    np.testing.assert_array_equal(got[2][1], 4 * 2 * np.array([3.0, 1.0]) + 2)


# -- misuse -------------------------------------------------------------------------------------


@pytest.mark.parametrize("op", [ReduceOp.MAX, ReduceOp.MIN, ReduceOp.PRODUCT])
def test_non_differentiable_reduce_op_with_grad_raises(op):
    def body(rank):
        x = ax.ones(4, dtype=ax.float64, requires_grad=True)
        with pytest.raises(AutogradError, match=rf"all_reduce: {op!r} is not differentiable.*requires grad.*detach"):
            dcol.all_reduce(x, op)
        with pytest.raises(AutogradError, match=rf"reduce_scatter_tensor: {op!r} is not differentiable"):
            dcol.reduce_scatter_tensor(ax.ones(2 * 2, requires_grad=True), op)
        # fine without a graph: detached, or under no_grad
        assert (dcol.all_reduce(x.detach(), op).numpy() == 1).all()
        with ax.no_grad():
            assert not dcol.reduce_scatter_tensor(ax.ones(4, requires_grad=True), op).requires_grad
        return "ok"

    assert run_threaded(2, body) == ["ok", "ok"]


def test_bad_dtype_for_op():
    def body(rank):
        with pytest.raises(DTypeError, match="BAND.*integer or bool"):
            dcol.all_reduce(ax.ones(2), ReduceOp.BAND)
        with pytest.raises(DTypeError, match="AVG needs a floating"):
            dcol.reduce_scatter_tensor(ax.ones(2, dtype=ax.int64), ReduceOp.AVG)

    run_threaded(2, body)


def test_ranks_disagreeing_on_requires_grad_fail_at_forward():
    def body(rank):
        dcol.all_gather_tensor(ax.ones(3, dtype=ax.float64, requires_grad=rank == 0))

    disagreement = r"(?s)all_gather_tensor\[dim=0, requires_grad=True\].*all_gather_tensor\[dim=0, requires_grad=False\]"
    with pytest.raises(CollectiveError, match=disagreement):
        run_threaded(2, body, timeout=20)


def test_rank_that_skips_a_backward_collective_is_named_within_the_timeout():
    def body(rank):
        x = ax.ones(3, dtype=ax.float64, requires_grad=True)
        y = dcol.all_gather_tensor(x)
        (y.sum() if rank == 0 else x.sum()).backward()  # rank 1 leaves y out of its loss

    with pytest.raises(CollectiveError, match=r"all_gather_tensor\.backward.*ranks \[1\] did not arrive"):
        run_threaded(2, body, timeout=2)


def test_ranks_disagreeing_on_dim_are_reported():
    def body(rank):
        dcol.all_gather_tensor(ax.ones(2, 2), dim=rank)

    with pytest.raises(CollectiveError, match=r"(?s)all_gather_tensor\[dim=0, .*all_gather_tensor\[dim=1, "):
        run_threaded(2, body, timeout=20)


def test_shape_and_argument_errors():
    def body(rank):
        with pytest.raises(ShapeError, match=r"reduce_scatter_tensor: dim 1 .*shape \(4, 5\).*5 entries.*3 ranks"):
            dcol.reduce_scatter_tensor(ax.ones(4, 5), dim=1)
        with pytest.raises(ShapeError, match="all_gather_tensor: a 0-d tensor"):
            dcol.all_gather_tensor(ax.tensor(1.0))
        with pytest.raises(IndexError, match="all_gather_tensor: dimension 2 out of range"):
            dcol.all_gather_tensor(ax.ones(2, 2), dim=2)
        with pytest.raises(ValueError, match="all_to_all_single: give output_split_sizes and input_split_sizes together"):
            dcol.all_to_all_single(ax.ones(3), None, [1, 1, 1])
        with pytest.raises(ValueError, match=r"all_to_all_single: input_split_sizes=\[1, 1\] must be 3"):
            dcol.all_to_all_single(ax.ones(2), [1, 1, 0], [1, 1])
        with pytest.raises(ValueError, match=r"output_split_sizes=\[1, -1, 1\] must be 3 non-negative"):
            dcol.all_to_all_single(ax.ones(3), [1, -1, 1], [1, 1, 1])
        with pytest.raises(ShapeError, match="all_to_all_single: input has 4 rows, which 3 ranks cannot split evenly"):
            dcol.all_to_all_single(ax.ones(4, 2))
        with pytest.raises(ValueError, match="broadcast: src=5 is not a rank of group"):
            dcol.broadcast(ax.ones(2), src=5)
        with pytest.raises(TypeError, match="all_reduce: tensor must be an axonml Tensor, got ndarray"):
            dcol.all_reduce(np.ones(2))
        with pytest.raises(TypeError, match="all_gather_tensor: tensor must be an axonml Tensor, got list"):
            dcol.all_gather_tensor([1.0], dim=0)
        with pytest.raises(TypeError, match="group must be a ProcessGroup"):
            dcol.all_reduce(ax.ones(2), group="world")
        return "ok"

    assert run_threaded(3, body) == ["ok"] * 3


def test_all_to_all_splits_disagreeing_across_ranks_are_reported():
    def body(rank):
        # rank 1 sends 1 row to rank 0, which expects 2
        sizes = ([1, 2], [1, 2]) if rank == 0 else ([2, 1], [1, 1])
        dcol.all_to_all_single(ax.ones(sum(sizes[1]), 2), sizes[0], sizes[1])

    with pytest.raises(CollectiveError, match="rank 1 sends 2 elements to rank 0, which expects 4"):
        run_threaded(2, body, timeout=20)


def test_needs_initialized_group():
    with pytest.raises(CollectiveError, match="all_reduce: the default process group is not initialized"):
        dcol.all_reduce(ax.ones(2))
