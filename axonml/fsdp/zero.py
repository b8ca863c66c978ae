"""``ZeroRedundancyOptimizer``: optimizer-state sharding (ZeRO-1), as in PyTorch.

Note on the partition: each rank owns whole parameters, assigned greedily (largest
first, to the rank with the fewest elements so far) like PyTorch's; a rank keeps
optimizer state only for the parameters it owns and steps only those. After the step,
every rank broadcasts the parameters it owns (one flat broadcast per owner and dtype), so
all replicas hold the same values again. Gradients must already be averaged across
ranks (DDP, or FSDP's NO_SHARD) when ``step`` runs.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from ..autograd.variable import make_tensor
from ..collectives import broadcast, gather_object, get_rank, is_initialized
from ..collectives.api import resolve_group
from ..errors import StateDictError
from ..optim.optimizer import Optimizer
from ..runtime.devices.device import as_device
from ..tensor import Tensor

__all__ = ["ZeroRedundancyOptimizer", "partition_parameters"]


def partition_parameters(sizes: list[int], world_size: int) -> list[int]:
    """Owner rank of each parameter (by its number of elements): largest first, each to the
    least loaded rank (ties: lowest rank)."""
    owners = [0] * len(sizes)
    load = [0] * world_size
    for i in sorted(range(len(sizes)), key=lambda i: (-sizes[i], i)):
        r = min(range(world_size), key=lambda r: (load[r], r))
        owners[i] = r
        load[r] += sizes[i]
    return owners


class ZeroRedundancyOptimizer(Optimizer):
    """Wrap any optimizer class so that each rank keeps the state of its own parameters only.

    Args:
        params: the parameters (or parameter groups), as for any optimizer.
        optimizer_class: e.g. ``ax.optim.AdamW``.
        process_group: the group (default: the world).
        parameters_as_bucket_view, overlap_with_ddp: accepted for PyTorch compatibility (must be False).
        **defaults: the optimizer's hyperparameters.

    Example::

        opt = ZeroRedundancyOptimizer(ddp_model.parameters(), ax.optim.AdamW, lr=1e-3)
        loss.backward(); opt.step()           # every rank then holds the same parameters
    """

    def __init__(self, params: Any, optimizer_class: type, process_group: Any = None, parameters_as_bucket_view: bool = False,
                 overlap_with_ddp: bool = False, **defaults: Any) -> None:
        if parameters_as_bucket_view or overlap_with_ddp:
            raise NotImplementedError("ZeroRedundancyOptimizer: parameters_as_bucket_view and overlap_with_ddp are not supported")
        if not (isinstance(optimizer_class, type) and issubclass(optimizer_class, Optimizer)):
            raise TypeError(f"ZeroRedundancyOptimizer: optimizer_class must be an Optimizer subclass, got {optimizer_class!r}")
        self._optim_class = optimizer_class
        self._optim_defaults = dict(defaults)
        self.process_group = process_group
        if is_initialized():
            pg = resolve_group(process_group, "ZeroRedundancyOptimizer")
            self.rank, self.world_size, self.global_ranks = pg.rank(), pg.size(), list(pg.global_ranks)
        else:
            self.rank, self.world_size, self.global_ranks = 0, 1, [0]
        self.optim: Optimizer | None = None
        super().__init__(params, dict(defaults))
        self._repartition()

    def _repartition(self) -> None:
        everything = [p for g in self.param_groups for p in g["params"]]
        owners = partition_parameters([p.numel() for p in everything], self.world_size)
        self._owner = {id(p): r for p, r in zip(everything, owners)}
        old = self.optim
        local_groups = []
        for g in self.param_groups:
            mine = [p for p in g["params"] if self._owner[id(p)] == self.rank]
            hp = {k: v for k, v in g.items() if k not in ("params", "param_names")}
            local_groups.append({**hp, "params": mine})
        kept = [g for g in local_groups if g["params"]]
        self.optim = self._optim_class(kept, **self._optim_defaults) if kept else None
        if old is not None and self.optim is not None:
            for p, st in old.state.items():
                if isinstance(p, Tensor) and self._owner.get(id(p)) == self.rank:
                    self.optim.state[p] = st

    def add_param_group(self, param_group: dict) -> None:
        super().add_param_group(param_group)
        if getattr(self, "optim", None) is not None or len(self.param_groups) > 1:
            self._repartition()

    def owner(self, p: Tensor) -> int:
        """The group rank that steps ``p``."""
        return self._owner[id(p)]

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Step this rank's parameters, then broadcast every rank's updated parameters."""
        loss = self._eval_closure(closure)
        if self.optim is not None:
            # hyperparameters set on our groups (e.g. by an LR scheduler) reach the local optimizer
            for mine in self.optim.param_groups:
                src = next(g for g in self.param_groups if any(p is mine["params"][0] for p in g["params"]))
                for k, v in src.items():
                    if k not in ("params", "param_names"):
                        mine[k] = v
            self.optim.step()
        self._sync_params()
        return loss

    def _sync_params(self) -> None:
        if self.world_size == 1:
            return
        everything = [p for g in self.param_groups for p in g["params"]]
        for r in range(self.world_size):
            owned = [p for p in everything if self._owner[id(p)] == r]
            by_dtype: dict[Any, list] = {}
            for p in owned:
                by_dtype.setdefault(p.dtype, []).append(p)
            for dtype, ps in by_dtype.items():
                xp = ps[0].device.xp
                flat = make_tensor(xp.concatenate([p._data.reshape(-1) for p in ps]) if r == self.rank else
                                   xp.empty(sum(p.numel() for p in ps), dtype=dtype.np), ps[0].device)
                broadcast(flat, src=self.global_ranks[r], group=self.process_group)
                if r != self.rank:
                    off = 0
                    for p in ps:
                        n = p.numel()
                        p._data[...] = flat._data[off: off + n].reshape(p._data.shape)
                        p._vc[0] += 1
                        off += n

    # -- state dicts (PyTorch semantics: consolidate on one rank first) -------------------------
    def consolidate_state_dict(self, to: int = 0) -> None:
        """Gather every rank's optimizer state on world rank ``to`` (a collective); then
        ``state_dict()`` on that rank returns the whole state."""
        mine = {}
        if self.optim is not None:
            index = {id(p): i for i, p in enumerate(p for g in self.param_groups for p in g["params"])}
            for p, st in self.optim.state.items():
                mine[index[id(p)]] = {k: (v.numpy() if isinstance(v, Tensor) else v) for k, v in st.items()}
        if self.world_size == 1:
            self._consolidated = mine
            return
        out = [None] * self.world_size if get_rank() == to else None
        gather_object(mine, out, dst=to, group=self.process_group)
        self._consolidated = {k: v for part in out for k, v in part.items()} if out is not None else None

    def state_dict(self) -> dict:
        """The whole state (PyTorch format); call :meth:`consolidate_state_dict` first, on every rank."""
        consolidated = getattr(self, "_consolidated", None)
        if consolidated is None:
            raise RuntimeError("ZeroRedundancyOptimizer.state_dict: call consolidate_state_dict(to=rank) on every rank "
                               "first, then state_dict() on that rank")
        base = super().state_dict()
        state = {i: {k: (make_tensor(np.array(v), as_device("cpu")) if isinstance(v, np.ndarray) else v) for k, v in st.items()}
                 for i, st in consolidated.items()}
        return {"state": state, "param_groups": base["param_groups"]}

    def load_state_dict(self, state_dict: dict) -> None:
        """Load a whole state (from :meth:`state_dict`); each rank keeps its own parameters' part."""
        if not isinstance(state_dict, dict) or "state" not in state_dict or "param_groups" not in state_dict:
            raise StateDictError("ZeroRedundancyOptimizer.load_state_dict expects {'state', 'param_groups'}")
        everything = [p for g in self.param_groups for p in g["params"]]
        for g, sg in zip(self.param_groups, state_dict["param_groups"]):
            g.update({k: v for k, v in sg.items() if k not in ("params", "param_names")})
        self._repartition()
        if self.optim is None:
            return
        local_index = {id(p): i for i, p in enumerate(p for g in self.optim.param_groups for p in g["params"])}
        local_state = {}
        for i, st in state_dict["state"].items():
            p = everything[int(i)]
            if id(p) in local_index:
                local_state[local_index[id(p)]] = st
        groups = self.optim.state_dict()["param_groups"]
        self.optim.load_state_dict({"state": local_state, "param_groups": groups})

