"""Collective algorithms over a :class:`~.transport.Mesh` (the ``tcp`` backend's data path).

Note on algorithm choice: small messages use *direct exchange* (every rank sends its
data straight to the ranks that need it: one network latency, and every rank reduces
the contributions in rank order, so all ranks get bit-identical results). Large
messages use a *ring*: reduce-scatter then all-gather, each segment cut into chunks of
``CHUNK_BYTES`` and pipelined (a chunk is forwarded as soon as it has been received and
reduced), so every rank sends and receives ``2 (n - 1) / n`` of the data, the
bandwidth-optimal amount. Each ring segment is reduced by exactly one rank and then
copied, so ring results are also identical on every rank. Broadcast of large messages
is a pipelined chain from the root.

Ring indexing: with ``n`` ranks the flat buffer is cut into ``n`` segments. In
reduce-scatter step ``s`` rank ``r`` sends segment ``r - s - 1`` and receives (and
reduces) segment ``r - s - 2`` (mod n); after ``n - 1`` steps it holds the full
reduction of segment ``r``. All-gather step ``s`` sends segment ``r - s`` and receives
segment ``r - s - 1``. The segment a rank sends at each step is the one it received at
the step before, which is what makes chunk-level pipelining possible.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from ..types import ReduceOp, finish_avg, reduce_into
from .exchange import Exchange
from .transport import Mesh, as_bytes

__all__ = [
    "allreduce",
    "broadcast",
    "reduce",
    "allgather",
    "gather",
    "scatter",
    "reduce_scatter",
    "alltoall",
    "CHUNK_BYTES",
    "SMALL_BYTES",
]

#: ring pipeline granularity
CHUNK_BYTES = 1 << 20
#: at most this many bytes per rank use direct exchange instead of the ring
SMALL_BYTES = 64 << 10


def bounds(counts: Sequence[int]) -> list[int]:
    """Offsets of consecutive segments of ``counts`` elements."""
    out = [0]
    for c in counts:
        out.append(out[-1] + int(c))
    return out


def even_counts(total: int, n: int) -> list[int]:
    """``n`` segment sizes that differ by at most one and sum to ``total``."""
    q, rem = divmod(total, n)
    return [q + (1 if i < rem else 0) for i in range(n)]


def _pieces(lo: int, hi: int, chunk: int) -> list[tuple[int, int]]:
    return [(a, min(a + chunk, hi)) for a in range(lo, hi, chunk)]


def _reduce_ordered(op: ReduceOp, parts: Sequence[Any], n: int, out: Any) -> None:
    """``out = parts[0] op parts[1] op ...`` in rank order (``out`` may alias ``parts[i]``, i > 0)."""
    acc = np.array(parts[0], copy=True)
    for p in parts[1:]:
        reduce_into(op, acc, p)
    if op is ReduceOp.AVG:
        finish_avg(acc, n)
    out[...] = acc


# -- the ring ------------------------------------------------------------------------------------


def ring(mesh: Mesh, flat: np.ndarray, seg_bounds: list[int], what: object, op: ReduceOp | None, reduce_scatter: bool,
         all_gather: bool) -> None:
    """Run the reduce-scatter and/or all-gather phases of a pipelined ring on ``flat`` in place."""
    n, r = mesh.size, mesh.rank
    right, left = (r + 1) % n, (r - 1) % n
    chunk = max(1, CHUNK_BYTES // max(1, flat.itemsize))
    units: list[tuple[int, int, bool]] = []  # (segment sent, segment received, received is reduced)
    if reduce_scatter:
        units += [((r - s - 1) % n, (r - s - 2) % n, True) for s in range(n - 1)]
    if all_gather:
        units += [((r - s) % n, (r - s - 1) % n, False) for s in range(n - 1)]
    seg = lambda i: _pieces(seg_bounds[i], seg_bounds[i + 1], chunk)  # noqa: E731
    tmp = np.empty(min(chunk, max(1, flat.size)), dtype=flat.dtype)
    ex = Exchange(mesh, what)
    last_rs = n - 2 if reduce_scatter else -1
    bflat = as_bytes(flat)
    isz = flat.itemsize

    def forward(u: int, lo: int, hi: int) -> None:
        if u + 1 < len(units):
            ex.send(right, bflat[lo * isz:hi * isz])

    def reduced(u: int, lo: int, hi: int) -> None:
        part = flat[lo:hi]
        reduce_into(op, part, tmp[:hi - lo])
        if u == last_rs and op is ReduceOp.AVG:
            finish_avg(part, n)
        forward(u, lo, hi)

    for u, (_sent, recvd, is_reduced) in enumerate(units):
        for lo, hi in seg(recvd):
            if is_reduced:
                ex.recv(left, as_bytes(tmp[:hi - lo]), lambda u=u, lo=lo, hi=hi: reduced(u, lo, hi))
            else:
                ex.recv(left, bflat[lo * isz:hi * isz], lambda u=u, lo=lo, hi=hi: forward(u, lo, hi))
    for lo, hi in seg(units[0][0]):
        ex.send(right, bflat[lo * isz:hi * isz])
    ex.run()


# -- collectives -------------------------------------------------------------------------------------


def allreduce(mesh: Mesh, flat: np.ndarray, op: ReduceOp, what: object) -> None:
    """Reduce the 1-D contiguous ``flat`` across the mesh, in place."""
    n = mesh.size
    if n == 1 or flat.size == 0:
        return
    if flat.nbytes <= SMALL_BYTES or flat.size < n:
        parts = _direct_allgather_parts(mesh, flat, what)
        _reduce_ordered(op, parts, n, flat)
        return
    ring(mesh, flat, bounds(even_counts(flat.size, n)), what, op, True, True)


def _direct_allgather_parts(mesh: Mesh, mine: np.ndarray, what: object) -> list[np.ndarray]:
    n, r = mesh.size, mesh.rank
    got = np.empty((n, mine.size), dtype=mine.dtype)
    ex = Exchange(mesh, what)
    for p in range(n):
        if p != r:
            ex.send(p, as_bytes(mine))
            ex.recv(p, as_bytes(got[p]))
    ex.run()
    got[r] = mine
    return list(got)


def broadcast(mesh: Mesh, flat: np.ndarray, root: int, what: object) -> None:
    """Copy ``root``'s ``flat`` into every rank's ``flat``."""
    n, r = mesh.size, mesh.rank
    if n == 1 or flat.size == 0:
        return
    ex = Exchange(mesh, what)
    view = as_bytes(flat)
    if flat.nbytes <= SMALL_BYTES or n == 2:
        if r == root:
            for p in range(n):
                if p != r:
                    ex.send(p, view)
        else:
            ex.recv(root, view)
        ex.run()
        return
    # a pipelined chain root -> root+1 -> ... -> root-1
    pos = (r - root) % n
    nxt, prev = (r + 1) % n, (r - 1) % n
    chunk = CHUNK_BYTES
    pieces = [(a, min(a + chunk, len(view))) for a in range(0, len(view), chunk)]
    if pos == 0:
        for a, b in pieces:
            ex.send(nxt, view[a:b])
    else:
        for a, b in pieces:
            fwd = (lambda a=a, b=b: ex.send(nxt, view[a:b])) if pos < n - 1 else None
            ex.recv(prev, view[a:b], fwd)
    ex.run()


def reduce(mesh: Mesh, flat: np.ndarray, root: int, op: ReduceOp, what: object) -> None:
    """Reduce into ``root``'s ``flat``; other ranks' ``flat`` is left unchanged."""
    n, r = mesh.size, mesh.rank
    if n == 1 or flat.size == 0:
        return
    if flat.nbytes <= SMALL_BYTES or flat.size < n:
        ex = Exchange(mesh, what)
        if r == root:
            got = np.empty((n, flat.size), dtype=flat.dtype)
            got[r] = flat
            for p in range(n):
                if p != r:
                    ex.recv(p, as_bytes(got[p]))
            ex.run()
            _reduce_ordered(op, list(got), n, flat)
        else:
            ex.send(root, as_bytes(flat))
            ex.run()
        return
    work = flat.copy()
    b = bounds(even_counts(flat.size, n))
    ring(mesh, work, b, what, op, True, False)
    ex = Exchange(mesh, what)
    if r == root:
        flat[b[r]:b[r + 1]] = work[b[r]:b[r + 1]]
        for p in range(n):
            if p != r:
                ex.recv(p, as_bytes(flat[b[p]:b[p + 1]]))
    else:
        ex.send(root, as_bytes(work[b[r]:b[r + 1]]))
    ex.run()


def allgather(mesh: Mesh, out: np.ndarray, mine: np.ndarray, counts: list[int], what: object) -> None:
    """Concatenate every rank's ``mine`` (``counts[i]`` elements) into ``out``."""
    n, r = mesh.size, mesh.rank
    b = bounds(counts)
    out[b[r]:b[r + 1]] = mine
    if n == 1 or b[-1] == 0:
        return
    if max(counts) * out.itemsize <= SMALL_BYTES:
        ex = Exchange(mesh, what)
        for p in range(n):
            if p != r:
                ex.send(p, as_bytes(mine))
                ex.recv(p, as_bytes(out[b[p]:b[p + 1]]))
        ex.run()
        return
    ring(mesh, out, b, what, None, False, True)


def gather(mesh: Mesh, mine: np.ndarray, outs: list[np.ndarray] | None, root: int, what: object) -> None:
    """Collect every rank's ``mine`` into ``root``'s ``outs[i]``."""
    r = mesh.rank
    ex = Exchange(mesh, what)
    if r == root:
        outs[r].reshape(-1)[...] = mine.reshape(-1)
        for p in range(mesh.size):
            if p != r:
                ex.recv(p, as_bytes(outs[p]))
    else:
        ex.send(root, as_bytes(mine))
    ex.run()


def scatter(mesh: Mesh, out: np.ndarray, ins: list[np.ndarray] | None, root: int, what: object) -> None:
    """Copy ``root``'s ``ins[i]`` into rank i's ``out``."""
    r = mesh.rank
    ex = Exchange(mesh, what)
    if r == root:
        out.reshape(-1)[...] = ins[r].reshape(-1)
        for p in range(mesh.size):
            if p != r:
                ex.send(p, as_bytes(ins[p]))
    else:
        ex.recv(root, as_bytes(out))
    ex.run()


def reduce_scatter(mesh: Mesh, out: np.ndarray, inp: np.ndarray, op: ReduceOp, counts: list[int], what: object) -> None:
    """Reduce ``inp`` across ranks; rank i writes segment i (``counts[i]`` elements) into ``out``."""
    n, r = mesh.size, mesh.rank
    b = bounds(counts)
    if n == 1:
        out[...] = inp[b[r]:b[r + 1]]
        if op is ReduceOp.AVG:
            finish_avg(out, 1)
        return
    if max(counts) * inp.itemsize <= SMALL_BYTES:
        got = np.empty((n, counts[r]), dtype=inp.dtype)
        got[r] = inp[b[r]:b[r + 1]]
        ex = Exchange(mesh, what)
        for p in range(n):
            if p != r:
                ex.send(p, as_bytes(inp[b[p]:b[p + 1]]))
                ex.recv(p, as_bytes(got[p]))
        ex.run()
        _reduce_ordered(op, list(got), n, out)
        return
    work = inp.copy()
    ring(mesh, work, b, what, op, True, False)
    out[...] = work[b[r]:b[r + 1]]


def alltoall(mesh: Mesh, out: np.ndarray, inp: np.ndarray, out_counts: list[int], in_counts: list[int], what: object) -> None:
    """Send ``in_counts[j]`` elements of ``inp`` to rank j; receive ``out_counts[j]`` from j into ``out``."""
    r = mesh.rank
    ob, ib = bounds(out_counts), bounds(in_counts)
    out[ob[r]:ob[r + 1]] = inp[ib[r]:ib[r + 1]]
    ex = Exchange(mesh, what)
    # start with the next rank so that not every rank sends to rank 0 first
    for k in range(1, mesh.size):
        p = (r + k) % mesh.size
        ex.send(p, as_bytes(inp[ib[p]:ib[p + 1]]))
        ex.recv(p, as_bytes(out[ob[p]:ob[p + 1]]))
    ex.run()
