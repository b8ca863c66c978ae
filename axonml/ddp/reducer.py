"""The reducer: gradient buckets and their overlapped all-reduces, for DDP.

Note on buckets: parameters that require grad are grouped into flat buffers, one dtype
per bucket. The first assignment follows the reverse registration order (gradients of
the last layers are computed first) with a small first bucket (:data:`FIRST_BUCKET_BYTES`,
so that communication starts early) and ``bucket_cap_mb`` for the others; a bucket is
closed once it reaches its limit, and buckets are ordered by their first parameter, as
PyTorch's ``compute_bucket_assignment_by_size`` does. During the first synchronized
backward the reducer records the order in which gradients became ready; at the next
forward it broadcasts that order from the authoritative rank and rebuilds the buckets
from it (not with ``find_unused_parameters`` unless ``static_graph``: a dynamic graph has
no stable order; PyTorch does the same).

Note on the hot path: every parameter gets a post-accumulate-grad hook. When it fires,
the gradient is copied into its slot of the bucket, unless it already is that slot. At
the end of each synchronizing forward every parameter without a ``.grad`` is offered its
slot as the place to compute its gradient (:func:`~axonml.autograd.offer_grad_buffer`;
Linear layers take it for their weights), so most gradients of a typical model are born
in the bucket and the copy is skipped (a 4-layer 1024-wide MLP: 2.4 ms less per step
here); offers are withdrawn when the reduction ends and inside ``no_sync()``. The
all-reduce averages: AVG divides each reduced chunk by the group size while it is in the
caches (a join with another divisor scales gradients as they enter the bucket instead).
A bucket whose slots are all filled is *ready*;
ready buckets are launched strictly in bucket order (bucket k+1 waits for bucket k to be
launched even if it filled first), so every rank submits the same all-reduces in the same
order and the backend's sequence numbers agree. All-reduces run on the group's
communication thread while backward goes on.

Note on memory: when the group can allocate buffers in shared memory (the ``tcp``
backend's ``alloc_shared``, a collective), CPU buckets live there, so that the bucket
all-reduces between the ranks of one host read each other's buckets in place instead of
staging them through the group's segment. Every rank builds its buckets in the same
order, so the allocations pair up.

Note on writing gradients back (without ``gradient_as_bucket_view``): a ``.grad`` that
existed before this backward (no_sync accumulation, ``zero_grad(set_to_none=False)``)
keeps its identity and gets the averaged values copied in, on the communication thread
as soon as its bucket is reduced. A ``.grad`` that backward created is instead replaced
by its bucket slot, which saves a copy of every gradient per step; the bucket then
moves to another of its buffers while anything still refers to the handed-out one
(reference counts of the buffer and its views; see :class:`.buckets._Bucket`), so a
gradient the user holds is never overwritten, as PyTorch's separate gradients are not.

Note on the end of backward: the engine has no "run at the end of backward" queue (like
PyTorch's ``queue_callback``), and needs none here: the hook that fills the last bucket
is, by construction, the last parameter gradient of this backward, so that hook waits
for every bucket (in bucket order), writes the averaged gradients back to ``.grad`` (see
above) and closes the iteration. A parameter
that never gets a gradient leaves the iteration open; the next forward raises
:class:`DDPError` naming it (instead of a hang). With ``find_unused_parameters`` the
forward walks the autograd graph from the outputs; parameters it does not reach are
marked ready (zeros) at the first hook, their "used" flags are all-reduced, and a
parameter unused on every rank keeps its ``.grad`` untouched, as in PyTorch.
"""

from __future__ import annotations

import logging
import time
import weakref
from typing import Any, Callable

import numpy as np

from ..autograd.engine import offer_grad_buffer
from ..autograd.variable import TensorBase, make_tensor
from ..collectives.api import get_global_rank
from ..collectives.functional import all_reduce, broadcast
from ..collectives.types import ReduceOp, Work
from ..errors import CollectiveError
from ..tensor.tensor import Tensor
from .buckets import FIRST_BUCKET_BYTES, DDPError, GradBucket, _Bucket, compute_bucket_assignment, reached_leaves
from .futures import Future

__all__ = ["DDPError", "FIRST_BUCKET_BYTES", "GradBucket", "Reducer", "compute_bucket_assignment"]

logger = logging.getLogger(__name__)


def _copy_pairs(pairs: list) -> None:
    for dst, src in pairs:
        dst[...] = src


class Reducer:
    """Buckets the gradients of ``params`` and all-reduces them during backward.

    Used by :class:`~axonml.ddp.DistributedDataParallel`; see the module note.

    Args:
        params: the parameters that require grad (registration order).
        names: their dotted names (for messages).
        group: the process group.
        bucket_bytes: the bucket size limit.
        gradient_as_bucket_view: ``.grad`` of each parameter is a view of its bucket.
        find_unused_parameters: walk the graph after forward; mark unreached ones ready.
        static_graph: the set of used parameters never changes (found in the first iteration).
    """

    def __init__(self, params: list, names: list[str], group: Any, bucket_bytes: int, gradient_as_bucket_view: bool,
                 find_unused_parameters: bool, static_graph: bool) -> None:
        self.params = params
        self.names = names
        self.group = group
        self.rank, self.world_size = group.rank(), group.size()
        self.bucket_bytes = int(bucket_bytes)
        self.first_bucket_bytes = min(FIRST_BUCKET_BYTES, self.bucket_bytes)
        self.as_view = bool(gradient_as_bucket_view)
        self.find_unused = bool(find_unused_parameters)
        self.static_graph = bool(static_graph)
        self._device = params[0].device
        self._comm_hook: Callable | None = None
        self._comm_state: Any = None
        # per-iteration state
        self._expect_hooks = False  # set by a synchronizing forward; hooks do nothing otherwise (no_sync)
        self._require_finalize = False  # a hook fired and the last bucket has not been finalized yet
        self._seen_hook = False
        self._finalized = False  # between the end of a reduction and the next forward
        self._warned_late = False
        self._ready = [False] * len(params)
        self._unused: list[int] = []
        self._unused_set: set[int] = set()
        self._grads_before: list = [None] * len(params)
        self._static_unused: list[int] | None = None
        self._local_used = np.zeros(len(params), dtype=np.int32)
        self._used_tensor: Tensor | None = None
        self._used_work: Work | None = None
        self._next = 0
        self._offered = False  # bucket slots were offered as gradient buffers (see _offer_slots)
        self._inv_div: float | None = 1.0 / self.world_size  # gradients scaled as they enter the bucket (None: not)
        self._reduce_op = ReduceOp.SUM  # of the built-in all-reduce (see _set_division)
        # bucket rebuilding from the observed order
        self._should_rebuild = (not self.find_unused) or self.static_graph
        self._has_rebuilt = False
        self._rebuild_pending = False
        self._record_order = False
        self._ready_order: list[int] = []
        self.iteration = 0
        self.stats: dict = {}
        self._buckets: list[_Bucket] = []
        self._loc: list[tuple[int, int]] = []
        self._build(self._assign(list(reversed(range(len(params))))))
        self._handles = [p.register_post_accumulate_grad_hook(self._make_hook(i)) for i, p in enumerate(params)]

    # -- bucket layout ----------------------------------------------------------------------------
    def _assign(self, order: list[int]) -> list[list[int]]:
        nbytes = [int(p._data.nbytes) for p in self.params]
        keys = [(str(p._data.dtype), str(p.device)) for p in self.params]
        return compute_bucket_assignment(nbytes, keys, order, [self.first_bucket_bytes, self.bucket_bytes])

    def _build(self, assignment: list[list[int]]) -> None:
        old_views = {}
        for b in self._buckets:  # gradients that are views of the old buckets move with the rebuild
            for k, i in enumerate(b.param_ids):
                old_views[i] = b.view_tensors[k]
        alloc = getattr(self.group, "alloc_shared", None) if self._device.type == "cpu" and self.world_size > 1 else None
        pooled = not self.as_view and self._device.type == "cpu"
        self._buckets = [_Bucket(bi, self.params, ids, alloc, pooled) for bi, ids in enumerate(assignment)]
        self._loc = [(0, 0)] * len(self.params)
        for b in self._buckets:
            for k, i in enumerate(b.param_ids):
                self._loc[i] = (b.index, k)
                p = self.params[i]
                if self.as_view and p.grad is not None and (i not in old_views or p.grad is old_views[i]):
                    b.views[k][...] = p.grad._data
                    p.grad = b.view_tensors[k]
        logger.debug("rank=%d DDP buckets: %s", self.rank, [len(b.param_ids) for b in self._buckets])

    def bucket_layout(self) -> list[list[str]]:
        """The parameter names of each bucket, in launch order."""
        return [[self.names[i] for i in b.param_ids] for b in self._buckets]

    def bucket_sizes(self) -> list[int]:
        """The bytes of each bucket, in launch order."""
        return [b.nbytes for b in self._buckets]

    def rebuild_buckets(self, src_group_rank: int) -> bool:
        """At a forward after the first synchronized backward: rebuild the buckets from the
        ready order observed on group rank ``src_group_rank`` (a broadcast). Returns True
        when a rebuild ran."""
        if not self._rebuild_pending:
            return False
        n = len(self.params)
        order = self._ready_order
        if sorted(order) != list(range(n)):  # incomplete (e.g. a joined rank): the source decides
            order = list(reversed(range(n)))
        if self.world_size > 1:
            t = make_tensor(self._device.xp.asarray(np.asarray(order, dtype=np.int64)), self._device)
            broadcast(t, get_global_rank(self.group, src_group_rank), group=self.group)
            order = [int(v) for v in self._device.to_host(t._data)]
        assignment = self._assign(order)
        if assignment != [b.param_ids for b in self._buckets]:
            self._build(assignment)
        self._rebuild_pending = False
        self._has_rebuilt = True
        self._ready_order = []
        logger.info("rank=%d DDP rebuilt %d buckets from the observed gradient order", self.rank, len(self._buckets))
        return True

    # -- communication hooks ------------------------------------------------------------------------
    def register_comm_hook(self, state: Any, hook: Callable[[Any, GradBucket], Future]) -> None:
        """Use ``hook(state, bucket) -> Future`` instead of the built-in averaging all-reduce."""
        if not callable(hook):
            raise TypeError(f"register_comm_hook: hook must be callable, got {type(hook).__name__}")
        if self._comm_hook is not None:
            raise DDPError("register_comm_hook can only be called once per DistributedDataParallel instance")
        if self.iteration > 0 or self._require_finalize:
            raise DDPError("register_comm_hook must be called before the first backward pass")
        self._comm_hook, self._comm_state = hook, state
        self._inv_div = None

    # -- one iteration ----------------------------------------------------------------------------------
    def check_prior_reduction_finished(self) -> None:
        """Raise when the previous synchronized backward left parameters without a gradient."""
        if not self._require_finalize:
            return
        missing = [i for i, r in enumerate(self._ready) if not r]
        names = ", ".join(f"'{self.names[i]}'" for i in missing[:20]) + (" ..." if len(missing) > 20 else "")
        raise DDPError(
            f"DistributedDataParallel (rank {self.rank}): the previous iteration's gradient reduction did not finish: "
            f"{len(missing)} parameter(s) received no gradient: {names} (indices {missing[:20]}). Every parameter of "
            "the wrapped module must take part in computing the loss. If some parameters are unused in some "
            "iterations, pass find_unused_parameters=True to DistributedDataParallel; otherwise make sure all "
            "forward outputs take part in the loss."
        )

    def disarm(self) -> None:
        """Called by a forward inside no_sync(): the hooks of its backward do nothing."""
        self._expect_hooks = False
        self._finalized = False
        self._withdraw_offers()

    def prepare_for_backward(self, outputs: Any, div_factor: float) -> None:
        """Called at the end of a synchronizing forward: arm the hooks for one backward."""
        self._expect_hooks = True
        self._seen_hook = False
        self._finalized = False
        self._ready = [False] * len(self.params)
        self._next = 0
        self._local_used[:] = 0
        self._used_work = None
        for b in self._buckets:
            b.pending = len(b.param_ids)
            b.future = None
            b.select_free()
        # which gradients exist before this backward: those keep their identity (values are
        # copied into them); gradients backward creates are replaced by bucket slots instead
        self._grads_before = [None if p.grad is None else weakref.ref(p.grad) for p in self.params]
        self._set_division(div_factor)
        self._record_order = self._should_rebuild and not self._has_rebuilt
        self._ready_order = []
        if self.static_graph:  # the graph is walked once; its unused set holds for every iteration
            if self._static_unused is None:
                self._static_unused = self._find_unused(outputs)
            self._unused = self._static_unused
        elif self.find_unused:
            self._unused = self._find_unused(outputs)
        else:
            self._unused = []
        self._unused_set = set(self._unused)
        self._offer_slots()
        self.stats = {"forward_end": time.monotonic(), "launch_times": [], "first_hook": None}

    def _set_division(self, div_factor: float) -> None:
        """How the built-in all-reduce averages: dividing by the group size is the reduction's
        own (AVG, on each reduced chunk while it is in the caches: no pass over the gradients);
        another divisor (join with ``divide_by_initial_world_size=False``) scales each gradient
        as it enters its bucket, then SUM. Every rank of an iteration gets the same divisor."""
        if self._comm_hook is not None:
            return
        avg = self.world_size > 1 and float(div_factor) == float(self.world_size)
        self._reduce_op = ReduceOp.AVG if avg else ReduceOp.SUM
        self._inv_div = None if avg else 1.0 / float(div_factor)

    def _offer_slots(self) -> None:
        """Offer each parameter without a ``.grad`` its bucket slot as the place where
        backward computes its gradient (see :func:`~axonml.autograd.offer_grad_buffer`):
        a gradient computed there needs no copy into the bucket. CPU buckets only: the CUDA
        path (which copies its slots out at the end) has not been measured with it."""
        if self._device.type != "cpu":
            return
        params, unused = self.params, self._unused_set
        for b in self._buckets:
            views = b.views
            for k, i in enumerate(b.param_ids):
                p = params[i]
                if p.grad is None and i not in unused:
                    offer_grad_buffer(p, views[k])
                    self._offered = True

    def _withdraw_offers(self) -> None:
        if self._offered:
            self._offered = False
            for p in self.params:
                offer_grad_buffer(p, None)

    def _find_unused(self, outputs: Any) -> list[int]:
        reached = reached_leaves(outputs)
        return [i for i, p in enumerate(self.params) if id(p) not in reached]

    def _make_hook(self, i: int) -> Callable[[Any], None]:
        def hook(_param: Any) -> None:
            if self._expect_hooks:
                self._on_grad_ready(i)
            elif self._finalized and not self._warned_late:
                self._warned_late = True  # PyTorch ignores it silently; the gradient stays local
                logger.warning(
                    "rank=%d DistributedDataParallel: parameter '%s' got a gradient after this iteration's "
                    "reduction finished (a second backward over one forward, or a backward through ddp.module); "
                    "that gradient is not averaged across ranks", self.rank, self.names[i])

        return hook

    def _on_grad_ready(self, i: int) -> None:
        if self._ready[i]:
            self._twice(i)
        if not self._seen_hook:
            self._seen_hook = True
            self._require_finalize = True
            self.stats["first_hook"] = time.monotonic()
            for u in self._unused:
                self._mark_ready(u, used=False)
        self._mark_ready(i, used=True)

    def _twice(self, i: int) -> None:
        hint = (" With static_graph=True the set of used parameters must not change across iterations."
                if self.static_graph else "")
        raise DDPError(
            f"DistributedDataParallel (rank {self.rank}): parameter '{self.names[i]}' got a gradient twice in one "
            "iteration: a second backward ran over the outputs of one forward before all gradients were "
            f"reduced, or a parameter found unused got a gradient.{hint} Sum the losses and call backward once "
            "per forward."
        )

    def _mark_ready(self, i: int, used: bool) -> None:
        bi, k = self._loc[i]
        b = self._buckets[bi]
        view = b.views[k]
        p = self.params[i]
        g = p.grad
        inv = self._inv_div
        xp = self._device.xp
        if used:
            self._local_used[i] = 1
        if self._record_order:
            self._ready_order.append(i)
        if g is None:
            view.fill(0)
        elif g._data is view:  # computed in its slot (an offered buffer), or the slot handed out as .grad
            if inv is not None and inv != 1.0:
                xp.multiply(view, inv, out=view)
            if self.as_view and g is not b.view_tensors[k]:
                p.grad = b.view_tensors[k]
        else:
            if inv is None or inv == 1.0:
                view[...] = g._data
            else:
                xp.multiply(g._data, inv, out=view)
            if self.as_view:
                p.grad = b.view_tensors[k]
        self._ready[i] = True
        b.pending -= 1
        if b.pending == 0:
            self._launch_ready()

    def _launch_ready(self) -> None:
        buckets = self._buckets
        while self._next < len(buckets) and buckets[self._next].pending == 0:
            self._launch(buckets[self._next])
            self._next += 1
        if self._next == len(buckets):
            if self.find_unused and not self.static_graph:
                self._launch_used()
            self._finalize()

    def _launch(self, b: _Bucket, write_back: bool = True) -> None:
        b.launch_t = time.monotonic()
        if self.stats:
            self.stats["launch_times"].append(b.launch_t)
        b.written = ()
        if self._comm_hook is None:
            work = all_reduce(b.buffer, self._reduce_op, group=self.group, async_op=True)
            if write_back and not self.as_view:
                # gradients that must keep their identity get the averaged values on the
                # communication thread as soon as this bucket is reduced (still in the caches)
                b.written = {i for i in b.param_ids if i not in self._unused_set and self._keeps_grad(i, b)}
                if b.written:
                    pairs = [(self.params[i].grad._data, b.views[k]) for k, i in enumerate(b.param_ids) if i in b.written]
                    work._add_done_callback(lambda _w, pairs=pairs: _copy_pairs(pairs))
            b.future = Future.from_work(work, b.buffer)
            return
        fut = self._comm_hook(self._comm_state, GradBucket(b, self.params, b.index == len(self._buckets) - 1))
        if isinstance(fut, Work):
            fut = Future.from_work(fut, b.buffer)
        if not isinstance(fut, Future):
            raise TypeError(f"a DDP communication hook must return an axonml.ddp.Future, got {type(fut).__name__}")
        b.future = fut

    def _keeps_grad(self, i: int, b: _Bucket) -> bool:
        """Whether parameter i's ``.grad`` gets the averaged values copied in (it existed before
        this backward, or the bucket cannot hand out its buffer) rather than replaced by its slot."""
        g = self.params[i].grad
        if g is None:
            return False
        if not b.pooled:
            return True
        before = self._grads_before[i]
        return before is not None and before() is g

    def _launch_used(self) -> None:
        self._used_tensor = make_tensor(self._device.xp.asarray(self._local_used), self._device)
        self._used_work = all_reduce(self._used_tensor, ReduceOp.SUM, group=self.group, async_op=True)

    def _wait_bucket(self, b: _Bucket) -> Any:
        try:
            return b.future.wait()
        except CollectiveError as e:
            names = [self.names[i] for i in b.param_ids]
            shown = ", ".join(names[:4]) + (", ..." if len(names) > 4 else "")
            raise type(e)(f"DistributedDataParallel (rank {self.rank}): the gradient all-reduce of bucket {b.index} "
                          f"({len(names)} parameter{'s' if len(names) > 1 else ''}: {shown}) failed: {e}") from e

    def _finalize(self) -> None:
        """Wait for every bucket (in order), then write the averaged gradients back."""
        self._expect_hooks = False
        self._withdraw_offers()
        self.stats["finalize_start"] = time.monotonic()
        for b in self._buckets:
            out = self._wait_bucket(b)
            if isinstance(out, (list, tuple)):
                out = out[0]
            arr = out._data if isinstance(out, TensorBase) else out
            if arr is not b.buffer._data:
                if int(arr.size) != int(b.buffer._data.size):
                    raise DDPError(f"a DDP communication hook returned {arr.size} elements for bucket {b.index} "
                                   f"of {b.buffer._data.size}")
                b.buffer._data[...] = arr.reshape(-1)
        skip: set[int] = set()
        if self._used_work is not None:
            self._used_work.wait()
            used = self._device.to_host(self._used_tensor._data)
            skip = {i for i in self._unused if used[i] == 0}
        elif self.static_graph:
            skip = set(self._unused)
        for b in self._buckets:
            for k, i in enumerate(b.param_ids):
                if i in skip:
                    continue  # unused on every rank: .grad stays as it was (None usually)
                p = self.params[i]
                if self.as_view:
                    if p.grad is not b.view_tensors[k]:
                        p.grad = b.view_tensors[k]
                    p.grad._vc[0] += 1
                elif not self._keeps_grad(i, b):
                    # hand the slot over (no copy); the bucket moves to a free buffer later
                    p.grad = b.view_tensors[k] if b.pooled else make_tensor(b.views[k].copy(), p.device)
                else:
                    if i not in b.written:
                        p.grad._data[...] = b.views[k]
                    p.grad._vc[0] += 1
        self._end_iteration()
        self.stats["finalize_end"] = time.monotonic()

    def _end_iteration(self) -> None:
        self._require_finalize = False
        self._finalized = True
        self._record_order = False
        self.iteration += 1
        if self._should_rebuild and not self._has_rebuilt:
            self._rebuild_pending = True

    # -- join: a rank without data shadows the others' collectives -----------------------------------
    def shadow_backward(self, div_factor: float) -> None:
        """Run the collectives of one synchronized backward with zero gradients (a joined rank)."""
        self._expect_hooks = False
        self._set_division(div_factor)
        for b in self._buckets:
            b.select_free()  # this rank's gradients may still refer to the current buffer
            b.buffer._data.fill(0)
            self._launch(b, write_back=False)
        if self.find_unused and not self.static_graph:
            self._local_used[:] = 0
            self._launch_used()
        for b in self._buckets:
            self._wait_bucket(b)
        if self._used_work is not None:
            self._used_work.wait()
            self._used_work = None
        self._end_iteration()

    def remove_hooks(self) -> None:
        """Unregister the gradient hooks (the reducer stops working)."""
        for h in self._handles:
            h.remove()
        self._handles = []
