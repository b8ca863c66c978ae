"""``FileStore``: a store that processes on one host (or a shared file system) share
through a file, for ``init_method="file:///path"``.

Design note (an append-only log under ``flock``): the file is a header followed by
records ``(kind, key length, value length, key, value)``; a record either sets a key or
deletes it. Every process replays the log into a dictionary, reading only what was
appended since its last look. Writers hold an exclusive ``flock`` while they replay the
tail and append, so read-modify-write operations (``add``, ``compare_set``) are atomic
across processes; readers hold a shared lock. ``flock`` does not separate threads that
share one descriptor, so a per-store mutex serialises the threads of one process.
A record torn by a writer that died mid-append is cut off by the next writer.

Design note (waiting): ``get`` and ``wait`` poll with exponential backoff (1 ms doubling
to 50 ms). Between polls they only compare the file size with what they have replayed,
so idle waiters cost almost nothing.

Design note (life cycle, as in PyTorch): each ``FileStore`` counts itself in the key
``__axonml_filestore__/users`` when it opens. With ``world_size`` given, more users than
``world_size`` means a file left over from an earlier run (its stale keys would let
barriers pass too early), which is refused; and when ``world_size`` stores have closed,
the last one deletes the file. With ``world_size=-1`` the file is never deleted.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import struct
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from typing import Any

from ..errors import RendezvousError
from .store_base import Store, Timeout, apply_add, apply_compare_set

__all__ = ["FileStore"]

logger = logging.getLogger(__name__)

_MAGIC = b"AXONML-FILESTORE v1\n"
_RECORD = struct.Struct("<BII")  # kind, key bytes, value bytes
_SET, _DELETE = 1, 2
_INTERNAL = "__axonml_filestore__/"
_USERS = _INTERNAL + "users"
_CLOSED = _INTERNAL + "closed"
_POLL_FIRST, _POLL_MAX = 0.001, 0.05


class _Log:
    """The open log file and this process's replay of it."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        self.data: dict[str, bytes] = {}
        self.offset = 0  # bytes of the file replayed into data (0: header not checked yet)
        self.version = 0  # bumped on every change to data, so waiters see this process's own writes
        self.mutex = threading.Lock()

    def size(self) -> int:
        return os.fstat(self.fd).st_size

    @contextlib.contextmanager
    def locked(self, exclusive: bool) -> Iterator[None]:
        """Hold the file lock (and the thread mutex) with ``data`` brought up to date."""
        with self.mutex:
            fcntl.flock(self.fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
            try:
                self._replay(exclusive)
                yield
            finally:
                fcntl.flock(self.fd, fcntl.LOCK_UN)

    def _replay(self, exclusive: bool) -> None:
        size = self.size()
        if self.offset == 0:
            if size == 0:
                if not exclusive:
                    return
                os.write(self.fd, _MAGIC)
                size = len(_MAGIC)
            if os.pread(self.fd, len(_MAGIC), 0) != _MAGIC:
                raise RendezvousError(
                    f"file store: {self.path} exists but is not an AxonML file store (bad header); "
                    "pass the path of a new file, or delete this one if it is left over"
                )
            self.offset = len(_MAGIC)
        if size <= self.offset:
            return
        buf = os.pread(self.fd, size - self.offset, self.offset)
        pos = 0
        while pos + _RECORD.size <= len(buf):
            kind, klen, vlen = _RECORD.unpack_from(buf, pos)
            start = pos + _RECORD.size
            end = start + klen + vlen
            if kind not in (_SET, _DELETE):
                raise RendezvousError(f"file store {self.path} is corrupt at byte {self.offset + pos} (record kind {kind})")
            if end > len(buf):
                break
            key = buf[start : start + klen].decode("utf-8")
            if kind == _SET:
                self.data[key] = buf[start + klen : end]
            else:
                self.data.pop(key, None)
            pos = end
        self.offset += pos
        self.version += 1 if pos else 0
        if self.offset < size and exclusive:
            # Only a writer that died mid-append leaves a partial record (writers hold the
            # exclusive lock); cut it off so that the next record starts on a boundary.
            logger.warning("file store %s: dropping a torn record of %d bytes at its end", self.path, size - self.offset)
            os.ftruncate(self.fd, self.offset)

    def append(self, kind: int, key: str, value: bytes = b"") -> None:
        """Append one record; call with the exclusive lock held (so the file ends at ``offset``)."""
        k = key.encode("utf-8")
        view = memoryview(_RECORD.pack(kind, len(k), len(value)) + k + value)
        written = len(view)
        while view:
            view = view[os.write(self.fd, view) :]
        self.offset += written
        self.version += 1
        if kind == _SET:
            self.data[key] = value
        else:
            self.data.pop(key, None)

    def add(self, key: str, amount: int) -> int:
        result = apply_add(key, self.data.get(key), amount)
        self.append(_SET, key, str(result).encode("ascii"))
        return result


def _release(log: _Log, world_size: int) -> None:
    """Count one close; the last of ``world_size`` deletes the file. Runs once per store."""
    try:
        with log.locked(True):
            closed = log.add(_CLOSED, 1)
            if 0 < world_size <= closed:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(log.path)
    except (OSError, RendezvousError) as e:  # at interpreter exit: log, never raise
        logger.warning("file store %s: could not record its close: %s", log.path, e)
    finally:
        os.close(log.fd)


class FileStore(Store):
    """A store in a file shared by processes (``init_method="file:///path"``).

    Args:
        path: the file (a ``file://`` URL is accepted); its directory must exist and be
            visible to every process, on a file system whose ``flock`` works across them.
        world_size: how many processes use the file, or -1 when unknown. When given, a
            file already used by ``world_size`` processes is refused as stale, and the
            file is deleted once ``world_size`` stores have closed.
        timeout: default seconds that ``get``/``wait`` block (300 when None).

    Example::

        store = FileStore("/tmp/job42.store", world_size=2)   # in each of 2 processes
        if store.add("arrived", 1) == 2:
            store.set("all_here", "1")
        store.get("all_here", timeout=30)
        store.close()
    """

    def __init__(self, path: str | os.PathLike, world_size: int = -1, timeout: Timeout = None) -> None:
        super().__init__(timeout)
        path = os.fspath(path)
        if isinstance(path, bytes):
            path = os.fsdecode(path)
        path = path.removeprefix("file://")
        if not path:
            raise ValueError("FileStore needs a file path, got ''")
        if isinstance(world_size, bool) or not isinstance(world_size, int) or world_size == 0 or world_size < -1:
            raise ValueError(f"FileStore world_size must be a positive int, or -1 when unknown; got {world_size!r}")
        self._path = os.path.abspath(path)
        self._world_size = world_size
        directory = os.path.dirname(self._path)
        if not os.path.isdir(directory):
            raise RendezvousError(
                f"file store: directory {directory} of {self._path} does not exist; create it "
                "(on a file system every rank can see) or choose another path"
            )
        try:
            self._log = _Log(self._path)
        except OSError as e:
            raise RendezvousError(f"file store cannot open {self._path}: {e.strerror}") from e
        try:
            with self._log.locked(True):
                users = self._log.add(_USERS, 1)
        except BaseException:
            os.close(self._log.fd)
            raise
        if 0 < world_size < users:
            os.close(self._log.fd)
            raise RendezvousError(
                f"file store {self._path} has been opened by {users} stores but world_size is {world_size}: "
                "it is probably left over from an earlier run (or a rank opened it twice), and its old keys "
                "would break this run's barriers. Delete the file or use a fresh path for every run"
            )
        self._finalizer = weakref.finalize(self, _release, self._log, world_size)

    @property
    def path(self) -> str:
        """The absolute path of the file."""
        return self._path

    @property
    def world_size(self) -> int:
        """How many processes share the file (-1: unknown)."""
        return self._world_size

    @property
    def address(self) -> str:
        return f"file://{self._path}"

    def close(self) -> None:
        """Record this store's close; the last of ``world_size`` deletes the file."""
        self._finalizer()

    def _check_open(self) -> None:
        if not self._finalizer.alive:
            raise RendezvousError(f"file store {self._path} is closed; open a new FileStore")

    def _poll(self, check: Callable[[], Any], timeout: float) -> Any:
        """Evaluate ``check`` under a shared lock until it is truthy or ``timeout`` passes; return its last value."""
        deadline = time.monotonic() + timeout
        delay = _POLL_FIRST
        while True:
            with self._log.locked(False):
                result = check()
                seen = self._log.version
            if result:
                return result
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    with self._log.locked(False):
                        return check()
                time.sleep(min(delay, remaining))
                delay = min(2 * delay, _POLL_MAX)
                # look again when another process appended or a thread of this one wrote
                if self._log.size() != self._log.offset or self._log.version != seen:
                    break

    def _set(self, key: str, value: bytes) -> None:
        self._check_open()
        with self._log.locked(True):
            self._log.append(_SET, key, value)

    def _get(self, key: str, timeout: float) -> bytes | None:
        self._check_open()
        # wrapped in a tuple so that an empty value still counts as found
        found = self._poll(lambda: (self._log.data[key],) if key in self._log.data else None, timeout)
        return found[0] if found else None

    def _add(self, key: str, amount: int) -> int:
        self._check_open()
        with self._log.locked(True):
            return self._log.add(key, amount)

    def _compare_set(self, key: str, expected: bytes, desired: bytes) -> bytes:
        self._check_open()
        with self._log.locked(True):
            new, result = apply_compare_set(self._log.data.get(key), expected, desired)
            if new is not None:
                self._log.append(_SET, key, new)
            return result

    def _delete(self, key: str) -> bool:
        self._check_open()
        with self._log.locked(True):
            if key not in self._log.data:
                return False
            self._log.append(_DELETE, key)
            return True

    def _wait(self, keys: list[str], timeout: float) -> list[str]:
        self._check_open()
        self._poll(lambda: all(k in self._log.data for k in keys), timeout)
        with self._log.locked(False):
            return [k for k in keys if k not in self._log.data]

    def _num_keys(self) -> int:
        self._check_open()
        with self._log.locked(False):
            return sum(1 for k in self._log.data if not k.startswith(_INTERNAL))
