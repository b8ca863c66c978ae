"""``MemoryStore``: a store shared by the threads of one process.

Used by the in-process threaded backend and by tests. One condition variable guards the
dictionary; every change wakes the waiters, which re-check their keys. Waiting releases
the lock, so a ``get`` that blocks never stops a ``set`` from another thread.
"""

from __future__ import annotations

import threading

from .store_base import Store, Timeout, apply_add, apply_compare_set

__all__ = ["MemoryStore"]


class MemoryStore(Store):
    """A thread-safe in-memory store (PyTorch's ``HashStore``).

    Args:
        timeout: default seconds that ``get``/``wait`` block (300 when None).

    Example::

        store = MemoryStore()
        threading.Thread(target=lambda: store.set("ready", "1")).start()
        store.get("ready", timeout=5.0)   # b"1", once the thread has set it
    """

    def __init__(self, timeout: Timeout = None) -> None:
        super().__init__(timeout)
        self._data: dict[str, bytes] = {}
        self._changed = threading.Condition(threading.Lock())

    @property
    def address(self) -> str:
        return f"memory://{id(self):x}"

    def _set(self, key: str, value: bytes) -> None:
        with self._changed:
            self._data[key] = value
            self._changed.notify_all()

    def _get(self, key: str, timeout: float) -> bytes | None:
        with self._changed:
            if self._changed.wait_for(lambda: key in self._data, timeout):
                return self._data[key]
            return None

    def _add(self, key: str, amount: int) -> int:
        with self._changed:
            result = apply_add(key, self._data.get(key), amount)
            self._data[key] = str(result).encode("ascii")
            self._changed.notify_all()
            return result

    def _compare_set(self, key: str, expected: bytes, desired: bytes) -> bytes:
        with self._changed:
            new, result = apply_compare_set(self._data.get(key), expected, desired)
            if new is not None:
                self._data[key] = new
                self._changed.notify_all()
            return result

    def _delete(self, key: str) -> bool:
        with self._changed:
            return self._data.pop(key, None) is not None

    def _wait(self, keys: list[str], timeout: float) -> list[str]:
        with self._changed:
            self._changed.wait_for(lambda: all(k in self._data for k in keys), timeout)
            return [k for k in keys if k not in self._data]

    def _num_keys(self) -> int:
        with self._changed:
            return len(self._data)
