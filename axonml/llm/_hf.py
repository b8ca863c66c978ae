"""Reading and writing Hugging Face ``save_pretrained`` directories (config.json + model.safetensors).

The models of this package keep their own parameter names; each model class maps them to
and from the names transformers uses. This module only moves files: a config dict and a
name -> NumPy array mapping, with errors that name the directory and what is missing.
"""

from __future__ import annotations

import json
import os
from typing import Any, Mapping

import numpy as np

from ..errors import CheckpointError
from ..serialize import atomic_write, read_safetensors, write_safetensors

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"


def read_pretrained(directory: str | os.PathLike) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Return (config dict, tensors) of a directory written by ``save_pretrained``."""
    d = os.fspath(directory)
    cfg_path, w_path = os.path.join(d, CONFIG_NAME), os.path.join(d, WEIGHTS_NAME)
    if not os.path.isdir(d):
        raise CheckpointError(f"from_pretrained: {d!r} is not a directory; pass a folder written by save_pretrained")
    missing = [n for n in (CONFIG_NAME, WEIGHTS_NAME) if not os.path.isfile(os.path.join(d, n))]
    if missing:
        have = sorted(os.listdir(d))[:20]
        raise CheckpointError(
            f"from_pretrained: {d!r} lacks {missing} (it has {have}); only safetensors weights are read: "
            f"save with transformers' save_pretrained(dir, safe_serialization=True)"
        )
    with open(cfg_path, encoding="utf-8") as f:
        try:
            config = json.load(f)
        except json.JSONDecodeError as e:
            raise CheckpointError(f"from_pretrained: {cfg_path} is not valid JSON ({e})") from None
    tensors, _ = read_safetensors(w_path)
    return config, tensors


def write_pretrained(directory: str | os.PathLike, config: Mapping[str, Any], tensors: Mapping[str, np.ndarray]) -> None:
    """Write ``config.json`` and ``model.safetensors`` (metadata format=pt, as transformers expects)."""
    d = os.fspath(directory)
    os.makedirs(d, exist_ok=True)
    text = json.dumps(dict(config), indent=2, sort_keys=True) + "\n"
    atomic_write(os.path.join(d, CONFIG_NAME), lambda f: f.write(text.encode("utf-8")), suffix=".json")
    write_safetensors(os.path.join(d, WEIGHTS_NAME), dict(tensors), metadata={"format": "pt"})


def take(tensors: dict[str, np.ndarray], name: str, shape: tuple[int, ...], where: str) -> np.ndarray:
    """Pop tensor ``name`` and check its shape; errors name the file's nearby keys."""
    if name not in tensors:
        near = sorted(k for k in tensors if k.split(".")[0] == name.split(".")[0])[:10]
        raise CheckpointError(f"{where}: tensor {name!r} is missing from the checkpoint (similar keys: {near})")
    arr = tensors.pop(name)
    if tuple(arr.shape) != tuple(shape):
        raise CheckpointError(
            f"{where}: tensor {name!r} has shape {tuple(arr.shape)} but the config implies {tuple(shape)}; "
            f"the config.json and the weights disagree"
        )
    return arr
