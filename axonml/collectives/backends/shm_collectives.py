"""Chunked shared-memory collectives of the ``tcp`` backend (run on a :class:`.shm.ShmChannel`).

Note on the staged algorithms: a tensor in private memory is cut into chunks of about
:attr:`ShmChannel.slot` bytes per rank; a chunk's bytes pass through the segment's
staging slots (two, alternating), one phase per chunk. Chunks stay small enough that
what one rank writes is still in the caches when another reads it, so the main memory
sees about one read and one write of each tensor, as in a plain copy. All-reduce: a rank
copies in only the parts of a chunk that the others reduce, reduces its own part (its
operand read straight from its tensor) into its result slot, and copies the others'
results out one phase later, so that the copy-out of chunk k overlaps the reduction of
chunk k+1. Reduce-scatter is the first half of that; all-gather and broadcast copy in
and out.

Note on shared-resident buffers: when the group has shared buffers (see
:mod:`.shm_arena`), a large collective starts with an *entry* phase in which every rank
publishes where its tensor lives (arena id, offset) along with the check digest. When
every rank's tensor lives in shared memory, ranks read each other's tensors in place (no
copy in or out): all-reduce has rank r reduce segment r of every chunk and write it into
every rank's tensor (no phase per chunk: nobody else reads or writes segment r, so a rank
descheduled by its own compute delays the others only at the end); an *exit* phase then
keeps every rank from returning (and overwriting its tensor) while another still reads
or writes it. Otherwise the staged algorithm runs (the entry phase has done the check).

Note on order: every reduction combines ranks in rank order (the same bits as the
socket path and as the one-phase small all-reduce); an operand may be the output itself
only where that is safe for an elementwise ufunc (see :func:`reduce_segments`).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from ...errors import CollectiveError
from ..types import ReduceOp

__all__ = ["allreduce", "broadcast", "allgather", "reduce_scatter", "reduce_segments", "UFUNCS"]

#: the ufunc of each reduce op, by ``op._value_`` (a plain attribute: cheaper than hashing the enum)
UFUNCS = {
    ReduceOp.SUM._value_: np.add, ReduceOp.AVG._value_: np.add, ReduceOp.PRODUCT._value_: np.multiply,
    ReduceOp.MIN._value_: np.minimum, ReduceOp.MAX._value_: np.maximum, ReduceOp.BAND._value_: np.bitwise_and,
    ReduceOp.BOR._value_: np.bitwise_or, ReduceOp.BXOR._value_: np.bitwise_xor,
}
#: elements per resident all-reduce chunk and rank (bytes): phases are cheap, the caches are not big
_RESIDENT_CHUNK = 2 << 20


def _bounds(c: int, n: int) -> list[int]:
    """Offsets of ``n`` near-equal segments of ``c`` elements (the first ``c % n`` one longer)."""
    q, rem = divmod(c, n)
    return [j * q + min(j, rem) for j in range(n + 1)]


def reduce_segments(fn: Any, xs: Sequence[np.ndarray], out: np.ndarray, tmp: Any, own: int, avg: bool) -> None:
    """``out = xs[0] op xs[1] op ...`` in rank order, then ``/ len(xs)`` when ``avg``.

    ``out`` may be ``xs[own]`` itself: an elementwise ufunc may write over an operand it
    reads at the same index, but ``xs[own]`` must not be overwritten before its turn, so
    for ``own >= 2`` (three or more ranks) the partial sums go through ``tmp`` (an array
    like ``out``, or a callable returning one) and only the last step writes ``out``.
    """
    n = len(xs)
    if n == 2 or own <= 1:
        fn(xs[0], xs[1], out=out)
        for x in xs[2:]:
            fn(out, x, out=out)
    else:
        t = tmp() if callable(tmp) else tmp
        fn(xs[0], xs[1], out=t)
        for x in xs[2:-1]:
            fn(t, x, out=t)
        fn(t, xs[-1], out=out)
    if avg:
        out /= n


def _entry(ch: Any, mine: np.ndarray | None, what: object) -> list[tuple[int, int]] | None:
    """In a group with shared buffers: publish where ``mine`` lives and run the entry phase
    (it carries the check digest); return every rank's location. None (and no phase) in a
    group without any: whether a group has any is the same on every rank."""
    arenas = ch.arenas
    if arenas is None or not arenas.created:
        return None
    ch.publish(arenas.locate(mine) if mine is not None else (-1, 0))
    ch.step(what)
    return [ch.published(j) for j in range(ch.n)]


def _peer(ch: Any, j: int, loc: tuple[int, int], nbytes: int, dtype: np.dtype) -> np.ndarray:
    return ch.arenas.view(j, loc, nbytes, what=None).view(dtype)


# -- all-reduce ------------------------------------------------------------------------------------


def allreduce(ch: Any, flat: np.ndarray, op: ReduceOp, what: object) -> None:
    """All-reduce a flat contiguous array in place (staged, or in place when every rank's
    array lives in shared memory)."""
    locs = _entry(ch, flat, what)
    if locs is not None and all(a >= 0 for a, _ in locs):
        _allreduce_resident(ch, flat, op, locs, what)
        return
    n, r, dt, isz, m = ch.n, ch.rank, flat.dtype, flat.itemsize, flat.size
    per = (ch.slot // isz) // n * n  # elements per chunk, a multiple of n
    if per == 0:
        raise CollectiveError(f"{what}: element size {isz} too large for shared-memory slots")
    fn, avg = UFUNCS[op._value_], op is ReduceOp.AVG
    stage, result = ch.stage, ch.result
    full = _bounds(per, n)
    pending: tuple | None = None  # (lo, slot, bounds) of the chunk whose results to copy out
    for lo in range(0, m, per):
        hi = min(lo + per, m)
        c = hi - lo
        b = full if c == per else _bounds(c, n)
        a0, a1 = b[r], b[r + 1]
        s = ch.next_slot()
        mine = stage[r][s]
        if a0:  # copy in what the others reduce (not this rank's own segment)
            mine[:a0 * isz].view(dt)[...] = flat[lo:lo + a0]
        if a1 < c:
            mine[a1 * isz:c * isz].view(dt)[...] = flat[lo + a1:hi]
        ch.step(what)
        if a1 > a0:
            own = flat[lo + a0:lo + a1]
            out = result[r][s][:(a1 - a0) * isz].view(dt)
            xs = [own if j == r else stage[j][s][a0 * isz:a1 * isz].view(dt) for j in range(n)]
            reduce_segments(fn, xs, out, None, 0, avg)  # out is a result slot: no operand aliases it
            own[...] = out
        if pending is not None:
            _copy_results(ch, flat, *pending)
        pending = (lo, s, b)
    if pending is not None:
        ch.step(what)  # every rank's last results are in place
        _copy_results(ch, flat, *pending)


def _copy_results(ch: Any, flat: np.ndarray, lo: int, s: int, b: list[int]) -> None:
    dt, isz = flat.dtype, flat.itemsize
    for j in range(ch.n):
        if j != ch.rank and b[j + 1] > b[j]:
            flat[lo + b[j]:lo + b[j + 1]] = ch.result[j][s][:(b[j + 1] - b[j]) * isz].view(dt)


def _allreduce_resident(ch: Any, flat: np.ndarray, op: ReduceOp, locs: list, what: object) -> None:
    """Every rank's array lives in shared memory: rank r reduces segment r of each chunk and
    writes it into every rank's array; then the exit phase. No phase per chunk: segment r
    of any array is read and written by rank r alone until the exit."""
    n, r, dt, isz, m = ch.n, ch.rank, flat.dtype, flat.itemsize, flat.size
    arrays = [flat if j == r else _peer(ch, j, locs[j], flat.nbytes, dt) for j in range(n)]
    others = [x for j, x in enumerate(arrays) if j != r]
    per = max(n, (_RESIDENT_CHUNK // isz) // n * n)
    fn, avg = UFUNCS[op._value_], op is ReduceOp.AVG
    scratch: list[np.ndarray] = []

    def tmp() -> np.ndarray:
        if not scratch:
            scratch.append(np.empty(per // n + 1, dt))
        return scratch[0]

    full = _bounds(per, n)
    for lo in range(0, m, per):
        c = min(per, m - lo)
        b = full if c == per else _bounds(c, n)
        a, z = lo + b[r], lo + b[r + 1]
        if z > a:
            out = flat[a:z]
            reduce_segments(fn, [x[a:z] for x in arrays], out, lambda z=z, a=a: tmp()[:z - a], r, avg)
            for x in others:  # from the caches: the chunk was just reduced
                x[a:z] = out
    ch.step(what)  # exit: every segment is in every array, and nobody reads another's array any more


# -- broadcast -------------------------------------------------------------------------------------------


def broadcast(ch: Any, flat: np.ndarray, root: int, what: object) -> None:
    """Copy ``root``'s array into every rank's."""
    r = ch.rank
    raw = flat.reshape(-1).view(np.uint8)
    if raw.size > ch.small_bytes:
        locs = _entry(ch, flat if r == root else None, what)
        if locs is not None and locs[root][0] >= 0:
            _broadcast_resident(ch, raw, root, locs, what)
            return
    chunk = ch.slot
    for lo in range(0, raw.size, chunk):
        hi = min(lo + chunk, raw.size)
        s = ch.next_slot()
        if r == root:
            ch.stage[root][s][:hi - lo] = raw[lo:hi]
        ch.step(what)
        if r != root:
            raw[lo:hi] = ch.stage[root][s][:hi - lo]


def _broadcast_resident(ch: Any, raw: np.ndarray, root: int, locs: list, what: object) -> None:
    """The root's array lives in shared memory: the others copy it in place; exit phase."""
    if ch.rank != root:
        raw[...] = _peer(ch, root, locs[root], raw.size, np.uint8)
    ch.step(what)  # exit: the root keeps its array until every rank has read it


# -- all-gather ------------------------------------------------------------------------------------------


def allgather(ch: Any, out: np.ndarray, mine: np.ndarray, counts: list[int], what: object) -> None:
    """Concatenate every rank's ``mine`` (``counts[i]`` elements on rank i) into ``out``."""
    n, r, isz = ch.n, ch.rank, out.itemsize
    b = [0]
    for c in counts:
        b.append(b[-1] + c * isz)
    raw_out, raw_in = out.reshape(-1).view(np.uint8), mine.reshape(-1).view(np.uint8)
    if b[-1] > ch.small_bytes:
        locs = _entry(ch, mine, what)
        if locs is not None and all(a >= 0 for a, _ in locs):
            _allgather_resident(ch, raw_out, raw_in, b, locs, what)
            return
    chunk = ch.slot
    for lo in range(0, max(counts) * isz, chunk):
        s = ch.next_slot()
        take = max(0, min(chunk, raw_in.size - lo))
        if take:
            piece = raw_in[lo:lo + take]
            ch.stage[r][s][:take] = piece
            own = raw_out[b[r] + lo:b[r] + lo + take]  # this rank's part too, while the piece is in cache
            if own.__array_interface__["data"][0] != piece.__array_interface__["data"][0]:
                own[...] = piece
        ch.step(what)
        for j in range(n):
            t = max(0, min(chunk, counts[j] * isz - lo))
            if t and j != r:
                raw_out[b[j] + lo:b[j] + lo + t] = ch.stage[j][s][:t]


def _allgather_resident(ch: Any, raw_out: np.ndarray, raw_in: np.ndarray, b: list[int], locs: list, what: object
                        ) -> None:
    """Every rank's input lives in shared memory: copy each in place (this rank's own part only
    when it is not already there, as when the input is this rank's slice of the output); exit."""
    r = ch.rank
    for j in range(ch.n):
        dst = raw_out[b[j]:b[j + 1]]
        if j != r:
            dst[...] = _peer(ch, j, locs[j], b[j + 1] - b[j], np.uint8)
        elif dst.size and dst.__array_interface__["data"][0] != raw_in.__array_interface__["data"][0]:
            dst[...] = raw_in
    ch.step(what)  # exit: nobody changes its input before every rank has read it


# -- reduce-scatter and reduce ------------------------------------------------------------------------------


def reduce_scatter(ch: Any, out: np.ndarray, inp: np.ndarray, op: ReduceOp, counts: list[int], what: object,
                   root: int | None = None) -> None:
    """Rank i gets segment i (``counts[i]`` elements of the flat ``inp``) reduced into ``out``;
    with ``root``, the root reduces every segment into ``out`` (which may be ``inp``)."""
    if root is not None:
        _reduce_to_root(ch, out, inp, op, counts, what, root)
        return
    n, r, dt, isz = ch.n, ch.rank, inp.dtype, inp.itemsize
    fn, avg = UFUNCS[op._value_], op is ReduceOp.AVG
    b = [0]
    for c in counts:
        b.append(b[-1] + c)
    if inp.nbytes > ch.small_bytes:
        locs = _entry(ch, inp, what)
        if locs is not None and all(a >= 0 for a, _ in locs):
            _reduce_scatter_resident(ch, out, inp, op, b, locs, what)
            return
    per = max(1, (ch.slot // isz) // n)  # elements of each segment per chunk
    for lo in range(0, max(counts), per):
        s = ch.next_slot()
        view = ch.stage[r][s][:per * n * isz].view(dt)
        for j in range(n):
            t = max(0, min(per, counts[j] - lo))
            if j != r and t:
                view[j * per:j * per + t] = inp[b[j] + lo:b[j] + lo + t]
        ch.step(what)
        t = max(0, min(per, counts[r] - lo))
        if t:
            xs = [inp[b[r] + lo:b[r] + lo + t] if i == r else ch.stage[i][s][r * per * isz:(r * per + t) * isz].view(dt)
                  for i in range(n)]
            reduce_segments(fn, xs, out[lo:lo + t], lambda t=t, s=s: ch.result[r][s][:t * isz].view(dt), r, avg)


def _reduce_scatter_resident(ch: Any, out: np.ndarray, inp: np.ndarray, op: ReduceOp, b: list[int], locs: list,
                             what: object) -> None:
    """Every rank's input lives in shared memory: reduce this rank's segment of all of them in
    place into ``out`` (which may be this rank's segment of its input); exit phase."""
    n, r, dt, isz = ch.n, ch.rank, inp.dtype, inp.itemsize
    fn, avg = UFUNCS[op._value_], op is ReduceOp.AVG
    arrays = [inp if j == r else _peer(ch, j, locs[j], inp.nbytes, dt) for j in range(n)]
    count = b[r + 1] - b[r]
    step = max(1, _RESIDENT_CHUNK // isz)
    tmp = np.empty(min(step, count), dt) if n > 2 and r >= 2 else None
    for lo in range(0, count, step):  # in pieces: the scratch of three or more ranks stays bounded
        t = min(step, count - lo)
        a = b[r] + lo
        reduce_segments(fn, [x[a:a + t] for x in arrays], out[lo:lo + t], tmp[:t] if tmp is not None else None, r, avg)
    ch.step(what)  # exit: nobody changes its input before every rank has read its segment


def _reduce_to_root(ch: Any, out: np.ndarray, inp: np.ndarray, op: ReduceOp, counts: list[int], what: object,
                    root: int) -> None:
    """Reduce: every rank stages each chunk of every segment (``out`` may be ``inp``); the root
    reduces them all."""
    n, r, dt, isz = ch.n, ch.rank, inp.dtype, inp.itemsize
    fn, avg = UFUNCS[op._value_], op is ReduceOp.AVG
    b = [0]
    for c in counts:
        b.append(b[-1] + c)
    per = max(1, (ch.slot // isz) // n)
    for lo in range(0, max(counts), per):
        s = ch.next_slot()
        view = ch.stage[r][s][:per * n * isz].view(dt)
        for j in range(n):
            t = max(0, min(per, counts[j] - lo))
            view[j * per:j * per + t] = inp[b[j] + lo:b[j] + lo + t]
        ch.step(what)
        if r != root:
            continue
        for j in range(n):
            t = max(0, min(per, counts[j] - lo))
            if t:
                xs = [ch.stage[i][s][j * per * isz:(j * per + t) * isz].view(dt) for i in range(n)]
                reduce_segments(fn, xs, out[b[j] + lo:b[j] + lo + t], None, 0, avg)  # operands are staged copies
