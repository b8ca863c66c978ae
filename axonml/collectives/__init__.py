"""Layer 6: process groups and collectives.

The public surface follows ``torch.distributed``::

    import axonml.collectives as dist
    dist.init_process_group(backend="auto")      # env:// ; a world of one when run alone
    t = ax.ones(4) * (dist.get_rank() + 1)
    dist.all_reduce(t)                            # t == n (n + 1) / 2
    work = dist.all_reduce(t, async_op=True)      # overlaps with compute
    work.wait()
    dist.destroy_process_group()

Backends: ``tcp`` (built in; sockets between hosts), ``threaded`` (ranks are threads of
one process, for tests; see :func:`axonml.collectives.testing.run_threaded`), and any
registered with :func:`register_backend`.
"""

from . import api, differentiable, functional, p2p, process_group, sharded_tensor, shared_memory, types
from .api import (
    GroupMember,
    destroy_process_group,
    get_backend,
    get_global_rank,
    get_group_rank,
    get_process_group_ranks,
    get_rank,
    get_world_size,
    init_process_group,
    is_available,
    is_initialized,
    new_group,
)
from .functional import (
    all_gather,
    all_gather_into_tensor,
    all_reduce,
    all_reduce_coalesced,
    all_to_all,
    all_to_all_single,
    barrier,
    broadcast,
    gather,
    reduce,
    reduce_scatter,
    reduce_scatter_tensor,
    scatter,
)
from .p2p import (
    P2POp,
    all_gather_object,
    batch_isend_irecv,
    broadcast_object_list,
    gather_object,
    irecv,
    isend,
    recv,
    scatter_object_list,
    send,
)
from .process_group import ProcessGroup, register_backend, registered_backends
from .sharded_tensor import FlatShard, Replicate, Shard, ShardedTensor, distribute_tensor, shard_range
from .shared_memory import is_shared, shared_empty
from .types import CollectiveDesc, ReduceOp, Work

group = GroupMember  # torch.distributed.group.WORLD

__all__ = [
    "FlatShard",
    "Replicate",
    "Shard",
    "ShardedTensor",
    "distribute_tensor",
    "shard_range",
    "sharded_tensor",
    "is_shared",
    "shared_empty",
    "shared_memory",
    "CollectiveDesc",
    "GroupMember",
    "P2POp",
    "ProcessGroup",
    "ReduceOp",
    "Work",
    "all_gather",
    "all_gather_into_tensor",
    "all_gather_object",
    "all_reduce",
    "all_reduce_coalesced",
    "all_to_all",
    "all_to_all_single",
    "api",
    "barrier",
    "batch_isend_irecv",
    "broadcast",
    "broadcast_object_list",
    "differentiable",
    "destroy_process_group",
    "functional",
    "gather",
    "gather_object",
    "get_backend",
    "get_global_rank",
    "get_group_rank",
    "get_process_group_ranks",
    "get_rank",
    "get_world_size",
    "group",
    "init_process_group",
    "irecv",
    "is_available",
    "is_initialized",
    "isend",
    "new_group",
    "p2p",
    "process_group",
    "recv",
    "reduce",
    "reduce_scatter",
    "reduce_scatter_tensor",
    "register_backend",
    "registered_backends",
    "scatter",
    "scatter_object_list",
    "send",
    "types",
]
