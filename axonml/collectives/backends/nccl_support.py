"""Helpers of the ``nccl`` backend: loading CuPy/NCCL, the dtype and reduce-op tables, and the
bootstrap through the store (:mod:`.nccl_work` holds the Work and the watchdog).

Note on the seam: every CuPy and NCCL call the backend makes goes through a
:class:`CudaRuntime` (streams, events, pointers, the communicator). The real one wraps
``cupy`` and ``cupy.cuda.nccl``; tests inject a fake one, so that the bootstrap, the
buffer arithmetic and the Work/event logic are exercised on machines without a GPU.

Note on dtypes: data movement (broadcast, gathers, scatters, all-to-all, send/recv) is
dtype-agnostic and moves bytes (``ncclUint8``), so every dtype works, including bool,
int16 and a bfloat16 tensor stored as 16-bit words. Reductions need an NCCL type:
int8/uint8/int32/uint32/int64/uint64/float16/float32/float64 map directly; int16 and
uint16 are reduced through an int32 copy (exact, wrapping as the 16-bit type would);
bool is reduced as 0/1 bytes (SUM/MAX/BOR = any, PRODUCT/MIN/BAND = all, as PyTorch
does on NCCL). CuPy has no bfloat16 dtype: the tensor layer reduces bfloat16 (and
float16) through a float32 copy (``native_low_precision = False``: float32
accumulation, the project's rule); a raw uint16 array whose user dtype is ``bfloat16``
holds bfloat16 bits and is reduced as ``ncclBfloat16`` (NCCL >= 2.10.3). NCCL has no
bitwise reductions: BAND/BOR/BXOR on integers are refused before any communication.
``AVG`` uses ``ncclAvg`` (NCCL >= 2.10.3) and otherwise SUM followed by a division.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any, Sequence

from ...errors import CollectiveError, CollectiveTimeout, DeviceError, DTypeError, RendezvousError
from ..types import ReduceOp

__all__ = [
    "INSTALL_HINT",
    "NCCL_DTYPES",
    "NCCL_OPS",
    "CudaRuntime",
    "ReducePlan",
    "bootstrap",
    "decode_unique_id",
    "encode_unique_id",
    "load_runtime",
    "nccl_available",
    "pick_device",
    "reduce_plan",
    "signed_unique_id",
    "store_allgather",
]

INSTALL_HINT = ("install cupy-cuda12x and nvidia-nccl-cu12 (pip install cupy-cuda12x nvidia-nccl-cu12; the -cu13 packages "
                "for CUDA 13), or use backend='tcp' for CPU tensors")
#: NCCL 2.10.3 added ncclAvg and ncclBfloat16 (the version code is major*10000 + minor*100 + patch)
AVG_BF16_VERSION = 21003
UNIQUE_ID_BYTES = 128

#: array dtype name -> the NCCL data type constant of ``cupy.cuda.nccl`` used for reductions
NCCL_DTYPES: dict[str, str] = {
    "int8": "NCCL_INT8", "uint8": "NCCL_UINT8", "int32": "NCCL_INT32", "uint32": "NCCL_UINT32",
    "int64": "NCCL_INT64", "uint64": "NCCL_UINT64", "float16": "NCCL_FLOAT16", "float32": "NCCL_FLOAT32",
    "float64": "NCCL_FLOAT64", "bfloat16": "NCCL_BFLOAT16",
}
#: ReduceOp -> NCCL reduction constant (floating and integer dtypes; bool has its own rules)
NCCL_OPS: dict[ReduceOp, str] = {
    ReduceOp.SUM: "NCCL_SUM", ReduceOp.PRODUCT: "NCCL_PROD", ReduceOp.MIN: "NCCL_MIN", ReduceOp.MAX: "NCCL_MAX",
    ReduceOp.AVG: "NCCL_AVG",
}
_BOOL_OPS = {ReduceOp.SUM: "NCCL_MAX", ReduceOp.MAX: "NCCL_MAX", ReduceOp.BOR: "NCCL_MAX",
             ReduceOp.PRODUCT: "NCCL_MIN", ReduceOp.MIN: "NCCL_MIN", ReduceOp.BAND: "NCCL_MIN"}
_WIDEN = {"int16": "int32", "uint16": "int32"}  # no 16-bit integer type in NCCL
_FLOATS = ("float16", "float32", "float64", "bfloat16")
_BITWISE = (ReduceOp.BAND, ReduceOp.BOR, ReduceOp.BXOR)


# -- reductions -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReducePlan:
    """How one array is reduced by NCCL.

    ``view``: reinterpret the array as this dtype (bool as uint8), no copy; ``work``: reduce
    a copy in this dtype and cast back; ``divide``: AVG as SUM, then divide by the group size.
    """

    nccl_dtype: str
    nccl_op: str
    view: str | None = None
    work: str | None = None
    divide: bool = False


def reduce_plan(op: ReduceOp, dtype: str, user_dtype: str = "", version: int = AVG_BF16_VERSION) -> ReducePlan:
    """The :class:`ReducePlan` for reducing an array of ``dtype`` with ``op`` on NCCL ``version``.

    Args:
        op: the reduce op.
        dtype: the array's dtype name (what the backend receives).
        user_dtype: the tensor's dtype name, when known; ``"bfloat16"`` with a uint16 array
            means the array holds bfloat16 bits.
        version: ``cupy.cuda.nccl.get_version()``.

    Raises:
        TypeError: ``op`` is not a ReduceOp.
        ValueError: NCCL cannot do ``op`` (bitwise ops on integers, BXOR on bool).
        DTypeError: ``dtype`` has no NCCL reduction, or AVG on a non-floating dtype.

    Example::

        reduce_plan(ReduceOp.SUM, "bool")   # ReducePlan('NCCL_UINT8', 'NCCL_MAX', view='uint8')
    """
    if not isinstance(op, ReduceOp):
        raise TypeError(f"nccl backend: op must be a ReduceOp (e.g. ReduceOp.SUM), got {op!r}")
    if dtype == "uint16" and user_dtype == "bfloat16":
        dtype = "bfloat16"  # bfloat16 bits in 16-bit words (CuPy has no bfloat16 dtype)
        if version < AVG_BF16_VERSION:
            raise DTypeError(f"nccl backend: reducing bfloat16 data needs NCCL >= 2.10.3, this is NCCL {_fmt(version)}; "
                             "reduce a float32 copy, or upgrade nvidia-nccl-cu12")
    if dtype == "bool":
        if op not in _BOOL_OPS:
            raise ValueError(f"nccl backend: {op!r} is not supported for bool tensors (NCCL has no bitwise reductions); "
                             "use ReduceOp.MAX/BOR (any) or ReduceOp.MIN/BAND (all), or the tcp backend")
        return ReducePlan("NCCL_UINT8", _BOOL_OPS[op], view="uint8")
    floating = dtype in _FLOATS
    if op in _BITWISE:
        if floating:
            raise DTypeError(f"nccl backend: {op!r} needs an integer or bool tensor, got {dtype}")
        raise ValueError(f"nccl backend: NCCL has no bitwise reductions, so {op!r} is not supported on {dtype} tensors; "
                         "use the tcp or mpi backend for bitwise reductions (bool tensors may use MIN/MAX)")
    if op is ReduceOp.AVG and not floating:
        raise DTypeError(f"nccl backend: ReduceOp.AVG needs a floating tensor, got {dtype}; use ReduceOp.SUM and divide "
                         "by the group size")
    work = _WIDEN.get(dtype)
    nccl_dtype = NCCL_DTYPES.get(work or dtype)
    if nccl_dtype is None:
        raise DTypeError(f"nccl backend: NCCL cannot reduce {dtype} arrays; supported: bool, int16 and "
                         f"{', '.join(sorted(NCCL_DTYPES))}")
    if op is ReduceOp.AVG and version < AVG_BF16_VERSION:
        return ReducePlan(nccl_dtype, "NCCL_SUM", work=work, divide=True)
    return ReducePlan(nccl_dtype, NCCL_OPS[op], work=work)


def _fmt(version: int) -> str:
    major, rest = divmod(version, 10000 if version >= 10000 else 1000)  # 2.9+: 21003; older: 2708
    return f"{major}.{rest // 100}.{rest % 100}"


# -- the CUDA runtime seam ---------------------------------------------------------------------------------


class CudaRuntime:
    """The CuPy and NCCL calls of the backend (see the module note; tests substitute a fake)."""

    def __init__(self, cp: Any, nccl: Any) -> None:
        self.cp, self.nccl, self.xp = cp, nccl, cp
        self.version = int(nccl.get_version())

    # devices
    def device_count(self) -> int:
        return int(self.cp.cuda.runtime.getDeviceCount())

    def current_device(self) -> int:
        return int(self.cp.cuda.Device().id)

    def bus_id(self, device: int) -> str:
        return str(self.cp.cuda.runtime.deviceGetPCIBusId(device))

    def use_device(self, device: int) -> Any:
        return self.cp.cuda.Device(device)

    # streams and events
    def new_stream(self, device: int) -> Any:
        with self.cp.cuda.Device(device):
            return self.cp.cuda.Stream(non_blocking=True)

    def activate(self, device: int, stream: Any) -> contextlib.ExitStack:
        """Make ``device`` and ``stream`` current (CuPy array ops then run on ``stream``)."""
        ctx = contextlib.ExitStack()
        ctx.enter_context(self.cp.cuda.Device(device))
        ctx.enter_context(stream)
        return ctx

    def record_current(self, device: int) -> Any:
        """An event recorded on the calling thread's current stream of ``device``."""
        with self.cp.cuda.Device(device):
            event = self.cp.cuda.Event(disable_timing=True)
            event.record(self.cp.cuda.get_current_stream())
        return event

    def record(self, device: int, stream: Any) -> Any:
        with self.cp.cuda.Device(device):
            event = self.cp.cuda.Event(disable_timing=True)
            event.record(stream)
        return event

    def stream_wait(self, stream: Any, event: Any) -> None:
        stream.wait_event(event)

    def current_wait(self, device: int, event: Any) -> None:
        """Make the calling thread's current stream of ``device`` wait for ``event`` (no host wait)."""
        with self.cp.cuda.Device(device):
            self.cp.cuda.get_current_stream().wait_event(event)

    def event_done(self, event: Any) -> bool:
        return bool(event.done)

    # arrays
    def is_device_array(self, a: Any) -> bool:
        return isinstance(a, self.cp.ndarray)

    def array_device(self, a: Any) -> int:
        return int(a.device.id)

    def ptr(self, a: Any) -> int:
        return int(a.data.ptr)

    def to_device(self, device: int, a: Any) -> Any:
        with self.cp.cuda.Device(device):
            return self.cp.asarray(a)

    def to_host(self, a: Any) -> Any:
        return self.cp.asnumpy(a)

    # NCCL
    def const(self, name: str) -> int:
        return int(getattr(self.nccl, name))

    def unique_id(self) -> bytes:
        return encode_unique_id(self.nccl.get_unique_id())

    def communicator(self, size: int, uid: bytes, rank: int) -> Any:
        try:
            return self.nccl.NcclCommunicator(size, uid, rank)  # CuPy >= 14: ``bytes commId``
        except TypeError:
            return self.nccl.NcclCommunicator(size, signed_unique_id(uid), rank)  # older: ``tuple commId``

    def group_start(self) -> None:
        self.nccl.groupStart()

    def group_end(self) -> None:
        self.nccl.groupEnd()


_RUNTIME: CudaRuntime | None = None


def load_runtime() -> CudaRuntime:
    """The CuPy/NCCL runtime, or a :class:`DeviceError` that says what is missing.

    Raises:
        DeviceError: CuPy is not installed, NCCL cannot be loaded, or no CUDA GPU is visible.
    """
    global _RUNTIME
    if _RUNTIME is not None:
        return _RUNTIME
    try:
        cp = importlib.import_module("cupy")
    except ImportError as exc:
        raise DeviceError(f"the nccl backend needs CuPy, which cannot be imported ({exc}); {INSTALL_HINT}") from exc
    try:
        nccl = importlib.import_module("cupy.cuda.nccl")
    except ImportError as exc:
        raise DeviceError(f"the nccl backend cannot import cupy.cuda.nccl ({exc}); {INSTALL_HINT}") from exc
    if not getattr(nccl, "available", False):
        raise DeviceError("the nccl backend: CuPy is installed but the NCCL library could not be loaded "
                          f"(cupy.cuda.nccl.available is False); {INSTALL_HINT}")
    try:
        has_gpu = bool(cp.cuda.is_available())
    except Exception:  # noqa: BLE001  (a broken driver reads as no GPU)
        has_gpu = False
    if not has_gpu:
        raise DeviceError("the nccl backend needs one CUDA GPU per rank, but there is no CUDA GPU visible to this process "
                          "(cupy.cuda.is_available() is False: no GPU, no driver, or CUDA_VISIBLE_DEVICES hides them); "
                          "use backend='tcp' for CPU tensors")
    _RUNTIME = CudaRuntime(cp, nccl)
    return _RUNTIME


def nccl_available() -> bool:
    """True when CuPy, NCCL and a CUDA GPU are all usable (never raises)."""
    try:
        load_runtime()
    except DeviceError:
        return False
    return True


def pick_device(rt: Any, device: int | None = None) -> int:
    """The GPU of this rank: ``device``, else ``LOCAL_RANK`` (set by launchers), else CuPy's current device."""
    n = rt.device_count()
    if device is None:
        raw = os.environ.get("LOCAL_RANK", "").strip()
        if not raw:
            return int(rt.current_device())
        try:
            device = int(raw)
        except ValueError:
            raise ValueError(f"nccl backend: LOCAL_RANK={raw!r} is not an integer") from None
        where = f"LOCAL_RANK={device}"
    else:
        where = f"device {device}"
    if not 0 <= device < n:
        raise DeviceError(f"nccl backend: {where} asks for GPU {device}, but {n} GPU(s) are visible to this process; "
                          "start at most one rank per GPU on each host (or check CUDA_VISIBLE_DEVICES)")
    return int(device)


# -- bootstrap through the store -----------------------------------------------------------------------------


def encode_unique_id(uid: bytes | Sequence[int]) -> bytes:
    """NCCL's unique id as the 128 bytes kept in the store.

    ``cupy.cuda.nccl.get_unique_id()`` returns ``bytes`` since CuPy 14 and a tuple of 128
    signed chars (ints) before; both are accepted.
    """
    raw = bytes(uid) if isinstance(uid, (bytes, bytearray)) else bytes(int(x) & 0xFF for x in uid)
    if len(raw) != UNIQUE_ID_BYTES:
        raise CollectiveError(f"nccl backend: an NCCL unique id has {UNIQUE_ID_BYTES} bytes, got {len(raw)}")
    return raw


def decode_unique_id(raw: bytes) -> bytes:
    """Check a unique id read from the store (128 bytes) and return it."""
    if len(raw) != UNIQUE_ID_BYTES:
        raise CollectiveError(f"nccl backend: the unique id in the store has {len(raw)} bytes instead of "
                              f"{UNIQUE_ID_BYTES}; another job may share the store prefix")
    return bytes(raw)


def signed_unique_id(raw: bytes) -> tuple:
    """The tuple of signed chars that ``NcclCommunicator`` took before CuPy 14."""
    return tuple(b - 256 if b > 127 else b for b in raw)


def _present(store: Any, key: str) -> bool:
    try:
        store.wait([key], timeout=0)
    except RendezvousError:
        return False
    return True


def store_allgather(store: Any, key: str, rank: int, size: int, value: bytes, deadline: float, what: str,
                    timeout: float) -> list[bytes]:
    """Set ``{key}/{rank}`` and return every rank's value, waiting until ``deadline``.

    Raises:
        CollectiveTimeout: some ranks did not set theirs in time; the message names them.
    """
    store.set(f"{key}/{rank}", value)
    keys = [f"{key}/{r}" for r in range(size)]
    try:
        store.wait(keys, timeout=max(0.0, deadline - time.monotonic()))
        return [store.get(k, timeout=max(0.0, deadline - time.monotonic())) for k in keys]
    except RendezvousError as exc:
        missing = [r for r, k in enumerate(keys) if not _present(store, k)]
        raise CollectiveTimeout(f"{what} timed out after {timeout:g} s on rank {rank}: ranks {missing} did not arrive; they "
                                "are slow, hung, dead, or issuing other collectives") from exc


def bootstrap(store: Any, rank: int, size: int, timeout: float, name: str, rt: Any, device: int) -> tuple[Any, int]:
    """Create this rank's NCCL communicator; return ``(communicator, generation)``.

    Every rank announces its host and GPU (duplicates are refused with a clear error,
    NCCL needs one GPU per rank); rank 0 puts ``get_unique_id()`` in the store and the
    others read it with the group timeout. ``generation`` counts this rank's groups under
    the store prefix, so a re-created group never reads a stale id. The communicator is
    created in a helper thread so that a peer dying mid-bootstrap cannot hang us.
    """
    if store is None:
        raise CollectiveError(f"nccl group {name!r}: the nccl backend bootstraps through a store; pass one (or an init_method)")
    what = f"creating nccl group {name!r}"
    deadline = time.monotonic() + timeout
    gen = store.add(f"nccl/gen/rank{rank}", 1)
    base = f"nccl/{gen}"
    if rank == 0:
        store.set(f"{base}/uid", encode_unique_id(rt.unique_id()))
    host = os.environ.get("AXONML_HOSTNAME", "").strip() or socket.gethostname()
    me = f"{host}|{rt.bus_id(device)}|{device}".encode()
    members = [m.decode().split("|") for m in store_allgather(store, f"{base}/member", rank, size, me, deadline, what, timeout)]
    seen: dict[tuple[str, str], int] = {}
    for r, (h, bus, dev) in enumerate(members):
        first = seen.setdefault((h, bus), r)
        if first != r:
            raise DeviceError(f"{what}: ranks {first} and {r} both use GPU {dev} (PCI {bus}) of host {h!r}; NCCL needs one "
                              "GPU per rank: give each rank of a host its own GPU (LOCAL_RANK or CUDA_VISIBLE_DEVICES)")
    try:
        uid = decode_unique_id(store.get(f"{base}/uid", timeout=max(0.0, deadline - time.monotonic())))
    except RendezvousError as exc:
        raise CollectiveTimeout(f"{what}: rank 0 did not publish the NCCL unique id within {timeout:g} s") from exc
    comm = _create_bounded(rt, size, uid, rank, device, deadline, what, timeout)
    if store.add(f"{base}/joined", 1) == size:  # the last rank in clears the bootstrap keys
        for key in [f"{base}/uid", f"{base}/joined"] + [f"{base}/member/{r}" for r in range(size)]:
            store.delete(key)
    return comm, gen


def _create_bounded(rt: Any, size: int, uid: bytes, rank: int, device: int, deadline: float, what: str,
                    timeout: float) -> Any:
    box: dict[str, Any] = {}

    def create() -> None:
        try:
            with rt.use_device(device):
                box["comm"] = rt.communicator(size, uid, rank)
        except BaseException as exc:  # noqa: BLE001  (re-raised by the caller)
            box["error"] = exc

    t = threading.Thread(target=create, name=f"axonml-nccl-init-r{rank}", daemon=True)
    t.start()
    t.join(max(0.0, deadline - time.monotonic()))
    if t.is_alive():
        raise CollectiveTimeout(f"{what}: NcclCommunicator(size={size}, rank={rank}) did not return within {timeout:g} s; a "
                                "rank died after joining, or NCCL cannot connect the ranks (run with NCCL_DEBUG=INFO)")
    if "error" in box:
        raise CollectiveError(f"{what}: NCCL failed to create the communicator on rank {rank} (GPU {device}): "
                              f"{box['error']}") from box["error"]
    return box["comm"]
