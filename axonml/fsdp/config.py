"""FSDP configuration: sharding strategies, mixed precision and offload policies.

Names and defaults follow PyTorch: ``MixedPrecisionPolicy``, ``OffloadPolicy`` and
``CPUOffloadPolicy`` of FSDP2 (``torch.distributed.fsdp``), ``ShardingStrategy``,
``BackwardPrefetch`` and ``CPUOffload`` of FSDP1. Configuration objects are frozen
dataclasses validated when built.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

from ..errors import DTypeError
from ..runtime.dtypes import DType, get_dtype

__all__ = [
    "BackwardPrefetch",
    "CPUOffload",
    "CPUOffloadPolicy",
    "MixedPrecisionPolicy",
    "OffloadPolicy",
    "ShardingStrategy",
]


class ShardingStrategy(enum.Enum):
    """What FSDP shards (the ZeRO stages).

    * ``FULL_SHARD`` (ZeRO-3): parameters, gradients and optimizer state are sharded; a
      unit's parameters are gathered for its forward and again for its backward.
    * ``SHARD_GRAD_OP`` (ZeRO-2): as FULL_SHARD, but parameters stay gathered from a unit's
      forward until its backward (one all-gather per unit per step, more memory).
    * ``NO_SHARD``: nothing is sharded; gradients are all-reduced (DDP-equivalent).
    * ``HYBRID_SHARD``: FULL_SHARD inside a shard group (e.g. a node), replicated across
      groups; gradients are reduce-scattered in the shard group, then all-reduced across
      the replicas.

    Optimizer-state-only sharding (ZeRO-1) is :class:`axonml.fsdp.ZeroRedundancyOptimizer`.
    """

    FULL_SHARD = 1
    SHARD_GRAD_OP = 2
    NO_SHARD = 3
    HYBRID_SHARD = 4


class BackwardPrefetch(enum.Enum):
    """When to all-gather the next unit's parameters in backward. ``BACKWARD_PRE``: when the
    current unit's backward starts (overlaps the all-gather with its computation).
    ``BACKWARD_POST`` is accepted and behaves as ``BACKWARD_PRE``; None disables prefetching."""

    BACKWARD_PRE = 1
    BACKWARD_POST = 2


def _opt_dtype(value: Any, what: str) -> DType | None:
    if value is None:
        return None
    try:
        dt = get_dtype(value)
    except (DTypeError, KeyError, TypeError, ValueError):
        raise DTypeError(f"MixedPrecisionPolicy: {what}={value!r} is not a dtype; use e.g. ax.bfloat16") from None
    if not dt.is_floating_point:
        raise DTypeError(f"MixedPrecisionPolicy: {what} must be a floating dtype, got {dt.name}")
    return dt


@dataclass(frozen=True)
class MixedPrecisionPolicy:
    """Mixed precision for FSDP (PyTorch FSDP2's ``MixedPrecisionPolicy``).

    The sharded parameters (the optimizer's "master" copy) keep their own dtype (float32);
    only the gathered, unsharded parameters used by forward and backward are cast.

    Args:
        param_dtype: dtype of the unsharded parameters (and of the all-gather); None keeps
            the sharded dtype.
        reduce_dtype: dtype of the gradient reduction; None uses ``param_dtype``.
        output_dtype: cast floating outputs of the module's forward to this; None leaves them.
        cast_forward_inputs: cast floating forward inputs to ``param_dtype``.

    Example::

        fully_shard(block, mp_policy=MixedPrecisionPolicy(param_dtype=ax.bfloat16, reduce_dtype=ax.float32))
    """

    param_dtype: Any = None
    reduce_dtype: Any = None
    output_dtype: Any = None
    cast_forward_inputs: bool = True

    def __post_init__(self) -> None:
        for name in ("param_dtype", "reduce_dtype", "output_dtype"):
            object.__setattr__(self, name, _opt_dtype(getattr(self, name), name))


@dataclass(frozen=True)
class OffloadPolicy:
    """No offloading (PyTorch FSDP2's ``OffloadPolicy``): sharded state stays on the parameters' device."""


@dataclass(frozen=True)
class CPUOffloadPolicy(OffloadPolicy):
    """Keep sharded parameters, gradients and optimizer state in host memory (FSDP2's
    ``CPUOffloadPolicy``); the optimizer step then runs on the host.

    With parameters on a GPU, the parameters the optimizer sees (the local shards; float32
    master shards under a :class:`MixedPrecisionPolicy`) and their ``.grad`` live on
    ``cpu``, so any AxonML optimizer keeps its state in host memory and steps there. Before
    a unit's forward (and backward) all-gather, the shard is copied host -> GPU and cast to
    ``param_dtype`` there; forward and backward compute on the GPU with the gathered
    parameters; after the gradient reduce-scatter (on the GPU) the reduced shard is cast to
    the master dtype, copied GPU -> host and added to the shard's ``.grad``. Gradient
    accumulation without sync keeps its unsharded gradients on the GPU, as without offload.
    ``clip_grad_norm_``, state dicts and sharded checkpoints read and write the host shards
    (full state dicts come back as host tensors). Between steps the GPU holds no sharded
    state, only the unsharded parameter buffers. ``fully_shard`` reports
    ``offload_active=True`` on the unit.

    This only changes anything when parameters live on a GPU. AxonML on CPU already keeps
    everything in host memory, so on CPU the policy is accepted and is a no-op (no copy, no
    extra memory); :func:`fully_shard` records it and reports ``offload_active=False``.

    Args:
        pin_memory: accepted for PyTorch compatibility. The host shards are ordinary
            (pageable) NumPy arrays and the copies are synchronous; pinned buffers for
            asynchronous copies are not implemented.

    Example::

        model.cuda()
        for block in model.blocks:
            fully_shard(block, offload_policy=CPUOffloadPolicy())
        fully_shard(model, offload_policy=CPUOffloadPolicy())
        opt = ax.optim.AdamW(model.parameters())   # host parameters: the step runs on the CPU
    """

    pin_memory: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.pin_memory, bool):
            raise TypeError(f"CPUOffloadPolicy: pin_memory must be a bool, got {self.pin_memory!r}; pass True or False")


@dataclass(frozen=True)
class CPUOffload:
    """FSDP1's offload flag: ``CPUOffload(offload_params=True)`` is ``CPUOffloadPolicy()``."""

    offload_params: bool = False
