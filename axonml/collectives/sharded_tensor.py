"""Sharded tensors: one logical tensor split across the ranks of a process group.

A :class:`ShardedTensor` is the triple that PyTorch's DTensor carries on a 1-D mesh: the
**global shape** of the logical tensor, a **placement** (how it is split) and this rank's
**local shard**. FSDP stores every parameter this way; sharded checkpoints record the
same triple so that a shard can be found again at another world size.

Note on layouts (chunk semantics, as ``torch.chunk``): a dimension of ``n`` items over
``W`` ranks is cut into chunks of ``c = ceil(n / W)`` items; rank ``r`` holds items
``[min(r c, n), min((r + 1) c, n))``. The last ranks may hold fewer items, or none, when
``n`` is not a multiple of ``W``. Collectives need equal pieces, so a shard is padded
with zeros to ``c`` items before an all-gather and the padding is cut off afterwards:
uneven sizes cost at most ``W - 1`` items of padding per tensor, never a wrong value.

Placements:

* :class:`Shard` ``(dim)``: split dimension ``dim``; the local shard keeps the other dims.
* :class:`FlatShard` ``()``: split the row-major flattening (``numel`` items); the local
  shard is 1-D. Every rank holds at most ``ceil(numel / W)`` elements, whatever the shape,
  which is what FSDP uses (a ``(3, 1000)`` weight is balanced over 4 ranks).
* :class:`Replicate` ``()``: every rank holds the whole tensor.

For ``Shard(0)`` and ``FlatShard`` the local shard is one contiguous range of the
flattened global tensor (:meth:`ShardedTensor.local_range`), which is all a checkpoint
needs to place it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

from ..autograd.variable import make_tensor
from ..errors import ShapeError
from ..runtime import get_array_module
from ..tensor.tensor import Tensor
from .api import get_rank, get_world_size, is_initialized, resolve_group
from .functional import all_gather_into_tensor

__all__ = [
    "FlatShard",
    "Placement",
    "Replicate",
    "Shard",
    "ShardedTensor",
    "chunk_size",
    "distribute_tensor",
    "padded_size",
    "shard_range",
]


@dataclass(frozen=True)
class Shard:
    """Split dimension ``dim`` across the ranks (chunk semantics, see the module note)."""

    dim: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.dim, int) or isinstance(self.dim, bool):
            raise TypeError(f"Shard: dim must be an int, got {self.dim!r}")


@dataclass(frozen=True)
class FlatShard:
    """Split the row-major flattening of the tensor; local shards are 1-D."""


@dataclass(frozen=True)
class Replicate:
    """Every rank holds the whole tensor."""


Placement = Shard | FlatShard | Replicate


def chunk_size(n: int, world_size: int) -> int:
    """Items per rank when ``n`` items are split over ``world_size`` ranks: ``ceil(n / world_size)``."""
    if world_size < 1:
        raise ValueError(f"chunk_size: world_size must be >= 1, got {world_size}")
    if n < 0:
        raise ValueError(f"chunk_size: n must be >= 0, got {n}")
    return -(-n // world_size)


def padded_size(n: int, world_size: int) -> int:
    """``n`` rounded up to a multiple of ``world_size`` (the all-gather size of a padded tensor)."""
    return chunk_size(n, world_size) * world_size


def shard_range(n: int, world_size: int, rank: int) -> tuple[int, int]:
    """The items ``[start, stop)`` of ``n`` that ``rank`` holds (chunk semantics; may be empty).

    Example: ``shard_range(10, 4, 3) == (9, 10)``; ``shard_range(2, 4, 3) == (2, 2)``.
    """
    if not 0 <= rank < world_size:
        raise ValueError(f"shard_range: rank {rank} is outside [0, world_size={world_size})")
    c = chunk_size(n, world_size)
    return min(rank * c, n), min((rank + 1) * c, n)


def _norm_dim(dim: int, ndim: int) -> int:
    d = dim + ndim if dim < 0 else dim
    if not 0 <= d < ndim:
        raise ShapeError(f"Shard(dim={dim}) needs a tensor with more than {dim} dimensions, got {ndim}")
    return d


def _local_shape(global_shape: tuple, placement: Placement, world_size: int, rank: int) -> tuple:
    if isinstance(placement, Replicate):
        return tuple(global_shape)
    if isinstance(placement, FlatShard):
        a, b = shard_range(math.prod(global_shape), world_size, rank)
        return (b - a,)
    d = _norm_dim(placement.dim, len(global_shape))
    a, b = shard_range(global_shape[d], world_size, rank)
    return tuple(global_shape[:d]) + (b - a,) + tuple(global_shape[d + 1:])


def _check_placement(placement: Any) -> Placement:
    if not isinstance(placement, (Shard, FlatShard, Replicate)):
        raise TypeError(f"placement must be Shard(dim), FlatShard() or Replicate(), got {placement!r}")
    return placement


def _group_coords(group: Any) -> tuple[int, int]:
    """(rank, world size) in ``group``; a world of one when no process group exists."""
    if group is None and not is_initialized():
        return 0, 1
    return get_rank(group), get_world_size(group)


class ShardedTensor:
    """A logical tensor of ``global_shape`` split across ``group`` by ``placement``.

    Args:
        local: this rank's shard (an axonml Tensor of the local shape, see
            :meth:`local_shape`); kept by reference, not copied.
        global_shape: the shape of the whole tensor.
        placement: :class:`Shard`, :class:`FlatShard` or :class:`Replicate`.
        group: the process group (None: the default group, or a world of one when no
            group is initialized).
        rank, world_size: give both to describe a shard of a layout without a group
            (checkpoint tools); otherwise they come from ``group``.

    Example::

        w = ax.randn(10, 3)
        st = ShardedTensor.from_full(w, FlatShard())     # rank r keeps its 1-D piece
        st.to_local().shape                              # (8,) on ranks 0-2 of 4, (6,) on rank 3
        st.full_tensor()                                 # all-gather: w again, on every rank
    """

    __slots__ = ("_local", "_global_shape", "_placement", "_group", "_rank", "_world_size")

    def __init__(self, local: Tensor, global_shape: Sequence[int], placement: Placement, group: Any = None, *,
                 rank: int | None = None, world_size: int | None = None) -> None:
        if not isinstance(local, Tensor):
            raise TypeError(f"ShardedTensor: local must be an axonml Tensor, got {type(local).__name__}")
        self._placement = _check_placement(placement)
        self._global_shape = tuple(int(s) for s in global_shape)
        if any(s < 0 for s in self._global_shape):
            raise ShapeError(f"ShardedTensor: global_shape {self._global_shape} has a negative size")
        if (rank is None) != (world_size is None):
            raise ValueError("ShardedTensor: pass both rank and world_size, or neither")
        if rank is None:
            rank, world_size = _group_coords(group)
        elif not 0 <= rank < world_size:
            raise ValueError(f"ShardedTensor: rank {rank} is outside [0, world_size={world_size})")
        self._group, self._rank, self._world_size = group, int(rank), int(world_size)
        want = _local_shape(self._global_shape, self._placement, self._world_size, self._rank)
        if tuple(local.shape) != want:
            raise ShapeError(
                f"ShardedTensor: rank {self._rank} of {self._world_size} must hold a local shard of shape {want} for "
                f"global shape {self._global_shape} with {self._placement}, but got shape {tuple(local.shape)}"
            )
        self._local = local

    # -- construction ---------------------------------------------------------------
    @classmethod
    def from_full(cls, full: Tensor, placement: Placement, group: Any = None, *, rank: int | None = None,
                  world_size: int | None = None) -> "ShardedTensor":
        """Keep this rank's piece of ``full`` (a copy; no communication: every rank must
        pass the same ``full``)."""
        if not isinstance(full, Tensor):
            raise TypeError(f"ShardedTensor.from_full: full must be an axonml Tensor, got {type(full).__name__}")
        _check_placement(placement)
        if rank is None:
            rank, world_size = _group_coords(group)
        shape = tuple(full.shape)
        arr = full.detach()._data
        if isinstance(placement, Replicate):
            piece = arr
        elif isinstance(placement, FlatShard):
            a, b = shard_range(math.prod(shape), world_size, rank)
            piece = arr.reshape(-1)[a:b]
        else:
            d = _norm_dim(placement.dim, len(shape))
            a, b = shard_range(shape[d], world_size, rank)
            piece = arr[(slice(None),) * d + (slice(a, b),)]
        local = _wrap(get_array_module(arr).ascontiguousarray(piece).copy(), full)
        return cls(local, shape, placement, group, rank=rank, world_size=world_size)

    # -- properties -----------------------------------------------------------------
    @property
    def shape(self) -> tuple:
        """The global shape (as ``DTensor.shape``)."""
        return self._global_shape

    global_shape = shape

    @property
    def placement(self) -> Placement:
        return self._placement

    @property
    def dtype(self) -> Any:
        return self._local.dtype

    @property
    def device(self) -> Any:
        return self._local.device

    @property
    def group(self) -> Any:
        return self._group

    @property
    def rank(self) -> int:
        return self._rank

    @property
    def world_size(self) -> int:
        return self._world_size

    def numel(self) -> int:
        """Elements of the global tensor."""
        return math.prod(self._global_shape)

    def to_local(self) -> Tensor:
        """This rank's shard (the tensor itself, not a copy)."""
        return self._local

    def local_shape(self, rank: int | None = None) -> tuple:
        """The shape of ``rank``'s shard (default: this rank)."""
        r = self._rank if rank is None else rank
        return _local_shape(self._global_shape, self._placement, self._world_size, r)

    def local_range(self, rank: int | None = None) -> tuple[int, int]:
        """``[start, stop)`` of ``rank``'s shard in the flattened global tensor.

        Raises:
            ValueError: for ``Shard(dim)`` with ``dim > 0`` (not one range; use :meth:`local_slices`).
        """
        r = self._rank if rank is None else rank
        n = self.numel()
        if isinstance(self._placement, Replicate):
            return 0, n
        if isinstance(self._placement, FlatShard):
            return shard_range(n, self._world_size, r)
        d = _norm_dim(self._placement.dim, len(self._global_shape))
        if d != 0:
            raise ValueError(f"local_range: a Shard(dim={self._placement.dim}) shard is not one flat range; "
                             "use local_slices()")
        row = math.prod(self._global_shape[1:])
        a, b = shard_range(self._global_shape[0], self._world_size, r)
        return a * row, b * row

    def local_slices(self, rank: int | None = None) -> tuple:
        """Index of ``rank``'s shard in the global tensor (``Shard``/``Replicate``) or in its flattening (``FlatShard``)."""
        if isinstance(self._placement, FlatShard):
            return (slice(*self.local_range(rank)),)
        if isinstance(self._placement, Replicate):
            return tuple(slice(0, s) for s in self._global_shape)
        r = self._rank if rank is None else rank
        d = _norm_dim(self._placement.dim, len(self._global_shape))
        a, b = shard_range(self._global_shape[d], self._world_size, r)
        return tuple(slice(a, b) if i == d else slice(0, s) for i, s in enumerate(self._global_shape))

    def metadata(self) -> dict:
        """A JSON-able description of this shard (global shape, dtype, placement, ranks, range)."""
        meta = {
            "global_shape": list(self._global_shape),
            "dtype": self.dtype.name,
            "placement": repr(self._placement),
            "rank": self._rank,
            "world_size": self._world_size,
            "local_shape": list(self._local.shape),
        }
        if not (isinstance(self._placement, Shard) and _norm_dim(self._placement.dim, len(self._global_shape)) != 0):
            meta["range"] = list(self.local_range())
        return meta

    # -- communication ----------------------------------------------------------------
    def padded_local(self) -> Tensor:
        """The local shard padded with zeros to the chunk size (the all-gather input)."""
        if isinstance(self._placement, Replicate):
            return self._local
        xp = get_array_module(self._local._data)
        arr = self._local.detach()._data
        if isinstance(self._placement, FlatShard):
            c = chunk_size(self.numel(), self._world_size)
            out = xp.zeros(c, dtype=arr.dtype)
            out[: arr.size] = arr.reshape(-1)
            return _wrap(out, self._local)
        d = _norm_dim(self._placement.dim, len(self._global_shape))
        c = chunk_size(self._global_shape[d], self._world_size)
        moved = xp.moveaxis(arr, d, 0)  # (rows, ...) with the sharded dim first
        out = xp.zeros((c,) + moved.shape[1:], dtype=arr.dtype)
        out[: moved.shape[0]] = moved
        return _wrap(out, self._local)

    def full_tensor(self) -> Tensor:
        """The whole tensor on every rank (an all-gather of the padded shards; a collective:
        every rank of the group must call it). Not differentiable."""
        if isinstance(self._placement, Replicate):
            return _wrap(self._local.detach()._data.copy(), self._local)
        padded = self.padded_local()
        xp = get_array_module(padded._data)
        if self._world_size == 1:
            gathered = padded.detach()._data.copy()
        else:
            pg = resolve_group(self._group, "ShardedTensor.full_tensor")
            if pg.size() != self._world_size:
                raise ValueError(f"ShardedTensor.full_tensor: the shard layout is for {self._world_size} ranks but the "
                                 f"group has {pg.size()}")
            out = _wrap(xp.empty((self._world_size * padded.shape[0],) + tuple(padded.shape[1:]),
                                 dtype=padded._data.dtype), padded)
            all_gather_into_tensor(out, padded, group=self._group)
            gathered = out._data
        if isinstance(self._placement, FlatShard):
            return _wrap(gathered.reshape(-1)[: self.numel()].reshape(self._global_shape).copy(), self._local)
        d = _norm_dim(self._placement.dim, len(self._global_shape))
        rows = gathered[: self._global_shape[d]]  # (rows, ...) with the sharded dim first
        return _wrap(xp.ascontiguousarray(xp.moveaxis(rows, 0, d)), self._local)

    def __repr__(self) -> str:
        return (f"ShardedTensor(global_shape={self._global_shape}, placement={self._placement}, rank={self._rank}/"
                f"{self._world_size}, local_shape={tuple(self._local.shape)}, dtype={self.dtype.name})")


def _wrap(array: Any, like: Tensor) -> Tensor:
    """A new tensor owning ``array`` on ``like``'s device."""
    return make_tensor(array, like.device)


def distribute_tensor(tensor: Tensor, placement: Placement, group: Any = None) -> ShardedTensor:
    """``ShardedTensor.from_full(tensor, placement, group)`` (PyTorch's ``distribute_tensor`` name)."""
    return ShardedTensor.from_full(tensor, placement, group)
