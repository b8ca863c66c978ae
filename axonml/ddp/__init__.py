"""Layer 7: data parallelism (``torch.nn.parallel.DistributedDataParallel``).

Each rank holds a full replica of the model and a shard of the batch; backward averages
the gradients across ranks in buckets, overlapped with the rest of backward::

    import axonml.collectives as dist
    from axonml.ddp import DistributedDataParallel as DDP

    dist.init_process_group("tcp")
    model = DDP(Net(), bucket_cap_mb=25)
    loss_fn(model(x_shard), y_shard).backward()      # .grad averaged across ranks
    with model.no_sync():                            # gradient accumulation
        ...
    with model.join():                               # uneven inputs
        ...
    model.register_comm_hook(None, comm_hooks.fp16_compress_hook)

See :mod:`.distributed` (the iteration), :mod:`.reducer` (buckets), :mod:`.comm_hooks`
and :mod:`.join`.
"""

from . import comm_hooks
from .distributed import DistributedDataParallel
from .futures import Future
from .join import Join, Joinable, JoinHook
from .reducer import DDPError, GradBucket

DDP = DistributedDataParallel

__all__ = [
    "DDP",
    "DDPError",
    "DistributedDataParallel",
    "Future",
    "GradBucket",
    "Join",
    "JoinHook",
    "Joinable",
    "comm_hooks",
]
