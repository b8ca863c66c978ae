"""Memory statistics per device: current and peak bytes held by tensor storage.

Note on accounting: a tensor that owns its array (not a view) holds a ``Storage`` token
that adds the array's ``nbytes`` when created and subtracts them when collected; views
share their base's token, and a graph node that saves an array for backward holds its
token, so saved activations count until the graph is freed. FSDP's memory tests read these numbers, so
they count storage, not Python objects.
"""

from __future__ import annotations

from collections import defaultdict

_current: dict[str, int] = defaultdict(int)
_peak: dict[str, int] = defaultdict(int)
_allocs: dict[str, int] = defaultdict(int)


def track_alloc(device_key: str, nbytes: int) -> None:
    cur = _current[device_key] + nbytes
    _current[device_key] = cur
    _allocs[device_key] += 1
    if cur > _peak[device_key]:
        _peak[device_key] = cur


def track_free(device_key: str, nbytes: int) -> None:
    _current[device_key] -= nbytes


def memory_stats(device: object = "cpu") -> dict[str, int]:
    """Return ``{"current_bytes", "peak_bytes", "num_allocs"}`` for ``device``.

    Example::

        ax.runtime.memory_stats("cpu")["peak_bytes"]
    """
    key = str(device)
    return {
        "current_bytes": _current[key],
        "peak_bytes": _peak[key],
        "num_allocs": _allocs[key],
    }


def reset_peak_memory_stats(device: object = "cpu") -> None:
    """Reset the peak of ``device`` to its current value."""
    key = str(device)
    _peak[key] = _current[key]


class Storage:
    """Accounting token of one tensor storage: counted while a tensor, a view of it, or a
    saved-for-backward reference holds it; uncounted when the last one goes."""

    __slots__ = ("key", "nbytes")

    def __del__(self) -> None:
        try:
            _current[self.key] -= self.nbytes
        except Exception:  # interpreter shutdown
            pass


_new = object.__new__


def new_storage(device_key: str, nbytes: int) -> Storage:
    """Count ``nbytes`` on ``device_key`` until the returned token is collected."""
    s = _new(Storage)
    s.key = device_key
    s.nbytes = nbytes
    cur = _current[device_key] + nbytes
    _current[device_key] = cur
    _allocs[device_key] += 1
    if cur > _peak[device_key]:
        _peak[device_key] = cur
    return s
