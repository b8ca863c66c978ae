"""The FSDP schedule: module hooks, prefetching, gradient reductions, end of backward.

Note on the hooks (all registered by ``fully_shard``, nothing in autograd or nn knows FSDP):

* forward pre-hook of a unit: unshard it (waiting for a prefetch if one is in flight),
  then launch the all-gather of the unit that ran after it in the previous iteration
  (forward prefetch) and cast floating inputs (mixed precision);
* forward hook: note which parameters entered the graph (their ``AccumulateGrad`` node
  exists), register a pre-backward hook on the outputs, and reshard (FULL_SHARD, except the
  root, whose parameters are needed first in backward);
* pre-backward hook (a tensor hook on the unit's outputs, so it runs before any backward
  node of the unit): unshard, then prefetch the next unit in backward order (the reverse
  of the order in which units finished their forward);
* post-accumulate-grad hook on each unsharded parameter: when every parameter of the unit
  that this backward reaches has its gradient, the unit's backward is over: launch its
  reduce-scatter asynchronously (the rest of backward overlaps it) and reshard.

Note on the end of backward: when the root's backward starts, a walk of the graph from the
root's outputs finds the parameters this backward will reach; their units are *expected*;
when the last of them has reduced its gradients, all reductions are waited for, gradients
are written to the sharded parameters, and every unit is resharded. The same root hook
queues :func:`axonml.autograd.queue_callback` as the safety net: whatever the graph was
(a backward that did not start from the root's outputs, parameters that got no gradient),
the engine finalises when the backward finishes. So ``loss.backward()`` returns with final
sharded gradients, ready for ``optimizer.step()``. A unit that another unit's checkpointed
recomputation brings into the graph during backward joins the count then.

Note on collective order: every collective is issued from the main thread in an order
fixed by the graph (forward order, the engine's backward order), identical on every rank
that runs the same model on the same shapes. Replica all-reduces (HYBRID_SHARD) are issued
in unit order as their reduce-scatters finish, on their own group.
"""

from __future__ import annotations

import enum
import logging
import weakref
from typing import Any

from ..autograd.engine import queue_callback
from ..autograd.grad_mode import is_grad_enabled
from ..tensor import Tensor
from ._unit import FSDPUnit, PendingReduce, UnitState

__all__ = ["Phase", "RootContext", "lazy_root", "post_forward", "pre_forward"]

logger = logging.getLogger(__name__)


class Phase(enum.Enum):
    IDLE = "idle"
    FORWARD = "forward"
    BACKWARD = "backward"


class RootContext:
    """State shared by all units under one root module for one iteration."""

    def __init__(self, root: FSDPUnit, units: list[FSDPUnit]) -> None:
        self.root = root
        self.units = units
        self.phase = Phase.IDLE
        self.pre_forward_order: list[FSDPUnit] = []
        self.prev_pre_forward_order: list[FSDPUnit] = []
        self.post_forward_order: list[FSDPUnit] = []
        self.expected: set = set()
        self.done: set = set()
        self.pending: list[PendingReduce] = []
        self.root_outputs: list = []  # weak references to the graph nodes of the root's outputs
        self.scanned = False
        self._finalizing = False

    # -- iteration boundaries --------------------------------------------------------------
    def begin_forward(self) -> None:
        """The root's forward starts: settle the previous iteration, reset the records."""
        if self.phase is Phase.BACKWARD or self.pending:
            late = [type(u.module).__name__ for u in self.units if u in self.expected and not u.reduced]
            if late:
                logger.warning("FSDP: the last backward ended before units %s received gradients for every parameter "
                               "their forward used; their gradients were reduced only now (after any optimizer step). "
                               "Make every output that used FSDP parameters part of the loss", late)
            self.finalize()
        if self.phase is Phase.IDLE:
            for u in self.units:
                u.reshard()
                u.used, u.ready, u.reduced, u.backward_started = set(), set(), False, False
            if self.pre_forward_order:
                self.prev_pre_forward_order = self.pre_forward_order
            self.pre_forward_order, self.post_forward_order = [], []
            self.expected, self.done = set(), set()
            self.root_outputs, self.scanned = [], False
        self.phase = Phase.FORWARD

    def end_eval_forward(self) -> None:
        """A root forward without grad: no backward follows, reshard everything now."""
        for u in self.units:
            u.reshard()
        self.phase = Phase.IDLE

    # -- prefetching ---------------------------------------------------------------------------
    def prefetch_forward(self, unit: FSDPUnit) -> None:
        targets = unit.forward_prefetch
        if targets is None:
            targets = []
            if self.root.implicit_prefetch["forward"]:
                order = self.prev_pre_forward_order
                if unit in order:
                    i = order.index(unit)
                    targets = order[i + 1: i + 2]
        for t in targets:
            if t.state is UnitState.SHARDED:
                t.start_gather("forward")

    def prefetch_backward(self, unit: FSDPUnit) -> None:
        targets = unit.backward_prefetch
        if targets is None:
            targets = []
            if self.root.implicit_prefetch["backward"]:
                order = self.post_forward_order[::-1]
                if unit in order:
                    i = order.index(unit)
                    targets = order[i + 1: i + 2]
        for t in targets:
            if t.state is UnitState.SHARDED and not t.reduced:
                t.start_gather("backward")

    # -- backward ------------------------------------------------------------------------------
    def pre_backward(self, unit: FSDPUnit) -> None:
        self.phase = Phase.BACKWARD
        if unit is self.root and not self.scanned:
            self.scan_graph()
            queue_callback(self.end_of_backward)
        if unit.backward_started:
            return
        unit.backward_started = True
        unit.unshard("backward")
        self.prefetch_backward(unit)

    def scan_graph(self) -> None:
        """At the start of backward, find which parameters this backward will reach.

        Walks the graph from the root's outputs to the parameters' ``AccumulateGrad`` nodes,
        so a unit whose outputs are not part of the loss (a metric computed with grad
        enabled) is not waited for, and a unit is reduced as soon as its reachable
        parameters have their gradients. Units recomputed by checkpointing inside backward
        join later, from their forward hook.
        """
        self.scanned = True
        nodes = [n for n in (r() for r in self.root_outputs) if n is not None]
        if not nodes:
            return
        owner = {}
        for u in self.units:
            for info in u.infos:
                ref = info.unsharded._acc
                node = ref() if ref is not None else None
                if node is not None:
                    owner[id(node)] = (u, info)
        reach: dict = {}
        seen: set = set()
        while nodes:
            n = nodes.pop()
            if id(n) in seen:
                continue
            seen.add(id(n))
            hit = owner.get(id(n))
            if hit is not None:
                reach.setdefault(hit[0], set()).add(hit[1])
            nodes.extend(e[0] for e in n.next_functions if e is not None)
        for u in list(self.expected):
            if u not in reach and not u.reduced:
                self.expected.discard(u)
                u.used = set()
        for u, infos in reach.items():
            u.used = infos
            self.expected.add(u)

    def grad_ready(self, unit: FSDPUnit, info: Any) -> None:
        """Post-accumulate-grad hook of ``info.unsharded``: reduce the unit once all its used
        parameters have their gradients."""
        if unit.reduced:
            return
        self.phase = Phase.BACKWARD
        unit.used.add(info)
        unit.ready.add(info)
        self.expected.add(unit)
        if unit.ready >= unit.used:
            self.post_backward(unit)

    def post_backward(self, unit: FSDPUnit) -> None:
        unit.reduced = True
        if unit.requires_gradient_sync:
            # bound the memory of reductions in flight (inputs and outputs): at most two
            self.advance(block=False)
            while len(self.pending) >= 2:
                self.advance(block=False, wait_first=True)
            self.pending.append(unit.reduce())
        else:
            unit.accumulate()
        unit.reshard()
        self.done.add(unit)
        self.advance(block=False)
        if not self._finalizing and self.expected <= self.done:
            self.finalize()

    def advance(self, block: bool, wait_first: bool = False) -> None:
        """Move finished reductions on: start replica all-reduces in unit order, and write
        the gradients of finished units. With ``block``, wait for everything; with
        ``wait_first``, for the oldest reduction."""
        for i, pr in enumerate(self.pending):
            if pr.stage != "rs":
                continue
            if pr.work is not None:
                if not (block or (wait_first and i == 0)) and not pr.work.is_completed():
                    break
                pr.work.wait()
            pr.rs_in = None  # the reduce-scatter read it; free it
            if pr.unit.replicate_group is not None:
                pr.unit.start_all_reduce(pr)
                pr.stage = "ar"
            else:
                pr.work = None
                pr.stage = "done"
        while self.pending:
            pr = self.pending[0]
            if pr.stage == "rs":
                break
            if pr.stage == "ar":
                if not (block or wait_first) and not pr.work.is_completed():
                    break
                pr.work.wait()
            pr.unit.write_grads(pr.rs_out)
            self.pending.pop(0)

    def end_of_backward(self) -> None:
        """The engine's end-of-backward callback: finalise unless the count already did."""
        if self.phase is Phase.BACKWARD:
            self.finalize()

    def finalize(self) -> None:
        """End of backward: reduce what is left, write all gradients, reshard every unit."""
        if self._finalizing:
            return
        self._finalizing = True
        try:
            self.advance(block=True)
            for u in self.units:
                if u in self.expected and not u.reduced:
                    # some parameters it used got no gradient (e.g. a branch not taken): reduce the rest
                    self.post_backward(u)
            self.advance(block=True)
            for u in self.units:
                u.reshard()
                u.ready, u.reduced, u.backward_started = set(), False, False
            self.expected, self.done = set(), set()
            self.scanned = False
            self.phase = Phase.IDLE
        finally:
            self._finalizing = False


# -- the module hooks ---------------------------------------------------------------------------


def lazy_root(unit: FSDPUnit) -> RootContext:
    """Make ``unit`` the root of every unit in its module tree (its first forward)."""
    units = [m._fsdp_unit for m in unit.module.modules() if getattr(m, "_fsdp_unit", None) is not None]
    ctx = RootContext(unit, units)
    for u in units:
        u.ctx = ctx
    logger.debug("FSDP root %s manages %d units", type(unit.module).__name__, len(units))
    return ctx


def _cast(obj: Any, dtype: Any) -> Any:
    if isinstance(obj, Tensor):
        return obj.to(dtype) if obj.is_floating_point() and obj.dtype is not dtype else obj
    if isinstance(obj, tuple):
        return tuple(_cast(o, dtype) for o in obj)
    if isinstance(obj, list):
        return [_cast(o, dtype) for o in obj]
    if isinstance(obj, dict):
        return {k: _cast(v, dtype) for k, v in obj.items()}
    return obj


def _tensors(obj: Any) -> list:
    if isinstance(obj, Tensor):
        return [obj]
    if isinstance(obj, (tuple, list)):
        return [t for o in obj for t in _tensors(o)]
    if isinstance(obj, dict):
        return [t for o in obj.values() for t in _tensors(o)]
    return []


def pre_forward(module: Any, args: tuple) -> Any:
    unit: FSDPUnit = module._fsdp_unit
    ctx = unit.ctx
    if ctx is None:
        ctx = lazy_root(unit)
    # the root's forward starts an iteration, unless it is a checkpointed recomputation inside
    # backward (then the root's own backward has not started yet)
    if unit is ctx.root and (ctx.phase is not Phase.BACKWARD or unit.backward_started):
        ctx.begin_forward()
    if ctx.phase is Phase.FORWARD and unit not in ctx.pre_forward_order:
        ctx.pre_forward_order.append(unit)
    unit.unshard("backward" if ctx.phase is Phase.BACKWARD else "forward")
    if ctx.phase is Phase.FORWARD:
        ctx.prefetch_forward(unit)
    mp = unit.mp_policy
    if mp.param_dtype is not None and mp.cast_forward_inputs:
        return _cast(args, mp.param_dtype)
    return None


def post_forward(module: Any, args: tuple, output: Any) -> Any:
    unit: FSDPUnit = module._fsdp_unit
    ctx: RootContext = unit.ctx
    mp = unit.mp_policy
    if mp.output_dtype is not None:
        output = _cast(output, mp.output_dtype)
    if is_grad_enabled():
        for info in unit.infos:
            acc = info.unsharded._acc
            if info.requires_grad and acc is not None and acc() is not None:
                unit.used.add(info)
        if unit.used and not unit.reduced:
            ctx.expected.add(unit)

        def hook(_grad: Any) -> None:
            ctx.pre_backward(unit)

        for t in _tensors(output):
            if t.requires_grad and t.grad_fn is not None:
                t.register_hook(hook)
                if unit is ctx.root and ctx.phase is Phase.FORWARD:
                    ctx.root_outputs.append(weakref.ref(t.grad_fn))
    if ctx.phase is Phase.FORWARD:
        if unit not in ctx.post_forward_order:
            ctx.post_forward_order.append(unit)
        if unit is ctx.root:
            if not is_grad_enabled():
                ctx.end_eval_forward()
        elif unit.reshard_after_forward:
            unit.reshard()
    return output
