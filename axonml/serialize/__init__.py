"""Safetensors state dicts and atomic training checkpoints (layer 3.5: above tensor)."""

from .checkpoint import load_checkpoint, save_checkpoint
from .safetensors_io import atomic_write, read_header, read_safetensors, read_slice, write_safetensors
from .state import load, load_metadata, save

__all__ = [
    "atomic_write",
    "load",
    "load_checkpoint",
    "load_metadata",
    "read_header",
    "read_safetensors",
    "read_slice",
    "save",
    "save_checkpoint",
    "write_safetensors",
]
