"""Training checkpoints: model, optimizer, scheduler, GradScaler, RNG state, step and
user metadata in ONE safetensors file, written atomically.

Note on the encoding: every tensor of the nested state (model weights, optimizer
moments...) is stored as a safetensors tensor under a path-like key
(``model/fc.weight``, ``optimizer/state/0/exp_avg``); everything else (param groups,
step counters, scheduler fields, RNG state) is a JSON skeleton in the metadata entry
``axonml.checkpoint`` in which each tensor is replaced by ``{"__tensor__": key}``. Dicts
with non-string keys (the optimizer's parameter indices) and tuples are tagged so they
come back with their types. One file means one atomic rename: a crash mid-save leaves the
previous checkpoint intact.
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np

from ..autograd.variable import TensorBase
from ..errors import CheckpointError
from ..tensor import from_numpy
from ..tensor.random import get_rng_state, set_rng_state
from .safetensors_io import read_safetensors, write_safetensors

_KEY = "axonml.checkpoint"
_FORMAT = 1


def _encode(obj: Any, prefix: str, tensors: dict) -> Any:
    if isinstance(obj, TensorBase):
        tensors[prefix] = obj.device.to_host(obj._data)
        return {"__tensor__": prefix, "__rg__": bool(obj.requires_grad)}
    if isinstance(obj, np.ndarray):
        tensors[prefix] = obj
        return {"__ndarray__": prefix}
    if isinstance(obj, dict):
        if all(isinstance(k, str) for k in obj):
            return {"__dict__": {k: _encode(v, f"{prefix}/{k}", tensors) for k, v in obj.items()}}
        return {
            "__items__": [
                [_encode(k, f"{prefix}/#k{i}", tensors), _encode(v, f"{prefix}/{k}", tensors)]
                for i, (k, v) in enumerate(obj.items())
            ]
        }
    if isinstance(obj, tuple):
        return {"__tuple__": [_encode(v, f"{prefix}/{i}", tensors) for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [_encode(v, f"{prefix}/{i}", tensors) for i, v in enumerate(obj)]
    if isinstance(obj, np.generic):
        return obj.item()
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise CheckpointError(
        f"cannot store {prefix!r} of type {type(obj).__name__} in a checkpoint: only tensors, arrays, "
        "numbers, strings, None and dict/list/tuple of them"
    )


def _decode(obj: Any, tensors: dict, path: str) -> Any:
    if isinstance(obj, list):
        return [_decode(v, tensors, path) for v in obj]
    if not isinstance(obj, dict):
        return obj
    if "__tensor__" in obj:
        key = obj["__tensor__"]
        if key not in tensors:
            raise CheckpointError(f"{path}: the checkpoint refers to tensor {key!r}, which the file does not hold")
        t = from_numpy(tensors[key])
        return t.requires_grad_(True) if obj.get("__rg__") else t
    if "__ndarray__" in obj:
        return tensors[obj["__ndarray__"]]
    if "__dict__" in obj:
        return {k: _decode(v, tensors, path) for k, v in obj["__dict__"].items()}
    if "__items__" in obj:
        return {_decode(k, tensors, path): _decode(v, tensors, path) for k, v in obj["__items__"]}
    if "__tuple__" in obj:
        return tuple(_decode(v, tensors, path) for v in obj["__tuple__"])
    raise CheckpointError(f"{path}: corrupt checkpoint skeleton entry {obj!r}")


def save_checkpoint(
    path: str | os.PathLike,
    model: Any = None,
    optimizer: Any = None,
    scheduler: Any = None,
    scaler: Any = None,
    step: int | None = None,
    metadata: dict | None = None,
    save_rng: bool = True,
    **extra: Any,
) -> None:
    """Write a training checkpoint atomically (temporary file, fsync, rename).

    Any argument with ``state_dict()`` is stored through it; ``metadata`` and ``extra``
    hold JSON-able values or tensors. Example::

        ax.save_checkpoint("ckpt.safetensors", model=model, optimizer=opt, scheduler=sched, step=step)
    """
    state: dict[str, Any] = {"format": _FORMAT, "step": step, "metadata": metadata or {}, "extra": extra}
    for name, obj in (("model", model), ("optimizer", optimizer), ("scheduler", scheduler), ("scaler", scaler)):
        if obj is not None:
            if not hasattr(obj, "state_dict"):
                raise CheckpointError(f"save_checkpoint: {name} ({type(obj).__name__}) has no state_dict()")
            state[name] = obj.state_dict()
    if save_rng:
        state["rng"] = get_rng_state()
    tensors: dict[str, np.ndarray] = {}
    skeleton = _encode(state, "", tensors)
    write_safetensors(path, tensors, {_KEY: json.dumps(skeleton)})


def load_checkpoint(
    path: str | os.PathLike,
    model: Any = None,
    optimizer: Any = None,
    scheduler: Any = None,
    scaler: Any = None,
    restore_rng: bool = True,
    strict: bool = True,
) -> dict:
    """Restore what :func:`save_checkpoint` wrote into the given objects; returns the
    whole decoded state (``step``, ``metadata``, ``extra``...). A missing, truncated or
    corrupt file raises ``CheckpointError`` naming it."""
    path = os.fspath(path)
    tensors, meta = read_safetensors(path)
    if _KEY not in meta:
        raise CheckpointError(
            f"{path}: not an AxonML training checkpoint (no {_KEY!r} metadata); use ax.load for plain state dicts"
        )
    try:
        skeleton = json.loads(meta[_KEY])
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path}: corrupt checkpoint metadata ({e})") from None
    state = _decode(skeleton, tensors, path)
    for name, obj in (("model", model), ("optimizer", optimizer), ("scheduler", scheduler), ("scaler", scaler)):
        if obj is None:
            continue
        if name not in state:
            raise CheckpointError(
                f"{path}: the checkpoint holds no {name} state (it has {sorted(k for k in state if k not in ('format',))})"
            )
        if name == "model":
            obj.load_state_dict(state[name], strict=strict)
        else:
            obj.load_state_dict(state[name])
    if restore_rng and "rng" in state:
        set_rng_state(state["rng"])
    return state
