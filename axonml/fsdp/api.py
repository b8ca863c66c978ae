"""``fully_shard``: FSDP2's per-module API, and the methods it adds to a module.

Note on use: shard bottom-up, each unit (e.g. each transformer block), then the root::

    for block in model.blocks:
        fully_shard(block)
    fully_shard(model)                       # the root: embeddings, head, final norm
    opt = ax.optim.AdamW(model.parameters()) # the sharded parameters
    loss = model(x, y); loss.backward(); opt.step(); opt.zero_grad()

A unit manages the parameters of its module that no nested unit manages. Its class
becomes ``FSDP<Name>`` (a subclass of :class:`FSDPModule` and the original class), as in
PyTorch, so ``isinstance`` checks keep working and the FSDP methods are at hand.

Note on groups: ``group`` is the process group that parameters are sharded over (default:
the world). A pair ``(shard_group, replicate_group)`` gives HYBRID_SHARD: shards inside
``shard_group``, replicas across ``replicate_group`` (build both with
:func:`hybrid_groups`). With no process group initialized, or a group of one, nothing is
communicated and the module trains as in a single process.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any, Iterator

from ..collectives import GroupMember, ProcessGroup, get_rank, get_world_size, is_initialized, new_group
from ..collectives.api import resolve_group
from ..nn.module import Module
from ..nn.parameter import Parameter
from ..tensor import Tensor
from ._param import ShardedParameter
from ._runtime import post_forward, pre_forward
from ._unit import FSDPUnit
from .clip import clip_grad_norm_
from .config import MixedPrecisionPolicy, OffloadPolicy
from .state_dict import load_module_state_dict, module_state_dict

__all__ = ["FSDPModule", "UnshardHandle", "fully_shard", "hybrid_groups"]

logger = logging.getLogger(__name__)


class UnshardHandle:
    """Returned by ``FSDPModule.unshard(async_op=True)``; ``wait()`` finishes the unshard."""

    def __init__(self, unit: FSDPUnit) -> None:
        self._unit = unit

    def wait(self) -> None:
        self._unit.unshard()


class FSDPModule:
    """The methods of a ``fully_shard``-ed module (mixed into its class)."""

    _fsdp_unit: FSDPUnit

    def _fsdp_units(self, recurse: bool) -> list[FSDPUnit]:
        if not recurse:
            return [self._fsdp_unit]
        return [m._fsdp_unit for m in self.modules() if isinstance(m, FSDPModule)]

    def unshard(self, async_op: bool = False) -> UnshardHandle | None:
        """All-gather this unit's parameters now (``async_op``: return a handle to wait on)."""
        self._fsdp_unit.start_gather("forward")
        if async_op:
            return UnshardHandle(self._fsdp_unit)
        self._fsdp_unit.unshard()
        return None

    def reshard(self) -> None:
        """Free this unit's unsharded parameters (the module holds its shards again)."""
        self._fsdp_unit.reshard()

    def set_requires_gradient_sync(self, requires_gradient_sync: bool, *, recurse: bool = True) -> None:
        """Turn gradient reduction off (gradient accumulation) or back on.

        With False, backward keeps each unit's gradients **unsharded**, accumulated in the
        reduce dtype, until a backward with sync on reduce-scatters them together. Memory
        cost: one unsharded gradient buffer per unit, i.e. the full model's gradients in the
        reduce dtype on every rank (``4 * num_params`` bytes in float32) for as long as
        accumulation lasts, on top of the sharded state; parameters are still resharded.
        """
        for u in self._fsdp_units(recurse):
            u.requires_gradient_sync = bool(requires_gradient_sync)

    @contextlib.contextmanager
    def no_sync(self) -> Iterator[None]:
        """Context manager form of ``set_requires_gradient_sync(False)`` (FSDP1's ``no_sync``)."""
        units = self._fsdp_units(True)
        before = [u.requires_gradient_sync for u in units]
        for u in units:
            u.requires_gradient_sync = False
        try:
            yield
        finally:
            for u, b in zip(units, before):
                u.requires_gradient_sync = b

    def set_reshard_after_forward(self, reshard_after_forward: bool, recurse: bool = True) -> None:
        """FULL_SHARD (True) or SHARD_GRAD_OP (False) behaviour for this unit (and its children)."""
        for u in self._fsdp_units(recurse):
            u.reshard_after_forward = bool(reshard_after_forward)

    def set_modules_to_forward_prefetch(self, modules: list["FSDPModule"]) -> None:
        """All-gather these units when this unit's forward starts (replaces the implicit choice)."""
        self._fsdp_unit.forward_prefetch = [_unit_of(m, "set_modules_to_forward_prefetch") for m in modules]

    def set_modules_to_backward_prefetch(self, modules: list["FSDPModule"]) -> None:
        """All-gather these units when this unit's backward starts (replaces the implicit choice)."""
        self._fsdp_unit.backward_prefetch = [_unit_of(m, "set_modules_to_backward_prefetch") for m in modules]

    def set_prefetch(self, forward: bool | None = None, backward: bool | None = None) -> None:
        """Turn implicit prefetching on or off for the units under this root.

        Forward: when a unit's forward starts, all-gather the unit that followed it in the
        previous iteration. Backward: when a unit's backward starts, all-gather the next
        unit in backward order. Both default on.
        """
        if forward is not None:
            self._fsdp_unit.implicit_prefetch["forward"] = bool(forward)
        if backward is not None:
            self._fsdp_unit.implicit_prefetch["backward"] = bool(backward)

    def clip_grad_norm_(self, max_norm: float, norm_type: float = 2.0, error_if_nonfinite: bool = False) -> Tensor:
        """Clip the gradients of all parameters (sharded or not) by their global norm; returns it.
        A collective: every rank must call it."""
        return clip_grad_norm_(self.parameters(), max_norm, norm_type, error_if_nonfinite)

    def comm_stats(self, recurse: bool = True) -> dict[str, dict[str, int]]:
        """Collectives issued per unit so far (keyed by module path): all-gathers in forward
        and in backward, reduce-scatters, replica all-reduces."""
        out = {}
        for name, m in self.named_modules():
            if isinstance(m, FSDPModule) and (recurse or m is self):
                out[name] = dict(m._fsdp_unit.stats)
        return out

    def state_dict(self, destination: dict | None = None, prefix: str = "", keep_vars: bool = False) -> Any:
        """Parameters as :class:`~axonml.collectives.ShardedTensor` (global shape, placement,
        local shard), buffers as tensors. ``axonml.fsdp.get_model_state_dict`` gives full
        tensors; ``save_sharded_checkpoint`` writes the shards."""
        out = super().state_dict(destination, prefix, keep_vars)  # type: ignore[misc]
        return module_state_dict(self, out, prefix)

    def load_state_dict(self, state_dict: dict, strict: bool = True, assign: bool = False) -> Any:
        """Load full tensors (each rank keeps its shard) or ShardedTensors of the same layout."""
        return load_module_state_dict(self, state_dict, strict)


def _unit_of(m: Any, what: str) -> FSDPUnit:
    if not isinstance(m, FSDPModule):
        raise TypeError(f"{what}: expected modules returned by fully_shard, got {type(m).__name__}")
    return m._fsdp_unit


_CLASSES: dict[type, type] = {}


def _fsdp_class(cls: type) -> type:
    if cls not in _CLASSES:
        _CLASSES[cls] = type(f"FSDP{cls.__name__}", (FSDPModule, cls), {"__module__": cls.__module__})
    return _CLASSES[cls]


def _as_group(group: Any, what: str) -> ProcessGroup | None:
    """A ProcessGroup with more than one rank, or None (a shard/replica world of one)."""
    if group is GroupMember.NON_GROUP_MEMBER:
        raise ValueError(f"fully_shard: this rank is not a member of the {what} group (new_group returned "
                         "NON_GROUP_MEMBER here); pass the group this rank belongs to")
    if group is None and not is_initialized():
        return None
    pg = resolve_group(group, "fully_shard")
    return pg if pg.size() > 1 else None


def resolve_groups(group: Any) -> tuple[ProcessGroup | None, ProcessGroup | None]:
    """(shard group, replicate group) from ``fully_shard``'s ``group`` argument."""
    if isinstance(group, tuple):
        if len(group) != 2:
            raise ValueError(f"fully_shard: a group tuple must be (shard_group, replicate_group), got {len(group)} items")
        return _as_group(group[0], "shard"), _as_group(group[1], "replicate")
    return _as_group(group, "shard"), None


def _managed(module: Module) -> list[tuple[str, Parameter, list]]:
    """(name, parameter, [(owner module, attribute)]) of the parameters no nested unit manages."""
    found: dict[int, tuple[str, Parameter, list]] = {}
    for prefix, mod in module.named_modules():
        for name, p in mod._parameters.items():
            if p is None or isinstance(p, ShardedParameter):
                continue
            entry = found.get(id(p))
            if entry is None:
                found[id(p)] = (prefix + ("." if prefix else "") + name, p, [(mod, name)])
            else:
                entry[2].append((mod, name))
    return list(found.values())


def shard_module(module: Module, shard_group: ProcessGroup | None, replicate_group: ProcessGroup | None,
                 reshard_after_forward: bool, mp_policy: MixedPrecisionPolicy, offload_policy: OffloadPolicy) -> Module:
    """Make ``module`` an FSDP unit over the given groups (the common core of the public APIs)."""
    if not isinstance(module, Module):
        raise TypeError(f"fully_shard expects an axonml.nn.Module, got {type(module).__name__}")
    if getattr(module, "_fsdp_unit", None) is not None:
        raise ValueError(f"fully_shard: {type(module).__name__} is already sharded; call fully_shard once per module")
    if not isinstance(mp_policy, MixedPrecisionPolicy):
        raise TypeError(f"fully_shard: mp_policy must be a MixedPrecisionPolicy, got {type(mp_policy).__name__}")
    if not isinstance(offload_policy, OffloadPolicy):
        raise TypeError(f"fully_shard: offload_policy must be an OffloadPolicy, got {type(offload_policy).__name__}")
    if not isinstance(reshard_after_forward, bool):
        raise TypeError(f"fully_shard: reshard_after_forward must be a bool, got {reshard_after_forward!r}")
    managed = _managed(module)
    # CPUOffloadPolicy: host shards when the parameters live on a GPU, a no-op on CPU (see _offload)
    unit = FSDPUnit(module, managed, shard_group, replicate_group, mp_policy, reshard_after_forward, offload_policy)
    object.__setattr__(module, "_fsdp_unit", unit)
    if not isinstance(module, FSDPModule):
        module.__class__ = _fsdp_class(type(module))
    module.register_forward_pre_hook(pre_forward)
    module.register_forward_hook(post_forward)
    logger.debug("rank=%d fully_shard %s: %d parameters, shard world %d, %d elements per rank, shards on %s",
                 unit.shard_rank, type(module).__name__, len(unit.infos), unit.shard_world, unit.S, unit.shard_device)
    return module


_NO_MP = MixedPrecisionPolicy()
_NO_OFFLOAD = OffloadPolicy()


def fully_shard(module: Module, group: Any = None, reshard_after_forward: bool = True,
                mp_policy: MixedPrecisionPolicy = _NO_MP, offload_policy: OffloadPolicy = _NO_OFFLOAD) -> Module:
    """Shard ``module``'s parameters over ``group`` (FSDP2's ``fully_shard``); returns the module.

    Args:
        module: the unit; parameters already managed by a nested ``fully_shard`` are left to it.
        group: the process group to shard over (default: the world), or a pair
            ``(shard_group, replicate_group)`` for HYBRID_SHARD (see :func:`hybrid_groups`).
        reshard_after_forward: True frees the unsharded parameters after forward and
            all-gathers them again for backward (FULL_SHARD); False keeps them until the
            unit's backward (SHARD_GRAD_OP). The root always keeps them (its backward is next).
        mp_policy: :class:`MixedPrecisionPolicy` (param and reduce dtypes; float32 master shards).
        offload_policy: :class:`OffloadPolicy`, or :class:`CPUOffloadPolicy` to keep the sharded
            parameters, their gradients and the optimizer state in host memory while the
            parameters compute on a GPU (a no-op on CPU).

    Every rank must build the same model with the same initial values (e.g. the same seed)
    and call ``fully_shard`` on the same modules in the same order.

    Memory: resharding hands the unsharded parameters' memory back: its pages to the
    operating system on CPU, its physical memory to the GPU on CUDA (the driver's virtual
    memory management keeps the addresses; see :mod:`axonml.fsdp._storage`). With
    :class:`CPUOffloadPolicy` the GPU holds the unsharded parameters only while a unit
    computes (and transient send/reduce buffers); shards, gradients and optimizer state are
    in host memory.

    Example::

        for block in model.blocks:
            fully_shard(block)
        fully_shard(model)
        opt = ax.optim.AdamW(model.parameters(), lr=1e-3)
    """
    shard_group, replicate_group = resolve_groups(group)
    return shard_module(module, shard_group, replicate_group, reshard_after_forward, mp_policy, offload_policy)


def hybrid_groups(shard_size: int) -> tuple[Any, Any]:
    """Build the process groups of HYBRID_SHARD: shard groups of ``shard_size`` consecutive
    ranks (e.g. a node), replicate groups of the ranks with the same position in their shard
    group. Every rank must call it (it calls ``new_group`` for every group).

    Returns:
        ``(shard_group, replicate_group)`` of this rank, for ``fully_shard(group=...)``.

    Example (8 ranks, 4 per node)::

        groups = hybrid_groups(4)     # shard: [0-3] or [4-7]; replicate: [r, r+4]
        fully_shard(block, group=groups)
    """
    world, rank = get_world_size(), get_rank()
    if isinstance(shard_size, bool) or not isinstance(shard_size, int) or shard_size < 1 or world % shard_size:
        raise ValueError(f"hybrid_groups: shard_size must be a positive divisor of the world size {world}, got {shard_size!r}")
    shard = replicate = None
    for i in range(world // shard_size):
        ranks = list(range(i * shard_size, (i + 1) * shard_size))
        g = new_group(ranks)
        if rank in ranks:
            shard = g
    for j in range(shard_size):
        ranks = list(range(j, world, shard_size))
        g = new_group(ranks)
        if rank in ranks:
            replicate = g
    return shard, replicate
