"""State dicts of FSDP models and their optimizers: full (gathered) or sharded.

The functions follow ``torch.distributed.checkpoint.state_dict``: ``get_model_state_dict``,
``set_model_state_dict``, ``get_optimizer_state_dict``, ``set_optimizer_state_dict`` with a
:class:`StateDictOptions`. Keys are the parameters' fully qualified names in the
*unwrapped* model (``blocks.0.fc.weight``: the ``_fsdp_wrapped_module.`` component of the
FSDP1-style wrapper is removed), so a full state dict loads into a plain model.

Note on formats: a sharded state dict maps each FSDP parameter to a
:class:`~axonml.collectives.ShardedTensor` (global shape, ``FlatShard`` placement, this
rank's piece); a full one maps it to an ordinary tensor of the global shape, gathered
unit by unit (one all-gather per unit), kept on every rank or, with ``cpu_offload``, on
rank 0 only. Optimizer states shaped like a parameter's shard are sharded the same way;
scalar states (the step counter) and hyperparameters are replicated.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..autograd.grad_mode import no_grad
from ..autograd.variable import make_tensor
from ..collectives import broadcast, get_rank, is_initialized
from ..collectives.sharded_tensor import FlatShard, ShardedTensor
from ..errors import StateDictError
from ..nn.module import IncompatibleKeys
from ..tensor import Tensor, as_tensor
from ._param import ShardedParameter

__all__ = [
    "StateDictOptions",
    "clean_name",
    "get_model_state_dict",
    "get_optimizer_state_dict",
    "load_module_state_dict",
    "module_state_dict",
    "named_targets",
    "set_model_state_dict",
    "set_optimizer_state_dict",
]

WRAPPED = "_fsdp_wrapped_module."


@dataclass(frozen=True)
class StateDictOptions:
    """How state dicts are produced and loaded (PyTorch's ``StateDictOptions``).

    Args:
        full_state_dict: gather full tensors (True) or return shards (False).
        cpu_offload: with ``full_state_dict``, keep the values on rank 0 only (other ranks
            get an empty dict), so no other rank holds the full model.
        broadcast_from_rank0: when loading a full state dict, only rank 0 has it; it is
            broadcast tensor by tensor (other ranks pass ``{}``).
        strict: loading fails on missing or unexpected keys.
    """

    full_state_dict: bool = False
    cpu_offload: bool = False
    broadcast_from_rank0: bool = False
    strict: bool = True


def clean_name(name: str) -> str:
    """``name`` without FSDP wrapper components."""
    return name.replace(WRAPPED, "")


def _rank0() -> bool:
    return not is_initialized() or get_rank() == 0


def named_targets(model: Any) -> "OrderedDict[str, Any]":
    """Clean key -> ShardedParameter (FSDP-managed), Parameter or persistent buffer, in
    ``state_dict`` order (shared parameters appear under each of their names)."""
    at_rest = {id(info.unsharded): info.sharded for u in _units(model) for info in u.infos}
    out: OrderedDict[str, Any] = OrderedDict()
    for prefix, mod in model.named_modules(remove_duplicate=False):
        pre = prefix + ("." if prefix else "")
        for name, p in mod._parameters.items():
            if p is not None:
                out[clean_name(pre + name)] = at_rest.get(id(p), p)
        for name, b in mod._buffers.items():
            if b is not None and name not in mod._non_persistent_buffers:
                out[clean_name(pre + name)] = b
    return out


def module_state_dict(module: Any, out: dict, prefix: str) -> dict:
    """Replace the FSDP parameters of ``module`` in ``out`` with ShardedTensors (its state_dict)."""
    unit = module._fsdp_unit
    paths = {id(m): p for p, m in module.named_modules(remove_duplicate=False)}
    for info in unit.infos:
        st = info.sharded.sharded_tensor()
        for mod, name in info.locations:
            path = paths.get(id(mod))
            if path is None:
                continue
            key = prefix + (path + "." if path else "") + name
            if key in out:
                out[key] = st
    return out


def _flat_host(value: Any, key: str) -> np.ndarray:
    if isinstance(value, Tensor):
        return value.device.to_host(value.detach()._data)
    if isinstance(value, np.ndarray):
        return value
    raise StateDictError(f"state dict entry {key!r} is a {type(value).__name__}, not a tensor")


def _load_sharded(sp: ShardedParameter, value: Any, key: str) -> None:
    info = sp._fsdp_info
    unit = info.unit
    if isinstance(value, ShardedTensor):
        if (tuple(value.shape) != info.shape or not isinstance(value.placement, FlatShard)
                or value.world_size != unit.shard_world or value.rank != unit.shard_rank):
            raise StateDictError(
                f"{key}: a ShardedTensor of global shape {tuple(value.shape)}, {value.placement}, rank {value.rank} of "
                f"{value.world_size} does not match this shard (global shape {info.shape}, FlatShard, rank "
                f"{unit.shard_rank} of {unit.shard_world}); load a full state dict or use load_sharded_checkpoint, "
                "which reshards across world sizes")
        piece = _flat_host(value.to_local(), key).reshape(-1)
    else:
        arr = _flat_host(value, key)
        piece = arr.reshape(-1)[info.start: info.start + info.valid]
    unit.load_local(info, piece)


def load_module_state_dict(model: Any, state_dict: dict, strict: bool = True) -> IncompatibleKeys:
    """Load full tensors (or same-layout ShardedTensors) into an FSDP model; each rank keeps its shard."""
    _settle(model)
    targets = named_targets(model)
    sd = {clean_name(k): v for k, v in state_dict.items()}
    missing = [k for k in targets if k not in sd]
    unexpected = [k for k in sd if k not in targets]
    bad = []
    for k, t in targets.items():
        if k not in sd:
            continue
        want = t.global_shape if isinstance(t, ShardedParameter) else tuple(t.shape)
        got = tuple(getattr(sd[k], "shape", ()))
        if got != tuple(want):
            bad.append(f"{k}: checkpoint shape {got}, model shape {tuple(want)}")
    problems = []
    if bad:
        problems.append("size mismatch for " + "; ".join(bad))
    if strict and missing:
        problems.append(f"missing keys: {missing}")
    if strict and unexpected:
        problems.append(f"unexpected keys: {unexpected}")
    if problems:
        raise StateDictError(f"error(s) loading state dict into {type(model).__name__}: " + " | ".join(problems)
                             + ". Pass strict=False to ignore missing/unexpected keys.")
    with no_grad():
        for k, t in targets.items():
            if k not in sd:
                continue
            if isinstance(t, ShardedParameter):
                _load_sharded(t, sd[k], k)
            else:
                v = sd[k]
                if isinstance(v, ShardedTensor):
                    v = v.to_local()
                t.copy_(v if isinstance(v, Tensor) else as_tensor(v))
    return IncompatibleKeys(missing, unexpected)


def _units(model: Any) -> list:
    return [m._fsdp_unit for m in model.modules() if getattr(m, "_fsdp_unit", None) is not None]


def _settle(model: Any) -> None:
    """State dicts are taken at rest: finish reductions and reshard every unit."""
    for u in _units(model):
        if u.ctx is not None and (u.ctx.pending or u.ctx.phase.value == "backward"):
            u.ctx.finalize()
        u.reshard()


def get_model_state_dict(model: Any, *, options: StateDictOptions | None = None) -> dict:
    """The model's state dict, sharded (default) or full (``options.full_state_dict``).

    A collective when full: every rank must call it. Example::

        sd = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        if rank == 0:
            ax.save(sd, "model.safetensors")   # loads into the plain, unsharded model
    """
    opts = options or StateDictOptions()
    _settle(model)
    targets = named_targets(model)
    if not opts.full_state_dict:
        return OrderedDict((k, t.sharded_tensor() if isinstance(t, ShardedParameter) else t.detach())
                           for k, t in targets.items())
    keep = not opts.cpu_offload or _rank0()
    full: dict[int, Tensor] = {}
    for u in _units(model):
        gathered = u.gather_full()
        if keep:
            for info in u.infos:
                full[id(info.sharded)] = gathered[info.fqn]
    if not keep:
        return OrderedDict()
    return OrderedDict((k, full[id(t)] if isinstance(t, ShardedParameter) else t.detach().clone())
                       for k, t in targets.items())


def set_model_state_dict(model: Any, model_state_dict: dict, *, options: StateDictOptions | None = None) -> IncompatibleKeys:
    """Load a full or sharded state dict into an FSDP model (see :class:`StateDictOptions`)."""
    opts = options or StateDictOptions()
    _settle(model)
    if opts.broadcast_from_rank0 and is_initialized():
        targets = named_targets(model)
        rank0 = get_rank() == 0
        sd: dict = {}
        for k, t in targets.items():
            shape = t.global_shape if isinstance(t, ShardedParameter) else tuple(t.shape)
            # broadcast on the compute device (a CPU-offloaded shard lives on the host, NCCL needs the GPU)
            dev = t._fsdp_info.unit.device if isinstance(t, ShardedParameter) else t.device
            if rank0:
                if k not in model_state_dict:
                    if opts.strict:
                        raise StateDictError(f"set_model_state_dict: rank 0's state dict has no {k!r}")
                    continue
                buf = as_tensor(_flat_host(model_state_dict[k], k).astype(t.dtype.np)).to(dev)
            else:
                buf = make_tensor(dev.xp.empty(shape, dtype=t.dtype.np), dev)
            broadcast(buf, src=0)
            sd[k] = buf
        return load_module_state_dict(model, sd, opts.strict)
    return load_module_state_dict(model, model_state_dict, opts.strict)


# -- optimizers -----------------------------------------------------------------------------------


def _param_names(model: Any) -> dict[int, str]:
    names: dict[int, str] = {}
    for k, t in named_targets(model).items():
        names.setdefault(id(t), k)
    return names


def get_optimizer_state_dict(model: Any, optimizers: Any, *, options: StateDictOptions | None = None) -> dict:
    """The optimizer's state keyed by parameter name: ``{"state": {fqn: {...}}, "param_groups":
    [{..., "params": [fqn, ...]}]}``. Per-element states of FSDP parameters are ShardedTensors
    (or full tensors with ``options.full_state_dict``, a collective)."""
    opts = options or StateDictOptions()
    _settle(model)
    names = _param_names(model)
    keep = not (opts.full_state_dict and opts.cpu_offload) or _rank0()
    state: dict = {}
    groups = []
    for opt in optimizers if isinstance(optimizers, (list, tuple)) else [optimizers]:
        for group in opt.param_groups:
            g = {k: v for k, v in group.items() if k not in ("params", "param_names")}
            fqns = []
            for p in group["params"]:
                if id(p) not in names:
                    raise StateDictError(f"get_optimizer_state_dict: a parameter of shape {tuple(p.shape)} in the "
                                         "optimizer is not a parameter of the model")
                fqn = names[id(p)]
                fqns.append(fqn)
                st = opt.state.get(p)
                if st:
                    state[fqn] = {k: _export_state(p, v, opts.full_state_dict) for k, v in st.items()}
            g["params"] = fqns
            groups.append(g)
    if not keep:
        return {"state": {}, "param_groups": []}
    return {"state": state, "param_groups": groups}


def _shaped_like_shard(p: Any, v: Any) -> bool:
    return isinstance(p, ShardedParameter) and isinstance(v, Tensor) and v.ndim > 0 and tuple(v.shape) == tuple(p.shape)


def _export_state(p: Any, v: Any, full: bool) -> Any:
    if _shaped_like_shard(p, v):
        unit = p._fsdp_info.unit
        if full:
            return unit.full_tensor_of(v, p.global_shape)
        return ShardedTensor(v.detach(), p.global_shape, FlatShard(), unit.shard_group, rank=unit.shard_rank,
                             world_size=unit.shard_world)
    return v


def set_optimizer_state_dict(model: Any, optimizers: Any, optim_state_dict: dict, *,
                             options: StateDictOptions | None = None) -> None:
    """Load a state from :func:`get_optimizer_state_dict` (full or sharded) into the optimizer."""
    names = _param_names(model)
    opts_list = optimizers if isinstance(optimizers, (list, tuple)) else [optimizers]
    saved_groups = list(optim_state_dict.get("param_groups", []))
    saved_state = optim_state_dict.get("state", {})
    gi = 0
    for opt in opts_list:
        index: dict[str, int] = {}
        groups = []
        for group in opt.param_groups:
            if gi >= len(saved_groups):
                raise StateDictError(f"set_optimizer_state_dict: the state dict has {len(saved_groups)} parameter "
                                     "groups, fewer than the optimizer(s)")
            sg = dict(saved_groups[gi])
            gi += 1
            ids = []
            for p in group["params"]:
                fqn = names.get(id(p))
                if fqn is None:
                    raise StateDictError("set_optimizer_state_dict: an optimizer parameter is not in the model")
                index[fqn] = len(index)
                ids.append(index[fqn])
            sg["params"] = ids
            groups.append(sg)
        state = {}
        by_name = {names[id(p)]: p for group in opt.param_groups for p in group["params"]}
        for fqn, i in index.items():
            if fqn in saved_state:
                state[i] = {k: _import_state(by_name[fqn], v, f"{fqn}/{k}") for k, v in saved_state[fqn].items()}
        opt.load_state_dict({"state": state, "param_groups": groups})


def _import_state(p: Any, v: Any, key: str) -> Any:
    if not isinstance(p, ShardedParameter):
        return v.to_local() if isinstance(v, ShardedTensor) else v
    info = p._fsdp_info
    if isinstance(v, ShardedTensor):
        if v.world_size != info.unit.shard_world or v.rank != info.unit.shard_rank:
            raise StateDictError(f"{key}: sharded optimizer state for rank {v.rank} of {v.world_size} cannot load on "
                                 f"rank {info.unit.shard_rank} of {info.unit.shard_world}; use a full state dict or "
                                 "load_sharded_checkpoint")
        return v.to_local()
    if isinstance(v, Tensor) and v.ndim > 0 and tuple(v.shape) == info.shape:
        return make_tensor(v.detach()._data.reshape(-1)[info.start: info.start + info.valid].copy(), v.device)
    return v
