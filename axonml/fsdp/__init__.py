"""Layer 7: fully sharded data parallelism (FSDP, ZeRO).

Parameters, gradients and optimizer state are sharded across ranks; a unit's parameters
are all-gathered only around its forward and backward. Two APIs, as in PyTorch:

* :func:`fully_shard` (FSDP2): shard modules in place, bottom-up, then the root.
* :class:`FullyShardedDataParallel` (FSDP1): wrap a model, with a ``sharding_strategy``
  and an ``auto_wrap_policy`` choosing the units.

:class:`CPUOffloadPolicy` keeps the shards, their gradients and the optimizer state in host
memory while the parameters compute on a GPU (the optimizer steps on the host).

Plus :class:`ZeroRedundancyOptimizer` (ZeRO-1), :func:`clip_grad_norm_` over shards, full
and sharded state dicts, sharded checkpoints that load at any world size
(:func:`save_sharded_checkpoint`, :func:`load_sharded_checkpoint`), and
:func:`memory_plan` (the analytic bytes per rank).
"""

from ._param import ShardedParameter
from .api import FSDPModule, UnshardHandle, fully_shard, hybrid_groups
from .checkpoint import load_sharded_checkpoint, read_metadata, save_sharded_checkpoint
from .clip import clip_grad_norm_
from .config import (
    BackwardPrefetch,
    CPUOffload,
    CPUOffloadPolicy,
    MixedPrecisionPolicy,
    OffloadPolicy,
    ShardingStrategy,
)
from .memory import MemoryPlan, memory_plan
from .state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)
from .wrap import FullyShardedDataParallel, ModuleWrapPolicy, size_based_auto_wrap_policy, transformer_auto_wrap_policy
from .zero import ZeroRedundancyOptimizer

__all__ = [
    "BackwardPrefetch",
    "CPUOffload",
    "CPUOffloadPolicy",
    "FSDPModule",
    "FullyShardedDataParallel",
    "MemoryPlan",
    "MixedPrecisionPolicy",
    "ModuleWrapPolicy",
    "OffloadPolicy",
    "ShardedParameter",
    "ShardingStrategy",
    "StateDictOptions",
    "UnshardHandle",
    "ZeroRedundancyOptimizer",
    "clip_grad_norm_",
    "fully_shard",
    "get_model_state_dict",
    "get_optimizer_state_dict",
    "hybrid_groups",
    "load_sharded_checkpoint",
    "memory_plan",
    "read_metadata",
    "save_sharded_checkpoint",
    "set_model_state_dict",
    "set_optimizer_state_dict",
    "size_based_auto_wrap_policy",
    "transformer_auto_wrap_policy",
]
