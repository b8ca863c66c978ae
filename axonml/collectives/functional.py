"""Tensor collectives with PyTorch's names and one convention:
``fn(tensor, ..., group=None, async_op=False) -> Work | None``.

Note on validation: everything a user can get wrong (a tensor on a device the backend
does not serve, a rank outside the group, list lengths that do not match the group
size, mismatched dtypes or sizes) raises here, before any communication, on the rank
that got it wrong. What only the ranks together can see (another rank called another
collective, shape or dtype) is the backend's divergence check.

Note on copies: backends see contiguous arrays. A non-contiguous tensor is copied in
and its result copied out; float16/bfloat16 tensors are reduced through a float32 copy
(float32 accumulation) unless the backend reduces low precision natively. Copy-out runs
on the communication thread before the ``Work`` completes, and bumps the tensor's
version counter, so after ``wait()`` (or a synchronous call) the tensor holds the result.
Ranks (``src``, ``dst``) are world ranks, as in PyTorch.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from ..errors import DeviceError, DTypeError, ShapeError
from ..runtime import get_array_module
from ..tensor.tensor import Tensor
from .api import _state, resolve_group
from .process_group import ProcessGroup
from .types import ReduceOp, Work, check_reduce_dtype

__all__ = [
    "all_reduce",
    "all_reduce_coalesced",
    "broadcast",
    "reduce",
    "all_gather",
    "all_gather_into_tensor",
    "gather",
    "scatter",
    "reduce_scatter",
    "reduce_scatter_tensor",
    "all_to_all",
    "all_to_all_single",
    "barrier",
]

_LOW_PRECISION = ("float16", "bfloat16")


# -- validation and copies -------------------------------------------------------------------


def check_tensor(t: Any, pg: ProcessGroup, what: str, name: str = "tensor") -> None:
    """Raise unless ``t`` is a Tensor on a device the group's backend serves."""
    if not isinstance(t, Tensor):
        raise TypeError(f"{what}: {name} must be an axonml Tensor, got {type(t).__name__}")
    if t.device.type not in pg.devices:
        raise DeviceError(
            f"{what}: {name} is on {t.device}, but the {pg.backend_name!r} backend of group {pg.name!r} works on "
            f"{'/'.join(pg.devices)} tensors; move it with .to({pg.devices[0]!r}) or use a backend for {t.device.type}"
        )


def check_same(ref: Tensor, others: Sequence[Tensor], what: str, names: str, *, shape: bool = True) -> None:
    """Raise unless every tensor of ``others`` has ``ref``'s dtype, device (and shape)."""
    for i, o in enumerate(others):
        if o.dtype is not ref.dtype:
            raise DTypeError(f"{what}: {names}[{i}] has dtype {o.dtype.name} but the tensor has {ref.dtype.name}")
        if o.device != ref.device:
            raise DeviceError(f"{what}: {names}[{i}] is on {o.device} but the tensor is on {ref.device}")
        if shape and tuple(o.shape) != tuple(ref.shape):
            raise ShapeError(f"{what}: {names}[{i}] has shape {tuple(o.shape)} but the tensor has {tuple(ref.shape)}")


def check_len(lst: Any, n: int, what: str, name: str) -> list:
    """Raise unless ``lst`` is a list/tuple of ``n`` tensors."""
    if not isinstance(lst, (list, tuple)):
        raise TypeError(f"{what}: {name} must be a list of tensors, got {type(lst).__name__}")
    if len(lst) != n:
        raise ValueError(f"{what}: {name} has {len(lst)} tensors but the group has {n} ranks; pass one per rank")
    return list(lst)


def group_rank(pg: ProcessGroup, world_rank: Any, what: str, arg: str) -> int:
    """The group rank of ``world_rank`` (an ``int``), or a clear ValueError."""
    if isinstance(world_rank, bool) or not isinstance(world_rank, (int, np.integer)):
        raise TypeError(f"{what}: {arg} must be an int rank, got {world_rank!r}")
    if int(world_rank) not in pg.global_ranks:
        raise ValueError(f"{what}: {arg}={world_rank} is not a rank of group {pg.name!r} (its world ranks: {pg.global_ranks})")
    return pg.global_ranks.index(int(world_rank))


def _upcast(t: Tensor, pg: ProcessGroup) -> bool:
    return t.dtype.name in _LOW_PRECISION and not pg.native_low_precision


def read_array(t: Tensor, upcast: bool = False) -> Any:
    """A contiguous array with ``t``'s values (``t``'s own storage when possible)."""
    a = t._data
    if upcast:
        return a.astype(np.float32)
    return a if a.flags.c_contiguous else get_array_module(a).ascontiguousarray(a)


class Outputs:
    """Arrays a backend writes into, and the copy-back into their tensors afterwards."""

    def __init__(self) -> None:
        self._pairs: list[tuple[Tensor, Any]] = []
        self.result: Any = None

    def add(self, t: Tensor, upcast: bool = False) -> Any:
        """The array the backend writes for ``t`` (its storage when contiguous and not upcast)."""
        a = t._data
        if upcast:
            a = a.astype(np.float32)
        elif not a.flags.c_contiguous:
            a = get_array_module(a).ascontiguousarray(a)
        self._pairs.append((t, a))
        return a

    def add_copy(self, t: Tensor, src: Any) -> None:
        """Copy ``src`` (any array of ``t``'s size) into ``t`` after the collective."""
        self._pairs.append((t, src))

    def __call__(self) -> Any:
        for t, a in self._pairs:
            if a is not t._data:
                t._data[...] = a.reshape(t._data.shape).astype(t._data.dtype, copy=False)
            t._vc[0] += 1
        return self.result


def finish(work: Work, async_op: bool) -> Work | None:
    """Return the Work (async) or wait for it and return None."""
    if async_op:
        return work
    work.wait()
    return None


def sync_cache(pg: ProcessGroup) -> dict:
    """The group's cache of validated synchronous calls on NumPy tensors: key (op, shapes,
    dtypes, arguments) -> the meta (and more) of a call that passed validation with them."""
    cache = pg.__dict__.get("_sync_meta")
    if cache is None or len(cache) > 256:
        cache = pg.__dict__["_sync_meta"] = {}
    return cache


def meta(op: str, tensors: Sequence[Tensor], async_op: bool) -> dict:
    """Names for the divergence check (the public op name, user dtype and shapes), and
    whether the caller waits at once (then the collective may run in the caller's thread)."""
    return {"op": op, "dtype": tensors[0].dtype.name if tensors else "", "shapes": tuple(tuple(t.shape) for t in tensors),
            "sync": not async_op}


# -- reductions and broadcast -------------------------------------------------------------------


def all_reduce(tensor: Tensor, op: ReduceOp = ReduceOp.SUM, group: Any = None, async_op: bool = False) -> Work | None:
    """Reduce ``tensor`` across the ranks of ``group``, in place on every rank.

    Example::

        t = ax.tensor([float(get_rank() + 1)])
        all_reduce(t)              # t == n (n + 1) / 2 on every rank
    """
    if async_op:
        return all_reduce_coalesced([tensor], op, group, async_op, _name="all_reduce")
    # the synchronous path, kept short (a small all-reduce is latency-bound): no Outputs, the
    # version bump after the wait (the caller's thread waits for it anyway)
    pg = (_state().default if group is None else None) or resolve_group(group, "all_reduce")
    a = getattr(tensor, "_data", None)
    # checked once per (group, op, shape, dtype) of a NumPy tensor: the meta below is cached on the
    # group (id(op) is safe: only validated ReduceOp members, which live forever, are cached)
    cache = pg.__dict__.get("_sync_meta") or sync_cache(pg)
    m = cache.get((id(op), a.shape, a.dtype)) if type(a) is np.ndarray and isinstance(tensor, Tensor) else None
    if m is None:
        check_tensor(tensor, pg, "all_reduce")
        check_reduce_dtype(op, tensor.dtype.np, "all_reduce")
        a = tensor._data
        if _upcast(tensor, pg):
            return all_reduce_coalesced([tensor], op, group, async_op, _name="all_reduce")
        m = {"op": "all_reduce", "dtype": tensor.dtype.name, "shapes": (tuple(tensor.shape),), "sync": True}
        if type(a) is np.ndarray:
            cache[(id(op), a.shape, a.dtype)] = m
    if not a.flags.c_contiguous:
        return all_reduce_coalesced([tensor], op, group, async_op, _name="all_reduce")
    run = m.get("_run")  # a backend's latency path for this (op, shape, dtype): see shm_fastpath
    if run is None or not run[1](a):
        pg.allreduce((a,), op, m).wait()
    tensor._vc[0] += 1
    return None


def all_reduce_coalesced(tensors: Sequence[Tensor], op: ReduceOp = ReduceOp.SUM, group: Any = None, async_op: bool = False,
                         *, _name: str = "all_reduce_coalesced") -> Work | None:
    """All-reduce many (small) tensors as one collective; each is reduced in place."""
    pg = resolve_group(group, _name)
    tensors = list(tensors)
    for i, t in enumerate(tensors):
        check_tensor(t, pg, _name, f"tensors[{i}]" if len(tensors) > 1 else "tensor")
        check_reduce_dtype(op, t.dtype.np, _name)
    outs = Outputs()
    arrays = [outs.add(t, _upcast(t, pg)) for t in tensors]
    outs.result = tensors
    return finish(pg.allreduce(arrays, op, meta(_name, tensors, async_op), outs), async_op)


def broadcast(tensor: Tensor, src: int, group: Any = None, async_op: bool = False) -> Work | None:
    """Copy world rank ``src``'s ``tensor`` into every rank's ``tensor``."""
    pg = resolve_group(group, "broadcast")
    a = getattr(tensor, "_data", None)
    # synchronous on a contiguous NumPy tensor: validated once per (group, src, shape, dtype), no copies
    fast = not async_op and type(a) is np.ndarray and type(src) is int and a.flags.c_contiguous and isinstance(tensor, Tensor)
    if fast:
        key = ("broadcast", src, a.shape, a.dtype)
        hit = sync_cache(pg).get(key)
        if hit is not None:
            pg.broadcast((a,), hit[1], hit[0]).wait()
            tensor._vc[0] += 1
            return None
    check_tensor(tensor, pg, "broadcast")
    root = group_rank(pg, src, "broadcast", "src")
    if fast:
        m = meta("broadcast", [tensor], False)
        sync_cache(pg)[key] = (m, root)
        pg.broadcast((a,), root, m).wait()
        tensor._vc[0] += 1
        return None
    outs = Outputs()
    arr = outs.add(tensor)
    outs.result = [tensor]
    return finish(pg.broadcast([arr], root, meta("broadcast", [tensor], async_op), outs), async_op)


def reduce(tensor: Tensor, dst: int, op: ReduceOp = ReduceOp.SUM, group: Any = None, async_op: bool = False) -> Work | None:
    """Reduce ``tensor`` across ranks into world rank ``dst``'s ``tensor`` (others unchanged)."""
    pg = resolve_group(group, "reduce")
    check_tensor(tensor, pg, "reduce")
    check_reduce_dtype(op, tensor.dtype.np, "reduce")
    root = group_rank(pg, dst, "reduce", "dst")
    outs = Outputs()
    arr = outs.add(tensor, _upcast(tensor, pg))
    outs.result = [tensor]
    return finish(pg.reduce([arr], root, op, meta("reduce", [tensor], async_op), outs), async_op)


# -- gathers and scatters ---------------------------------------------------------------------------


def all_gather(tensor_list: list[Tensor], tensor: Tensor, group: Any = None, async_op: bool = False) -> Work | None:
    """Fill ``tensor_list[i]`` with rank i's ``tensor`` on every rank."""
    pg = resolve_group(group, "all_gather")
    check_tensor(tensor, pg, "all_gather")
    outs_list = check_len(tensor_list, pg.size(), "all_gather", "tensor_list")
    a = tensor._data
    # NumPy outputs of the input's shape and dtype (the CPU device) pass check_same: skip its slower checks
    if type(a) is not np.ndarray or not all(isinstance(t, Tensor) and type(t._data) is np.ndarray and t._data.shape == a.shape
                                            and t._data.dtype == a.dtype for t in outs_list):
        check_same(tensor, outs_list, "all_gather", "tensor_list")
    n = tensor.numel()
    flat = get_array_module(a).empty(n * pg.size(), dtype=a.dtype)
    if not async_op and type(a) is np.ndarray:  # synchronous on NumPy: the meta cached, the copies here
        key = ("all_gather", a.shape, a.dtype)
        cache = sync_cache(pg)
        m = cache.get(key)
        if m is None:
            m = cache[key] = meta("all_gather", [tensor], False)
        pg.allgather(flat, a if a.flags.c_contiguous else np.ascontiguousarray(a), None, m).wait()
        for i, t in enumerate(outs_list):
            t._data[...] = flat[i * n:(i + 1) * n].reshape(t._data.shape)
            t._vc[0] += 1
        return None
    outs = Outputs()
    for i, t in enumerate(outs_list):
        outs.add_copy(t, flat[i * n:(i + 1) * n])
    outs.result = outs_list
    return finish(pg.allgather(flat, read_array(tensor), None, meta("all_gather", [tensor], async_op), outs), async_op)


def all_gather_into_tensor(output_tensor: Tensor, input_tensor: Tensor, group: Any = None, async_op: bool = False
                           ) -> Work | None:
    """Concatenate every rank's ``input_tensor`` into ``output_tensor`` (``world * numel`` elements,
    e.g. shape ``(world * d0, ...)`` or ``(world, d0, ...)``)."""
    what = "all_gather_into_tensor"
    pg = resolve_group(group, what)
    a, o = getattr(input_tensor, "_data", None), getattr(output_tensor, "_data", None)
    # synchronous on NumPy tensors with a contiguous output: validated once per (group, shapes, dtypes)
    fast = (not async_op and type(a) is np.ndarray and type(o) is np.ndarray and o.flags.c_contiguous
            and isinstance(input_tensor, Tensor) and isinstance(output_tensor, Tensor))
    if fast:
        key = (what, a.shape, o.shape, a.dtype, o.dtype)
        m = sync_cache(pg).get(key)
        if m is not None:
            pg.allgather(o, a if a.flags.c_contiguous else np.ascontiguousarray(a), None, m).wait()
            output_tensor._vc[0] += 1
            return None
    check_tensor(input_tensor, pg, what, "input_tensor")
    check_tensor(output_tensor, pg, what, "output_tensor")
    check_same(input_tensor, [output_tensor], what, "output_tensor", shape=False)
    if output_tensor.numel() != pg.size() * input_tensor.numel():
        raise ShapeError(f"{what}: output_tensor has {output_tensor.numel()} elements (shape {tuple(output_tensor.shape)}) "
                         f"but the group has {pg.size()} ranks of {input_tensor.numel()} (input shape "
                         f"{tuple(input_tensor.shape)}); it needs {pg.size() * input_tensor.numel()}")
    if fast:
        m = sync_cache(pg)[key] = meta(what, [input_tensor], False)
        pg.allgather(o, a if a.flags.c_contiguous else np.ascontiguousarray(a), None, m).wait()
        output_tensor._vc[0] += 1
        return None
    outs = Outputs()
    out = outs.add(output_tensor)
    outs.result = [output_tensor]
    return finish(pg.allgather(out, read_array(input_tensor), None, meta(what, [input_tensor], async_op), outs), async_op)


def gather(tensor: Tensor, gather_list: list[Tensor] | None = None, dst: int = 0, group: Any = None,
           async_op: bool = False) -> Work | None:
    """Collect every rank's ``tensor`` into ``gather_list`` on world rank ``dst``."""
    pg = resolve_group(group, "gather")
    check_tensor(tensor, pg, "gather")
    root = group_rank(pg, dst, "gather", "dst")
    outs = Outputs()
    arrays = None
    if pg.rank() == root:
        if gather_list is None:
            raise ValueError(f"gather: gather_list is required on the destination rank {dst}")
        lst = check_len(gather_list, pg.size(), "gather", "gather_list")
        check_same(tensor, lst, "gather", "gather_list")
        arrays = [outs.add(t) for t in lst]
        outs.result = lst
    elif gather_list:
        raise ValueError(f"gather: gather_list must be None or empty on ranks other than the destination {dst}")
    return finish(pg.gather(read_array(tensor), arrays, root, meta("gather", [tensor], async_op), outs), async_op)


def scatter(tensor: Tensor, scatter_list: list[Tensor] | None = None, src: int = 0, group: Any = None,
            async_op: bool = False) -> Work | None:
    """Copy world rank ``src``'s ``scatter_list[i]`` into rank i's ``tensor``."""
    pg = resolve_group(group, "scatter")
    check_tensor(tensor, pg, "scatter")
    root = group_rank(pg, src, "scatter", "src")
    inputs = None
    if pg.rank() == root:
        if scatter_list is None:
            raise ValueError(f"scatter: scatter_list is required on the source rank {src}")
        lst = check_len(scatter_list, pg.size(), "scatter", "scatter_list")
        check_same(tensor, lst, "scatter", "scatter_list")
        inputs = [read_array(t) for t in lst]
    elif scatter_list:
        raise ValueError(f"scatter: scatter_list must be None or empty on ranks other than the source {src}")
    outs = Outputs()
    out = outs.add(tensor)
    outs.result = [tensor]
    return finish(pg.scatter(out, inputs, root, meta("scatter", [tensor], async_op), outs), async_op)


def reduce_scatter(output: Tensor, input_list: list[Tensor], op: ReduceOp = ReduceOp.SUM, group: Any = None,
                   async_op: bool = False) -> Work | None:
    """Reduce ``input_list[i]`` across ranks into rank i's ``output``.

    ``input_list[i]`` may differ in size between list positions (uneven segments), but
    ``output`` must have as many elements as ``input_list[rank]``.
    """
    pg = resolve_group(group, "reduce_scatter")
    check_tensor(output, pg, "reduce_scatter", "output")
    check_reduce_dtype(op, output.dtype.np, "reduce_scatter")
    lst = check_len(input_list, pg.size(), "reduce_scatter", "input_list")
    check_same(output, lst, "reduce_scatter", "input_list", shape=False)
    counts = [t.numel() for t in lst]
    if counts[pg.rank()] != output.numel():
        raise ShapeError(f"reduce_scatter: output has {output.numel()} elements but input_list[{pg.rank()}] (this rank's "
                         f"segment) has {counts[pg.rank()]}")
    up = _upcast(output, pg)
    xp = get_array_module(output._data)
    flat = xp.concatenate([read_array(t, up).reshape(-1) for t in lst]) if lst else xp.empty(0, output._data.dtype)
    outs = Outputs()
    out = outs.add(output, up)
    outs.result = [output]
    return finish(pg.reduce_scatter(out, flat, op, counts, meta("reduce_scatter", lst, async_op), outs), async_op)


def reduce_scatter_tensor(output: Tensor, input: Tensor, op: ReduceOp = ReduceOp.SUM, group: Any = None,
                          async_op: bool = False) -> Work | None:
    """Reduce ``input`` (``world * output.numel()`` elements) across ranks; rank i keeps segment i in ``output``."""
    what = "reduce_scatter_tensor"
    pg = resolve_group(group, what)
    a, o = getattr(input, "_data", None), getattr(output, "_data", None)
    # synchronous on NumPy tensors with a contiguous output: validated once per (group, op, shapes, dtypes)
    fast = (not async_op and type(a) is np.ndarray and type(o) is np.ndarray and o.flags.c_contiguous
            and isinstance(op, ReduceOp) and isinstance(input, Tensor) and isinstance(output, Tensor))
    if fast:
        key = (what, id(op), a.shape, o.shape, a.dtype, o.dtype)  # id(op): only ReduceOp members, which live forever
        m = sync_cache(pg).get(key)
        if m is not None:
            pg.reduce_scatter(o, a if a.flags.c_contiguous else np.ascontiguousarray(a), op, None, m).wait()
            output._vc[0] += 1
            return None
    check_tensor(output, pg, what, "output")
    check_tensor(input, pg, what, "input")
    check_same(output, [input], what, "input", shape=False)
    check_reduce_dtype(op, output.dtype.np, what)
    if input.numel() != pg.size() * output.numel():
        raise ShapeError(f"{what}: input has {input.numel()} elements (shape {tuple(input.shape)}) but the group has "
                         f"{pg.size()} ranks of {output.numel()} (output shape {tuple(output.shape)}); it needs "
                         f"{pg.size() * output.numel()}")
    up = _upcast(output, pg)
    if fast and not up:
        m = sync_cache(pg)[key] = meta(what, [input], False)
        pg.reduce_scatter(o, a if a.flags.c_contiguous else np.ascontiguousarray(a), op, None, m).wait()
        output._vc[0] += 1
        return None
    outs = Outputs()
    out = outs.add(output, up)
    outs.result = [output]
    return finish(pg.reduce_scatter(out, read_array(input, up), op, None, meta(what, [input], async_op), outs), async_op)


# -- all to all -----------------------------------------------------------------------------------


def _splits(sizes: Sequence[int] | None, dim0: int, n: int, what: str, name: str) -> list[int]:
    if sizes is None or len(sizes) == 0:
        if dim0 % n:
            raise ShapeError(f"all_to_all_single: {what} has {dim0} rows, which {n} ranks cannot split evenly; "
                             f"pass {name}")
        return [dim0 // n] * n
    sizes = [int(s) for s in sizes]
    if len(sizes) != n or any(s < 0 for s in sizes) or sum(sizes) != dim0:
        raise ValueError(f"all_to_all_single: {name}={sizes} must be {n} non-negative sizes summing to the {dim0} rows "
                         f"of {what}")
    return sizes


def all_to_all_single(output: Tensor, input: Tensor, output_split_sizes: Sequence[int] | None = None,
                      input_split_sizes: Sequence[int] | None = None, group: Any = None, async_op: bool = False
                      ) -> Work | None:
    """Split ``input`` along dim 0 (``input_split_sizes[j]`` rows to rank j) and gather the
    pieces received from every rank into ``output`` (``output_split_sizes[j]`` rows from j)."""
    what = "all_to_all_single"
    pg = resolve_group(group, what)
    check_tensor(output, pg, what, "output")
    check_tensor(input, pg, what, "input")
    check_same(output, [input], what, "input", shape=False)
    n = pg.size()
    in_rows = input.shape[0] if input.ndim else 1
    out_rows = output.shape[0] if output.ndim else 1
    in_row = input.numel() // in_rows if in_rows else int(np.prod(input.shape[1:], dtype=np.int64))
    out_row = output.numel() // out_rows if out_rows else int(np.prod(output.shape[1:], dtype=np.int64))
    if in_row != out_row:
        raise ShapeError(f"{what}: input rows have {in_row} elements (shape {tuple(input.shape)}) but output rows have "
                         f"{out_row} (shape {tuple(output.shape)})")
    ins = _splits(input_split_sizes, in_rows, n, "input", "input_split_sizes")
    outs_split = _splits(output_split_sizes, out_rows, n, "output", "output_split_sizes")
    outs = Outputs()
    out = outs.add(output)
    outs.result = [output]
    return finish(pg.alltoall(out, read_array(input), [s * out_row for s in outs_split], [s * in_row for s in ins],
                              meta(what, [input], async_op), outs), async_op)


def all_to_all(output_tensor_list: list[Tensor], input_tensor_list: list[Tensor], group: Any = None,
               async_op: bool = False) -> Work | None:
    """Send ``input_tensor_list[j]`` to rank j; receive rank j's piece into ``output_tensor_list[j]``."""
    pg = resolve_group(group, "all_to_all")
    outs_list = check_len(output_tensor_list, pg.size(), "all_to_all", "output_tensor_list")
    ins_list = check_len(input_tensor_list, pg.size(), "all_to_all", "input_tensor_list")
    for i, t in enumerate(outs_list + ins_list):
        check_tensor(t, pg, "all_to_all", "output_tensor_list" if i < len(outs_list) else "input_tensor_list")
    ref = ins_list[0]
    check_same(ref, ins_list + outs_list, "all_to_all", "tensor lists", shape=False)
    in_counts = [t.numel() for t in ins_list]
    out_counts = [t.numel() for t in outs_list]
    xp = get_array_module(ref._data)
    flat_in = xp.concatenate([read_array(t).reshape(-1) for t in ins_list])
    flat_out = xp.empty(sum(out_counts), dtype=ref._data.dtype)
    outs = Outputs()
    off = 0
    for t, c in zip(outs_list, out_counts):
        outs.add_copy(t, flat_out[off:off + c])
        off += c
    outs.result = outs_list
    return finish(pg.alltoall(flat_out, flat_in, out_counts, in_counts, meta("all_to_all", ins_list, async_op), outs), async_op)


def barrier(group: Any = None, async_op: bool = False, device_ids: Any = None) -> Work | None:
    """Block until every rank of ``group`` has entered the barrier."""
    pg = resolve_group(group, "barrier")
    return finish(pg.barrier({"op": "barrier", "sync": not async_op}), async_op)


#: The functions above, by name (for the package's re-exports and tests).
COLLECTIVES: dict[str, Callable[..., Any]] = {name: globals()[name] for name in __all__}
