"""``DistributedDataParallel``: data parallelism with bucketed, overlapped gradient all-reduce.

Note on the iteration (what every rank does, in this order, so that the collectives of
all ranks pair up): a forward (1) with ``join()`` active, tells the join context it runs
another iteration and exchanges a small state vector (who is still active, whether this
backward synchronizes); (2) raises if the previous backward left a parameter without a
gradient; (3) once, after the first synchronized backward, rebuilds the buckets from the
observed gradient order (a broadcast); (4) with ``broadcast_buffers``, broadcasts the
module's buffers from the authoritative rank (rank 0, or the lowest still-active rank
under ``join()``) in one packed collective; (5) runs the module and arms the reducer.
Backward then all-reduces the buckets as they fill (see :mod:`.reducer`). A joined rank's
:class:`_DDPJoinHook` issues steps 1, 3, 4 and the bucket all-reduces with zeros.

Note on averaging: gradients are divided by the group size before a SUM all-reduce, as
in PyTorch; under ``join(divide_by_initial_world_size=False)`` by the number of ranks
still active instead. The result equals one process on the whole batch when each rank
takes an equal shard and the loss is a mean.

Note on names: ``state_dict()`` keys carry the ``module.`` prefix (PyTorch does the same);
load a single-process checkpoint into ``ddp.module``. Attributes that DDP itself does not
have are looked up on the wrapped module (``ddp.fc`` is ``ddp.module.fc``).
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any, Callable, Iterator

import numpy as np

from ..autograd.grad_mode import is_grad_enabled
from ..autograd.variable import make_tensor
from ..collectives.api import get_global_rank, resolve_group
from ..collectives.functional import all_reduce, broadcast
from ..collectives.p2p import all_gather_object
from ..collectives.types import ReduceOp
from ..errors import DeviceError
from ..nn.module import Module
from .futures import Future
from .join import Join, Joinable, JoinHook
from .reducer import DDPError, GradBucket, Reducer

__all__ = ["DistributedDataParallel"]

logger = logging.getLogger(__name__)

_BROADCAST_CHUNK_BYTES = 64 * 1024 * 1024


def _broadcast_packed(tensors: list, src_group_rank: int, group: Any, device: Any) -> None:
    """Broadcast the bytes of ``tensors`` from ``src_group_rank``, packed into few collectives."""
    if not tensors:
        return
    xp = device.xp
    chunks: list[list] = [[]]
    size = 0
    for t in tensors:
        if chunks[-1] and size + t._data.nbytes > _BROADCAST_CHUNK_BYTES:
            chunks.append([])
            size = 0
        chunks[-1].append(t)
        size += t._data.nbytes
    is_src = group.rank() == src_group_rank
    src = get_global_rank(group, src_group_rank)
    for chunk in chunks:
        total = sum(t._data.nbytes for t in chunk)
        flat = xp.empty(total, dtype=np.uint8)
        if is_src:
            off = 0
            for t in chunk:
                n = t._data.nbytes
                flat[off:off + n] = xp.ascontiguousarray(t._data).reshape(-1).view(np.uint8)
                off += n
        broadcast(make_tensor(flat, device), src, group=group)
        if not is_src:
            off = 0
            for t in chunk:
                n = t._data.nbytes
                t._data[...] = flat[off:off + n].view(t._data.dtype).reshape(t._data.shape)
                t._vc[0] += 1
                off += n


class _DDPJoinHook(JoinHook):
    """A joined rank's side of one DDP iteration (see the module note)."""

    def __init__(self, ddp: "DistributedDataParallel", divide_by_initial_world_size: bool) -> None:
        self.ddp = ddp
        ddp._divide_by_initial_world_size = bool(divide_by_initial_world_size)

    def main_hook(self) -> None:
        ddp = self.ddp
        src, active, sync, grad = ddp._exchange_join_state(active=False, sync=False, grad=False)
        if grad:
            ddp.reducer.rebuild_buckets(src)
        if ddp._will_sync_buffers():
            ddp._sync_buffers(src)
        if sync:
            ddp.reducer.shadow_backward(ddp._div_factor(active))

    def post_hook(self, is_last_joiner: bool) -> None:
        ddp = self.ddp
        dev = ddp.join_device
        t = make_tensor(dev.xp.asarray(np.array([ddp._rank if is_last_joiner else -1], dtype=np.int64)), dev)
        all_reduce(t, ReduceOp.MAX, group=ddp.process_group)
        src = int(dev.to_host(t._data)[0])
        ddp._sync_module_states(src)


class DistributedDataParallel(Module, Joinable):
    """Wrap ``module`` so that backward averages its gradients across the ranks of a group.

    Each rank runs the same model on its own shard of the batch; after ``backward()``
    every rank holds the gradient of the mean loss over the whole batch, so identical
    optimizer steps keep the replicas equal.

    Args:
        module: the model (the same architecture on every rank).
        process_group: the group to average over (default: the world).
        bucket_cap_mb: the size of a gradient bucket in MiB (the first bucket is at most 1 MiB).
        broadcast_buffers: copy rank 0's buffers (e.g. BatchNorm statistics) to every rank
            before each forward.
        find_unused_parameters: after each forward, find the parameters the outputs do not
            depend on and treat their gradients as zero instead of waiting for them.
        gradient_as_bucket_view: ``.grad`` of each parameter is a view into its bucket (saves
            a copy and the memory of one gradient set).
        static_graph: the set of used parameters is the same in every iteration (found once).
        device_ids, output_device: accepted for PyTorch compatibility; None or the single
            device of the module.

    Raises:
        DDPError: the ranks' models differ (the message names the first mismatch and the ranks),
            or the module has no parameter that requires grad.

    Example::

        dist.init_process_group("tcp")
        model = DistributedDataParallel(Net())
        loss_fn(model(x_shard), y_shard).backward()   # .grad is averaged across ranks
        opt.step()
    """

    def __init__(self, module: Module, process_group: Any = None, bucket_cap_mb: float = 25,
                 broadcast_buffers: bool = True, find_unused_parameters: bool = False,
                 gradient_as_bucket_view: bool = False, static_graph: bool = False, *,
                 device_ids: Any = None, output_device: Any = None) -> None:
        Module.__init__(self)
        Joinable.__init__(self)
        if not isinstance(module, Module):
            raise TypeError(f"DistributedDataParallel wraps an axonml.nn.Module, got {type(module).__name__}")
        if isinstance(bucket_cap_mb, bool) or not isinstance(bucket_cap_mb, (int, float)) or not bucket_cap_mb > 0:
            raise ValueError(f"bucket_cap_mb must be a positive number of MiB, got {bucket_cap_mb!r}")
        self.module = module
        self.process_group = resolve_group(process_group, "DistributedDataParallel")
        pg = self.process_group
        self._rank, self._world = pg.rank(), pg.size()
        named = [(n, p) for n, p in module.named_parameters() if p.requires_grad]
        if not named:
            raise DDPError("DistributedDataParallel is not needed when a module has no parameter that requires a "
                           "gradient; run it as it is")
        devices = {str(p.device) for _, p in module.named_parameters()}
        if len(devices) > 1:
            raise DeviceError(f"DistributedDataParallel needs the module on one device, found {sorted(devices)}; "
                              "move it with module.to(device)")
        self._device = named[0][1].device
        if self._device.type not in pg.devices:
            raise DeviceError(f"DistributedDataParallel: the module is on {self._device}, but the {pg.backend_name!r} "
                              f"backend works on {'/'.join(pg.devices)} tensors; move the module or pick another backend")
        for name, value in (("device_ids", device_ids), ("output_device", output_device)):
            if value is not None and not (isinstance(value, (list, tuple)) and len(value) == 1) and \
                    not isinstance(value, (int, str)):
                raise ValueError(f"{name} must be None or one device (this DDP runs one device per process), got {value!r}")
        self.broadcast_buffers = bool(broadcast_buffers)
        self.find_unused_parameters = bool(find_unused_parameters)
        self.gradient_as_bucket_view = bool(gradient_as_bucket_view)
        self.static_graph = bool(static_graph)
        self.bucket_bytes_cap = int(bucket_cap_mb * 1024 * 1024)
        self.require_backward_grad_sync = True
        self._divide_by_initial_world_size = True
        self._verify_model_across_ranks()
        self._sync_module_states(0)
        self.reducer = Reducer([p for _, p in named], [n for n, _ in named], pg, self.bucket_bytes_cap,
                               self.gradient_as_bucket_view, self.find_unused_parameters, self.static_graph)

    # -- attribute forwarding ------------------------------------------------------------------------
    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            module = self.__dict__.get("_modules", {}).get("module")
            if module is None or name.startswith("__"):
                raise
            return getattr(module, name)

    # -- construction checks -------------------------------------------------------------------------
    def _verify_model_across_ranks(self) -> None:
        """Raise on every rank when parameter names, shapes, dtypes or requires_grad differ."""
        if self._world == 1:
            return
        mine = [(n, tuple(p.shape), p.dtype.name, bool(p.requires_grad)) for n, p in self.module.named_parameters()]
        everyone: list = [None] * self._world
        all_gather_object(everyone, mine, group=self.process_group)
        ref = everyone[0]
        for r, theirs in enumerate(everyone[1:], start=1):
            if theirs == ref:
                continue
            for k, (a, b) in enumerate(zip(ref, theirs)):
                if a != b:
                    raise DDPError(
                        f"DistributedDataParallel: the model differs across ranks: parameter {k} is '{a[0]}' of shape "
                        f"{a[1]}, {a[2]}, requires_grad={a[3]} on rank 0 but '{b[0]}' of shape {b[1]}, {b[2]}, "
                        f"requires_grad={b[3]} on rank {r}. Every rank must build the same model."
                    )
            longer = theirs if len(theirs) > len(ref) else ref
            extra = longer[min(len(ref), len(theirs))][0]
            raise DDPError(
                f"DistributedDataParallel: the model differs across ranks: rank 0 has {len(ref)} parameters but rank "
                f"{r} has {len(theirs)} (first extra: '{extra}'). Every rank must build the same model."
            )

    def _sync_module_states(self, src_group_rank: int) -> None:
        """Broadcast all parameters and buffers from ``src_group_rank``."""
        if self._world == 1:
            return
        tensors = [p for _, p in self.module.named_parameters()] + [b for _, b in self.module.named_buffers()]
        _broadcast_packed(tensors, src_group_rank, self.process_group, self._device)

    # -- the iteration -----------------------------------------------------------------------------------
    def _will_sync_buffers(self) -> bool:
        return self.broadcast_buffers and self._world > 1 and any(True for _ in self.module.buffers())

    def _sync_buffers(self, src_group_rank: int) -> None:
        _broadcast_packed(list(self.module.buffers()), src_group_rank, self.process_group, self._device)

    def _div_factor(self, active: int) -> float:
        return float(self._world if self._divide_by_initial_world_size else max(active, 1))

    def _exchange_join_state(self, active: bool, sync: bool, grad: bool) -> tuple[int, int, bool, bool]:
        """All-reduce [active mask (one slot per rank), sync flag, grad flag]; returns the
        authoritative rank (the lowest active one), the active count and the two flags."""
        state = np.zeros(self._world + 2, dtype=np.int64)
        if active:
            state[self._rank] = 1
            state[-2] = int(sync)
            state[-1] = int(grad)
        t = make_tensor(self._device.xp.asarray(state), self._device)
        all_reduce(t, ReduceOp.SUM, group=self.process_group)
        got = self._device.to_host(t._data)
        mask = got[:self._world]
        active_ranks = np.flatnonzero(mask)
        src = int(active_ranks[0]) if active_ranks.size else 0
        return src, int(mask.sum()), bool(got[-2]), bool(got[-1])

    def forward(self, *inputs: Any, **kwargs: Any) -> Any:
        """Run the wrapped module (see the module note for the collectives around it)."""
        grad = is_grad_enabled()
        sync = grad and self.require_backward_grad_sync
        src, active = 0, self._world
        if self._join_config.enable:
            Join.notify_join_context(self)
            src, active, _, _ = self._exchange_join_state(True, sync, grad)
        if sync:
            self.reducer.check_prior_reduction_finished()
        if grad:
            self.reducer.rebuild_buckets(src)
        if self._will_sync_buffers():
            self._sync_buffers(src)
        out = self.module(*inputs, **kwargs)
        if sync:
            self.reducer.prepare_for_backward(out, self._div_factor(active))
        elif grad:  # a no_sync() forward: its backward stays local
            self.reducer.disarm()
        return out

    @contextlib.contextmanager
    def no_sync(self) -> Iterator[None]:
        """Inside, forward/backward accumulate local gradients without communicating; the
        first synchronized backward after it averages the accumulated gradients.

        Example::

            with ddp.no_sync():
                ddp(x1).sum().backward()   # local only
            ddp(x2).sum().backward()       # averages the sum of both micro-batches
        """
        old = self.require_backward_grad_sync
        self.require_backward_grad_sync = False
        try:
            yield
        finally:
            self.require_backward_grad_sync = old

    # -- hooks and join -----------------------------------------------------------------------------------
    def register_comm_hook(self, state: Any, hook: Callable[[Any, GradBucket], Future]) -> None:
        """Replace the averaging all-reduce of each bucket with ``hook(state, bucket)``, which
        returns a :class:`~axonml.ddp.Future` whose value is the bucket's new flat buffer.
        Built-ins: :mod:`axonml.ddp.comm_hooks`. Call once, before the first backward.

        Example::

            ddp.register_comm_hook(None, comm_hooks.fp16_compress_hook)
        """
        self.reducer.register_comm_hook(state, hook)

    def join(self, divide_by_initial_world_size: bool = True, enable: bool = True,
             throw_on_early_termination: bool = False) -> Join:
        """A :class:`~axonml.ddp.Join` context for uneven inputs across ranks.

        Args:
            divide_by_initial_world_size: divide gradients by the group size even when some
                ranks have joined (their contribution counts as zero); False divides by the
                number of ranks still active.
            enable: False makes the context a no-op.
            throw_on_early_termination: raise on every rank once any rank runs out of data.
        """
        return Join([self], enable, throw_on_early_termination, divide_by_initial_world_size=divide_by_initial_world_size)

    def join_hook(self, **kwargs: Any) -> JoinHook:
        return _DDPJoinHook(self, kwargs.get("divide_by_initial_world_size", True))

    @property
    def join_device(self) -> Any:
        return self._device

    @property
    def join_process_group(self) -> Any:
        return self.process_group

    def _get_ddp_logging_data(self) -> dict:
        """Bucket layout and timings of the last iteration (for debugging and tests)."""
        r = self.reducer
        return {"world_size": self._world, "rank": self._rank, "bucket_sizes": r.bucket_sizes(),
                "bucket_params": r.bucket_layout(), "rebuilt": r._has_rebuilt, "iteration": r.iteration,
                "comm_hook": getattr(r._comm_hook, "__name__", None), **r.stats}

    def extra_repr(self) -> str:
        return (f"world_size={self._world}, bucket_cap_mb={self.bucket_bytes_cap / 2**20:g}, "
                f"find_unused_parameters={self.find_unused_parameters}, "
                f"gradient_as_bucket_view={self.gradient_as_bucket_view}")
