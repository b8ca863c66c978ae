"""Memory statistics per device: current and peak bytes held by tensor storage.

Note on accounting: a tensor that owns its array (not a view) holds a ``Storage`` token
that adds the array's ``nbytes`` when created and subtracts them when collected; views
share their base's token, and a graph node that saves an array for backward holds its
token, so saved activations count until the graph is freed. FSDP's memory tests read
these numbers, so they count storage, not Python objects.
"""

from __future__ import annotations

from collections import defaultdict

from .device import as_device


class _Stats:
    __slots__ = ("current", "peak", "allocs")

    def __init__(self) -> None:
        self.current = 0
        self.peak = 0
        self.allocs = 0


_stats: dict[str, _Stats] = defaultdict(_Stats)


class Storage:
    """Accounting token of one tensor storage: counted while a tensor, a view of it, or a
    saved-for-backward reference holds it; uncounted when the last one goes."""

    __slots__ = ("stats", "nbytes")

    def __del__(self) -> None:
        self.stats.current -= self.nbytes


_new = object.__new__


def new_storage(device_key: str, nbytes: int) -> Storage:
    """Count ``nbytes`` on ``device_key`` until the returned token is collected."""
    st = _stats[device_key]
    s = _new(Storage)
    s.stats = st
    s.nbytes = nbytes
    cur = st.current + nbytes
    st.current = cur
    st.allocs += 1
    if cur > st.peak:
        st.peak = cur
    return s


def resize_storage(token: Storage, nbytes: int) -> None:
    """Make ``token`` count ``nbytes`` from now on: its storage was released or refilled in
    place (FSDP returns the pages of an unsharded parameter to the OS between uses)."""
    st = token.stats
    cur = st.current + nbytes - token.nbytes
    st.current = cur
    token.nbytes = nbytes
    if cur > st.peak:
        st.peak = cur


def _key(device: object) -> str:
    """The canonical name storage is counted under ("cuda" and "cuda:0" are one device)."""
    return as_device(device)._key


def memory_stats(device: object = "cpu") -> dict[str, int]:
    """Return ``{"current_bytes", "peak_bytes", "num_allocs"}`` for ``device`` (a Device or
    a name: ``"cpu"``, ``"cuda"`` meaning ``"cuda:0"``, ``"cuda:N"``).

    Example::

        ax.runtime.memory_stats("cpu")["peak_bytes"]
    """
    st = _stats[_key(device)]
    return {"current_bytes": st.current, "peak_bytes": st.peak, "num_allocs": st.allocs}


def reset_peak_memory_stats(device: object = "cpu") -> None:
    """Reset the peak of ``device`` to its current value."""
    st = _stats[_key(device)]
    st.peak = st.current
