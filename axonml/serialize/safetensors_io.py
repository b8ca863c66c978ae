"""The safetensors file format, read and written directly.

Note on the format: 8 bytes little-endian header length N, then N bytes of JSON mapping
each tensor name to ``{"dtype", "shape", "data_offsets": [begin, end]}`` (offsets into
the data section that follows, contiguous and in order) plus an optional
``"__metadata__"`` string-to-string map, padded with spaces to a multiple of 8; then the
raw little-endian data. Writing it here (rather than through the ``safetensors``
package) gives bfloat16 support, atomic writes and precise errors on corrupt files;
tests check that ``safetensors.numpy`` and ``safetensors.torch`` read our files and we
read theirs.
"""

from __future__ import annotations

import json
import os
import struct
import tempfile
from typing import Any, Callable, Mapping

import ml_dtypes
import numpy as np

from ..errors import CheckpointError

_DTYPES = {
    "F64": np.dtype(np.float64),
    "F32": np.dtype(np.float32),
    "F16": np.dtype(np.float16),
    "BF16": np.dtype(ml_dtypes.bfloat16),
    "I64": np.dtype(np.int64),
    "I32": np.dtype(np.int32),
    "I16": np.dtype(np.int16),
    "I8": np.dtype(np.int8),
    "U8": np.dtype(np.uint8),
    "BOOL": np.dtype(np.bool_),
}
_CODES = {v: k for k, v in _DTYPES.items()}
_MAX_HEADER = 100 * 1024 * 1024


def _umask() -> int:
    """The process umask, read without changing it (os.umask would race other threads)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return 0o022


def atomic_write(path: str | os.PathLike, fill: Callable[[Any], None], suffix: str = "") -> None:
    """Write a file all or nothing: ``fill(f)`` writes into a temporary file (binary) in the
    same folder, which is flushed to disk and renamed over ``path``; the rename is made
    durable too. A crash leaves the old file or the new one, never a torn one.

    Example::

        atomic_write("meta.json", lambda f: f.write(json.dumps(meta).encode()), suffix=".json")
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=suffix, dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the mode open() would
            fill(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    try:  # make the rename itself durable
        dfd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass


def write_safetensors(
    path: str | os.PathLike, arrays: Mapping[str, np.ndarray], metadata: Mapping[str, str] | None = None
) -> None:
    """Write ``arrays`` (name -> host array) atomically: a temporary file in the same
    folder, fsync, then rename, so a crash never leaves a half-written ``path``."""
    header: dict[str, Any] = {}
    if metadata:
        bad = [k for k, v in metadata.items() if not isinstance(k, str) or not isinstance(v, str)]
        if bad:
            raise CheckpointError(f"safetensors metadata must map str to str; bad entries: {bad}")
        header["__metadata__"] = dict(metadata)
    offset = 0
    blobs = []
    for name, arr in arrays.items():
        if not isinstance(name, str) or name == "__metadata__":
            raise CheckpointError(f"invalid tensor name {name!r}")
        arr = arr if arr.flags.c_contiguous else np.ascontiguousarray(arr)  # (keeps 0-d arrays 0-d)
        code = _CODES.get(arr.dtype)
        if code is None:
            raise CheckpointError(f"tensor {name!r} has dtype {arr.dtype}, which safetensors cannot store")
        if arr.dtype.byteorder == ">":
            arr = arr.astype(arr.dtype.newbyteorder("<"))
        nbytes = arr.nbytes
        header[name] = {"dtype": code, "shape": list(arr.shape), "data_offsets": [offset, offset + nbytes]}
        blobs.append(arr)
        offset += nbytes
    hjson = json.dumps(header, separators=(",", ":")).encode()
    hjson += b" " * (-len(hjson) % 8)

    def fill(f: Any) -> None:
        f.write(struct.pack("<Q", len(hjson)))
        f.write(hjson)
        for arr in blobs:
            f.write(memoryview(arr.reshape(-1).view(np.uint8)))

    atomic_write(path, fill, suffix=".safetensors")


def read_header(path: str | os.PathLike) -> tuple[dict, dict, int]:
    """Return (tensor entries, metadata, data start) after validating the header."""
    path = os.fspath(path)
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise CheckpointError(f"{path}: not a safetensors file (only {size} bytes, no header length)")
            (n,) = struct.unpack("<Q", head)
            if n > _MAX_HEADER or 8 + n > size:
                raise CheckpointError(
                    f"{path}: corrupt or truncated safetensors file (header length {n} but the file has {size} bytes)"
                )
            raw = f.read(n)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such checkpoint file") from None
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path}: corrupt safetensors header ({e})") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: corrupt safetensors header (not a JSON object)")
    metadata = header.pop("__metadata__", None) or {}
    start = 8 + n
    data_len = size - start
    for name, e in header.items():
        try:
            dt = _DTYPES[e["dtype"]]
            b, end = e["data_offsets"]
            count = int(np.prod(e["shape"], dtype=np.int64))
        except (KeyError, TypeError, ValueError):
            raise CheckpointError(f"{path}: corrupt entry for tensor {name!r}: {e!r}") from None
        if end - b != count * dt.itemsize or b < 0:
            raise CheckpointError(f"{path}: tensor {name!r} has shape {e['shape']} ({e['dtype']}) but {end - b} bytes of data")
        if end > data_len:
            raise CheckpointError(
                f"{path}: truncated file: tensor {name!r} needs bytes up to {end} of the data section, which has {data_len}"
            )
    return header, metadata, start


def read_safetensors(path: str | os.PathLike, names: list[str] | None = None) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Read (a subset of) the tensors of a safetensors file as NumPy arrays, plus its metadata."""
    header, metadata, start = read_header(path)
    if names is not None:
        missing = [n for n in names if n not in header]
        if missing:
            raise CheckpointError(f"{path}: tensors {missing} are not in the file (it has {sorted(header)[:20]}...)")
    out = {}
    with open(path, "rb") as f:
        for name in sorted(header, key=lambda k: header[k]["data_offsets"][0]) if names is None else names:
            e = header[name]
            b, end = e["data_offsets"]
            f.seek(start + b)
            buf = f.read(end - b)
            out[name] = np.frombuffer(buf, dtype=_DTYPES[e["dtype"]]).reshape(e["shape"]).copy()
    return out, metadata


def read_slice(path: str | os.PathLike, name: str, start_row: int, stop_row: int) -> np.ndarray:
    """Rows [start_row, stop_row) of dim 0 of one tensor, reading only those bytes
    (sharded checkpoints load their shard without the whole tensor)."""
    header, _, start = read_header(path)
    if name not in header:
        raise CheckpointError(f"{path}: no tensor {name!r}")
    e = header[name]
    dt = _DTYPES[e["dtype"]]
    shape = e["shape"]
    if not shape or not 0 <= start_row <= stop_row <= shape[0]:
        raise CheckpointError(f"{path}: rows [{start_row}, {stop_row}) out of range for {name!r} of shape {shape}")
    row = int(np.prod(shape[1:], dtype=np.int64)) * dt.itemsize
    with open(path, "rb") as f:
        f.seek(start + e["data_offsets"][0] + start_row * row)
        buf = f.read((stop_row - start_row) * row)
    return np.frombuffer(buf, dtype=dt).reshape([stop_row - start_row, *shape[1:]]).copy()
