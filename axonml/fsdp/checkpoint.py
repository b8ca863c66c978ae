"""Sharded checkpoints: a directory of per-rank safetensors files plus metadata, loadable
at any world size and under any strategy, optimizer state included.

Layout of ``path/``::

    shard-00000-of-00004.safetensors   this rank's pieces, each a 1-D array
    ...
    metadata.json                      written last by rank 0: the commit marker

Note on the metadata: every tensor of the checkpoint (``model/<name>`` and
``optim/<name>/<state>``) is described by its logical name, global shape and dtype, and a
list of *pieces*: ``{file, key, start, stop}``, a contiguous range of the row-major
flattening stored in ``file`` under ``key``. A sharded parameter has one piece per shard
(only replica 0 of a HYBRID_SHARD or NO_SHARD group writes, so nothing is stored twice);
everything replicated (buffers, unmanaged parameters, step counters) is one piece in rank
0's file. Loading is the same rule at any world size: each rank computes the range it
holds now and reads the overlapping parts of the pieces with ranged reads
(:func:`axonml.serialize.read_slice`), so no rank ever holds more than its own shard plus
one piece being copied, and no conversion script is needed.
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np

from ..collectives import all_gather_object, barrier, get_rank, get_world_size, is_initialized
from ..errors import CheckpointError, StateDictError
from ..runtime.dtypes import get_dtype
from ..serialize import atomic_write, read_slice, write_safetensors
from ..tensor import Tensor, as_tensor
from ._param import ShardedParameter
from .state_dict import _settle, _shaped_like_shard, named_targets

__all__ = ["load_sharded_checkpoint", "save_sharded_checkpoint"]

FORMAT = "axonml.fsdp.sharded/1"
METADATA = "metadata.json"


def _world() -> tuple[int, int]:
    return (get_rank(), get_world_size()) if is_initialized() else (0, 1)


def _writes_shards(p: ShardedParameter) -> bool:
    rep = p._fsdp_info.unit.replicate_group
    return rep is None or rep.rank() == 0


def _host(t: Tensor) -> np.ndarray:
    return t.device.to_host(t.detach()._data)


class _Writer:
    """Collects this rank's pieces and the (rank-independent) descriptions of every tensor."""

    def __init__(self, fname: str, rank: int) -> None:
        self.fname, self.rank = fname, rank
        self.arrays: dict[str, np.ndarray] = {}
        self.pieces: dict[str, list] = {}
        self.entries: dict[str, dict] = {}

    def describe(self, key: str, shape: tuple, dtype: str) -> None:
        self.entries[key] = {"shape": list(shape), "dtype": dtype}

    def add(self, key: str, flat: np.ndarray, start: int) -> None:
        if flat.size == 0:
            return
        self.arrays[key] = np.ascontiguousarray(flat).reshape(-1)
        self.pieces.setdefault(key, []).append({"file": self.fname, "key": key, "start": start, "stop": start + flat.size})

    def tensor(self, key: str, t: Tensor, p: Any = None) -> None:
        """A model/optimizer tensor: sharded like ``p`` (a ShardedParameter) or replicated."""
        if p is not None:
            info = p._fsdp_info
            self.describe(key, info.shape, t.dtype.name)
            if _writes_shards(p):
                self.add(key, _host(t).reshape(-1), info.start)
        else:
            self.describe(key, tuple(t.shape), t.dtype.name)
            if self.rank == 0:
                self.add(key, _host(t).reshape(-1), 0)


def save_sharded_checkpoint(path: str | os.PathLike, model: Any, optimizer: Any = None, *, extra: dict | None = None
                            ) -> None:
    """Write ``model`` (and ``optimizer``) as a sharded checkpoint directory (a collective).

    Args:
        path: the directory (created if needed; files of an older checkpoint are replaced).
        model: an FSDP model (``fully_shard`` or ``FullyShardedDataParallel``); plain
            parameters and buffers are saved once, by rank 0.
        optimizer: its state is saved sharded like the parameters, keyed by parameter name.
        extra: JSON-able user data stored in the metadata (e.g. the step).

    Example::

        save_sharded_checkpoint("ckpt/step100", model, opt, extra={"step": 100})
        # later, on any number of ranks:
        load_sharded_checkpoint("ckpt/step100", model, opt)
    """
    _settle(model)
    rank, world = _world()
    path = os.fspath(path)
    os.makedirs(path, exist_ok=True)
    fname = f"shard-{rank:05d}-of-{world:05d}.safetensors"
    w = _Writer(fname, rank)
    targets = named_targets(model)
    names: dict[int, str] = {}
    aliases: dict[str, str] = {}
    for key, t in targets.items():
        if id(t) in names:
            aliases[key] = names[id(t)]  # a shared parameter: stored once
            continue
        names[id(t)] = key
        w.tensor(f"model/{key}", t, t if isinstance(t, ShardedParameter) else None)
    optim_meta: dict = {}
    if optimizer is not None:
        optim_meta = _save_optimizer(w, optimizer, names)
    write_safetensors(os.path.join(path, fname), w.arrays, {"format": FORMAT, "rank": str(rank)})
    gathered: list = [None] * world
    if world > 1:
        all_gather_object(gathered, w.pieces)
    else:
        gathered = [w.pieces]
    if rank == 0:
        tensors = {k: dict(e, pieces=[pc for pieces in gathered for pc in pieces.get(k, [])]) for k, e in w.entries.items()}
        meta = {"format": FORMAT, "world_size": world, "tensors": tensors, "aliases": aliases, "optimizer": optim_meta,
                "extra": extra or {}}
        _write_json(os.path.join(path, METADATA), meta)
    if world > 1:
        barrier()


def _save_optimizer(w: _Writer, optimizer: Any, names: dict[int, str]) -> dict:
    groups, values = [], {}
    for group in optimizer.param_groups:
        g = {k: v for k, v in group.items() if k not in ("params", "param_names")}
        fqns = []
        for p in group["params"]:
            if id(p) not in names:
                raise StateDictError(f"save_sharded_checkpoint: an optimizer parameter of shape {tuple(p.shape)} is not "
                                     "a parameter of the model")
            fqn = names[id(p)]
            fqns.append(fqn)
            st = optimizer.state.get(p) or {}
            kinds = {}
            for sk, v in st.items():
                key = f"optim/{fqn}/{sk}"
                if isinstance(v, Tensor):
                    w.tensor(key, v, p if _shaped_like_shard(p, v) else None)
                    kinds[sk] = {"tensor": key}
                else:
                    kinds[sk] = {"value": v}
            values[fqn] = kinds
        g["params"] = fqns
        groups.append(g)
    return {"param_groups": _jsonable(groups), "state": values}


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return {"__tuple__": [_jsonable(v) for v in obj]} if isinstance(obj, tuple) else [_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def _from_json(obj: Any) -> Any:
    if isinstance(obj, dict):
        if set(obj) == {"__tuple__"}:
            return tuple(_from_json(v) for v in obj["__tuple__"])
        return {k: _from_json(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_from_json(v) for v in obj]
    return obj


def _write_json(path: str, obj: Any) -> None:
    atomic_write(path, lambda f: f.write(json.dumps(obj, indent=1).encode()), suffix=".json")


# -- loading --------------------------------------------------------------------------------------


def read_metadata(path: str | os.PathLike) -> dict:
    """The metadata of a sharded checkpoint directory (raises CheckpointError when incomplete)."""
    mpath = os.path.join(os.fspath(path), METADATA)
    try:
        with open(mpath) as f:
            meta = json.load(f)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: not a complete sharded checkpoint (no {METADATA}; was the save interrupted?)") from None
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{mpath}: corrupt metadata ({e})") from None
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{mpath}: format {meta.get('format')!r} is not {FORMAT!r}")
    return meta


def _read_range(path: str, key: str, entry: dict, start: int, stop: int) -> np.ndarray:
    """Elements [start, stop) of the flattened tensor ``key``, from the pieces that overlap."""
    out = np.empty(stop - start, dtype=get_dtype(entry["dtype"]).np)
    covered = 0
    for pc in entry["pieces"]:
        lo, hi = max(start, pc["start"]), min(stop, pc["stop"])
        if lo >= hi:
            continue
        out[lo - start: hi - start] = read_slice(os.path.join(path, pc["file"]), pc["key"], lo - pc["start"], hi - pc["start"])
        covered += hi - lo
    if covered != stop - start:
        raise CheckpointError(f"{path}: the pieces of {key!r} cover {covered} of the elements [{start}, {stop}) needed here; "
                              "the checkpoint is incomplete (a rank's file is missing or stale)")
    return out


def _entry(meta: dict, key: str, shape: tuple, path: str) -> dict:
    entry = meta["tensors"].get(key)
    if entry is None:
        raise StateDictError(f"{path}: the checkpoint has no {key!r}")
    if tuple(entry["shape"]) != tuple(shape):
        raise StateDictError(f"{path}: {key!r} has shape {tuple(entry['shape'])} in the checkpoint but {tuple(shape)} in "
                             "the model; build the model with the checkpoint's configuration")
    return entry


def _local(path: str, meta: dict, key: str, shape: tuple, p: Any) -> np.ndarray:
    """What this rank holds of ``key``: its shard range (sharded like ``p``) or the whole tensor."""
    entry = _entry(meta, key, shape, path)
    if p is not None:
        info = p._fsdp_info
        return _read_range(path, key, entry, info.start, info.start + info.valid)
    n = int(np.prod(shape, dtype=np.int64))
    return _read_range(path, key, entry, 0, n).reshape(shape)


def load_sharded_checkpoint(path: str | os.PathLike, model: Any, optimizer: Any = None, *, strict: bool = True) -> dict:
    """Load a checkpoint written by :func:`save_sharded_checkpoint`, at any world size.

    Each rank reads only the byte ranges of its own shards. Returns the ``extra`` dict
    given at save time. ``strict``: fail on model tensors missing from the checkpoint.
    """
    path = os.fspath(path)
    meta = read_metadata(path)
    _settle(model)
    targets = named_targets(model)
    done: set = set()
    missing = []
    for key, t in targets.items():
        if id(t) in done:
            continue
        done.add(id(t))
        k = f"model/{meta['aliases'].get(key, key)}"
        if k not in meta["tensors"]:
            missing.append(key)
            continue
        if isinstance(t, ShardedParameter):
            info = t._fsdp_info
            info.unit.load_local(info, _local(path, meta, k, info.shape, t))
        else:
            value = _local(path, meta, k, tuple(t.shape), None)
            t.detach().copy_(as_tensor(value.astype(t.dtype.np, copy=False)))
    if missing and strict:
        raise StateDictError(f"{path}: model tensors missing from the checkpoint: {missing}")
    if optimizer is not None:
        _load_optimizer(path, meta, optimizer, targets)
    return meta.get("extra", {})


def _load_optimizer(path: str, meta: dict, optimizer: Any, targets: dict) -> None:
    om = meta.get("optimizer") or {}
    if not om:
        raise StateDictError(f"{path}: the checkpoint has no optimizer state")
    names = {}
    for key, t in targets.items():
        names.setdefault(id(t), key)
    saved_groups = _from_json(om["param_groups"])
    if len(saved_groups) != len(optimizer.param_groups):
        raise StateDictError(f"{path}: the checkpoint has {len(saved_groups)} optimizer parameter groups, the optimizer "
                             f"has {len(optimizer.param_groups)}")
    state, groups, index = {}, [], 0
    for sg, group in zip(saved_groups, optimizer.param_groups):
        fqns = [names.get(id(p)) for p in group["params"]]
        if sorted(f for f in fqns if f is not None) != sorted(sg["params"]) or None in fqns:
            raise StateDictError(f"{path}: an optimizer group holds {sorted(sg['params'])[:4]}... in the checkpoint but "
                                 f"{sorted(f for f in fqns if f)[:4]}... here; build the optimizer over the same parameters")
        ids = []
        for p, fqn in zip(group["params"], fqns):
            st = {}
            for sk, kind in om["state"].get(fqn, {}).items():
                if "value" in kind:
                    st[sk] = kind["value"]
                    continue
                key = kind["tensor"]
                shape = tuple(meta["tensors"][key]["shape"])
                sharded = isinstance(p, ShardedParameter) and shape == p.global_shape and len(shape) > 0
                arr = _local(path, meta, key, shape, p if sharded else None)
                st[sk] = as_tensor(np.array(arr))  # (ascontiguousarray would make a 0-d step 1-d)
            if st:
                state[index] = st
            ids.append(index)
            index += 1
        g = dict(sg)
        g["params"] = ids
        groups.append(g)
    optimizer.load_state_dict({"state": state, "param_groups": groups})
