"""``FullyShardedDataParallel``: the FSDP1-style wrapper, and auto-wrap policies.

Note on the mapping: the wrapper is a thin layer over :func:`fully_shard`. An
``auto_wrap_policy`` picks submodules, bottom-up, that become units (they are sharded
in place: their parameter names do not change); then the wrapper itself becomes the root
unit for whatever is left. The strategy picks the groups and the reshard behaviour:

=================  ====================  ======================  ======================
strategy           shard over            replicate over          reshard after forward
=================  ====================  ======================  ======================
FULL_SHARD         ``process_group``     -                       yes
SHARD_GRAD_OP      ``process_group``     -                       no
NO_SHARD           nobody (full copy)    ``process_group``       no
HYBRID_SHARD       a node-sized group    the other nodes         yes
=================  ====================  ======================  ======================

The wrapped model lives under ``_fsdp_wrapped_module`` (as in PyTorch); state-dict
functions strip that component, so checkpoints use the plain model's names.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Iterable

from ..collectives import broadcast, get_world_size, is_initialized
from ..nn.module import Module
from .api import FSDPModule, _as_group, hybrid_groups, resolve_groups, shard_module
from .config import BackwardPrefetch, CPUOffload, CPUOffloadPolicy, MixedPrecisionPolicy, OffloadPolicy, ShardingStrategy

__all__ = ["FullyShardedDataParallel", "ModuleWrapPolicy", "size_based_auto_wrap_policy", "transformer_auto_wrap_policy"]


class ModuleWrapPolicy:
    """Make every submodule of one of ``module_classes`` a unit (e.g. each transformer block).

    Example: ``FullyShardedDataParallel(model, auto_wrap_policy=ModuleWrapPolicy({Block}))``
    """

    def __init__(self, module_classes: Iterable[type]) -> None:
        self._classes = tuple(module_classes)
        if not all(isinstance(c, type) for c in self._classes):
            raise TypeError(f"ModuleWrapPolicy: expected module classes, got {self._classes!r}")

    def __call__(self, module: Module, recurse: bool, nonwrapped_numel: int) -> bool:
        return True if recurse else isinstance(module, self._classes)

    def __repr__(self) -> str:
        return f"ModuleWrapPolicy({sorted(c.__name__ for c in self._classes)})"


def size_based_auto_wrap_policy(module: Module, recurse: bool, nonwrapped_numel: int, min_num_params: int = int(1e8)) -> bool:
    """A submodule becomes a unit when it holds at least ``min_num_params`` parameters not yet
    in a unit (use ``functools.partial(size_based_auto_wrap_policy, min_num_params=...)``)."""
    return True if recurse else nonwrapped_numel >= min_num_params


def transformer_auto_wrap_policy(module: Module, recurse: bool, nonwrapped_numel: int,
                                 transformer_layer_cls: Iterable[type] = ()) -> bool:
    """Every instance of ``transformer_layer_cls`` becomes a unit (PyTorch's name for ModuleWrapPolicy)."""
    return True if recurse else isinstance(module, tuple(transformer_layer_cls))


def _post_order(module: Module) -> list[Module]:
    out: list[Module] = []
    for child in module.children():
        out.extend(_post_order(child))
        out.append(child)
    return out


def _unwrapped_numel(module: Module) -> int:
    return sum(p.numel() for p in module.parameters() if getattr(p, "_fsdp_info", None) is None)


class FullyShardedDataParallel(FSDPModule, Module):
    """Wrap ``module`` for fully sharded data parallel training (PyTorch FSDP1's interface).

    Args:
        module: the model (every rank builds it with the same values).
        process_group: the group to shard over (default: the world), or for HYBRID_SHARD a
            pair ``(shard_group, replicate_group)``.
        sharding_strategy: :class:`ShardingStrategy` (default FULL_SHARD).
        cpu_offload: :class:`CPUOffload` (a no-op on CPU, see :class:`CPUOffloadPolicy`).
        auto_wrap_policy: ``policy(module, recurse, nonwrapped_numel) -> bool`` choosing the
            submodules that become units, e.g. :class:`ModuleWrapPolicy`.
        backward_prefetch: :class:`BackwardPrefetch` or None (no backward prefetching).
        mixed_precision: a :class:`MixedPrecisionPolicy`.
        sync_module_states: broadcast rank 0's parameters and buffers first.
        forward_prefetch: all-gather the next unit while the current one runs forward.
        hybrid_shard_size: ranks per shard group for HYBRID_SHARD without explicit groups
            (default: ``LOCAL_WORLD_SIZE``, the ranks of one node).

    Example::

        model = FullyShardedDataParallel(model, sharding_strategy=ShardingStrategy.FULL_SHARD,
                                         auto_wrap_policy=ModuleWrapPolicy({Block}))
        opt = ax.optim.AdamW(model.parameters(), lr=1e-3)
    """

    def __init__(self, module: Module, process_group: Any = None, sharding_strategy: ShardingStrategy | None = None,
                 cpu_offload: CPUOffload | None = None, auto_wrap_policy: Callable | None = None,
                 backward_prefetch: BackwardPrefetch | None = BackwardPrefetch.BACKWARD_PRE,
                 mixed_precision: MixedPrecisionPolicy | None = None, ignored_modules: Any = None,
                 param_init_fn: Any = None, device_id: Any = None, sync_module_states: bool = False,
                 forward_prefetch: bool = False, limit_all_gathers: bool = True, use_orig_params: bool = False,
                 ignored_states: Any = None, device_mesh: Any = None, *, hybrid_shard_size: int | None = None) -> None:
        super().__init__()
        if not isinstance(module, Module):
            raise TypeError(f"FullyShardedDataParallel expects an axonml.nn.Module, got {type(module).__name__}")
        unsupported = {"ignored_modules": ignored_modules, "param_init_fn": param_init_fn, "ignored_states": ignored_states,
                       "device_mesh": device_mesh}
        given = sorted(k for k, v in unsupported.items() if v is not None)
        if given:
            raise NotImplementedError(f"FullyShardedDataParallel: {given} are not supported; shard the modules you want "
                                      "with fully_shard instead")
        strategy = ShardingStrategy.FULL_SHARD if sharding_strategy is None else sharding_strategy
        if not isinstance(strategy, ShardingStrategy):
            raise TypeError(f"FullyShardedDataParallel: sharding_strategy must be a ShardingStrategy, got {strategy!r}")
        mp = mixed_precision if mixed_precision is not None else MixedPrecisionPolicy()
        offload: OffloadPolicy = CPUOffloadPolicy() if cpu_offload is not None and cpu_offload.offload_params else OffloadPolicy()
        self.sharding_strategy = strategy
        if sync_module_states and is_initialized() and get_world_size() > 1:
            src_group = process_group if not isinstance(process_group, tuple) else None
            for t in list(module.parameters()) + list(module.buffers()):
                broadcast(t.detach(), src=0, group=src_group)
        shard_group, replicate_group = self._groups(strategy, process_group, hybrid_shard_size)
        reshard = strategy in (ShardingStrategy.FULL_SHARD, ShardingStrategy.HYBRID_SHARD)
        self.add_module("_fsdp_wrapped_module", module)
        if auto_wrap_policy is not None:
            for m in _post_order(module):
                if getattr(m, "_fsdp_unit", None) is None and auto_wrap_policy(module=m, recurse=False,
                                                                               nonwrapped_numel=_unwrapped_numel(m)):
                    shard_module(m, shard_group, replicate_group, reshard, mp, offload)
        shard_module(self, shard_group, replicate_group, reshard, mp, offload)
        self.set_prefetch(forward=bool(forward_prefetch), backward=backward_prefetch is not None)

    @staticmethod
    def _groups(strategy: ShardingStrategy, process_group: Any, hybrid_shard_size: int | None) -> tuple:
        if strategy is ShardingStrategy.NO_SHARD:
            return None, _as_group(process_group, "replicate")
        if strategy is ShardingStrategy.HYBRID_SHARD:
            if isinstance(process_group, tuple):
                return resolve_groups(process_group)
            if process_group is not None:
                raise ValueError("FullyShardedDataParallel: HYBRID_SHARD takes process_group=(shard_group, "
                                 "replicate_group) or None (groups of hybrid_shard_size ranks)")
            if not is_initialized():
                return None, None
            size = hybrid_shard_size or int(os.environ.get("LOCAL_WORLD_SIZE", "0") or get_world_size())
            shard, replicate = hybrid_groups(size)
            return _as_group(shard, "shard"), _as_group(replicate, "replicate")
        if isinstance(process_group, tuple):
            raise ValueError(f"FullyShardedDataParallel: a (shard, replicate) group pair needs HYBRID_SHARD, not {strategy.name}")
        return resolve_groups(process_group)

    @property
    def module(self) -> Module:
        """The wrapped module."""
        return self._modules["_fsdp_wrapped_module"]

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self._modules["_fsdp_wrapped_module"](*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            mods = self.__dict__.get("_modules")
            if mods is None or "_fsdp_wrapped_module" not in mods:
                raise
            return getattr(mods["_fsdp_wrapped_module"], name)

    def extra_repr(self) -> str:
        return f"sharding_strategy={self.sharding_strategy.name}"

