"""``memory_plan``: the analytic bytes per rank of each strategy (the ZeRO formulas), which
tests and users compare with ``axonml.memory_stats``.

Note on the formulas. With ``P`` parameter elements, ``N`` ranks sharing the shards, master
(sharded) dtype of ``m`` bytes and an optimizer keeping ``K`` bytes of state per element:

=================  ===============  ===============  ==================
strategy           parameters       gradients        optimizer state
=================  ===============  ===============  ==================
NO_SHARD (DDP)     m P              m P              K P
ZeRO-1             m P              m P              K P / N
SHARD_GRAD_OP      m P / N          m P / N          K P / N
FULL_SHARD         m P / N          m P / N          K P / N
HYBRID_SHARD       as FULL_SHARD with N = the shard group size
=================  ===============  ===============  ==================

Optimizers with a step counter (Adam, AdamW...) add 4 bytes per parameter tensor.
``P / N`` is exact here: the sum over parameters of ``ceil(n_i / N)`` (uneven sizes pad),
or for ZeRO-1 the largest rank's share of the greedy whole-parameter partition. The
ZeRO paper's mixed-precision numbers (2 + 2 + 12 bytes) are the case of low-precision
parameters and gradients; AxonML's master shards stay float32 and low-precision copies
exist only while a unit is gathered, so they are *transient*.

Transient bytes bound what FSDP holds on top of the model state at any moment (AxonML's
schedule, activations excluded; ``U`` = a unit's unsharded elements with padding, ``S`` =
its shard, ``p``/``r`` = param/reduce dtype bytes):

* FULL_SHARD, HYBRID_SHARD: the root unit stays gathered from its forward to the end of
  its backward, and its unsharded gradients live from the start of backward to its end
  (``2 p U_root``); for the largest other unit: itself plus one gather buffer (its own
  while copying out, or the prefetched next unit's), and its unsharded gradients
  (``3 p U``); at most two reductions in flight (``2 r U`` inputs, ``2 r S`` outputs); a
  cast send buffer (``p S``).
* SHARD_GRAD_OP: every unit stays gathered between its forward and backward
  (``p * sum U``), plus the root's and one unit's unsharded gradients and the reductions.
* NO_SHARD: the root's and one unit's unsharded gradients (plus ``p * sum U`` of cast
  copies when the param dtype differs from the master dtype); the reduced buffers become
  the gradients.
* ZeRO-1 (with DDP): the gradient all-reduce buffers of DDP (counted as ``2 m P`` at most).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

from ..collectives.sharded_tensor import chunk_size
from ..nn.module import Module
from ..runtime.dtypes import get_dtype
from .config import MixedPrecisionPolicy, ShardingStrategy
from .zero import partition_parameters

__all__ = ["MemoryPlan", "memory_plan"]

# per-element state arrays, and whether the optimizer keeps a step counter (a 0-d float32) per tensor
_OPTIMIZER_STATES = {"adam": (2, True), "adamw": (2, True), "lamb": (2, True), "sgd": (0, False),
                     "sgd_momentum": (1, False), "rmsprop": (1, True), "adagrad": (1, True), "lion": (1, False)}
_NAMES = {
    "full_shard": "FULL_SHARD",
    "shard_grad_op": "SHARD_GRAD_OP",
    "no_shard": "NO_SHARD",
    "ddp": "NO_SHARD",
    "hybrid_shard": "HYBRID_SHARD",
    "zero1": "ZERO1",
    "zero-1": "ZERO1",
}


@dataclass(frozen=True)
class MemoryPlan:
    """Bytes per rank (see the module note for the formulas)."""

    strategy: str
    world_size: int
    shard_size: int
    num_params: int
    params_bytes: int
    grads_bytes: int
    optimizer_bytes: int
    transient_bytes: int

    @property
    def model_state_bytes(self) -> int:
        """Parameters + gradients + optimizer state: what stays between steps."""
        return self.params_bytes + self.grads_bytes + self.optimizer_bytes

    @property
    def peak_bytes(self) -> int:
        """Model state plus the transient bound (activations excluded)."""
        return self.model_state_bytes + self.transient_bytes

    def __str__(self) -> str:
        mib = 1 << 20
        return (f"{self.strategy} on {self.world_size} ranks (shards over {self.shard_size}), {self.num_params:,} parameters: "
                f"params {self.params_bytes / mib:.2f} MiB, grads {self.grads_bytes / mib:.2f} MiB, optimizer "
                f"{self.optimizer_bytes / mib:.2f} MiB, transient <= {self.transient_bytes / mib:.2f} MiB per rank")


def _unit_sizes(model: Any, units: Iterable[Module] | None) -> tuple[list[int], list[list[int]], int]:
    """(all parameter sizes, sizes per unit, index of the root unit) of ``model``."""
    if isinstance(model, int):
        return [model], [[model]], 0
    if not isinstance(model, Module):
        raise TypeError(f"memory_plan: model must be an axonml Module or a number of parameters, got {type(model).__name__}")
    fsdp = [m for m in model.modules() if getattr(m, "_fsdp_unit", None) is not None]
    if fsdp:
        per_unit = [[info.numel for info in m._fsdp_unit.infos] for m in fsdp]
        root = fsdp.index(model) if model in fsdp else 0
        return [n for u in per_unit for n in u], per_unit, root
    chosen = list(units or [])
    seen: set = set()
    per_unit = []
    for u in chosen:
        sizes = [p.numel() for p in u.parameters() if id(p) not in seen]
        seen.update(id(p) for p in u.parameters())
        per_unit.append(sizes)
    per_unit.append([p.numel() for p in model.parameters() if id(p) not in seen])  # the root
    return [n for u in per_unit for n in u], per_unit, len(per_unit) - 1


def memory_plan(model: Any, strategy: ShardingStrategy | str, world_size: int, *,
                mp_policy: MixedPrecisionPolicy | None = None, optimizer: str | int = "adamw",
                shard_size: int | None = None, units: Iterable[Module] | None = None,
                master_dtype: Any = "float32") -> MemoryPlan:
    """Analytic bytes per rank for parameters, gradients and optimizer state.

    Args:
        model: an FSDP model (its units are used), a plain model (with ``units``: the
            submodules that would be units; the rest is the root), or a parameter count.
        strategy: a :class:`ShardingStrategy`, or ``"zero1"`` / ``"ddp"``.
        world_size: the number of ranks.
        mp_policy: the mixed precision policy (param and reduce dtypes of the transient buffers).
        optimizer: ``"adamw"``, ``"sgd"``, ``"sgd_momentum"``... or bytes of state per element.
        shard_size: HYBRID_SHARD's shard group size (default: ``world_size``).

    Example::

        plan = memory_plan(model, ShardingStrategy.FULL_SHARD, world_size=4, units=model.blocks)
        print(plan)   # FULL_SHARD on 4 ranks ...: params 0.25 MiB, grads 0.25 MiB, optimizer 0.50 MiB, ...
    """
    name = strategy.name if isinstance(strategy, ShardingStrategy) else _NAMES.get(str(strategy).lower())
    if name is None:
        raise ValueError(f"memory_plan: unknown strategy {strategy!r}; use a ShardingStrategy or one of {sorted(_NAMES)}")
    if not isinstance(world_size, int) or world_size < 1:
        raise ValueError(f"memory_plan: world_size must be a positive int, got {world_size!r}")
    m = get_dtype(master_dtype).itemsize
    mp = mp_policy or MixedPrecisionPolicy()
    p_b = mp.param_dtype.itemsize if mp.param_dtype is not None else m
    red = mp.reduce_dtype or mp.param_dtype
    r_b = red.itemsize if red is not None else m
    if isinstance(optimizer, str):
        if optimizer.lower() not in _OPTIMIZER_STATES:
            raise ValueError(f"memory_plan: unknown optimizer {optimizer!r}; use one of {sorted(_OPTIMIZER_STATES)} or "
                             "bytes of state per element")
        arrays, has_step = _OPTIMIZER_STATES[optimizer.lower()]
        k = arrays * m
    else:
        k, has_step = int(optimizer), False
    sizes, per_unit, root = _unit_sizes(model, units)
    steps = 4 * len(sizes) if has_step else 0
    total = sum(sizes)
    if name == "HYBRID_SHARD":
        n = shard_size or world_size
        if world_size % n:
            raise ValueError(f"memory_plan: shard_size {n} does not divide world_size {world_size}")
    elif name in ("FULL_SHARD", "SHARD_GRAD_OP"):
        n = world_size
    else:
        n = 1
    shard = [sum(chunk_size(s, n) for s in u) for u in per_unit]  # S per unit
    unsharded = [n * s for s in shard]  # U per unit, padded
    others = [u for i, u in enumerate(unsharded) if i != root] or [0]
    u_max, s_max = max(unsharded), max(shard)
    if name == "ZERO1":
        owners = partition_parameters(sizes, world_size)
        share = max(sum(s for s, o in zip(sizes, owners) if o == r) for r in range(world_size))
        params, grads, opt = m * total, m * total, k * share + steps
        transient = 2 * m * total
    elif n == 1:  # NO_SHARD
        params, grads, opt = m * total, m * total, k * total + steps
        cast = p_b * sum(unsharded) if mp.param_dtype is not None else 0
        transient = p_b * (unsharded[root] + max(others)) + 2 * r_b * s_max + cast
    else:
        per_rank = sum(shard)
        params, grads, opt = m * per_rank, m * per_rank, k * per_rank + steps
        reductions = 2 * r_b * u_max + 2 * r_b * s_max + p_b * s_max
        if name == "SHARD_GRAD_OP":
            transient = p_b * sum(unsharded) + p_b * (unsharded[root] + max(others)) + reductions
        else:
            transient = 2 * p_b * unsharded[root] + 3 * p_b * max(others) + reductions
    return MemoryPlan(name, world_size, n, int(total), int(params), int(grads), int(opt), int(transient))

