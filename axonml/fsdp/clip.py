"""Gradient clipping over sharded parameters: the norm of the whole model's gradient.

Note on the reduction: a sharded parameter's gradient is split across its shard group,
so each rank adds up ``sum |g|^p`` over its shards and one all-reduce per shard group
(SUM, or MAX for the inf-norm) gives the global value; replicas of a HYBRID_SHARD group
hold the same shards and do not add theirs again. Gradients of parameters FSDP does not
manage are replicated: they are counted once, locally. Partial sums are accumulated in
float64, so the norm does not depend on how many ranks share the work beyond rounding.
The partial sum travels on a device the group's backend serves: the host where it can,
else the unit's compute device (NCCL groups, CPU-offloaded shards included).
"""

from __future__ import annotations

import math
from typing import Any, Iterable

import numpy as np

from ..autograd.variable import make_tensor
from ..collectives import ReduceOp, all_reduce
from ..runtime.devices.device import as_device
from ..tensor import Tensor
from ._param import ShardedParameter

__all__ = ["clip_grad_norm_"]


def _partial(grads: list, p: float) -> float:
    """sum |g|^p (or max |g| for p = inf) over the local elements, in float64."""
    acc = 0.0
    for g in grads:
        a = g.device.to_host(g._data).reshape(-1).astype(np.float64)
        if a.size == 0:
            continue
        if p == math.inf:
            acc = max(acc, float(np.max(np.abs(a))))
        elif p == 2.0:
            acc += float(np.dot(a, a))
        elif p == 1.0:
            acc += float(np.sum(np.abs(a)))
        else:
            acc += float(np.sum(np.abs(a) ** p))
    return acc


def clip_grad_norm_(parameters: Tensor | Iterable[Tensor], max_norm: float, norm_type: float = 2.0,
                    error_if_nonfinite: bool = False, foreach: bool | None = None) -> Tensor:
    """Clip gradients of FSDP (and plain) parameters in place by their global ``norm_type``-norm.

    A collective over each shard group present: every rank must call it with the same
    parameters. Same semantics as ``axonml.nn.utils.clip_grad_norm_`` on the unsharded
    model: gradients are scaled by ``min(max_norm / (total + 1e-6), 1)``.

    Returns:
        The total norm before clipping (a 0-d float32 tensor, identical on every rank).

    Example::

        loss.backward()
        norm = ax.fsdp.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
    """
    params = [parameters] if isinstance(parameters, Tensor) else list(parameters)
    p = float(norm_type)
    if not (p > 0 or p == math.inf):
        raise ValueError(f"clip_grad_norm_: norm_type must be positive or inf, got {norm_type}")
    # gradients are final after backward; settle reductions that are somehow still in flight
    for prm in params:
        if isinstance(prm, ShardedParameter):
            ctx = prm._fsdp_info.unit.ctx
            if ctx is not None and ctx.pending:
                ctx.advance(block=True)
    groups: dict[int, tuple[Any, list, Any]] = {}
    replicated: list = []
    for prm in params:
        g = prm.grad
        if g is None:
            continue
        if isinstance(prm, ShardedParameter) and prm._fsdp_info.unit.shard_group is not None:
            unit = prm._fsdp_info.unit
            pg = unit.shard_group
            groups.setdefault(id(pg), (pg, [], unit.device))[1].append(g)
        else:
            replicated.append(g)
    total = _partial(replicated, p)
    op = ReduceOp.MAX if p == math.inf else ReduceOp.SUM
    for pg, grads, compute in groups.values():
        dev = as_device("cpu") if "cpu" in pg.devices else compute
        part = make_tensor(dev.from_host(np.array([_partial(grads, p)], dtype=np.float64)), dev)
        all_reduce(part, op=op, group=pg)
        value = float(dev.to_host(part._data)[0])
        total = max(total, value) if p == math.inf else total + value
    norm = total if p == math.inf else total ** (1.0 / p)
    if error_if_nonfinite and not math.isfinite(norm):
        raise RuntimeError(f"The total norm of order {norm_type} for gradients from `parameters` is non-finite ({norm}), "
                           "so it cannot be clipped. To disable this error and scale the gradients by the non-finite "
                           "norm anyway, set `error_if_nonfinite=False`")
    coef = min(float(max_norm) / (norm + 1e-6), 1.0)
    for prm in params:
        g = prm.grad
        if g is None:
            continue
        g._data *= g._data.dtype.type(coef)
        g._vc[0] += 1
    return make_tensor(np.asarray(norm, dtype=np.float32), as_device("cpu"))
