"""``Device``: where a tensor's array lives and which array module (``xp``) computes it.

Note on laziness: ``cpu`` uses NumPy; ``cuda`` imports CuPy only when a CUDA device is
first used, and says clearly whether the package or the GPU is missing. Device objects
are interned, so ``a.device is b.device`` is the cheap same-device test.
"""

from __future__ import annotations

import importlib
from typing import Any

import numpy as np

from ..._env import get_flag
from ...errors import DeviceError

_cupy: Any = None


def _import_cupy() -> Any:
    global _cupy
    if _cupy is None:
        try:
            _cupy = importlib.import_module("cupy")
        except ImportError as e:  # pragma: no cover - depends on the machine
            raise DeviceError(
                "CUDA device requested but CuPy is not installed "
                f"({e}); install it with `pip install axonml[cuda]` (cupy-cuda12x)"
            ) from e
    return _cupy


def cuda_available() -> bool:
    """True when CuPy imports and sees at least one CUDA GPU."""
    try:
        cp = _import_cupy()
        return bool(cp.cuda.is_available())
    except Exception:
        return False


def cuda_device_count() -> int:
    """Number of visible CUDA GPUs (0 without CuPy or a GPU)."""
    if not cuda_available():
        return 0
    return int(_import_cupy().cuda.runtime.getDeviceCount())


class Device:
    """A compute device: ``Device("cpu")`` or ``Device("cuda:0")``.

    Attributes: ``type`` ("cpu" or "cuda"), ``index`` (None for cpu), ``xp`` (NumPy or
    CuPy). Use :func:`as_device` to accept strings, Devices or None.
    """

    __slots__ = ("type", "index", "_key", "_xp")
    _interned: dict[str, "Device"] = {}

    def __new__(cls, spec: str = "cpu", index: int | None = None) -> "Device":
        if isinstance(spec, Device):
            return spec
        key = spec if index is None else f"{spec}:{index}"
        dev = cls._interned.get(key)
        if dev is not None:
            return dev
        typ, _, idx = key.partition(":")
        if typ not in ("cpu", "cuda"):
            raise DeviceError(f"unknown device {key!r}; use 'cpu', 'cuda' or 'cuda:N'")
        if typ == "cpu":
            if idx not in ("", "0"):
                raise DeviceError(f"cpu device takes no index other than 0, got {key!r}")
            ind = None
        else:
            try:
                ind = int(idx) if idx else 0
            except ValueError:
                raise DeviceError(f"bad CUDA device index in {key!r}; use 'cuda:N'") from None
            if ind < 0:
                raise DeviceError(f"negative CUDA device index in {key!r}")
        canon = "cpu" if typ == "cpu" else f"cuda:{ind}"
        dev = cls._interned.get(canon)
        if dev is None:
            dev = object.__new__(cls)
            dev.type = typ
            dev.index = ind
            dev._key = canon
            dev._xp = np if typ == "cpu" else None
            cls._interned[canon] = dev
        cls._interned[key] = dev
        return dev

    @property
    def xp(self) -> Any:
        """The array module of this device (NumPy or CuPy)."""
        if self._xp is None:
            cp = _import_cupy()
            if not cp.cuda.is_available():
                raise DeviceError(
                    f"device {self._key} requested but no CUDA GPU is available "
                    "(cupy.cuda.is_available() is False); use device='cpu'"
                )
            n = cp.cuda.runtime.getDeviceCount()
            if self.index >= n:
                raise DeviceError(f"device {self._key} requested but only {n} GPU(s) exist")
            self._xp = cp
        return self._xp

    def context(self) -> Any:
        """A context manager making this device current (a no-op on CPU)."""
        if self.type == "cpu":
            import contextlib

            return contextlib.nullcontext()
        return self.xp.cuda.Device(self.index)

    def synchronize(self) -> None:
        """Wait for all work queued on this device."""
        if self.type == "cuda":
            with self.xp.cuda.Device(self.index):
                self.xp.cuda.runtime.deviceSynchronize()

    def to_host(self, array: Any) -> np.ndarray:
        """Copy ``array`` to a NumPy array."""
        if self.type == "cpu":
            return array
        return self.xp.asnumpy(array)

    def from_host(self, array: np.ndarray) -> Any:
        """Copy a host array onto this device."""
        if self.type == "cpu":
            return array
        with self.xp.cuda.Device(self.index):
            return self.xp.asarray(array)

    def __repr__(self) -> str:
        return f"device(type='{self.type}'" + ("" if self.index is None else f", index={self.index}") + ")"

    def __str__(self) -> str:
        return self._key

    def __eq__(self, other: object) -> bool:
        if isinstance(other, str):
            try:
                other = Device(other)
            except DeviceError:
                return False
        return self is other

    def __hash__(self) -> int:
        return hash(self._key)

    def __reduce__(self):
        return (Device, (self._key,))


cpu = Device("cpu")


def as_device(device: Any) -> Device:
    """Accept a Device, a string, an int (CUDA index) or None (the CPU)."""
    if device is None:
        return cpu
    if isinstance(device, Device):
        return device
    if isinstance(device, int):
        return Device("cuda", device)
    if isinstance(device, str):
        return Device(device)
    dev_type = getattr(device, "type", None)  # e.g. a torch.device
    if isinstance(dev_type, str):
        idx = getattr(device, "index", None)
        return Device(dev_type if idx is None else f"{dev_type}:{idx}")
    raise DeviceError(f"cannot interpret {device!r} as a device; use 'cpu' or 'cuda:N'")


_default_device: Device | None = None


def get_default_device() -> Device:
    """The device creation ops use when none is given: ``set_default_device``'s, else the
    ``AXONML_DEFAULT_DEVICE`` flag (``cpu`` unless set)."""
    global _default_device
    if _default_device is None:
        spec = get_flag("AXONML_DEFAULT_DEVICE").strip() or "cpu"
        try:
            _default_device = as_device(spec)
        except DeviceError as e:
            raise DeviceError(f"AXONML_DEFAULT_DEVICE={spec!r}: {e}") from None
    return _default_device


def set_default_device(device: Any) -> None:
    """Make creation ops (``tensor``, ``zeros``, ``randn``, layers' parameters, ...) put new
    tensors on ``device`` when they are given none, like ``torch.set_default_device``.
    ``None`` restores the CPU. ``from_numpy`` and the ``*_like`` ops are not affected."""
    global _default_device
    dev = cpu if device is None else as_device(device)
    if dev.type == "cuda":
        _ = dev.xp  # a clear DeviceError now when CUDA is unusable, not at the first tensor
    _default_device = dev


def creation_device(device: Any) -> Device:
    """``device`` as a Device, or the default device when it is None (for creation ops)."""
    return get_default_device() if device is None else as_device(device)


def get_array_module(array: Any) -> Any:
    """NumPy for NumPy arrays, CuPy for CuPy arrays."""
    if isinstance(array, np.ndarray) or _cupy is None:
        return np
    return _cupy.get_array_module(array)
