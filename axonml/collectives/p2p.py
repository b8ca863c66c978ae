"""Point-to-point messages and object collectives.

Note on ordering: messages between two ranks are matched in the order they were issued
(a ``recv`` gets the next message from its source, whose tag must equal the receive's);
``isend``/``irecv`` pairs that would deadlock when run one after the other (both ranks
send first) are progressed together, and :func:`batch_isend_irecv` runs a whole list
concurrently. ``recv`` needs an explicit ``src``.

Note on objects: object collectives pickle, exchange sizes first, then the bytes as
uint8 arrays on the group's backend. Unpickling runs arbitrary code: use them only
between the ranks of your own job.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from ..tensor.tensor import Tensor
from .api import resolve_group
from .functional import Outputs, check_len, check_tensor, group_rank, read_array

__all__ = [
    "send",
    "recv",
    "isend",
    "irecv",
    "P2POp",
    "batch_isend_irecv",
    "broadcast_object_list",
    "all_gather_object",
    "gather_object",
    "scatter_object_list",
]


def _peer(pg: Any, peer: int, what: str, arg: str) -> int:
    r = group_rank(pg, peer, what, arg)
    if r == pg.rank():
        raise ValueError(f"{what}: {arg}={peer} is this rank itself; a rank cannot {what} to itself")
    return r


def _p2p_tuple(kind: str, tensor: Tensor, peer: int | None, group: Any, tag: int, what: str) -> tuple[Any, tuple]:
    pg = resolve_group(group, what)
    check_tensor(tensor, pg, what)
    if peer is None:
        raise ValueError(f"{what}: pass the peer's rank ({'dst' if kind == 'send' else 'src'}); receiving from any "
                         "source is not supported")
    r = _peer(pg, peer, what, "dst" if kind == "send" else "src")
    if kind == "send":
        return pg, ("send", read_array(tensor), r, int(tag), None)
    outs = Outputs()
    arr = outs.add(tensor)
    world_peer = pg.global_ranks[r]

    def post() -> int:
        outs()
        return world_peer

    return pg, ("recv", arr, r, int(tag), post)


def isend(tensor: Tensor, dst: int | None = None, group: Any = None, tag: int = 0) -> Any:
    """Send ``tensor`` to world rank ``dst`` asynchronously; returns a Work."""
    pg, op = _p2p_tuple("send", tensor, dst, group, tag, "isend")
    return pg.batch_p2p([op])[0]


def irecv(tensor: Tensor, src: int | None = None, group: Any = None, tag: int = 0) -> Any:
    """Receive into ``tensor`` from world rank ``src`` asynchronously; the Work's result is ``src``."""
    pg, op = _p2p_tuple("recv", tensor, src, group, tag, "irecv")
    return pg.batch_p2p([op])[0]


def send(tensor: Tensor, dst: int | None = None, group: Any = None, tag: int = 0) -> None:
    """Send ``tensor`` to world rank ``dst``; returns when the data has left this rank."""
    pg, op = _p2p_tuple("send", tensor, dst, group, tag, "send")
    pg.batch_p2p([op], sync=True)[0].wait()


def recv(tensor: Tensor, src: int | None = None, group: Any = None, tag: int = 0) -> int:
    """Receive into ``tensor`` from world rank ``src``; returns ``src``."""
    pg, op = _p2p_tuple("recv", tensor, src, group, tag, "recv")
    return pg.batch_p2p([op], sync=True)[0].result()


@dataclass
class P2POp:
    """One operation of :func:`batch_isend_irecv`: ``P2POp(isend, t, peer)`` or ``P2POp(irecv, t, peer)``."""

    op: Callable[..., Any]
    tensor: Tensor
    peer: int | None = None
    group: Any = None
    tag: int = 0

    def __post_init__(self) -> None:
        if self.op not in (isend, irecv):
            raise ValueError(f"P2POp: op must be axonml.collectives.isend or irecv, got {self.op!r}")


def batch_isend_irecv(p2p_op_list: Sequence[P2POp]) -> list[Any]:
    """Run the sends and receives of ``p2p_op_list`` concurrently; one Work per op.

    Example (a ring exchange without deadlock)::

        ops = [P2POp(isend, x, (r + 1) % n), P2POp(irecv, y, (r - 1) % n)]
        for w in batch_isend_irecv(ops): w.wait()
    """
    if not p2p_op_list:
        return []
    ops, pgs = [], set()
    for i, p in enumerate(p2p_op_list):
        if not isinstance(p, P2POp):
            raise TypeError(f"batch_isend_irecv: element {i} must be a P2POp, got {type(p).__name__}")
        kind = "send" if p.op is isend else "recv"
        pg, op = _p2p_tuple(kind, p.tensor, p.peer, p.group, p.tag, "batch_isend_irecv")
        pgs.add(id(pg))
        ops.append(op)
    if len(pgs) != 1:
        raise ValueError("batch_isend_irecv: all operations must use the same group")
    return pg.batch_p2p(ops)


# -- object collectives ------------------------------------------------------------------------------


def _dumps(obj: Any) -> np.ndarray:
    return np.frombuffer(pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL), dtype=np.uint8)


def _loads(buf: np.ndarray) -> Any:
    return pickle.loads(buf.tobytes())


def broadcast_object_list(object_list: list[Any], src: int = 0, group: Any = None, device: Any = None) -> None:
    """Replace every rank's ``object_list`` items with world rank ``src``'s (pickled)."""
    pg = resolve_group(group, "broadcast_object_list")
    root = group_rank(pg, src, "broadcast_object_list", "src")
    if not isinstance(object_list, list):
        raise TypeError(f"broadcast_object_list: object_list must be a list, got {type(object_list).__name__}")
    n = len(object_list)
    if pg.rank() == root:
        blobs = [_dumps(o) for o in object_list]
        sizes = np.array([b.size for b in blobs], dtype=np.int64)
    else:
        blobs, sizes = [], np.zeros(n, dtype=np.int64)
    pg.broadcast([sizes], root, {"op": "broadcast_object_list", "sync": True}).wait()
    data = np.concatenate(blobs) if blobs else np.empty(int(sizes.sum()), dtype=np.uint8)
    pg.broadcast([data], root, {"op": "broadcast_object_list", "sync": True}).wait()
    if pg.rank() != root:
        off = 0
        for i, s in enumerate(sizes.tolist()):
            object_list[i] = _loads(data[off:off + s])
            off += s


def all_gather_object(object_list: list[Any], obj: Any, group: Any = None) -> None:
    """Fill ``object_list[i]`` with rank i's ``obj`` (pickled) on every rank."""
    pg = resolve_group(group, "all_gather_object")
    check_len(object_list, pg.size(), "all_gather_object", "object_list")
    blob = _dumps(obj)
    sizes = np.empty(pg.size(), dtype=np.int64)
    pg.allgather(sizes, np.array([blob.size], dtype=np.int64), None, {"op": "all_gather_object", "sync": True}).wait()
    data = np.empty(int(sizes.sum()), dtype=np.uint8)
    pg.allgather(data, blob, sizes.tolist(), {"op": "all_gather_object", "sync": True}).wait()
    off = 0
    for i, s in enumerate(sizes.tolist()):
        object_list[i] = _loads(data[off:off + s])
        off += s


def gather_object(obj: Any, object_gather_list: list[Any] | None = None, dst: int = 0, group: Any = None) -> None:
    """Collect every rank's ``obj`` into ``object_gather_list`` on world rank ``dst``."""
    pg = resolve_group(group, "gather_object")
    root = group_rank(pg, dst, "gather_object", "dst")
    if pg.rank() == root:
        if object_gather_list is None:
            raise ValueError(f"gather_object: object_gather_list is required on the destination rank {dst}")
        check_len(object_gather_list, pg.size(), "gather_object", "object_gather_list")
    blob = _dumps(obj)
    sizes = np.empty(pg.size(), dtype=np.int64)
    pg.allgather(sizes, np.array([blob.size], dtype=np.int64), None, {"op": "gather_object", "sync": True}).wait()
    outs = [np.empty(int(s), dtype=np.uint8) for s in sizes] if pg.rank() == root else None
    pg.gather(blob, outs, root, {"op": "gather_object", "sync": True}).wait()
    if outs is not None:
        for i, b in enumerate(outs):
            object_gather_list[i] = _loads(b)


def scatter_object_list(scatter_object_output_list: list[Any], scatter_object_input_list: list[Any] | None = None,
                        src: int = 0, group: Any = None) -> None:
    """Set ``scatter_object_output_list[0]`` on rank i to world rank ``src``'s ``scatter_object_input_list[i]``."""
    what = "scatter_object_list"
    pg = resolve_group(group, what)
    root = group_rank(pg, src, what, "src")
    if not isinstance(scatter_object_output_list, list) or len(scatter_object_output_list) < 1:
        raise ValueError(f"{what}: scatter_object_output_list must be a list with at least one element")
    blobs = None
    sizes = np.zeros(pg.size(), dtype=np.int64)
    if pg.rank() == root:
        if scatter_object_input_list is None:
            raise ValueError(f"{what}: scatter_object_input_list is required on the source rank {src}")
        check_len(scatter_object_input_list, pg.size(), what, "scatter_object_input_list")
        blobs = [_dumps(o) for o in scatter_object_input_list]
        sizes[:] = [b.size for b in blobs]
    pg.broadcast([sizes], root, {"op": what, "sync": True}).wait()
    out = np.empty(int(sizes[pg.rank()]), dtype=np.uint8)
    pg.scatter(out, blobs, root, {"op": what, "sync": True}).wait()
    scatter_object_output_list[0] = _loads(out)
