"""Differentiable collectives: out-of-place collectives whose backward is the adjoint collective.

For tensor parallelism and FSDP, a collective sits inside the model, so gradients must
flow through it. Each function here returns a NEW tensor (its input is left untouched)
and records a graph node whose backward runs the adjoint collective on the gradient::

    import axonml.collectives.differentiable as dcol
    y = dcol.all_gather_tensor(x_shard, dim=0)    # every rank: the full tensor
    loss = f(y); loss.backward()                   # x_shard.grad: reduce-scatter of dL/dy

| forward                                   | backward (on the gradient)                        |
|-------------------------------------------|---------------------------------------------------|
| ``all_reduce`` SUM / AVG                  | ``all_reduce`` SUM / AVG                          |
| ``all_gather_tensor(dim)``                | ``reduce_scatter_tensor`` SUM along ``dim``       |
| ``reduce_scatter_tensor`` SUM / AVG       | ``all_gather_tensor`` (divided by the size: AVG)  |
| ``broadcast(src)``                        | ``reduce`` SUM to ``src``; zero on the others     |
| ``all_to_all_single(out, in splits)``     | ``all_to_all_single`` with the splits swapped     |

The adjoint follows from the global loss ``L = sum_r f_r(y_r)``: the gradient of rank
r's input collects the contributions of every rank's output. The backward nodes are
themselves differentiable (``create_graph=True`` works; broadcast and a private reduce
are each other's adjoint).

Note on agreement between ranks: a backward collective is a collective, so every rank
of the group must run it, in the same order. A rank records a node only when its input
requires grad and grad mode is on; the ranks must agree on that. The forward's name in
the divergence check carries the choice (``all_reduce[requires_grad=True]``), so ranks
that disagree get a :class:`CollectiveError` at the forward instead of a hang in
backward. Ranks that build the same graph run its nodes in the same order (the engine
orders nodes by creation), so the backward collectives match up. Every rank must also
backpropagate through every node: an output that one rank leaves out of its loss leaves
its peers waiting in backward until the group's timeout, then a CollectiveTimeout names
the backward collective and the missing rank; add ``0 * y.sum()`` to that rank's loss.

Note on layering: the public functions validate with the tensor-level helpers of
:mod:`.functional` (same checks, same messages); ``forward``/``backward`` work on raw
arrays and call the :class:`ProcessGroup` directly, synchronously. float16/bfloat16 are
reduced through float32 copies unless the backend reduces them natively.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from ..autograd.function import Function
from ..autograd.grad_mode import is_grad_enabled
from ..errors import AutogradError, ShapeError
from ..tensor._helpers import norm_dim
from ..tensor.tensor import Tensor
from .api import resolve_group
from .functional import _LOW_PRECISION, _splits, check_tensor, group_rank
from .process_group import ProcessGroup
from .types import ReduceOp, check_reduce_dtype

__all__ = ["all_reduce", "all_gather_tensor", "reduce_scatter_tensor", "broadcast", "all_to_all_single"]

_DIFFERENTIABLE_OPS = (ReduceOp.SUM, ReduceOp.AVG)


# -- array-level collectives (run synchronously; forward and backward share them) -------------


def _meta(name: str) -> dict:
    # shapes and dtype are read from the arrays by the process group
    return {"op": name, "sync": True}


def _wire_dtype(a: Any, pg: ProcessGroup) -> Any:
    """The dtype a reduction runs in: float32 for float16/bfloat16 unless the backend reduces them."""
    return np.dtype(np.float32) if a.dtype.name in _LOW_PRECISION and not pg.native_low_precision else a.dtype


def _all_reduce_array(pg: ProcessGroup, a: Any, op: ReduceOp, name: str) -> Any:
    buf = a.astype(_wire_dtype(a, pg), order="C", copy=True)  # the backend reduces in place
    pg.allreduce([buf], op, _meta(name)).wait()
    return buf.astype(a.dtype, copy=False)


def _broadcast_array(pg: ProcessGroup, a: Any, root: int, name: str) -> Any:
    buf = a.astype(a.dtype, order="C", copy=True)
    pg.broadcast([buf], root, _meta(name)).wait()
    return buf


def _reduce_array(xp: Any, pg: ProcessGroup, a: Any, root: int, name: str) -> Any:
    """The SUM over ranks on ``root``; zeros elsewhere (the adjoint of broadcast)."""
    buf = a.astype(_wire_dtype(a, pg), order="C", copy=True)
    pg.reduce([buf], root, ReduceOp.SUM, _meta(name)).wait()
    if pg.rank() != root:
        return xp.zeros(a.shape, dtype=a.dtype)
    return buf.astype(a.dtype, copy=False)


def _all_gather_array(xp: Any, pg: ProcessGroup, a: Any, dim: int, name: str) -> Any:
    n = pg.size()
    flat = xp.empty((n,) + a.shape, dtype=a.dtype)  # (n, *shape): rank r's block at [r]
    pg.allgather(flat, xp.ascontiguousarray(a), None, _meta(name)).wait()
    # (n, *pre, d, *post) -> (*pre, n, d, *post) -> (*pre, n * d, *post): concatenation along dim
    out_shape = a.shape[:dim] + (n * a.shape[dim],) + a.shape[dim + 1:]
    return xp.moveaxis(flat, 0, dim).reshape(out_shape)


def _reduce_scatter_array(xp: Any, pg: ProcessGroup, a: Any, op: ReduceOp, dim: int, name: str) -> Any:
    n = pg.size()
    d = a.shape[dim] // n
    # (*pre, n * d, *post) -> (n, *pre, d, *post), contiguous, so that rank r's segment is block r
    blocks = xp.moveaxis(a.reshape(a.shape[:dim] + (n, d) + a.shape[dim + 1:]), dim, 0)
    wire = _wire_dtype(a, pg)
    src = blocks.astype(wire, order="C", copy=False)  # the backend only reads its input
    out = xp.empty(blocks.shape[1:], dtype=wire)
    pg.reduce_scatter(out, src, op, None, _meta(name)).wait()
    return out.astype(a.dtype, copy=False)


def _all_to_all_array(xp: Any, pg: ProcessGroup, a: Any, out_splits: list[int], in_splits: list[int], name: str) -> Any:
    row = int(np.prod(a.shape[1:], dtype=np.int64))  # elements per row
    out = xp.empty((sum(out_splits),) + a.shape[1:], dtype=a.dtype)
    pg.alltoall(out, xp.ascontiguousarray(a), [s * row for s in out_splits], [s * row for s in in_splits],
                _meta(name)).wait()
    return out


# -- the graph nodes (non-tensor arguments get None gradients) ------------------------------------


class AllReduce(Function):
    @staticmethod
    def forward(ctx, x, pg, op, name):
        ctx.pg, ctx.op = pg, op
        return _all_reduce_array(pg, x, op, name)

    @staticmethod
    def backward(ctx, g):
        # y = sum_r x_r on every rank: dL/dx_r = sum_s dL/dy_s (AVG: the mean, as the forward)
        return _all_reduce_array(ctx.pg, g, ctx.op, "all_reduce.backward"), None, None, None

    @staticmethod
    def differentiable_backward(ctx, g):
        return all_reduce(g, ctx.op, ctx.pg), None, None, None


class AllGather(Function):
    @staticmethod
    def forward(ctx, x, pg, dim, name):
        ctx.pg, ctx.dim = pg, dim
        return _all_gather_array(ctx.xp, pg, x, dim, name)

    @staticmethod
    def backward(ctx, g):
        # rank r's block of every rank's output gradient, summed
        return _reduce_scatter_array(ctx.xp, ctx.pg, g, ReduceOp.SUM, ctx.dim, "all_gather_tensor.backward"), None, None, None

    @staticmethod
    def differentiable_backward(ctx, g):
        return reduce_scatter_tensor(g, ReduceOp.SUM, ctx.dim, ctx.pg), None, None, None


class ReduceScatter(Function):
    @staticmethod
    def forward(ctx, x, pg, op, dim, name):
        ctx.pg, ctx.op, ctx.dim = pg, op, dim
        return _reduce_scatter_array(ctx.xp, pg, x, op, dim, name)

    @staticmethod
    def backward(ctx, g):
        gx = _all_gather_array(ctx.xp, ctx.pg, g, ctx.dim, "reduce_scatter_tensor.backward")
        if ctx.op is ReduceOp.AVG:
            gx /= ctx.pg.size()
        return gx, None, None, None, None

    @staticmethod
    def differentiable_backward(ctx, g):
        gx = all_gather_tensor(g, ctx.dim, ctx.pg)
        return (gx / ctx.pg.size() if ctx.op is ReduceOp.AVG else gx), None, None, None, None


class Broadcast(Function):
    @staticmethod
    def forward(ctx, x, pg, root, name):
        ctx.pg, ctx.root = pg, root
        return _broadcast_array(pg, x, root, name)

    @staticmethod
    def backward(ctx, g):
        # only the source's input reaches the outputs: it gets the sum, the others zero
        return _reduce_array(ctx.xp, ctx.pg, g, ctx.root, "broadcast.backward"), None, None, None

    @staticmethod
    def differentiable_backward(ctx, g):
        return ReduceToRoot.apply(g, ctx.pg, ctx.root, "broadcast.backward"), None, None, None


class ReduceToRoot(Function):
    """The sum over ranks on ``root``, zeros elsewhere: broadcast's adjoint (for second order)."""

    @staticmethod
    def forward(ctx, x, pg, root, name):
        ctx.pg, ctx.root = pg, root
        return _reduce_array(ctx.xp, pg, x, root, name)

    @staticmethod
    def backward(ctx, g):
        return _broadcast_array(ctx.pg, g, ctx.root, "reduce.backward"), None, None, None

    @staticmethod
    def differentiable_backward(ctx, g):
        return Broadcast.apply(g, ctx.pg, ctx.root, "reduce.backward"), None, None, None


class AllToAll(Function):
    @staticmethod
    def forward(ctx, x, pg, out_splits, in_splits, name):
        ctx.pg, ctx.out_splits, ctx.in_splits = pg, out_splits, in_splits
        return _all_to_all_array(ctx.xp, pg, x, out_splits, in_splits, name)

    @staticmethod
    def backward(ctx, g):
        # the rows travel back the way they came: swap the splits
        gx = _all_to_all_array(ctx.xp, ctx.pg, g, ctx.in_splits, ctx.out_splits, "all_to_all_single.backward")
        return gx, None, None, None, None

    @staticmethod
    def differentiable_backward(ctx, g):
        return all_to_all_single(g, ctx.in_splits, ctx.out_splits, ctx.pg), None, None, None, None


# -- the public functions ------------------------------------------------------------------


def _prepare(tensor: Any, group: Any, what: str, op: ReduceOp | None = None, dim: int | None = None
             ) -> tuple[ProcessGroup, str, int]:
    """Validate; return the group, the forward's name and the normalized ``dim`` (0 when None).

    The name goes into the divergence check: it says whether this rank records a backward
    (and along which dim it gathers or scatters), so that ranks that disagree are named.
    """
    pg = resolve_group(group, what)
    check_tensor(tensor, pg, what)
    records = tensor.requires_grad and is_grad_enabled()
    if op is not None:
        check_reduce_dtype(op, tensor.dtype.np, what)
        if records and op not in _DIFFERENTIABLE_OPS:
            raise AutogradError(
                f"{what}: {op!r} is not differentiable (only ReduceOp.SUM and ReduceOp.AVG have a backward), but the "
                f"tensor (shape {tuple(tensor.shape)}) requires grad; pass tensor.detach(), run it under ax.no_grad(), "
                "or use SUM/AVG"
            )
    if dim is None:
        return pg, f"{what}[requires_grad={records}]", 0
    if tensor.ndim == 0:
        raise ShapeError(f"{what}: a 0-d tensor has no dimension to concatenate or split along; reshape it to (1,) first")
    d = norm_dim(dim, tensor.ndim, what)
    return pg, f"{what}[dim={d}, requires_grad={records}]", d


def all_reduce(tensor: Tensor, op: ReduceOp = ReduceOp.SUM, group: Any = None) -> Tensor:
    """Reduce ``tensor`` across the ranks of ``group`` into a new tensor (the input is unchanged).

    Differentiable for ``ReduceOp.SUM`` and ``ReduceOp.AVG``: the backward all-reduces the
    gradient with the same op. Other ops raise when the tensor requires grad.

    Args:
        tensor: this rank's tensor.
        op: the reduction.
        group: a group from ``new_group`` (default: the world).

    Returns:
        A new tensor with the reduced values, on every rank.

    Example::

        x = ax.tensor([float(get_rank() + 1)], requires_grad=True)
        y = all_reduce(x)              # n (n + 1) / 2 on every rank
        y.sum().backward()             # x.grad == n: every rank's output depends on x
    """
    pg, name, _ = _prepare(tensor, group, "all_reduce", op)
    return AllReduce.apply(tensor, pg, op, name)


def all_gather_tensor(tensor: Tensor, dim: int = 0, group: Any = None) -> Tensor:
    """Concatenate every rank's ``tensor`` along ``dim`` (rank order) into a new tensor.

    Every rank passes a tensor of the same shape. The backward reduce-scatters (SUM) the
    gradient along ``dim``: rank r gets the sum over ranks of the gradient's block r.

    Args:
        tensor: this rank's block (at least 1-d).
        dim: the dimension to concatenate along.
        group: a group from ``new_group`` (default: the world).

    Returns:
        A tensor whose ``dim`` is ``group size`` times as long.

    Example::

        w = all_gather_tensor(w_shard)      # (n * rows, cols) on every rank (FSDP's unshard)
    """
    pg, name, d = _prepare(tensor, group, "all_gather_tensor", dim=dim)
    return AllGather.apply(tensor, pg, d, name)


def reduce_scatter_tensor(tensor: Tensor, op: ReduceOp = ReduceOp.SUM, dim: int = 0, group: Any = None) -> Tensor:
    """Reduce ``tensor`` across ranks and keep block ``rank`` of the result along ``dim``.

    ``tensor.shape[dim]`` must be divisible by the group size. Differentiable for SUM and
    AVG: the backward all-gathers the gradient along ``dim`` (divided by the size for AVG).

    Args:
        tensor: this rank's full-size contribution.
        op: the reduction.
        dim: the dimension to split into one block per rank.
        group: a group from ``new_group`` (default: the world).

    Returns:
        A new tensor whose ``dim`` is ``tensor.shape[dim] // group size`` long.

    Example::

        g_shard = reduce_scatter_tensor(g_full, ReduceOp.AVG)   # FSDP's gradient sharding
    """
    what = "reduce_scatter_tensor"
    pg, name, d = _prepare(tensor, group, what, op, dim)
    if tensor.shape[d] % pg.size():
        raise ShapeError(f"{what}: dim {dim} of the tensor (shape {tuple(tensor.shape)}) has {tensor.shape[d]} entries, "
                         f"which the {pg.size()} ranks of group {pg.name!r} cannot split evenly; pad it to a multiple of "
                         f"{pg.size()}")
    return ReduceScatter.apply(tensor, pg, op, d, name)


def broadcast(tensor: Tensor, src: int, group: Any = None) -> Tensor:
    """A new tensor holding world rank ``src``'s ``tensor``, on every rank.

    The backward sums every rank's gradient into ``src``'s input gradient; the other
    ranks' inputs get a zero gradient (their values do not reach any output).

    Args:
        tensor: the source's data; on the other ranks, a tensor of the same shape and dtype.
        src: the world rank of the source.
        group: a group from ``new_group`` (default: the world).

    Returns:
        A new tensor with ``src``'s values.

    Example::

        x = broadcast(x, src=0)     # every rank now uses rank 0's x; rank 0 gets all gradients
    """
    pg, name, _ = _prepare(tensor, group, "broadcast")
    return Broadcast.apply(tensor, pg, group_rank(pg, src, "broadcast", "src"), name)


def all_to_all_single(tensor: Tensor, output_split_sizes: Sequence[int] | None = None,
                      input_split_sizes: Sequence[int] | None = None, group: Any = None) -> Tensor:
    """Send ``input_split_sizes[j]`` rows (dim 0) of ``tensor`` to rank j; return the rows received,
    ``output_split_sizes[j]`` from rank j, concatenated in rank order.

    Give both split lists or neither (then dim 0 is split evenly and the output has the
    input's shape). The backward sends the gradient's rows back: the all-to-all with the
    two split lists swapped.

    Args:
        tensor: this rank's rows (at least 1-d).
        output_split_sizes: rows received from each rank.
        input_split_sizes: rows sent to each rank (they sum to ``tensor.shape[0]``).
        group: a group from ``new_group`` (default: the world).

    Returns:
        A new tensor of shape ``(sum(output_split_sizes), *tensor.shape[1:])``.

    Example::

        tokens = all_to_all_single(tokens, recv_counts, send_counts)   # expert parallelism
    """
    what = "all_to_all_single"
    pg, name, _ = _prepare(tensor, group, what, dim=0)  # rows: at least 1-d
    n = pg.size()
    if (output_split_sizes is None) != (input_split_sizes is None):
        raise ValueError(f"{what}: give output_split_sizes and input_split_sizes together, or neither (even splits); "
                         f"got output_split_sizes={output_split_sizes}, input_split_sizes={input_split_sizes}")
    ins = _splits(input_split_sizes, tensor.shape[0], n, "input", "input_split_sizes")
    if output_split_sizes is None:
        outs = list(ins)
    else:
        requested = [int(s) for s in output_split_sizes]
        outs = _splits(requested, sum(requested), n, "output", "output_split_sizes")
    return AllToAll.apply(tensor, pg, outs, ins, name)
