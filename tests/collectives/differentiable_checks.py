"""Cases for the differentiable collectives, run on each rank of a live default group.

Shared by tests/collectives/test_differentiable.py (threaded backend) and
tests/multiprocess/test_differentiable_tcp.py (real processes on tcp).

Each case is a distributed function ``dist(x, rank, n) -> y`` and its single-process
equivalent ``ref(xs, r, n) -> y_r`` (built from ordinary differentiable ops on every
rank's input). With the global loss ``L = sum_r f_r(y_r)`` (``f_r`` quadratic, different
per rank), rank r's ``x.grad`` must equal the gradient of ``L`` with respect to ``xs[r]``
in one process: that is the adjointness the backward collectives promise.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

import axonml as ax
import axonml.collectives as dist
import axonml.collectives.differentiable as dcol
from axonml.collectives import ReduceOp
from axonml.collectives.api import resolve_group


@dataclass(frozen=True)
class Case:
    shape: Callable[[int, int], tuple]  # (rank, n) -> this rank's input shape
    dist: Callable[[Any, int, int], Any]  # (x, rank, n) -> y on this rank
    ref: Callable[[list, int, int], Any]  # (xs, r, n) -> rank r's y, single process


def a2a_send(s: int, j: int) -> int:
    """Rows rank s sends to rank j in the uneven all-to-all (some are zero)."""
    return (s + 2 * j) % 3


def _a2a_dist(x: Any, rank: int, n: int) -> Any:
    return dcol.all_to_all_single(x, [a2a_send(s, rank) for s in range(n)], [a2a_send(rank, j) for j in range(n)])


def _a2a_ref(xs: list, r: int, n: int) -> Any:
    pieces = []
    for s in range(n):
        start = sum(a2a_send(s, j) for j in range(r))
        pieces.append(xs[s][start:start + a2a_send(s, r)])
    return ax.cat(pieces, 0)


def _scatter_ref(op: ReduceOp, dim: int) -> Callable[[list, int, int], Any]:
    def ref(xs: list, r: int, n: int) -> Any:
        total = xs[0]
        for x in xs[1:]:
            total = total + x
        if op is ReduceOp.AVG:
            total = total / n
        return ax.chunk(total, n, dim)[r]

    return ref


def _sum(xs: list) -> Any:
    total = xs[0]
    for x in xs[1:]:
        total = total + x
    return total


CASES: dict[str, Case] = {
    "all_reduce_sum": Case(lambda r, n: (3, 2), lambda x, r, n: dcol.all_reduce(x), lambda xs, r, n: _sum(xs)),
    "all_reduce_avg": Case(lambda r, n: (5,), lambda x, r, n: dcol.all_reduce(x, ReduceOp.AVG), lambda xs, r, n: _sum(xs) / n),
    "all_reduce_transposed": Case(lambda r, n: (2, 3), lambda x, r, n: dcol.all_reduce(x.t()), lambda xs, r, n: _sum(xs).t()),
    "all_gather_dim0": Case(lambda r, n: (2, 3), lambda x, r, n: dcol.all_gather_tensor(x), lambda xs, r, n: ax.cat(xs, 0)),
    "all_gather_dim_last": Case(lambda r, n: (2, 3, 1), lambda x, r, n: dcol.all_gather_tensor(x, dim=-2),
                                lambda xs, r, n: ax.cat(xs, 1)),
    "all_gather_transposed": Case(lambda r, n: (3, 2), lambda x, r, n: dcol.all_gather_tensor(x.t(), dim=1),
                                  lambda xs, r, n: ax.cat([x.t() for x in xs], 1)),
    "reduce_scatter_sum_dim0": Case(lambda r, n: (2 * n, 3), lambda x, r, n: dcol.reduce_scatter_tensor(x),
                                    _scatter_ref(ReduceOp.SUM, 0)),
    "reduce_scatter_avg_dim1": Case(lambda r, n: (3, n, 2), lambda x, r, n: dcol.reduce_scatter_tensor(x, ReduceOp.AVG, dim=1),
                                    _scatter_ref(ReduceOp.AVG, 1)),
    "broadcast_src0": Case(lambda r, n: (4,), lambda x, r, n: dcol.broadcast(x, 0), lambda xs, r, n: xs[0] * 1.0),
    "broadcast_src_last": Case(lambda r, n: (2, 2), lambda x, r, n: dcol.broadcast(x, n - 1), lambda xs, r, n: xs[n - 1] * 1.0),
    "all_to_all_even": Case(lambda r, n: (2 * n, 3), lambda x, r, n: dcol.all_to_all_single(x),
                            lambda xs, r, n: ax.cat([x[2 * r:2 * r + 2] for x in xs], 0)),
    "all_to_all_uneven": Case(lambda r, n: (sum(a2a_send(r, j) for j in range(n)), 2), _a2a_dist, _a2a_ref),
    "all_gather_empty": Case(lambda r, n: (0, 2), lambda x, r, n: dcol.all_gather_tensor(x), lambda xs, r, n: ax.cat(xs, 0)),
    "reduce_scatter_empty": Case(lambda r, n: (n, 0), lambda x, r, n: dcol.reduce_scatter_tensor(x),
                                 _scatter_ref(ReduceOp.SUM, 0)),
}


def x_of(rank: int, shape: tuple, seed: int = 0) -> np.ndarray:
    """Rank r's input values (float64)."""
    return np.random.default_rng(1000 * seed + rank).standard_normal(shape)


def local_loss(y: Any, rank: int) -> Any:
    """``f_r(y)``: a quadratic with rank-dependent weights, so every rank's gradient differs."""
    rng = np.random.default_rng(7 + rank)
    w = ax.tensor(rng.uniform(0.5, 1.5, tuple(y.shape)))
    v = ax.tensor(rng.standard_normal(tuple(y.shape)))
    return (w * y * y).sum() + (v * y).sum()


def run_case(rank: int, n: int, name: str) -> tuple[np.ndarray, np.ndarray]:
    """On this rank: ``y`` and ``x.grad`` after ``f_rank(y).backward()``."""
    case = CASES[name]
    x = ax.tensor(x_of(rank, case.shape(rank, n)), requires_grad=True)
    before = x.detach().numpy().copy()
    y = case.dist(x, rank, n)
    assert y.requires_grad and y.grad_fn is not None, name
    local_loss(y, rank).backward()
    np.testing.assert_array_equal(x.detach().numpy(), before, err_msg=f"{name} modified its input")
    return y.detach().numpy(), x.grad.numpy()


def reference(n: int, name: str) -> list[tuple[np.ndarray, np.ndarray]]:
    """The single-process ``[(y_r, dL/dx_r), ...]`` for ``L = sum_r f_r(y_r)``."""
    case = CASES[name]
    xs = [ax.tensor(x_of(r, case.shape(r, n)), requires_grad=True) for r in range(n)]
    ys = [case.ref(xs, r, n) for r in range(n)]
    total = local_loss(ys[0], 0)
    for r in range(1, n):
        total = total + local_loss(ys[r], r)
    total.backward()
    # an input that reaches no output (broadcast's non-sources) has a zero gradient
    return [(y.detach().numpy(), x.grad.numpy() if x.grad is not None else np.zeros(tuple(x.shape))) for y, x in zip(ys, xs)]


def finite_difference(rank: int, n: int, name: str, eps: float = 1e-6) -> float:
    """Largest difference between ``x.grad`` and central differences of the global loss.

    Every rank perturbs the same global coordinate in lockstep (only its owner changes its
    input) and the ranks' losses are summed with a plain all-reduce.
    """
    case = CASES[name]
    x0 = x_of(rank, case.shape(rank, n))
    x = ax.tensor(x0, requires_grad=True)
    local_loss(case.dist(x, rank, n), rank).backward()
    analytic = x.grad.numpy().reshape(-1)
    numeric = np.zeros_like(analytic)
    for owner in range(n):
        for i in range(int(np.prod(case.shape(owner, n)))):
            totals = []
            for step in (eps, -eps):
                xp = x0.copy()
                if rank == owner:
                    xp.reshape(-1)[i] += step
                with ax.no_grad():
                    loss = local_loss(case.dist(ax.tensor(xp), rank, n), rank)
                t = ax.tensor([loss.item()], dtype=ax.float64)
                dist.all_reduce(t)
                totals.append(t.item())
            if rank == owner:
                numeric[i] = (totals[0] - totals[1]) / (2 * eps)
    return float(np.max(np.abs(numeric - analytic), initial=0.0))


def check_closed_form(rank: int, n: int) -> None:
    """Forward values in closed form, other dtypes, out of place."""
    t = ax.tensor([float(rank + 1)] * 3)
    y = dcol.all_reduce(t)
    assert y is not t and (y.numpy() == n * (n + 1) / 2).all() and (t.numpy() == rank + 1).all()
    assert (dcol.all_reduce(t, ReduceOp.MAX).numpy() == n).all()  # no grad needed: any op
    ints = dcol.all_reduce(ax.tensor([rank + 1, 2 * rank], dtype=ax.int64), ReduceOp.PRODUCT)
    assert ints.dtype == ax.int64 and not ints.requires_grad
    np.testing.assert_array_equal(ints.numpy(), [np.prod(np.arange(1, n + 1)), 0])
    for dtype, big in ((ax.float16, 2048.0), (ax.bfloat16, 256.0)):  # accumulated in float32
        h = ax.tensor([big if rank == 0 else 1.0], dtype=dtype, requires_grad=True)
        s = dcol.all_reduce(h)
        assert s.dtype == dtype and s.requires_grad
        assert float(s.float().item()) == float(ax.tensor([big + n - 1], dtype=dtype).float().item())
        s.sum().backward()
        assert h.grad.dtype == dtype and float(h.grad.float().item()) == n
    g = dcol.all_gather_tensor(ax.tensor([[rank, rank]], dtype=ax.int32))
    np.testing.assert_array_equal(g.numpy(), np.repeat(np.arange(n)[:, None], 2, axis=1))
    rs = dcol.reduce_scatter_tensor(ax.tensor(np.arange(2 * n, dtype=np.float32) * (rank + 1)))
    np.testing.assert_allclose(rs.numpy(), np.arange(2 * rank, 2 * rank + 2) * n * (n + 1) / 2)
    b = dcol.broadcast(ax.tensor(np.full((2, 0), rank, dtype=np.float32)), n - 1)  # size 0
    assert tuple(b.shape) == (2, 0)
    a2a = dcol.all_to_all_single(ax.tensor(np.arange(n, dtype=np.float64) + 10 * rank))
    np.testing.assert_array_equal(a2a.numpy(), np.arange(n) * 10 + rank)
    with ax.no_grad():
        z = dcol.all_gather_tensor(ax.ones(2, requires_grad=True))
    assert not z.requires_grad and tuple(z.shape) == (2 * n,)


def mp_target(rank: int, n: int) -> dict:
    """For the real-process test: every case's (y, x.grad), the finite-difference errors, and closed forms."""
    out: dict = {name: run_case(rank, n, name) for name in CASES}
    out["fd"] = {name: finite_difference(rank, n, name) for name in ("all_gather_dim0", "reduce_scatter_avg_dim1",
                                                                      "all_to_all_uneven", "broadcast_src_last")}
    check_closed_form(rank, n)
    out["transport"] = getattr(resolve_group(None, "test"), "transport", "n/a")
    return out
