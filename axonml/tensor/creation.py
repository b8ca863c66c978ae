"""Creation ops: tensor, zeros, ones, full, empty, arange, linspace, eye, random ones,
``*_like``, from_numpy."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..autograd.variable import TensorBase, make_tensor
from ..errors import DTypeError, ShapeError
from ..runtime.devices.device import as_device, creation_device
from ..runtime.dtypes import DType, bool_, from_numpy_dtype, get_default_dtype, get_dtype, int64
from .random import Generator, get_generator


def _shape(size: tuple) -> tuple:
    if len(size) == 1 and isinstance(size[0], (tuple, list)):
        size = tuple(size[0])
    out = tuple(int(s) for s in size)
    for s in out:
        if s < 0:
            raise ValueError(f"negative dimension {s} in size {out}")
    return out


def _finish(arr: np.ndarray, device: Any, requires_grad: bool) -> Any:
    dev = creation_device(device)
    data = dev.from_host(arr) if dev.type != "cpu" else arr
    t = make_tensor(data, dev)
    if requires_grad:
        t.requires_grad_(True)
    return t


def _infer_dtype(data: Any) -> DType:
    """PyTorch's inference: NumPy arrays and scalars keep their dtype; Python bools give
    bool, ints int64, floats the default float dtype."""
    if isinstance(data, (np.ndarray, np.generic)):
        return from_numpy_dtype(data.dtype)
    try:
        arr = np.asarray(data)
    except ValueError:
        raise ShapeError("tensor(): nested lists must be rectangular (equal lengths at each depth)") from None
    if arr.dtype == np.bool_:
        return bool_
    if arr.dtype.kind in "iu":
        return int64
    if arr.dtype.kind == "f":
        return get_default_dtype()
    if arr.dtype.kind == "O":
        raise DTypeError(f"cannot build a tensor from objects of type {type(data).__name__}; give numbers or nested lists")
    return from_numpy_dtype(arr.dtype)


def tensor(data: Any, dtype: Any = None, device: Any = None, requires_grad: bool = False) -> Any:
    """A new tensor copying ``data`` (nested lists, numbers, NumPy arrays or a Tensor).

    Example: ``ax.tensor([[1.0, 2.0]], requires_grad=True)``
    """
    if isinstance(data, TensorBase):
        arr = data._device.to_host(data._data).copy()
        dt = data._dtype if dtype is None else get_dtype(dtype)
        return _finish(arr.astype(dt.np, copy=False), device if device is not None else data._device, requires_grad)
    if isinstance(data, (list, tuple)) and any(isinstance(x, TensorBase) for x in data):
        data = [x.tolist() if isinstance(x, TensorBase) else x for x in data]
    dt = _infer_dtype(data) if dtype is None else get_dtype(dtype)
    arr = np.array(data, dtype=dt.np)
    return _finish(arr, device, requires_grad)


def as_tensor(data: Any, dtype: Any = None, device: Any = None) -> Any:
    """Like :func:`tensor`, but shares memory with a NumPy array or Tensor when it can."""
    if isinstance(data, TensorBase):
        return data.to(device=device, dtype=dtype) if (device is not None or dtype is not None) else data
    if isinstance(data, np.ndarray) and dtype is None and creation_device(device).type == "cpu":
        return from_numpy(data)
    return tensor(data, dtype=dtype, device=device)


def from_numpy(array: np.ndarray) -> Any:
    """A CPU tensor sharing memory with ``array`` (its dtype kept)."""
    if not isinstance(array, np.ndarray):
        raise TypeError(f"from_numpy expects a NumPy array, got {type(array).__name__}")
    from_numpy_dtype(array.dtype)  # clear error for unsupported dtypes
    return make_tensor(array, as_device("cpu"))


def _dt(dtype: Any, default: DType | None = None) -> DType:
    return (default or get_default_dtype()) if dtype is None else get_dtype(dtype)


def zeros(*size: Any, dtype: Any = None, device: Any = None, requires_grad: bool = False) -> Any:
    dev = creation_device(device)
    t = make_tensor(dev.xp.zeros(_shape(size), dtype=_dt(dtype).np), dev)
    return t.requires_grad_(True) if requires_grad else t


def ones(*size: Any, dtype: Any = None, device: Any = None, requires_grad: bool = False) -> Any:
    dev = creation_device(device)
    t = make_tensor(dev.xp.ones(_shape(size), dtype=_dt(dtype).np), dev)
    return t.requires_grad_(True) if requires_grad else t


def empty(*size: Any, dtype: Any = None, device: Any = None, requires_grad: bool = False) -> Any:
    dev = creation_device(device)
    t = make_tensor(dev.xp.empty(_shape(size), dtype=_dt(dtype).np), dev)
    return t.requires_grad_(True) if requires_grad else t


def full(size: Any, fill_value: Any, dtype: Any = None, device: Any = None, requires_grad: bool = False) -> Any:
    if dtype is None:
        dtype = _infer_dtype(fill_value)
    dev = creation_device(device)
    shape = _shape((size,) if isinstance(size, int) else tuple(size))
    t = make_tensor(dev.xp.full(shape, fill_value, dtype=_dt(dtype).np), dev)
    return t.requires_grad_(True) if requires_grad else t


def arange(start: Any, end: Any = None, step: Any = 1, dtype: Any = None, device: Any = None, requires_grad: bool = False) -> Any:
    """Values in [start, end) spaced by ``step``; int64 unless a bound is a float."""
    if end is None:
        start, end = 0, start
    if step == 0:
        raise ValueError("arange: step must be nonzero")
    if dtype is None:
        dtype = get_default_dtype() if any(isinstance(v, float) for v in (start, end, step)) else int64
    arr = np.arange(start, end, step, dtype=np.float64 if get_dtype(dtype).is_floating_point else None)
    return _finish(arr.astype(get_dtype(dtype).np), device, requires_grad)


def linspace(start: float, end: float, steps: int, dtype: Any = None, device: Any = None, requires_grad: bool = False) -> Any:
    arr = np.linspace(start, end, int(steps), dtype=np.float64)
    return _finish(arr.astype(_dt(dtype).np), device, requires_grad)


def eye(n: int, m: int | None = None, dtype: Any = None, device: Any = None, requires_grad: bool = False) -> Any:
    return _finish(np.eye(n, m, dtype=_dt(dtype).np), device, requires_grad)


def randn(
    *size: Any, generator: Generator | None = None, dtype: Any = None, device: Any = None, requires_grad: bool = False
) -> Any:
    """Standard normal samples (from ``generator`` or the default one)."""
    dt = _dt(dtype)
    if not dt.is_floating_point:
        raise DTypeError(f"randn needs a floating dtype, got {dt}")
    rng = get_generator(generator)
    arr = rng.standard_normal(_shape(size), dtype=np.float64 if dt.name == "float64" else np.float32)
    return _finish(arr.astype(dt.np, copy=False), device, requires_grad)


def rand(
    *size: Any, generator: Generator | None = None, dtype: Any = None, device: Any = None, requires_grad: bool = False
) -> Any:
    """Uniform samples in [0, 1)."""
    dt = _dt(dtype)
    if not dt.is_floating_point:
        raise DTypeError(f"rand needs a floating dtype, got {dt}")
    rng = get_generator(generator)
    arr = rng.random(_shape(size), dtype=np.float64 if dt.name == "float64" else np.float32)
    return _finish(arr.astype(dt.np, copy=False), device, requires_grad)


def randint(
    low: int, high: int | None = None, size: Any = (), generator: Generator | None = None, dtype: Any = None, device: Any = None
) -> Any:
    """Integers in [low, high) (``randint(high, size)`` means low = 0)."""
    if high is None:
        low, high = 0, low
    if high <= low:
        raise ValueError(f"randint: high ({high}) must be greater than low ({low})")
    rng = get_generator(generator)
    shape = _shape((size,) if isinstance(size, int) else tuple(size))
    arr = rng.integers(low, high, shape, dtype=np.int64)
    return _finish(arr.astype(_dt(dtype, int64).np, copy=False), device, False)


def randperm(n: int, generator: Generator | None = None, dtype: Any = None, device: Any = None) -> Any:
    arr = get_generator(generator).permutation(int(n)).astype(np.int64)
    return _finish(arr.astype(_dt(dtype, int64).np, copy=False), device, False)


def normal(mean: float, std: float, size: Any, generator: Generator | None = None, dtype: Any = None, device: Any = None) -> Any:
    t = randn(*_shape((size,) if isinstance(size, int) else tuple(size)), generator=generator, dtype=dtype, device=device)
    t._data *= std
    t._data += mean
    return t


def _like(x: Any, dtype: Any, device: Any) -> tuple:
    return (x._dtype if dtype is None else get_dtype(dtype)), (x._device if device is None else as_device(device))


def zeros_like(x: Any, dtype: Any = None, device: Any = None, requires_grad: bool = False) -> Any:
    dt, dev = _like(x, dtype, device)
    return zeros(*x.shape, dtype=dt, device=dev, requires_grad=requires_grad)


def ones_like(x: Any, dtype: Any = None, device: Any = None, requires_grad: bool = False) -> Any:
    dt, dev = _like(x, dtype, device)
    return ones(*x.shape, dtype=dt, device=dev, requires_grad=requires_grad)


def empty_like(x: Any, dtype: Any = None, device: Any = None, requires_grad: bool = False) -> Any:
    dt, dev = _like(x, dtype, device)
    return empty(*x.shape, dtype=dt, device=dev, requires_grad=requires_grad)


def full_like(x: Any, fill_value: Any, dtype: Any = None, device: Any = None, requires_grad: bool = False) -> Any:
    dt, dev = _like(x, dtype, device)
    return full(x.shape, fill_value, dtype=dt, device=dev, requires_grad=requires_grad)


def randn_like(
    x: Any, dtype: Any = None, device: Any = None, generator: Generator | None = None, requires_grad: bool = False
) -> Any:
    dt, dev = _like(x, dtype, device)
    return randn(*x.shape, generator=generator, dtype=dt, device=dev, requires_grad=requires_grad)


def rand_like(
    x: Any, dtype: Any = None, device: Any = None, generator: Generator | None = None, requires_grad: bool = False
) -> Any:
    dt, dev = _like(x, dtype, device)
    return rand(*x.shape, generator=generator, dtype=dt, device=dev, requires_grad=requires_grad)


def randint_like(
    x: Any, low: int, high: int | None = None, dtype: Any = None, device: Any = None, generator: Generator | None = None
) -> Any:
    dt, dev = _like(x, dtype, device)
    return randint(low, high, x.shape, generator=generator, dtype=dt, device=dev)


__all__ = [
    "arange",
    "as_tensor",
    "empty",
    "empty_like",
    "eye",
    "from_numpy",
    "full",
    "full_like",
    "linspace",
    "normal",
    "ones",
    "ones_like",
    "rand",
    "rand_like",
    "randint",
    "randint_like",
    "randn",
    "randn_like",
    "randperm",
    "tensor",
    "zeros",
    "zeros_like",
]
