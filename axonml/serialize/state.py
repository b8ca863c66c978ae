"""``save``/``load`` of state dicts as safetensors files."""

from __future__ import annotations

import os
from collections import OrderedDict
from typing import Any, Mapping

import numpy as np

from ..autograd.variable import TensorBase
from ..errors import CheckpointError
from ..runtime.devices.device import as_device
from ..tensor import Tensor, from_numpy
from .safetensors_io import read_header, read_safetensors, write_safetensors


def _host(value: Any, name: str) -> np.ndarray:
    if isinstance(value, TensorBase):
        return value.device.to_host(value._data)
    if isinstance(value, np.ndarray):
        return value
    raise CheckpointError(
        f"cannot save {name!r}: a {type(value).__name__} is not a tensor; ax.save stores state dicts "
        "(name -> tensor); use ax.save_checkpoint for optimizer/scheduler state and metadata"
    )


def save(state_dict: Mapping[str, Any], path: str | os.PathLike, metadata: Mapping[str, str] | None = None) -> None:
    """Save a state dict (name -> Tensor or NumPy array) as a safetensors file, atomically.

    The file loads unchanged with ``safetensors.numpy.load_file`` and
    ``safetensors.torch.load_file``. Example::

        ax.save(model.state_dict(), "model.safetensors")
    """
    if not isinstance(state_dict, Mapping):
        raise CheckpointError(f"ax.save expects a mapping of names to tensors, got {type(state_dict).__name__}")
    arrays = OrderedDict((k, _host(v, k)) for k, v in state_dict.items())
    write_safetensors(path, arrays, metadata)


def load(path: str | os.PathLike, device: Any = None) -> "OrderedDict[str, Tensor]":
    """Load a safetensors file as an ordered dict of tensors (on ``device``, default CPU).

    A missing, truncated or corrupt file raises ``CheckpointError`` naming the file.
    """
    arrays, _ = read_safetensors(path)
    dev = as_device(device)
    out: OrderedDict[str, Tensor] = OrderedDict()
    for k, a in arrays.items():
        t = from_numpy(a)
        out[k] = t if dev.type == "cpu" else t.to(dev)
    return out


def load_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The ``__metadata__`` map of a safetensors file."""
    return read_header(path)[1]
