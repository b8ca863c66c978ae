"""Autocast: run matmul-like ops in a lower precision and keep precision-sensitive ops
(reductions, normalizations, losses) in float32.

Note: the state is thread-local. Op modules ask :func:`lower_dtype` (matmul-like ops
cast their floating inputs to it) and :func:`upcast_dtype` (float32-list ops cast their
low-precision inputs to float32). Which op is in which list mirrors PyTorch's CPU
autocast, so output dtypes match it.
"""

from __future__ import annotations

import functools
import threading
from typing import Any, Callable

from ..errors import DTypeError
from ..runtime.dtypes import DType, bfloat16, float16, float32, get_dtype


class _State(threading.local):
    def __init__(self) -> None:
        self.enabled = False
        self.dtype: DType = bfloat16
        self.device_type = "cpu"
        self.cache_enabled = True


state = _State()


class autocast:
    """``with ax.autocast("cpu", dtype=ax.bfloat16):`` (also ``"cuda"`` with float16).

    Inside, matmul/linear/conv/bmm/einsum compute in ``dtype``; softmax-like, norm and
    loss ops compute in float32. Also usable as a decorator.
    """

    def __init__(self, device_type: str = "cpu", dtype: Any = None, enabled: bool = True, cache_enabled: bool = True) -> None:
        if device_type not in ("cpu", "cuda"):
            raise ValueError(f"autocast device_type must be 'cpu' or 'cuda', got {device_type!r}")
        if dtype is None:
            dtype = bfloat16 if device_type == "cpu" else float16
        dtype = get_dtype(dtype)
        if dtype not in (bfloat16, float16):
            raise DTypeError(f"autocast dtype must be bfloat16 or float16, got {dtype}")
        self.device_type = device_type
        self.dtype = dtype
        self.enabled = bool(enabled)

    def __enter__(self) -> "autocast":
        self._prev = (state.enabled, state.dtype, state.device_type)
        state.enabled = self.enabled
        state.dtype = self.dtype
        state.device_type = self.device_type
        return self

    def __exit__(self, *exc: Any) -> None:
        state.enabled, state.dtype, state.device_type = self._prev

    def __call__(self, fn: Callable) -> Callable:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with autocast(self.device_type, self.dtype, self.enabled):
                return fn(*args, **kwargs)

        return wrapper


def is_autocast_enabled(device_type: str = "cpu") -> bool:
    return state.enabled and state.device_type == device_type


def lower_dtype(device_type: str) -> DType | None:
    """The dtype matmul-like ops on ``device_type`` should compute in, or None."""
    if state.enabled and state.device_type == device_type:
        return state.dtype
    return None


def upcast_dtype(device_type: str, dtype: DType) -> DType | None:
    """float32 when a float32-list op gets a low-precision input under autocast."""
    if state.enabled and state.device_type == device_type and dtype in (float16, bfloat16):
        return float32
    return None
