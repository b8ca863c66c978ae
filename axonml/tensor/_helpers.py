"""Small helpers shared by the op modules: operand promotion, broadcasting reductions."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..autograd.variable import TensorBase, make_tensor
from ..errors import ShapeError
from ..runtime.dtypes import DType, bfloat16, result_type

SCALARS = (int, float, bool)


def scalar_value(x: Any) -> Any:
    """A Python scalar for Python and NumPy scalars; other values unchanged."""
    if isinstance(x, np.generic):
        return x.item()
    return x


def promote(a: TensorBase, b: Any) -> tuple:
    """Bring a tensor and a tensor-or-scalar to PyTorch's result dtype.

    Returns ``(a, b)`` where tensors are cast (differentiably) when needed and scalars stay
    Python scalars (NumPy keeps weak scalars from changing the array's dtype).
    """
    if isinstance(b, TensorBase):
        if a._dtype is b._dtype:
            return a, b
        dt = result_type(a, b)
        return (a if a._dtype is dt else a.to(dt)), (b if b._dtype is dt else b.to(dt))
    b = scalar_value(b)
    if not isinstance(b, SCALARS):
        raise TypeError(f"unsupported operand of type {type(b).__name__}; expected a Tensor or a number")
    dt = result_type(a, b)
    if dt is not a._dtype:
        a = a.to(dt)
    if dt is bfloat16 and not isinstance(b, bool):
        # ml_dtypes' bfloat16 has no weak Python scalars: a bare float would promote to float32
        # (a 0-d array on the tensor's device: CuPy takes no NumPy arrays and no bfloat16 scalars)
        b = np.asarray(b, dtype=dt.np) if a._device.type == "cpu" else a._device.xp.asarray(b, dtype=dt.np)
    return a, b


def promote_scalar_first(a: Any, b: TensorBase) -> tuple:
    """Like :func:`promote` for ``scalar op tensor``; returns (scalar, tensor)."""
    b2, a2 = promote(b, a)
    return a2, b2


def sum_to_shape(xp: Any, g: Any, shape: tuple) -> Any:
    """Reduce a broadcast gradient ``g`` back to ``shape`` (the inverse of broadcasting)."""
    if g.shape == shape:
        return g
    lead = g.ndim - len(shape)
    axes = tuple(range(lead)) + tuple(i + lead for i, s in enumerate(shape) if s == 1 and g.shape[i + lead] != 1)
    if axes:
        g = g.sum(axis=axes, keepdims=True)
    if lead:
        g = g.reshape(shape)
    return g


def broadcast_error(op: str, *shapes: tuple) -> ShapeError:
    return ShapeError(
        f"{op}: shapes {' and '.join(str(tuple(s)) for s in shapes)} cannot be broadcast "
        "together (trailing dimensions must be equal or 1)"
    )


def norm_dim(dim: int, ndim: int, op: str = "op") -> int:
    """Normalize a possibly negative dimension, with a clear error when out of range."""
    n = max(ndim, 1)
    if not -n <= dim < n:
        raise IndexError(f"{op}: dimension {dim} out of range for a tensor with {ndim} dim(s) (expected [{-n}, {n - 1}])")
    return dim % n


def norm_dims(dim: Any, ndim: int, op: str = "op") -> tuple | None:
    """``None`` for all dims, else a sorted tuple of normalized dims."""
    if dim is None:
        return None
    if isinstance(dim, int):
        dim = (dim,)
    return tuple(sorted(norm_dim(d, ndim, op) for d in dim))


def wrap(array: Any, like: TensorBase) -> Any:
    """A new tensor (no graph) on ``like``'s device."""
    return make_tensor(array, like._device)


def dtype_np(dtype: DType) -> Any:
    return dtype.np
