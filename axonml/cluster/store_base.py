"""The key-value store interface that process groups bootstrap from, and ``PrefixStore``.

A store maps string keys to byte values. Ranks use it to exchange addresses, count
arrivals (``add``), elect a leader (``compare_set``) and wait for each other (``get`` and
``wait`` block until a key exists). The concrete stores are ``MemoryStore`` (threads of
one process), ``FileStore`` (processes sharing a file) and ``GrpcStore`` (a client of
``GrpcStoreServer``, for processes on many hosts).

Design note (bounded waits): no call waits forever. Every blocking call takes a
``timeout`` (seconds or a ``datetime.timedelta``); ``None`` means the store's default
(300 s unless the store was built with another, see :meth:`Store.set_timeout`). When the
time is up the call raises :class:`axonml.errors.RendezvousError` naming the operation,
the missing key(s), the store's address and the timeout.

Design note (one implementation of the rules): the public methods of :class:`Store`
validate arguments, convert values to bytes, resolve timeouts and raise the errors; the
concrete stores implement only the small ``_``-prefixed primitives. The value rules of
``add`` and ``compare_set`` live in :func:`apply_add` and :func:`apply_compare_set`, used by
every store (the gRPC server included), so all stores behave alike. They follow PyTorch's
``torch.distributed.Store``: ``add`` stores the integer as decimal ASCII and counts a
missing key as 0; ``compare_set`` on a missing key sets it only when ``expected`` is empty.
"""

from __future__ import annotations

import abc
import datetime
import math
import operator
from collections.abc import Iterable
from typing import Union

from ..errors import RendezvousError, StoreTimeout

__all__ = ["DEFAULT_TIMEOUT", "PrefixStore", "Store", "StoreValue", "Timeout", "apply_add", "apply_compare_set"]

#: Default seconds a blocking store call waits before raising ``RendezvousError``.
DEFAULT_TIMEOUT = 300.0

_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1

StoreValue = Union[bytes, bytearray, memoryview, str]
Timeout = Union[float, int, datetime.timedelta, None]


def to_bytes(value: StoreValue, what: str = "value") -> bytes:
    """``value`` as bytes: str is UTF-8 encoded, bytes-like objects are copied."""
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    raise TypeError(f"store {what} must be bytes or str, got {type(value).__name__}: {value!r:.80}")


def check_key(key: str) -> str:
    """Validate one key: a non-empty str."""
    if not isinstance(key, str):
        raise TypeError(f"store keys must be str, got {type(key).__name__}: {key!r:.80}")
    if not key:
        raise ValueError("store keys must be non-empty strings, got ''")
    return key


def check_keys(keys: str | Iterable[str]) -> list[str]:
    """Validate a list of keys (a single str counts as one key, not as its characters)."""
    if isinstance(keys, str):
        keys = [keys]
    try:
        keys = list(keys)
    except TypeError:
        raise TypeError(f"store wait needs a list of str keys, got {type(keys).__name__}") from None
    return [check_key(k) for k in keys]


def timeout_seconds(timeout: Timeout, default: float) -> float:
    """Seconds from a float, an int or a ``timedelta``; ``None`` gives ``default``."""
    if timeout is None:
        return default
    if isinstance(timeout, datetime.timedelta):
        seconds = timeout.total_seconds()
    elif isinstance(timeout, (int, float)) and not isinstance(timeout, bool):
        seconds = float(timeout)
    else:
        raise TypeError(f"store timeout must be seconds (float) or a datetime.timedelta, got {type(timeout).__name__}")
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"store timeout must be a finite number of seconds >= 0, got {seconds}; no store call waits forever")
    return seconds


def apply_add(key: str, current: bytes | None, amount: int) -> int:
    """The value ``add(key, amount)`` stores, given the key's ``current`` value (None: missing)."""
    if current is None:
        base = 0
    else:
        try:
            base = int(current.decode("ascii"))
        except (UnicodeDecodeError, ValueError):
            raise ValueError(
                f"store add on key {key!r}: its value {current[:40]!r} is not a decimal integer; "
                "add only works on keys written by add or set to an integer"
            ) from None
    result = base + amount
    if not _INT64_MIN <= result <= _INT64_MAX:
        raise ValueError(f"store add on key {key!r}: {base} + {amount} = {result} does not fit in int64")
    return result


def apply_compare_set(current: bytes | None, expected: bytes, desired: bytes) -> tuple[bytes | None, bytes]:
    """``(value to store or None for no change, value to return)`` for ``compare_set``.

    As in PyTorch: a missing key is set to ``desired`` only when ``expected`` is empty;
    a missing key with a non-empty ``expected`` returns ``expected`` and changes nothing.
    """
    if current is None:
        return (desired, desired) if expected == b"" else (None, expected)
    if current == expected:
        return desired, desired
    return None, current


def timeout_error(op: str, keys: list[str], address: str, timeout: float) -> RendezvousError:
    """The error every store raises when a blocking call runs out of time."""
    shown = keys if len(keys) <= 8 else keys[:8] + [f"... ({len(keys) - 8} more)"]
    return StoreTimeout(
        f"store {op} at {address} timed out after {timeout:g} s waiting for key(s) {shown}; "
        "the rank that sets them may have died, hung or not started yet: check its logs, "
        "or pass a larger timeout (per call, or for the store with set_timeout)"
    )


class Store(abc.ABC):
    """A key-value store with waiting reads; the base of every AxonML store.

    Keys are non-empty ``str``; values are ``bytes`` (a ``str`` is stored UTF-8 encoded).
    Blocking calls (``get``, ``wait``) take ``timeout`` in seconds or as a ``timedelta``;
    ``None`` uses the store's default (:attr:`timeout`).

    Example::

        store = MemoryStore()
        store.set("addr", "10.0.0.1:29500")
        store.get("addr")            # b"10.0.0.1:29500"
        store.add("arrived", 1)      # 1
        store.wait(["addr"], timeout=5.0)
    """

    def __init__(self, timeout: Timeout = None) -> None:
        self._timeout = timeout_seconds(timeout, DEFAULT_TIMEOUT)

    # -- configuration ------------------------------------------------------------------
    @property
    def timeout(self) -> float:
        """Default seconds a blocking call waits."""
        return self._timeout

    def set_timeout(self, timeout: float | datetime.timedelta) -> None:
        """Change the default timeout of blocking calls (seconds or a ``timedelta``)."""
        self._timeout = timeout_seconds(timeout, self._timeout)

    @property
    @abc.abstractmethod
    def address(self) -> str:
        """Where the store lives, for messages (``memory://...``, ``file://...``, ``host:port``)."""

    # -- public API -----------------------------------------------------------------------
    def set(self, key: str, value: StoreValue) -> None:
        """Set ``key`` to ``value`` (bytes, or str stored UTF-8 encoded), replacing any old value."""
        self._set(check_key(key), to_bytes(value))

    def get(self, key: str, timeout: Timeout = None) -> bytes:
        """The value of ``key``, waiting up to ``timeout`` seconds for it to be set.

        Raises:
            RendezvousError: the key was not set in time.
        """
        key = check_key(key)
        seconds = timeout_seconds(timeout, self._timeout)
        value = self._get(key, seconds)
        if value is None:
            raise timeout_error(f"get({key!r})", [key], self.address, seconds)
        return value

    def add(self, key: str, amount: int) -> int:
        """Atomically add ``amount`` to the integer at ``key`` (missing counts as 0); return the new value.

        Example: every rank calls ``store.add("arrived", 1)``; the one that gets ``world_size``
        arrived last.
        """
        key = check_key(key)
        try:
            amount = operator.index(amount)
        except TypeError:
            raise TypeError(f"store add on key {key!r} needs an integer amount, got {type(amount).__name__}") from None
        if not _INT64_MIN <= amount <= _INT64_MAX:
            raise ValueError(f"store add on key {key!r}: amount {amount} does not fit in int64")
        return self._add(key, amount)

    def compare_set(self, key: str, expected: StoreValue, desired: StoreValue) -> bytes:
        """Set ``key`` to ``desired`` if its value equals ``expected``; return the value now stored.

        A missing key counts as matching an empty ``expected`` (so ``compare_set(k, "", v)``
        creates ``k``). As in PyTorch, a missing key with a non-empty ``expected`` returns
        ``expected`` unchanged. The caller won when the result equals ``desired``.
        """
        return self._compare_set(check_key(key), to_bytes(expected, "expected value"), to_bytes(desired, "desired value"))

    def delete(self, key: str) -> bool:
        """Remove ``key``; True when it existed."""
        return self._delete(check_key(key))

    def delete_key(self, key: str) -> bool:
        """PyTorch's name for :meth:`delete`."""
        return self.delete(key)

    def wait(self, keys: str | Iterable[str], timeout: Timeout = None) -> None:
        """Block until every key in ``keys`` is set, up to ``timeout`` seconds.

        Raises:
            RendezvousError: some keys were still missing; the message names them.
        """
        keys = check_keys(keys)
        seconds = timeout_seconds(timeout, self._timeout)
        if not keys:
            return
        missing = self._wait(keys, seconds)
        if missing:
            raise timeout_error("wait", missing, self.address, seconds)

    def num_keys(self) -> int:
        """How many keys the store holds (as in PyTorch, a ``PrefixStore`` counts its whole store)."""
        return self._num_keys()

    def close(self) -> None:
        """Release the store's resources (connections, files). Safe to call twice."""
        return None  # nothing to release by default

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.address}, timeout={self._timeout:g})"

    # -- primitives that concrete stores implement ---------------------------------------
    @abc.abstractmethod
    def _set(self, key: str, value: bytes) -> None: ...

    @abc.abstractmethod
    def _get(self, key: str, timeout: float) -> bytes | None:
        """The value, or None when ``key`` was still missing after ``timeout`` seconds."""

    @abc.abstractmethod
    def _add(self, key: str, amount: int) -> int: ...

    @abc.abstractmethod
    def _compare_set(self, key: str, expected: bytes, desired: bytes) -> bytes: ...

    @abc.abstractmethod
    def _delete(self, key: str) -> bool: ...

    @abc.abstractmethod
    def _wait(self, keys: list[str], timeout: float) -> list[str]:
        """The keys still missing after waiting up to ``timeout`` seconds (empty: all set)."""

    @abc.abstractmethod
    def _num_keys(self) -> int: ...


class PrefixStore(Store):
    """A view of ``store`` in which every key is ``f"{prefix}/{key}"``.

    Process groups use it to keep their keys apart: the prefix holds the group name and
    the rendezvous generation, so a restarted job never reads a stale key. Prefix stores
    nest. Closing a ``PrefixStore`` does not close the store under it.

    Args:
        prefix: a non-empty namespace, e.g. ``"default_pg/3"``.
        store: the store to wrap.
        timeout: default wait in seconds; ``None`` takes ``store.timeout``.

    Example::

        base = MemoryStore()
        group = PrefixStore("default_pg/0", base)
        group.set("rank0_addr", "10.0.0.1:29500")
        base.get("default_pg/0/rank0_addr")   # b"10.0.0.1:29500"
    """

    def __init__(self, prefix: str, store: Store, timeout: Timeout = None) -> None:
        if not isinstance(prefix, str) or not prefix:
            raise ValueError(f"PrefixStore needs a non-empty str prefix, got {prefix!r}")
        if not isinstance(store, Store):
            raise TypeError(f"PrefixStore wraps an axonml Store, got {type(store).__name__}")
        super().__init__(store.timeout if timeout is None else timeout)
        self._prefix = prefix
        self._store = store

    @property
    def prefix(self) -> str:
        """The prefix put in front of every key (without the trailing ``/``)."""
        return self._prefix

    @property
    def underlying_store(self) -> Store:
        """The wrapped store (PyTorch's name)."""
        return self._store

    @property
    def address(self) -> str:
        return f"{self._store.address} (prefix {self._prefix!r})"

    def _full(self, key: str) -> str:
        return f"{self._prefix}/{key}"

    def _strip(self, key: str) -> str:
        return key[len(self._prefix) + 1 :]

    def _set(self, key: str, value: bytes) -> None:
        self._store._set(self._full(key), value)

    def _get(self, key: str, timeout: float) -> bytes | None:
        return self._store._get(self._full(key), timeout)

    def _add(self, key: str, amount: int) -> int:
        return self._store._add(self._full(key), amount)

    def _compare_set(self, key: str, expected: bytes, desired: bytes) -> bytes:
        return self._store._compare_set(self._full(key), expected, desired)

    def _delete(self, key: str) -> bool:
        return self._store._delete(self._full(key))

    def _wait(self, keys: list[str], timeout: float) -> list[str]:
        missing = self._store._wait([self._full(k) for k in keys], timeout)
        return [self._strip(k) for k in missing]  # the caller's names for the missing keys

    def _num_keys(self) -> int:
        return self._store._num_keys()
