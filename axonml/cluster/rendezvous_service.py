"""The rendezvous service of ``proto/rendezvous.proto``: the job's state and its RPC handlers.

Design note (one server, one loop): the service runs in the same ``grpc.aio`` server, on
the same event loop thread, as the key-value store of :class:`GrpcStoreServer`
(:class:`~axonml.cluster.rendezvous.RendezvousServer` extends it), so one port serves
both: node agents join on it and the workers bootstrap their process groups from it (it
becomes ``MASTER_ADDR:MASTER_PORT``). Every handler runs
on the loop, so the job's state needs no lock; each change sets an ``asyncio.Event`` that
waiting calls (a ``Join`` waiting for the round to close, a ``Heartbeat`` waiting for a new
generation) sleep on. A reaper task on the loop closes rounds after the last call period,
fails rounds that miss the join timeout, and drops nodes whose heartbeats stopped.

Design note (generations): a round collects nodes until ``max_nodes`` joined, or
``min_nodes`` joined and ``last_call_timeout`` passed; then generation ``g`` runs. A worker
failure (while restarts remain), a node joining a job that has room, a node lost (no
heartbeat) or leaving with enough nodes left: each opens generation ``g + 1`` with an empty
round that every node must join again. Reports for a generation that is over are refused
as stale. Only worker failures count against ``max_restarts``.

Design note (safety): as the store, the service binds to loopback unless told otherwise,
checks the job token in constant time on every call, logs refusals with the peer's
address (never the token), refuses malformed or oversized fields with INVALID_ARGUMENT
naming the field, and keeps serving after any bad request.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import math
import time
from dataclasses import dataclass
from typing import Any

import grpc

from ._proto import rendezvous_pb2 as pb
from ._proto import rendezvous_pb2_grpc as pb_grpc

__all__ = ["RendezvousConfig", "RendezvousServicer"]

logger = logging.getLogger(__name__)

_MAX_NAME = 256  # bytes of a job id, node id or host name
_MAX_REASON = 2048
_MAX_TRACEBACK = 16 * 1024
_MAX_HOLD = 60.0  # the longest one call waits in the server
TERMINAL = (pb.SUCCEEDED, pb.FAILED)
_STATE = {pb.JOINING: "JOINING", pb.RUNNING: "RUNNING", pb.SUCCEEDED: "SUCCEEDED", pb.FAILED: "FAILED"}


@dataclass(frozen=True)
class RendezvousConfig:
    """What the service enforces for one job.

    Args:
        job_id: the job's id (``--rdzv-id``); requests for another id are refused.
        min_nodes, max_nodes: the job runs with any node count in ``[min_nodes, max_nodes]``.
        max_restarts: restarts after worker failures before the job fails.
        join_timeout: seconds a round may stay open without reaching ``min_nodes``.
        last_call_timeout: once ``min_nodes`` joined, seconds to wait for more (up to ``max_nodes``).
        heartbeat_timeout: a node silent for this long is dropped from the job.
        advertise_addr: the host workers reach the store at (``MASTER_ADDR``); default: the
            bound host, or this host's name when bound to a wildcard address.
    """

    job_id: str = "none"
    min_nodes: int = 1
    max_nodes: int = 1
    max_restarts: int = 0
    join_timeout: float = 600.0
    last_call_timeout: float = 1.0
    heartbeat_timeout: float = 30.0
    advertise_addr: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.job_id, str) or not self.job_id or len(self.job_id.encode()) > _MAX_NAME:
            raise ValueError(f"RendezvousConfig.job_id must be a non-empty str of at most {_MAX_NAME} bytes, got {self.job_id!r}")
        if not 1 <= self.min_nodes <= self.max_nodes:
            raise ValueError(f"RendezvousConfig needs 1 <= min_nodes <= max_nodes, got {self.min_nodes}:{self.max_nodes}")
        if self.max_restarts < 0:
            raise ValueError(f"RendezvousConfig.max_restarts must be >= 0, got {self.max_restarts}")
        for name in ("join_timeout", "last_call_timeout", "heartbeat_timeout"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ValueError(f"RendezvousConfig.{name} must be finite seconds >= 0, got {value!r}")


@dataclass
class _Node:
    node_id: str
    hostname: str
    nproc: int
    requested_rank: int
    order: int


class RendezvousServicer(pb_grpc.RendezvousServicer):
    """The job's state and the RPC handlers; lives on the server's event loop."""

    def __init__(self, token: str, config: RendezvousConfig, master: tuple[str, int]) -> None:
        self._token = token.encode("utf-8")
        self.config = config
        self._master = master
        self._changed = asyncio.Event()
        self._arrivals = 0
        self.generation = 0
        self.state = pb.JOINING
        self.restarts = 0
        self.message = ""
        self.failure: pb.Failure | None = None
        self._round: dict[str, _Node] = {}
        self._round_opened = time.monotonic()
        self._min_reached: float | None = None
        self._waiting: dict[str, _Node] = {}
        self._members: dict[str, _Node] = {}
        self._assignments: dict[str, pb.Assignment] = {}
        self._done: set[str] = set()
        self._informed: set[str] = set()
        self._last_seen: dict[str, float] = {}
        self._in_call: dict[str, int] = {}

    # -- checks ---------------------------------------------------------------------------
    async def _check(self, request: Any, context: grpc.aio.ServicerContext, method: str) -> None:
        if not hmac.compare_digest(request.token.encode("utf-8"), self._token):
            which = "missing" if not request.token else "wrong"
            logger.warning("rendezvous refused %s from %s: %s job token", method, context.peer(), which)
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, f"{which} job token")
        if request.job_id != self.config.job_id:
            logger.warning("rendezvous refused %s from %s: job id %r", method, context.peer(), request.job_id[:80])
            await context.abort(
                grpc.StatusCode.NOT_FOUND,
                f"this rendezvous serves job {self.config.job_id!r}, not {request.job_id[:80]!r}; "
                "use the same --rdzv-id on every node",
            )
        node_id = getattr(request, "node_id", None)
        if node_id is not None:
            await self._check_text("node_id", node_id, _MAX_NAME, context, required=True)

    @staticmethod
    async def _check_text(field: str, value: str, limit: int, context: grpc.aio.ServicerContext, required: bool = False) -> None:
        n = len(value.encode("utf-8"))
        if required and n == 0:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"{field} must be non-empty")
        if n > limit:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"{field} is {n} bytes, over the limit of {limit} bytes")

    @staticmethod
    async def _check_seconds(field: str, seconds: float, context: grpc.aio.ServicerContext) -> float:
        if not math.isfinite(seconds) or seconds < 0:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"{field} must be finite and >= 0, got {seconds}")
        return min(seconds, _MAX_HOLD)

    async def _check_failure(self, failure: pb.Failure, context: grpc.aio.ServicerContext) -> None:
        await self._check_text("failure.hostname", failure.hostname, _MAX_NAME, context)
        await self._check_text("failure.reason", failure.reason, _MAX_REASON, context)
        await self._check_text("failure.traceback", failure.traceback, _MAX_TRACEBACK, context)

    # -- state changes --------------------------------------------------------------------
    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def _wait_change(self, seconds: float) -> None:
        if seconds > 0:
            try:
                await asyncio.wait_for(self._changed.wait(), seconds)
            except TimeoutError:
                pass

    def _new_generation(self, reason: str) -> None:
        self.generation += 1
        self.state = pb.JOINING
        self.message = reason
        self._round, self._members, self._assignments, self._done = {}, {}, {}, set()
        self._round_opened, self._min_reached = time.monotonic(), None
        logger.info("rendezvous job %r: generation %d opens: %s", self.config.job_id, self.generation, reason)
        self._notify()

    def fail(self, message: str, failure: pb.Failure | None = None) -> None:
        """End the job as FAILED with ``message`` (call on the server's loop)."""
        self.state, self.message, self.failure = pb.FAILED, message, failure
        logger.info("rendezvous job %r failed: %s", self.config.job_id, message)
        self._notify()

    def _close_round(self) -> None:
        nodes = sorted(self._round.values(), key=lambda n: n.order)
        n = len(nodes)
        slots: list[_Node | None] = [None] * n
        # nodes started with --node-rank keep it when it exists in this generation
        for node in nodes:
            if 0 <= node.requested_rank < n and slots[node.requested_rank] is None:
                slots[node.requested_rank] = node
        rest = iter(node for node in nodes if node not in slots)
        ordered = [slot if slot is not None else next(rest) for slot in slots]
        world = sum(node.nproc for node in ordered)
        infos, offset = [], 0
        for rank, node in enumerate(ordered):
            infos.append(pb.NodeInfo(node_id=node.node_id, hostname=node.hostname, node_rank=rank, nproc=node.nproc,
                                     rank_offset=offset))
            offset += node.nproc
        now = time.monotonic()
        for info in infos:
            self._assignments[info.node_id] = pb.Assignment(
                generation=self.generation, node_rank=info.node_rank, nnodes=n, rank_offset=info.rank_offset,
                world_size=world, master_addr=self._master[0], master_port=self._master[1], restart_count=self.restarts,
                max_restarts=self.config.max_restarts, run_id=self.config.job_id, nodes=infos)
            self._last_seen[info.node_id] = now
        self._members = {node.node_id: node for node in ordered}
        self._round = {}
        self.state = pb.RUNNING
        self.message = f"generation {self.generation} runs with {n} node(s), world size {world}"
        logger.info("rendezvous job %r: %s", self.config.job_id, self.message)
        self._notify()

    def _tick(self) -> None:
        """Close or fail the open round when its time has come; drop silent nodes."""
        now = time.monotonic()
        cfg = self.config
        stale = [nid for nid, seen in self._last_seen.items()
                 if now - seen > cfg.heartbeat_timeout and not self._in_call.get(nid)]
        if self.state == pb.JOINING:
            for nid in stale:
                if self._round.pop(nid, None) is not None or self._waiting.pop(nid, None) is not None:
                    logger.warning("rendezvous job %r: dropped silent node %s from the open round", cfg.job_id, nid)
                    self._last_seen.pop(nid, None)
                    self._notify()
            joined = len(self._round)
            if joined >= cfg.max_nodes:
                self._close_round()
            elif joined >= cfg.min_nodes:
                if self._min_reached is None:
                    self._min_reached = now
                if now - self._min_reached >= cfg.last_call_timeout:
                    self._close_round()
            else:
                self._min_reached = None
                if now - self._round_opened >= cfg.join_timeout:
                    missing = cfg.min_nodes - joined
                    self.fail(f"rendezvous of job {cfg.job_id!r} (generation {self.generation}) timed out after "
                               f"{cfg.join_timeout:g} s: {joined} of {cfg.min_nodes} required node(s) joined, {missing} "
                               f"node(s) missing; start the missing node(s), or raise join_timeout (--rdzv-conf)")
        elif self.state == pb.RUNNING:
            lost = [nid for nid in stale if nid in self._members]
            if lost:
                hosts = ", ".join(f"{self._members[n].hostname} (node id {n[:8]})" for n in lost)
                for nid in lost:
                    self._last_seen.pop(nid, None)
                self._new_generation(f"lost {len(lost)} node(s) with no heartbeat for {cfg.heartbeat_timeout:g} s: {hosts}")
            for nid in stale:
                if self._waiting.pop(nid, None) is not None:
                    self._last_seen.pop(nid, None)

    async def reap_forever(self) -> None:
        period = max(0.02, min(0.2, self.config.last_call_timeout / 4 if self.config.last_call_timeout else 0.2))
        while True:
            try:
                self._tick()
            except Exception:  # a bug here must not stop the reaper; log it loudly
                logger.exception("rendezvous reaper failed")
            await asyncio.sleep(period)

    async def wait_settled(self, timeout: float) -> bool:
        """Wait until the job is over and every node of its last generation has seen that."""
        deadline = time.monotonic() + timeout
        while True:
            if self.state in TERMINAL:
                expected = set(self._members) | set(self._round)
                if expected <= self._informed:
                    return True
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            await self._wait_change(min(left, 0.2))

    def _terminal_reply(self, node_id: str) -> dict:
        self._informed.add(node_id)
        return {"state": self.state, "message": self.message, "failure": self.failure}

    def _enter(self, node_id: str) -> None:
        self._in_call[node_id] = self._in_call.get(node_id, 0) + 1
        self._last_seen[node_id] = time.monotonic()

    def _exit(self, node_id: str) -> None:
        self._in_call[node_id] -= 1
        if not self._in_call[node_id]:
            del self._in_call[node_id]
        if node_id in self._last_seen:
            self._last_seen[node_id] = time.monotonic()

    # -- handlers -------------------------------------------------------------------------
    async def Join(self, request: pb.JoinRequest, context: grpc.aio.ServicerContext) -> pb.JoinResponse:
        await self._check(request, context, "Join")
        await self._check_text("hostname", request.hostname, _MAX_NAME, context)
        hold = await self._check_seconds("timeout_seconds", request.timeout_seconds, context)
        cfg = self.config
        if not 1 <= request.nproc <= 65536:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"nproc must be in [1, 65536], got {request.nproc}")
        if (request.min_nodes, request.max_nodes) != (cfg.min_nodes, cfg.max_nodes):
            await context.abort(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"this node was started with --nodes {request.min_nodes}:{request.max_nodes} but job {cfg.job_id!r} runs "
                f"with --nodes {cfg.min_nodes}:{cfg.max_nodes}; start every node with the same --nodes",
            )
        if request.requested_node_rank >= cfg.max_nodes or request.requested_node_rank < -1:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                f"--node-rank {request.requested_node_rank} is outside [0, {cfg.max_nodes}) for --nodes "
                                f"{cfg.min_nodes}:{cfg.max_nodes}")
        nid = request.node_id
        self._enter(nid)
        try:
            return await self._join(request, context, nid, hold)
        finally:
            self._exit(nid)

    async def _join(self, request: pb.JoinRequest, context: grpc.aio.ServicerContext, nid: str, hold: float) -> pb.JoinResponse:
        cfg = self.config
        deadline = time.monotonic() + hold
        node = None
        while True:
            if self.state in TERMINAL:
                return pb.JoinResponse(complete=False, generation=self.generation, **self._terminal_reply(nid))
            if nid in self._assignments:
                return pb.JoinResponse(complete=True, assignment=self._assignments[nid], state=self.state,
                                       generation=self.generation, joined=len(self._members), min_nodes=cfg.min_nodes,
                                       max_nodes=cfg.max_nodes, message=self.message)
            if node is None:
                self._arrivals += 1
                node = _Node(nid, request.hostname, request.nproc, request.requested_node_rank, self._arrivals)
            if self.state == pb.RUNNING:
                if nid not in self._waiting:
                    self._waiting[nid] = node
                    self._notify()
                if len(self._members) < cfg.max_nodes:
                    self._new_generation(f"node {request.hostname or nid[:8]} joined; admitting it at a new generation")
                    continue
            elif self.state == pb.JOINING and nid not in self._round:
                self._waiting.pop(nid, None)
                rank = request.requested_node_rank
                taken = [n for n in self._round.values() if rank >= 0 and n.requested_rank == rank]
                if taken:
                    await context.abort(grpc.StatusCode.ALREADY_EXISTS,
                                        f"--node-rank {rank} is already taken by host {taken[0].hostname!r} in job "
                                        f"{cfg.job_id!r}; give every node its own --node-rank (or none)")
                self._round[nid] = node
                self._notify()
                self._tick()
                continue
            left = deadline - time.monotonic()
            if left <= 0:
                joined = len(self._round)
                if self.state == pb.RUNNING:
                    why = (f"job {cfg.job_id!r} is running with the maximum of {cfg.max_nodes} node(s); this node waits "
                           "to be admitted at the next generation")
                else:
                    why = (f"waiting for nodes: {joined} of {cfg.min_nodes} required (max {cfg.max_nodes}) joined "
                           f"generation {self.generation}")
                return pb.JoinResponse(complete=False, state=self.state, generation=self.generation, joined=joined,
                                       min_nodes=cfg.min_nodes, max_nodes=cfg.max_nodes, message=why)
            await self._wait_change(min(left, 0.25))

    async def Heartbeat(self, request: pb.HeartbeatRequest, context: grpc.aio.ServicerContext) -> pb.HeartbeatResponse:
        await self._check(request, context, "Heartbeat")
        hold = await self._check_seconds("wait_seconds", request.wait_seconds, context)
        nid = request.node_id
        self._enter(nid)
        try:
            deadline = time.monotonic() + hold
            while (self.generation, self.state) == (request.generation, request.known_state):
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                await self._wait_change(left)
        finally:
            self._exit(nid)
        if self.state in TERMINAL:
            self._informed.add(nid)
        return pb.HeartbeatResponse(generation=self.generation, state=self.state, nodes_waiting=len(self._waiting),
                                    message=self.message, failure=self.failure, member=nid in self._members)

    def _stale(self, what: str, generation: int) -> str:
        return (f"stale generation: the {what} is for generation {generation} but job {self.config.job_id!r} is at "
                f"generation {self.generation} ({_STATE.get(self.state, '?')}); stop the workers and join again")

    async def ReportFailure(self, request: pb.ReportFailureRequest, context: grpc.aio.ServicerContext
                            ) -> pb.ReportFailureResponse:
        await self._check(request, context, "ReportFailure")
        await self._check_failure(request.failure, context)
        nid = request.node_id
        if nid in self._last_seen:
            self._last_seen[nid] = time.monotonic()
        if request.generation != self.generation or self.state != pb.RUNNING or nid not in self._members:
            if self.state in TERMINAL and request.generation == self.generation:
                return pb.ReportFailureResponse(restarting=False, generation=self.generation, state=self.state,
                                                restart_count=self.restarts, message=self.message)
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, self._stale("failure report", request.generation))
        f = request.failure
        what = (f"rank {f.rank} (local rank {f.local_rank}) on node {f.node_rank} ({f.hostname}) failed with "
                f"exit code {f.exit_code}")
        if self.restarts < self.config.max_restarts:
            self.restarts += 1
            self.failure = None
            self._new_generation(f"{what}; restart {self.restarts} of {self.config.max_restarts}")
            return pb.ReportFailureResponse(restarting=True, generation=self.generation, state=self.state,
                                            restart_count=self.restarts, message=self.message)
        failure = pb.Failure()
        failure.CopyFrom(f)
        failure.generation = self.generation
        self.fail(f"{what}; no restarts left (max_restarts={self.config.max_restarts})", failure)
        self._informed.add(nid)
        return pb.ReportFailureResponse(restarting=False, generation=self.generation, state=self.state,
                                        restart_count=self.restarts, message=self.message)

    async def ReportSuccess(self, request: pb.ReportSuccessRequest, context: grpc.aio.ServicerContext
                            ) -> pb.ReportSuccessResponse:
        await self._check(request, context, "ReportSuccess")
        nid = request.node_id
        if request.generation != self.generation or nid not in self._members or self.state not in (pb.RUNNING, pb.SUCCEEDED):
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, self._stale("success report", request.generation))
        if nid in self._last_seen:
            self._last_seen[nid] = time.monotonic()
        self._done.add(nid)
        if self.state == pb.RUNNING and self._done >= set(self._members):
            self.state = pb.SUCCEEDED
            self.message = f"every node of generation {self.generation} finished successfully"
            logger.info("rendezvous job %r: %s", self.config.job_id, self.message)
            self._notify()
        if self.state in TERMINAL:
            self._informed.add(nid)
        return pb.ReportSuccessResponse(state=self.state, nodes_done=len(self._done), nnodes=len(self._members))

    async def Leave(self, request: pb.LeaveRequest, context: grpc.aio.ServicerContext) -> pb.LeaveResponse:
        await self._check(request, context, "Leave")
        await self._check_text("reason", request.reason, _MAX_REASON, context)
        nid = request.node_id
        node = self._members.get(nid) or self._round.get(nid) or self._waiting.get(nid)
        self._round.pop(nid, None)
        self._waiting.pop(nid, None)
        self._last_seen.pop(nid, None)
        self._informed.add(nid)
        host = node.hostname if node is not None else nid[:8]
        if self.state == pb.RUNNING and nid in self._members:
            remaining = len(self._members) - 1
            if remaining >= self.config.min_nodes:
                self._new_generation(f"node {host} left ({request.reason}); continuing with {remaining} node(s)")
            else:
                rank = self._assignments[nid].node_rank
                failure = pb.Failure(node_rank=rank, hostname=host, rank=-1, local_rank=-1,
                                     exit_code=request.exit_code or 1, reason=f"node left: {request.reason}",
                                     generation=self.generation)
                self._members.pop(nid, None)
                self.fail(f"node {rank} ({host}) left ({request.reason}); {remaining} node(s) remain, below the minimum "
                           f"of {self.config.min_nodes}", failure)
        elif node is not None:
            self._notify()
        return pb.LeaveResponse(generation=self.generation, state=self.state)

    async def Status(self, request: pb.StatusRequest, context: grpc.aio.ServicerContext) -> pb.StatusResponse:
        await self._check(request, context, "Status")
        nodes = next(iter(self._assignments.values())).nodes if self._assignments else []
        return pb.StatusResponse(job_id=self.config.job_id, state=self.state, generation=self.generation,
                                 restart_count=self.restarts, min_nodes=self.config.min_nodes, max_nodes=self.config.max_nodes,
                                 nodes=nodes, joined=len(self._round), nodes_waiting=len(self._waiting), message=self.message,
                                 failure=self.failure)
