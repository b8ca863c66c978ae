"""Collation: turning a list of samples into a batch.

:func:`default_collate` follows ``torch.utils.data.default_collate``: tensors, NumPy
arrays and NumPy scalars are stacked along a new first dimension, Python floats become a
float64 tensor, ints an int64 tensor (bools a bool tensor), strings stay a list, and
dicts, namedtuples, tuples and lists are collated field by field (a tuple of fields
becomes a list, as in PyTorch).

Note on stacking: samples are stacked with NumPy on the host and wrapped once as a
tensor. That is one copy per batch and no autograd bookkeeping per sample; batches do
not carry gradient history (data loading happens outside autograd). Non-CPU samples are
stacked on the host and the batch is copied back to their device.
"""

from __future__ import annotations

import collections.abc
import copy
from typing import Any, Callable, Sequence

import numpy as np

from ..autograd.variable import TensorBase
from ..errors import ShapeError
from ..tensor.creation import as_tensor, from_numpy, tensor

__all__ = ["default_collate", "default_convert"]

_BAD_TYPE = "default_collate: batch must contain tensors, NumPy arrays, numbers, dicts or lists; found {}"


def _is_namedtuple(x: Any) -> bool:
    return isinstance(x, tuple) and hasattr(x, "_fields")


def _is_string_array(a: np.ndarray) -> bool:
    return a.dtype.kind in "USO"


def _stack_arrays(arrays: list[np.ndarray], what: str) -> np.ndarray:
    shapes = {a.shape for a in arrays}
    if len(shapes) > 1:
        listed = [tuple(a.shape) for a in arrays]
        raise ShapeError(
            f"default_collate: {what} in a batch must have equal shapes to be stacked, got shapes {listed}; "
            "pad or resize the samples, or pass a collate_fn"
        )
    return np.stack(arrays)


def _collate_tensors(batch: list) -> Any:
    elem = batch[0]
    arrays = [np.asarray(t) for t in batch]  # host views for CPU tensors
    stacked = _stack_arrays(arrays, "tensors")
    if elem.device.type == "cpu":
        return from_numpy(stacked)
    return tensor(stacked, device=elem.device)


def default_collate(batch: Sequence) -> Any:
    """Collate a list of samples into a batch (PyTorch's rules, see the module note).

    Args:
        batch: the samples, all with the same structure.

    Returns:
        The batch: tensors with a new leading dimension of ``len(batch)``, with the
        samples' nesting (dicts, namedtuples, lists) kept.

    Example::

        default_collate([(ax.ones(2), 0), (ax.zeros(2), 1)])  # [tensor of shape (2, 2), tensor([0, 1])]
    """
    elem = batch[0]
    if isinstance(elem, TensorBase):
        return _collate_tensors(batch)
    if isinstance(elem, np.ndarray):
        if _is_string_array(elem):
            raise TypeError(_BAD_TYPE.format(elem.dtype))
        return from_numpy(_stack_arrays([np.asarray(a) for a in batch], "NumPy arrays"))
    if isinstance(elem, np.generic):  # NumPy scalars, np.bool_ included
        if _is_string_array(np.asarray(elem)):
            return batch
        return as_tensor(np.array(batch))
    if isinstance(elem, float):
        return tensor(batch, dtype="float64")
    if isinstance(elem, int):  # bool is an int: a bool batch gives a bool tensor
        return tensor(batch)
    if isinstance(elem, (str, bytes)):
        return batch
    if isinstance(elem, collections.abc.Mapping):
        fields = {key: default_collate([d[key] for d in batch]) for key in elem}
        if isinstance(elem, collections.abc.MutableMapping):
            clone = copy.copy(elem)
            clone.update(fields)
            return clone
        try:
            return type(elem)(fields)
        except TypeError:
            return fields
    if _is_namedtuple(elem):
        return type(elem)(*(default_collate(samples) for samples in zip(*batch)))
    if isinstance(elem, collections.abc.Sequence):
        sizes = [len(s) for s in batch]
        if any(s != sizes[0] for s in sizes):
            raise ShapeError(
                f"default_collate: each element in a batch of sequences should be of equal size, got sizes {sizes}"
            )
        columns = [default_collate(samples) for samples in zip(*batch)]
        if isinstance(elem, tuple):
            return columns
        try:
            return type(elem)(columns)
        except TypeError:
            return columns
    raise TypeError(_BAD_TYPE.format(type(elem)))


def default_convert(data: Any) -> Any:
    """Convert NumPy arrays in ``data`` to tensors without batching (``batch_size=None``).

    Tensors, strings and other objects pass through; dicts, namedtuples and sequences
    are converted element by element.
    """
    if isinstance(data, TensorBase):
        return data
    if isinstance(data, np.ndarray):
        return data if _is_string_array(data) else as_tensor(data)
    if isinstance(data, np.generic):
        return data if _is_string_array(np.asarray(data)) else as_tensor(np.asarray(data))
    if isinstance(data, (str, bytes)):
        return data
    if isinstance(data, collections.abc.Mapping):
        fields = {key: default_convert(data[key]) for key in data}
        if isinstance(data, collections.abc.MutableMapping):
            clone = copy.copy(data)
            clone.update(fields)
            return clone
        try:
            return type(data)(fields)
        except TypeError:
            return fields
    if _is_namedtuple(data):
        return type(data)(*(default_convert(d) for d in data))
    if isinstance(data, tuple):
        return [default_convert(d) for d in data]
    if isinstance(data, collections.abc.Sequence):
        items = [default_convert(d) for d in data]
        try:
            return type(data)(items)
        except TypeError:
            return items
    return data


CollateFn = Callable[[list], Any]
