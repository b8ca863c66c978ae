"""``ShardedParameter``: what an FSDP module registers in place of each original parameter.

Note on the layout: every original parameter is flattened and split with chunk semantics
(:class:`axonml.collectives.FlatShard`): with ``n`` elements over ``W`` ranks, rank ``r``
holds elements ``[r c, min((r + 1) c, n))`` of the flattening, ``c = ceil(n / W)``. The
shards of all the parameters of one unit live back to back in one flat buffer per rank,
each padded to ``c`` elements::

    unit shard buffer (rank r):  | p0 chunk r (c0) | p1 chunk r (c1) | ... |   S = sum c_i
    all-gather output:           W rows of S, row r = rank r's buffer   (one collective)
    unsharded p_i:               column block i of the W rows, flattened, first n_i kept

A ``ShardedParameter`` is a 1-D leaf viewing its valid (unpadded) part of that buffer, so
the optimizer steps in place on the very memory the next all-gather sends, and any
elementwise optimizer works unchanged on it.
"""

from __future__ import annotations

from typing import Any

from ..collectives.sharded_tensor import FlatShard, ShardedTensor
from ..nn.parameter import Parameter
from ..tensor import Tensor

__all__ = ["ParamInfo", "ShardedParameter"]


class ParamInfo:
    """Bookkeeping of one original parameter inside its unit (see the module note)."""

    __slots__ = ("fqn", "locations", "shape", "numel", "requires_grad", "chunk", "offset", "start", "valid",
                 "sharded", "unsharded", "unit")

    def __init__(self, fqn: str, locations: list, shape: tuple, requires_grad: bool, chunk: int, offset: int,
                 start: int, valid: int) -> None:
        self.fqn = fqn  # the name relative to the unit's module
        self.locations = locations  # [(module, attribute name)] where the parameter is registered
        self.shape = tuple(shape)
        self.numel = 1
        for s in self.shape:
            self.numel *= s
        self.requires_grad = requires_grad
        self.chunk, self.offset, self.start, self.valid = chunk, offset, start, valid
        self.sharded: ShardedParameter | None = None
        self.unsharded: Parameter | None = None
        self.unit: Any = None


class ShardedParameter(Parameter):
    """A parameter of an FSDP module: this rank's 1-D shard of the flattened original.

    ``shape`` is the local shape ``(valid,)``; :attr:`global_shape` is the original's. Use
    :meth:`full_tensor` (a collective) to see the whole parameter, :meth:`sharded_tensor`
    for the (global shape, placement, local shard) triple.

    Example::

        fully_shard(model)
        w = model.fc.weight            # ShardedParameter, shape (ceil(numel / W),) or less
        w.global_shape                 # (out_features, in_features)
        w.full_tensor()                # every rank calls it
    """

    __slots__ = ("_fsdp_info",)

    @property
    def global_shape(self) -> tuple:
        return self._fsdp_info.shape

    @property
    def placement(self) -> FlatShard:
        return FlatShard()

    @property
    def local_range(self) -> tuple[int, int]:
        """``[start, stop)`` of this shard in the flattened original parameter."""
        info = self._fsdp_info
        return info.start, info.start + info.valid

    def sharded_tensor(self) -> ShardedTensor:
        """The (global shape, FlatShard, this shard) triple over the unit's shard group."""
        unit = self._fsdp_info.unit
        return ShardedTensor(self.detach(), self.global_shape, FlatShard(), unit.shard_group,
                             rank=unit.shard_rank, world_size=unit.shard_world)

    def full_tensor(self) -> Tensor:
        """The whole parameter, on every rank of the shard group (a collective), on this
        shard's device (the host under CPU offload; the gather itself runs on the GPU)."""
        return self._fsdp_info.unit.full_tensor_of(self.detach(), self.global_shape)

    def to_local(self) -> Tensor:
        """This rank's shard, detached (shares memory)."""
        return self.detach()

    def __repr__(self) -> str:
        return (f"ShardedParameter(global_shape={self.global_shape}, local_range={self.local_range}, "
                f"dtype={self.dtype.name})")
