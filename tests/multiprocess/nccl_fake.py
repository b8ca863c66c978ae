"""A fake CuPy/NCCL runtime for testing the ``nccl`` backend without a GPU.

It implements the seam of ``axonml.collectives.backends.nccl_support.CudaRuntime`` on
NumPy arrays: "device pointers" are host addresses (``a.ctypes.data``) and the fake
communicator reads and writes memory through them, so the backend's buffer arithmetic
(offsets, byte counts, dtype and op codes) is exercised for real. Ranks are threads; the
communicators of one unique id meet in a shared :class:`FakeWorld`. Collective calls run
synchronously; calls between ``group_start`` and ``group_end`` are queued and run at
``group_end`` (sends first, so that paired send/recv never block). Events are "done" unless
the runtime is told to ``hold`` them, which lets tests model a collective still running on
the GPU. Nothing here is NCCL: it checks the backend's logic, not NCCL's.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import threading
import time

import ml_dtypes
import numpy as np

CONSTS = {
    "NCCL_SUM": 0, "NCCL_PROD": 1, "NCCL_MAX": 2, "NCCL_MIN": 3, "NCCL_AVG": 4,
    "NCCL_INT8": 0, "NCCL_UINT8": 1, "NCCL_INT32": 2, "NCCL_UINT32": 3, "NCCL_INT64": 4, "NCCL_UINT64": 5,
    "NCCL_FLOAT16": 6, "NCCL_FLOAT32": 7, "NCCL_FLOAT64": 8, "NCCL_BFLOAT16": 9,
}
DTYPES = {0: np.int8, 1: np.uint8, 2: np.int32, 3: np.uint32, 4: np.int64, 5: np.uint64, 6: np.float16, 7: np.float32,
          8: np.float64, 9: ml_dtypes.bfloat16}

_WORLDS: dict[tuple, "FakeWorld"] = {}
_LOCK = threading.Lock()


def mem(ptr: int, nbytes: int, dtype=np.uint8) -> np.ndarray:
    """A writable NumPy view of ``nbytes`` bytes at address ``ptr``."""
    if nbytes == 0:
        return np.empty(0, dtype)
    raw = np.ctypeslib.as_array((ctypes.c_ubyte * nbytes).from_address(ptr))
    return raw.view(dtype)


def reduce_values(vals: list, op: int) -> np.ndarray:
    stack = np.stack(vals)
    if op == 0:
        return stack.sum(axis=0, dtype=stack.dtype)
    if op == 1:
        return stack.prod(axis=0, dtype=stack.dtype)
    if op == 2:
        return stack.max(axis=0)
    if op == 3:
        return stack.min(axis=0)
    if op == 4:
        return (stack.sum(axis=0, dtype=stack.dtype) / len(vals)).astype(stack.dtype)
    raise ValueError(f"fake NCCL: unknown op {op}")


class FakeWorld:
    """The shared state of the fake communicators of one unique id."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.cv = threading.Condition()
        self.joined = 0
        self.slots: dict = {}
        self.mail: dict = {}
        self.aborted = False

    def wait_for(self, pred, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not pred():
            if self.aborted:
                raise RuntimeError(f"fake NCCL: communicator aborted during {what}")
            left = deadline - time.monotonic()
            if left <= 0:
                raise RuntimeError(f"fake NCCL: {what} timed out")
            self.cv.wait(min(left, 0.05))

    def exchange(self, key: int, rank: int, value, timeout: float = 10.0) -> list:
        with self.cv:
            slot = self.slots.setdefault(key, [[None] * self.size, 0, 0])
            slot[0][rank] = value
            slot[1] += 1
            self.cv.notify_all()
            self.wait_for(lambda: slot[1] == self.size, timeout, f"collective #{key}")
            slot[2] += 1
            if slot[2] == self.size:
                del self.slots[key]
            return slot[0]

    def post(self, src: int, dst: int, data: np.ndarray) -> None:
        with self.cv:
            self.mail.setdefault((src, dst), []).append(data)
            self.cv.notify_all()

    def take(self, src: int, dst: int, timeout: float = 10.0) -> np.ndarray:
        with self.cv:
            box = self.mail.setdefault((src, dst), [])
            self.wait_for(lambda: bool(box), timeout, f"recv from {src}")
            return box.pop(0)

    def abort(self) -> None:
        with self.cv:
            self.aborted = True
            self.cv.notify_all()


class FakeComm:
    """A fake ``NcclCommunicator`` (cupy.cuda.nccl's method names and argument order)."""

    def __init__(self, rt: "FakeRuntime", world: FakeWorld, rank: int) -> None:
        self.rt, self.world, self.rank = rt, world, rank
        self.calls = 0
        self.async_error: str | None = None
        self.aborted = self.destroyed = False

    def _do(self, name: str, *args) -> None:
        self.rt.log.append(("nccl", name))
        if self.rt.depth:
            self.rt.queue.append((self, name, args))
        else:
            getattr(self, "_" + name)(*args)

    def _key(self) -> int:
        self.calls += 1
        return self.calls

    # the public API (queued inside groups)
    def allReduce(self, send, recv, count, dt, op, stream):
        self._do("allReduce", send, recv, count, dt, op)

    def reduce(self, send, recv, count, dt, op, root, stream):
        self._do("reduce", send, recv, count, dt, op, root)

    def broadcast(self, send, recv, count, dt, root, stream):
        self._do("broadcast", send, recv, count, dt, root)

    def allGather(self, send, recv, count, dt, stream):
        self._do("allGather", send, recv, count, dt)

    def reduceScatter(self, send, recv, count, dt, op, stream):
        self._do("reduceScatter", send, recv, count, dt, op)

    def send(self, buf, count, dt, peer, stream):
        self._do("send", buf, count, dt, peer)

    def recv(self, buf, count, dt, peer, stream):
        self._do("recv", buf, count, dt, peer)

    def check_async_error(self):
        if self.async_error:
            raise RuntimeError(f"NCCL_ERROR_REMOTE: {self.async_error}")

    def abort(self):
        self.aborted = True
        self.world.abort()

    def destroy(self):
        self.destroyed = True

    # the operations
    def _allReduce(self, send, recv, count, dt, op):
        d = np.dtype(DTYPES[dt])
        vals = self.world.exchange(self._key(), self.rank, mem(send, count * d.itemsize, d).copy())
        mem(recv, count * d.itemsize, d)[...] = reduce_values(vals, op)

    def _reduce(self, send, recv, count, dt, op, root):
        d = np.dtype(DTYPES[dt])
        vals = self.world.exchange(self._key(), self.rank, mem(send, count * d.itemsize, d).copy())
        if self.rank == root:
            mem(recv, count * d.itemsize, d)[...] = reduce_values(vals, op)

    def _broadcast(self, send, recv, count, dt, root):
        n = count * np.dtype(DTYPES[dt]).itemsize
        vals = self.world.exchange(self._key(), self.rank, mem(send, n).copy() if self.rank == root else None)
        mem(recv, n)[...] = vals[root]

    def _allGather(self, send, recv, count, dt):
        n = count * np.dtype(DTYPES[dt]).itemsize
        vals = self.world.exchange(self._key(), self.rank, mem(send, n).copy())
        mem(recv, n * self.world.size)[...] = np.concatenate(vals)

    def _reduceScatter(self, send, recv, count, dt, op):
        d = np.dtype(DTYPES[dt])
        vals = self.world.exchange(self._key(), self.rank, mem(send, count * d.itemsize * self.world.size, d).copy())
        mem(recv, count * d.itemsize, d)[...] = reduce_values(vals, op)[self.rank * count:(self.rank + 1) * count]

    def _send(self, buf, count, dt, peer):
        self.world.post(self.rank, peer, mem(buf, count * np.dtype(DTYPES[dt]).itemsize).copy())

    def _recv(self, buf, count, dt, peer):
        n = count * np.dtype(DTYPES[dt]).itemsize
        data = self.world.take(peer, self.rank)
        if data.nbytes != n:
            raise RuntimeError(f"fake NCCL: rank {self.rank} receives {n} bytes but rank {peer} sent {data.nbytes}")
        mem(buf, n)[...] = data


class FakeEvent:
    def __init__(self, rt: "FakeRuntime") -> None:
        self.rt = rt
        self.released = not rt.hold
        rt.events.append(self)

    @property
    def done(self) -> bool:
        return self.released


class FakeStream:
    ptr = 0


class FakeRuntime:
    """One rank's fake of ``CudaRuntime`` (see the module docstring)."""

    xp = np

    def __init__(self, rank: int = 0, version: int = 22005, bus: str | None = None) -> None:
        self.rank, self.version = rank, version
        self.bus = bus if bus is not None else f"0000:{rank + 1:02x}:00.0"
        self.hold = False
        self.events: list[FakeEvent] = []
        self.log: list[tuple] = []
        self.depth = 0
        self.queue: list = []
        self.comms: list[FakeComm] = []

    def release(self) -> None:
        """Let every held event fire (the "GPU" finished)."""
        self.hold = False
        for e in self.events:
            e.released = True

    # devices, streams, events
    def device_count(self) -> int:
        return 1

    def current_device(self) -> int:
        return 0

    def bus_id(self, device: int) -> str:
        return self.bus

    def use_device(self, device: int):
        return contextlib.nullcontext()

    def new_stream(self, device: int) -> FakeStream:
        return FakeStream()

    def activate(self, device: int, stream):
        return contextlib.nullcontext()

    def record_current(self, device: int) -> FakeEvent:
        e = FakeEvent(self)
        e.released = True  # the caller's stream has nothing pending
        self.log.append(("record_current", e))
        return e

    def record(self, device: int, stream) -> FakeEvent:
        e = FakeEvent(self)
        self.log.append(("record", e))
        return e

    def stream_wait(self, stream, event) -> None:
        self.log.append(("stream_wait", event))

    def current_wait(self, device: int, event) -> None:
        self.log.append(("current_wait", event))

    def event_done(self, event) -> bool:
        return event.done

    # arrays
    def is_device_array(self, a) -> bool:
        return isinstance(a, np.ndarray)

    def array_device(self, a) -> int:
        return 0

    def ptr(self, a) -> int:
        return a.ctypes.data

    def to_device(self, device: int, a) -> np.ndarray:
        return np.array(a)

    def to_host(self, a) -> np.ndarray:
        return np.array(a)

    # NCCL
    def const(self, name: str) -> int:
        return CONSTS[name]

    def unique_id(self) -> bytes:
        return os.urandom(128)  # as cupy.cuda.nccl.get_unique_id() since CuPy 14

    def communicator(self, size: int, uid: bytes, rank: int) -> FakeComm:
        assert isinstance(uid, bytes) and len(uid) == 128
        with _LOCK:
            world = _WORLDS.setdefault(uid, FakeWorld(size))
        with world.cv:
            world.joined += 1
            world.cv.notify_all()
            world.wait_for(lambda: world.joined >= size, 10.0, "ncclCommInitRank")
        comm = FakeComm(self, world, rank)
        self.comms.append(comm)
        self.log.append(("communicator", size, uid, rank))
        return comm

    def group_start(self) -> None:
        self.log.append(("group", "start"))
        self.depth += 1

    def group_end(self) -> None:
        self.log.append(("group", "end"))
        self.depth -= 1
        if self.depth == 0:
            queued, self.queue = self.queue, []
            for comm, name, args in sorted(queued, key=lambda q: q[1] != "send"):  # stable: sends first
                getattr(comm, "_" + name)(*args)
