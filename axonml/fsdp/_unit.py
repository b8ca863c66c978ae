"""``FSDPUnit``: the parameters of one ``fully_shard``-ed module and how they move.

One unit owns: the flat shard buffer of this rank (the master parameters, see
:mod:`axonml.fsdp._param` for the layout), a releasable buffer for the unsharded
parameters, and the collectives that connect the two: one all-gather to unshard, one
reduce-scatter (plus, for replicated groups, one all-reduce) for the gradients.

Note on life cycle: ``SHARDED`` (only the shard exists) -> ``GATHERING`` (an async
all-gather is in flight, e.g. a prefetch) -> ``UNSHARDED`` (the module's attributes are
the full parameters, viewing the releasable buffer) -> ``SHARDED`` again on reshard, which
swaps the sharded parameters back into the module and releases the buffer's memory.

Note on the shard world of one (NO_SHARD, or a world of one): with no dtype cast the
unsharded parameters are views of the shard buffer itself, so unsharding is a swap of
module attributes and memory is exactly one copy of the parameters (as DDP).

Note on CPU offload (see :mod:`axonml.fsdp._offload`): with ``offload_active`` the shard
buffer, the sharded parameters and their gradients live on ``shard_device`` (the host)
while everything gathered lives on ``device`` (the GPU); every all-gather sends a fresh
device copy of the shard (cast to the param dtype on the device), and every reduced
gradient shard is cast to the master dtype on the device, then copied to the host. The
unsharded parameters never view the shard then (no "direct" unit).

Note on gradients: the reduce-scatter input is laid out as the all-gather output (W rows
of S; row r goes to rank r), built from the unsharded gradients with zero padding, in the
reduce dtype. Gradients are averaged (``ReduceOp.AVG``): each rank's loss is a mean over
its own batch, so the average over ranks is the gradient of the mean over the global batch.
"""

from __future__ import annotations

import enum
from typing import Any

import numpy as np

from ..autograd.variable import make_tensor
from ..collectives import ReduceOp, all_gather_into_tensor, all_reduce, reduce_scatter_tensor
from ..collectives.sharded_tensor import FlatShard, ShardedTensor, chunk_size, shard_range
from ..errors import DeviceError, DTypeError
from ..nn.parameter import Parameter
from ..runtime.devices.device import as_device
from ..runtime.dtypes import float32
from ..tensor import Tensor
from ._offload import HOST, offload_active, to_compute, to_host
from ._param import ParamInfo, ShardedParameter
from ._storage import ReleasableBuffer
from .config import MixedPrecisionPolicy, OffloadPolicy

__all__ = ["FSDPUnit", "PendingReduce", "UnitState"]


class UnitState(enum.Enum):
    SHARDED = "sharded"
    GATHERING = "gathering"
    UNSHARDED = "unsharded"


class PendingReduce:
    """A gradient reduction in flight: reduce-scatter, then (replicated groups) all-reduce."""

    __slots__ = ("unit", "work", "rs_in", "rs_out", "stage")

    def __init__(self, unit: "FSDPUnit", work: Any, rs_in: Tensor, rs_out: Tensor) -> None:
        self.unit, self.work, self.rs_in, self.rs_out = unit, work, rs_in, rs_out
        self.stage = "rs"


def _fill(col: Any, flat: Any, n: int, c: int, add: bool) -> None:
    """Write the flat gradient ``flat`` (n elements) into ``col`` (W rows of c), zero-padded."""
    q, rem = divmod(n, c)
    if add:
        col[:q] += flat[: q * c].reshape(q, c)  # (q, c): the full chunks
        if rem:
            col[q, :rem] += flat[q * c:]
        return
    col[:q] = flat[: q * c].reshape(q, c)
    if rem:
        col[q, :rem] = flat[q * c:]
        col[q, rem:] = 0
        col[q + 1:] = 0
    else:
        col[q:] = 0


class FSDPUnit:
    """The sharded parameters of one module (see the module note). Built by ``fully_shard``."""

    def __init__(self, module: Any, managed: list[tuple[str, Parameter, list]], shard_group: Any, replicate_group: Any,
                 mp_policy: MixedPrecisionPolicy, reshard_after_forward: bool, offload_policy: OffloadPolicy | None = None
                 ) -> None:
        self.module = module
        self.shard_group = shard_group
        self.replicate_group = replicate_group
        self.shard_world = 1 if shard_group is None else shard_group.size()
        self.shard_rank = 0 if shard_group is None else shard_group.rank()
        self.mp_policy = mp_policy
        self.reshard_after_forward = bool(reshard_after_forward)
        self.requires_gradient_sync = True
        self.offload_policy = offload_policy
        self.offload_active = False  # set by _build: CPUOffloadPolicy with parameters on a GPU
        self.ctx: Any = None  # the root context (set when the root runs its first forward)
        self.forward_prefetch: list | None = None  # explicit targets (set_modules_to_forward_prefetch)
        self.backward_prefetch: list | None = None
        self.implicit_prefetch = {"forward": True, "backward": True}  # read on the root unit
        self.stats = {"all_gather_forward": 0, "all_gather_backward": 0, "reduce_scatter": 0, "all_reduce": 0}
        self.state = UnitState.SHARDED
        self._gathering: tuple | None = None
        self._acc: Tensor | None = None  # unsharded gradients accumulated without sync (reduce dtype)
        # per-iteration flags (see _runtime)
        self.used: set = set()
        self.ready: set = set()
        self.reduced = False
        self.backward_started = False
        self._build(managed)

    # -- construction -------------------------------------------------------------------
    def _build(self, managed: list) -> None:
        devices = {p.device for _, p, _ in managed} or {as_device("cpu")}
        dtypes = {p.dtype for _, p, _ in managed} or {float32}
        if len(devices) > 1:
            raise DeviceError(f"fully_shard: the parameters of {type(self.module).__name__} are on several devices "
                              f"({sorted(str(d) for d in devices)}); move the module to one device first")
        if len(dtypes) > 1:
            by = {dt.name: [n for n, p, _ in managed if p.dtype is dt][:3] for dt in dtypes}
            raise DTypeError(f"fully_shard: the parameters of {type(self.module).__name__} have several dtypes {by}; "
                             "FSDP shards a unit's parameters into one flat buffer of one dtype. Cast the module "
                             "(module.float()) or shard the differing submodules as separate units")
        self.device = next(iter(devices))  # the compute device
        self.offload_active = offload_active(self.offload_policy, self.device)
        self.shard_device = HOST if self.offload_active else self.device
        dtype = next(iter(dtypes))
        if not dtype.is_floating_point:
            raise DTypeError(f"fully_shard: parameters must be floating point, got {dtype.name}")
        self.dtype = dtype.np
        mp = self.mp_policy
        self.param_dtype = mp.param_dtype.np if mp.param_dtype is not None else self.dtype
        red = mp.reduce_dtype or mp.param_dtype
        self.reduce_dtype = red.np if red is not None else self.dtype
        W, r = self.shard_world, self.shard_rank
        self.infos: list[ParamInfo] = []
        offset = 0
        for fqn, p, locations in managed:
            n = p.numel()
            c = chunk_size(n, W)
            a, b = shard_range(n, W, r)
            self.infos.append(ParamInfo(fqn, locations, tuple(p.shape), p.requires_grad, c, offset, a, b - a))
            offset += c
        self.S = offset
        sdev = self.shard_device
        self.shard = make_tensor(sdev.xp.zeros(self.S, dtype=self.dtype), sdev)
        for info, (_, p, _) in zip(self.infos, managed):
            src = p.detach()._data.reshape(-1)[info.start: info.start + info.valid]
            if self.offload_active:
                src = to_host(src, self.device)
            self.shard._data[info.offset: info.offset + info.valid] = src
            sp = ShardedParameter(make_tensor(self.shard._data[info.offset: info.offset + info.valid], sdev,
                                              base=self.shard), requires_grad=info.requires_grad)
            sp._fsdp_info = info
            info.sharded, info.unit = sp, self
        # the unsharded parameters: views of the shard itself, or of a releasable buffer
        self.direct = (W == 1 and self.param_dtype == self.dtype and not self.offload_active) or self.S == 0
        self.ubuf = None if self.direct else ReleasableBuffer(W * self.S, self.param_dtype, self.device)
        base = self.shard if self.direct else self.ubuf.tensor
        for info in self.infos:
            lo = info.offset * W
            view = base._data[lo: lo + info.numel].reshape(info.shape)
            up = Parameter(make_tensor(view, self.device, base=base), requires_grad=info.requires_grad)
            if info.requires_grad:
                up.register_post_accumulate_grad_hook(self._grad_hook(info))
            info.unsharded = up
        self._swap(sharded=True)

    def _grad_hook(self, info: ParamInfo) -> Any:
        def hook(_param: Any) -> None:
            self.ctx.grad_ready(self, info)

        return hook

    @property
    def unsharded_bytes(self) -> int:
        """Bytes of the unsharded parameters of this unit (in the param dtype, with padding)."""
        return self.shard_world * self.S * np.dtype(self.param_dtype).itemsize

    def _swap(self, sharded: bool) -> None:
        for info in self.infos:
            p = info.sharded if sharded else info.unsharded
            for mod, name in info.locations:
                mod._parameters[name] = p

    # -- unshard / reshard --------------------------------------------------------------
    def start_gather(self, phase: str) -> None:
        """Launch the all-gather of this unit's parameters (async); no-op unless SHARDED."""
        if self.state is not UnitState.SHARDED:
            return
        if self.direct:
            self._swap(sharded=False)
            self.state = UnitState.UNSHARDED
            return
        xp = self.device.xp
        if self.shard_world == 1:  # a cast (and/or an H2D copy) only, no communication
            self.ubuf.materialize()
            self.ubuf.array[...] = self._shard_on_device()._data
            self._swap(sharded=False)
            self.state = UnitState.UNSHARDED
            return
        send = self._shard_on_device()
        if self.param_dtype != self.dtype:
            send = make_tensor(send._data.astype(self.param_dtype), self.device)  # cast on the compute device
        if len(self.infos) == 1:  # the gathered rows are the parameter's own layout: gather in place
            self.ubuf.materialize()
            out = self.ubuf.tensor
        else:
            out = make_tensor(xp.empty(self.shard_world * self.S, dtype=self.param_dtype), self.device)
        work = all_gather_into_tensor(out, send, group=self.shard_group, async_op=True)
        self.stats[f"all_gather_{phase}"] += 1
        self._gathering = (work, out, send)
        self.state = UnitState.GATHERING

    def _shard_on_device(self) -> Tensor:
        """The shard (master dtype) on the compute device: itself, or a new H2D copy (offload)."""
        if not self.offload_active:
            return self.shard
        return make_tensor(to_compute(self.shard._data, self.device), self.device)

    def _finish_gather(self) -> None:
        work, out, _send = self._gathering
        self._gathering = None
        work.wait()
        if out is not self.ubuf.tensor:
            self.ubuf.materialize()
            W, S = self.shard_world, self.S
            rows = out._data.reshape(W, S)
            u = self.ubuf.array
            for info in self.infos:
                c, o = info.chunk, info.offset
                if c:
                    u[W * o: W * (o + c)].reshape(W, c)[...] = rows[:, o: o + c]
        self._swap(sharded=False)
        self.state = UnitState.UNSHARDED

    def unshard(self, phase: str = "forward") -> None:
        """Make the module hold its full parameters (waits for a prefetch in flight)."""
        if self.state is UnitState.SHARDED:
            self.start_gather(phase)
        if self.state is UnitState.GATHERING:
            self._finish_gather()

    def reshard(self) -> None:
        """Put the sharded parameters back and release the unsharded memory."""
        if self.state is UnitState.GATHERING:
            self._finish_gather()
        if self.state is UnitState.SHARDED:
            return
        self._swap(sharded=True)
        if self.ubuf is not None:
            self.ubuf.release()
        self.state = UnitState.SHARDED

    # -- gradients ------------------------------------------------------------------------
    def _grads_into(self, flat_rows: Any, add: bool) -> None:
        """Write (or add) the unsharded gradients into ``flat_rows`` (W rows of S) and drop them."""
        for info in self.infos:
            c, o = info.chunk, info.offset
            if not c:
                continue
            col = flat_rows[:, o: o + c]
            g = info.unsharded.grad if info.requires_grad else None
            if g is None:
                if not add:
                    col[...] = 0
                continue
            _fill(col, g._data.reshape(-1), info.numel, c, add)
            info.unsharded.grad = None

    def accumulate(self) -> None:
        """``set_requires_gradient_sync(False)``: keep this backward's gradients unsharded."""
        xp = self.device.xp
        if self._acc is None:
            self._acc = make_tensor(xp.empty(self.shard_world * self.S, dtype=self.reduce_dtype), self.device)
            self._grads_into(self._acc._data.reshape(self.shard_world, self.S), add=False)
        else:
            self._grads_into(self._acc._data.reshape(self.shard_world, self.S), add=True)

    def reduce(self) -> PendingReduce:
        """Launch the reduce-scatter of this backward's (plus accumulated) gradients."""
        xp = self.device.xp
        W, S = self.shard_world, self.S
        if self._acc is not None:
            rs_in, self._acc = self._acc, None
            self._grads_into(rs_in._data.reshape(W, S), add=True)
        else:
            rs_in = make_tensor(xp.empty(W * S, dtype=self.reduce_dtype), self.device)
            self._grads_into(rs_in._data.reshape(W, S), add=False)
        if W == 1:
            return PendingReduce(self, None, rs_in, rs_in)
        rs_out = make_tensor(xp.empty(S, dtype=self.reduce_dtype), self.device)
        work = reduce_scatter_tensor(rs_out, rs_in, op=ReduceOp.AVG, group=self.shard_group, async_op=True)
        self.stats["reduce_scatter"] += 1
        return PendingReduce(self, work, rs_in, rs_out)

    def start_all_reduce(self, pending: PendingReduce) -> None:
        """Average the reduced shard across the replicas (HYBRID_SHARD, NO_SHARD)."""
        pending.work = all_reduce(pending.rs_out, op=ReduceOp.AVG, group=self.replicate_group, async_op=True)
        self.stats["all_reduce"] += 1

    def write_grads(self, rs_out: Tensor) -> None:
        """Give each sharded parameter its gradient shard (added to an existing ``.grad``).
        With offload the shard is cast on the compute device, then copied to the host."""
        g = rs_out
        if self.reduce_dtype != self.dtype:
            g = make_tensor(rs_out._data.astype(self.dtype), self.device)
        if self.offload_active:
            g = make_tensor(to_host(g._data, self.device), self.shard_device)
        for info in self.infos:
            if not info.requires_grad:
                continue
            view = g._data[info.offset: info.offset + info.valid]
            sp = info.sharded
            if sp.grad is None:
                sp.grad = make_tensor(view, self.shard_device, base=g)
            else:
                sp.grad._data += view
                sp.grad._vc[0] += 1

    # -- whole parameters (state dicts) --------------------------------------------------
    def gather_full(self) -> dict[str, Tensor]:
        """Every parameter of the unit at full size and in the shard dtype (a collective on
        the shard group; one all-gather). Returns new tensors keyed by ``info.fqn``, on the
        shard device (the host with offload: gathered on the compute device, then copied)."""
        W, S = self.shard_world, self.S
        if W == 1:
            rows = self.shard._data.reshape(1, S)
        else:
            out = make_tensor(self.device.xp.empty(W * S, dtype=self.dtype), self.device)
            all_gather_into_tensor(out, self._shard_on_device(), group=self.shard_group)
            rows = out._data.reshape(W, S)
            if self.offload_active:
                rows = to_host(rows, self.device)
        xp, dev = self.shard_device.xp, self.shard_device
        full = {}
        for info in self.infos:
            block = rows[:, info.offset: info.offset + info.chunk].reshape(-1)  # (W * c,), a copy
            full[info.fqn] = make_tensor(xp.ascontiguousarray(block[: info.numel]).reshape(info.shape).copy(), dev)
        return full

    def full_tensor_of(self, local: Tensor, global_shape: tuple) -> Tensor:
        """The whole tensor of which ``local`` is this rank's FlatShard (a collective on the
        shard group), e.g. a parameter or an optimizer state. With offload the gather runs
        on the compute device (the backend may not take host tensors) and the result is
        copied back to the host."""
        on_device = self.offload_active and self.shard_world > 1
        if on_device:
            local = make_tensor(to_compute(local.detach()._data, self.device), self.device)
        st = ShardedTensor(local.detach(), global_shape, FlatShard(), self.shard_group, rank=self.shard_rank,
                           world_size=self.shard_world)
        full = st.full_tensor()
        if on_device:
            full = make_tensor(to_host(full._data, self.device), self.shard_device)
        return full

    def load_local(self, info: ParamInfo, host_piece: Any) -> None:
        """Overwrite this rank's shard of ``info`` with ``host_piece`` (its ``valid`` elements,
        a NumPy array, converted to the master dtype and copied to the shard device)."""
        piece = np.ascontiguousarray(host_piece, dtype=self.dtype).reshape(-1)
        if piece.size != info.valid:
            raise ValueError(f"load_local: {info.fqn} needs {info.valid} elements on shard rank {self.shard_rank}, got "
                             f"{piece.size}")
        self.shard._data[info.offset: info.offset + info.valid] = self.shard_device.from_host(piece)
        self.shard._vc[0] += 1
