"""Rendezvous of node agents: the client, and the service it talks to.

The service (:class:`RendezvousServer`; its state and handlers are in
:mod:`.rendezvous_service`) runs in one gRPC server together with the job's key-value
store; :class:`RendezvousClient` is what a node agent uses to join a job, send heartbeats
and report how its workers ended. The protocol is ``proto/rendezvous.proto``.

Design note (waiting in the server, bounded): ``join`` and ``heartbeat(wait=...)`` send
how long they may wait; the server holds the call until the round closes or the job
changes, so agents learn of a new generation at once without polling. Each call is held
for at most a few seconds and the client calls again until its own deadline, so a dead
server is noticed quickly. UNAVAILABLE (no server yet, or a lost connection) and
DEADLINE_EXCEEDED are retried with exponential backoff and jitter until ``retry_timeout``
seconds have passed since a call's first failure; a refused token is never retried.

Errors: a refused token, a wrong job id, a job that failed, a join that timed out raise
:class:`~axonml.errors.RendezvousError` with the service's explanation; a report for a
generation that is over raises :class:`StaleGenerationError`; a malformed request raises
``ValueError``.
"""

from __future__ import annotations

import asyncio
import random
import socket
import time
import uuid
from collections.abc import Callable
from typing import Any

import grpc

from ..errors import RendezvousError
from ._proto import rendezvous_pb2 as pb
from ._proto import rendezvous_pb2_grpc as pb_grpc
from .grpc_server import GrpcStoreServer, format_address
from .rendezvous_service import TERMINAL, RendezvousConfig, RendezvousServicer

__all__ = [
    "JobState",
    "RendezvousClient",
    "RendezvousConfig",
    "RendezvousServer",
    "StaleGenerationError",
    "join_timeout_message",
    "parse_endpoint",
    "state_name",
]

_RETRYABLE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
_CHUNK = 5.0  # seconds one waiting call is held in the server


class JobState:
    """The job states of ``proto/rendezvous.proto`` (plain ints, as the wire carries them)."""

    JOINING = pb.JOINING
    RUNNING = pb.RUNNING
    SUCCEEDED = pb.SUCCEEDED
    FAILED = pb.FAILED


def state_name(state: int) -> str:
    """``"RUNNING"`` for ``JobState.RUNNING``, and so on."""
    return pb.JobState.Name(state) if state in pb.JobState.values() else f"UNKNOWN({state})"


class StaleGenerationError(RendezvousError):
    """A report about a generation that is over: the node must stop its workers and join again."""


def parse_endpoint(endpoint: str, default_port: int = 29400) -> tuple[str, int]:
    """``("host", port)`` from ``"host:port"``, ``"host"`` or ``"[v6addr]:port"``.

    Raises:
        ValueError: the endpoint is empty or its port is not an integer in [1, 65535].
    """
    text = endpoint.strip()
    if not text:
        raise ValueError("the rendezvous endpoint is empty; pass --rdzv-endpoint HOST:PORT")
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else ""
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    else:
        host, port_text = text, ""
    if not host:
        raise ValueError(f"rendezvous endpoint {endpoint!r} has no host; use HOST:PORT")
    if not port_text:
        return host, default_port
    try:
        port = int(port_text)
    except ValueError:
        raise ValueError(f"rendezvous endpoint {endpoint!r}: port {port_text!r} is not an integer") from None
    if not 0 < port <= 65535:
        raise ValueError(f"rendezvous endpoint {endpoint!r}: port {port} is outside [1, 65535]")
    return host, port


class RendezvousServer(GrpcStoreServer):
    """Serve a job's rendezvous and its key-value store on one gRPC port.

    Args:
        config: the job's :class:`RendezvousConfig`.
        host, port, token, max_message_bytes: as :class:`GrpcStoreServer` (loopback and a
            free port by default; ``token=None`` generates one).

    Example::

        cfg = RendezvousConfig(job_id="job1", min_nodes=2, max_nodes=2)
        with RendezvousServer(cfg, token="s3cret") as server:
            client = RendezvousClient("127.0.0.1", server.port, "s3cret", "job1")
            assignment = client.join(nproc=4, min_nodes=2, max_nodes=2)
    """

    def __init__(self, config: RendezvousConfig, host: str = "127.0.0.1", port: int = 0, token: str | None = None, *,
                 max_message_bytes: int = 4 * 1024 * 1024) -> None:
        if not isinstance(config, RendezvousConfig):
            raise TypeError(f"RendezvousServer needs a RendezvousConfig, got {type(config).__name__}")
        super().__init__(host, port, token, max_message_bytes=max_message_bytes)
        self.config = config
        self._rdzv: RendezvousServicer | None = None

    @property
    def advertise_addr(self) -> str:
        """The host workers use to reach the store (``MASTER_ADDR``)."""
        if self.config.advertise_addr:
            return self.config.advertise_addr
        if self.host in ("", "0.0.0.0", "::", "[::]"):
            return socket.getfqdn()
        return self.host

    def _on_loop(self, make: Callable[[RendezvousServicer], Any], timeout: float) -> Any:
        if self._loop is None or self._rdzv is None or not self.running:
            raise RendezvousError("the rendezvous server is not running")
        future = asyncio.run_coroutine_threadsafe(make(self._rdzv), self._loop)
        return future.result(timeout)

    def wait_settled(self, timeout: float = 10.0) -> bool:
        """Block (at most ``timeout`` s) until the job has ended and every node of its last
        generation has been told; True when that happened. The hosting agent calls this before
        stopping the server, so the other agents learn the outcome."""
        return bool(self._on_loop(lambda s: s.wait_settled(timeout), timeout + 5.0))

    def fail_job(self, message: str) -> None:
        """End the job as failed with ``message`` (unless it already ended); every node is told
        through its next heartbeat or join. The hosting agent calls this when it stops early."""

        async def fail(s: RendezvousServicer) -> None:
            if s.state not in TERMINAL:
                s.fail(message)

        self._on_loop(fail, 5.0)

    def job_state(self) -> tuple[int, int]:
        """``(generation, state)`` of the job (state is a ``JobState`` number)."""

        async def read(s: RendezvousServicer) -> tuple[int, int]:
            return s.generation, s.state

        return self._on_loop(read, 5.0)

    def __repr__(self) -> str:
        where = self.address if self._port is not None else format_address(self._host, self._requested_port)
        return f"RendezvousServer({where}, job={self.config.job_id!r}, running={self.running})"

    def _add_services(self, server: Any, port: int) -> None:
        self._rdzv = RendezvousServicer(self._token, self.config, (self.advertise_addr, port))
        pb_grpc.add_RendezvousServicer_to_server(self._rdzv, server)

    def _background(self) -> list:
        return [self._rdzv.reap_forever()]


def join_timeout_message(job_id: str, address: str, timeout: float, min_nodes: int, last: pb.JoinResponse | None) -> str:
    """Why a join gave up: the service's last word and how many nodes are missing."""
    why = last.message if last is not None else "no answer from the service"
    text = f"rendezvous of job {job_id!r} at {address}: gave up after {timeout:g} s: {why}"
    if last is None or last.state == pb.JOINING:
        joined = last.joined if last is not None else 0
        text += f"; {max(min_nodes - joined, 0)} node(s) missing of {min_nodes}"
    return text


class RendezvousClient:
    """A node agent's connection to the rendezvous service of one job.

    Args:
        host, port: the service's address (``--rdzv-endpoint``).
        token: the job's shared token.
        job_id: the job's id (``--rdzv-id``).
        node_id: this agent's unique id (default: a fresh random one).
        hostname: how this node is named in messages (default: the host name).
        rpc_timeout: seconds one call may take beyond the time it asked to wait.
        retry_timeout: seconds to keep retrying an unreachable service.

    Example::

        client = RendezvousClient("10.0.0.1", 29400, token, "job1")
        a = client.join(nproc=8, min_nodes=4, max_nodes=4, timeout=600)
        print(a.node_rank, a.rank_offset, a.world_size)
    """

    def __init__(self, host: str, port: int, token: str, job_id: str, *, node_id: str | None = None,
                 hostname: str | None = None, rpc_timeout: float = 10.0, retry_timeout: float = 30.0) -> None:
        if not isinstance(token, str) or not token:
            raise ValueError("RendezvousClient needs the job's token (a non-empty str); the service refuses requests without it")
        if not isinstance(job_id, str) or not job_id:
            raise ValueError(f"RendezvousClient needs a non-empty job id, got {job_id!r}")
        if isinstance(port, bool) or not isinstance(port, int) or not 0 < port <= 65535:
            raise ValueError(f"RendezvousClient port must be an int in [1, 65535], got {port!r}")
        self.host, self.port = host, port
        self.job_id = job_id
        self.node_id = node_id or uuid.uuid4().hex
        self.hostname = hostname or socket.gethostname()
        self._token = token
        self._rpc_timeout = float(rpc_timeout)
        self._retry_timeout = float(retry_timeout)
        options = [
            ("grpc.enable_http_proxy", 0),
            ("grpc.initial_reconnect_backoff_ms", 50),
            ("grpc.min_reconnect_backoff_ms", 50),
            ("grpc.max_reconnect_backoff_ms", 1000),
        ]
        self._channel = grpc.insecure_channel(format_address(host, port), options=options)
        self._stub = pb_grpc.RendezvousStub(self._channel)
        self._closed = False

    @property
    def address(self) -> str:
        return format_address(self.host, self.port)

    def close(self) -> None:
        """Close the connection. Safe to call twice."""
        if not self._closed:
            self._closed = True
            self._channel.close()

    def __enter__(self) -> RendezvousClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the retry loop -------------------------------------------------------------------
    def _call(self, op: str, method: Callable[..., Any], request: Any, wait: float = 0.0) -> Any:
        if self._closed:
            raise RendezvousError(f"rendezvous client for {self.address} is closed")
        first_failure: float | None = None
        delay = 0.05
        while True:
            try:
                return method(request, timeout=wait + self._rpc_timeout)
            except grpc.RpcError as e:
                code, details = e.code(), e.details()
                if code == grpc.StatusCode.UNAUTHENTICATED:
                    raise RendezvousError(
                        f"rendezvous at {self.address} refused the job token on {op} ({details}); every node of job "
                        f"{self.job_id!r} must use the same token (--rdzv-token-file or AXONML_STORE_TOKEN)"
                    ) from None
                if code == grpc.StatusCode.NOT_FOUND:
                    raise RendezvousError(f"rendezvous at {self.address} refused {op}: {details}") from None
                if code == grpc.StatusCode.FAILED_PRECONDITION and details.startswith("stale generation"):
                    raise StaleGenerationError(f"rendezvous {op}: {details}") from None
                if code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED):
                    raise ValueError(f"rendezvous {op} at {self.address} was refused: {details}") from None
                if code not in _RETRYABLE:
                    raise RendezvousError(f"rendezvous {op} at {self.address} failed: {code.name}: {details}") from None
                now = time.monotonic()
                first_failure = now if first_failure is None else first_failure
                if now - first_failure >= self._retry_timeout:
                    raise RendezvousError(
                        f"rendezvous at {self.address} is unreachable: {op} kept failing with {code.name} for "
                        f"{now - first_failure:.1f} s; last error: {details}. Check --rdzv-endpoint and that the "
                        "agent hosting the rendezvous (node rank 0) is running"
                    ) from None
                time.sleep(min(delay * random.uniform(0.5, 1.5), self._retry_timeout))
                delay = min(2 * delay, 1.0)

    # -- the protocol ---------------------------------------------------------------------
    def join_once(self, nproc: int, *, min_nodes: int, max_nodes: int, node_rank: int = -1,
                  wait: float = _CHUNK) -> pb.JoinResponse:
        """One ``Join`` call, held by the service up to ``wait`` s; ``complete`` in the answer
        says whether it holds this node's assignment.

        Raises:
            RendezvousError: the job failed or already finished, or the token or job id was refused.
        """
        request = pb.JoinRequest(token=self._token, job_id=self.job_id, node_id=self.node_id, hostname=self.hostname,
                                 nproc=nproc, requested_node_rank=node_rank, min_nodes=min_nodes, max_nodes=max_nodes,
                                 timeout_seconds=wait)
        reply = self._call("join", self._stub.Join, request, wait=wait)
        if not reply.complete and reply.state == pb.FAILED:
            raise RendezvousError(f"job {self.job_id!r} failed: {reply.message}")
        if not reply.complete and reply.state == pb.SUCCEEDED:
            raise RendezvousError(f"job {self.job_id!r} has already finished ({reply.message}); start a new job id")
        return reply

    def join(self, nproc: int, *, min_nodes: int, max_nodes: int, node_rank: int = -1,
             timeout: float = 900.0) -> pb.Assignment:
        """Join the job's open round and wait until it closes; returns this node's assignment.

        The service fails a round that misses its join timeout (every node is told);
        ``timeout`` bounds this call on the client side too.

        Raises:
            RendezvousError: the job failed or already finished, the token or job id was
                refused, or ``timeout`` passed (naming how many nodes are missing).
        """
        deadline = time.monotonic() + timeout
        last: pb.JoinResponse | None = None
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise RendezvousError(join_timeout_message(self.job_id, self.address, timeout, min_nodes, last))
            last = self.join_once(nproc, min_nodes=min_nodes, max_nodes=max_nodes, node_rank=node_rank,
                                  wait=min(left, _CHUNK))
            if last.complete:
                return last.assignment

    def heartbeat(self, generation: int, known_state: int = pb.RUNNING, workers_alive: int = 0,
                  wait: float = 0.0) -> pb.HeartbeatResponse:
        """Report this node alive; with ``wait`` > 0, the service answers as soon as the job's
        generation or state differs from ``(generation, known_state)``, or after ``wait`` s."""
        request = pb.HeartbeatRequest(token=self._token, job_id=self.job_id, node_id=self.node_id, generation=generation,
                                      known_state=known_state, workers_alive=workers_alive, wait_seconds=wait)
        return self._call("heartbeat", self._stub.Heartbeat, request, wait=wait)

    def report_failure(self, generation: int, failure: pb.Failure) -> pb.ReportFailureResponse:
        """Report a worker failure of ``generation``. ``restarting`` in the answer says whether
        a new generation opened (join it) or the job failed.

        Raises:
            StaleGenerationError: ``generation`` is already over (join again).
        """
        request = pb.ReportFailureRequest(token=self._token, job_id=self.job_id, node_id=self.node_id,
                                          generation=generation, failure=failure)
        return self._call("report_failure", self._stub.ReportFailure, request)

    def report_success(self, generation: int) -> pb.ReportSuccessResponse:
        """Report that every worker of this node finished ``generation`` successfully.

        Raises:
            StaleGenerationError: ``generation`` is already over (join again).
        """
        request = pb.ReportSuccessRequest(token=self._token, job_id=self.job_id, node_id=self.node_id, generation=generation)
        return self._call("report_success", self._stub.ReportSuccess, request)

    def leave(self, reason: str, exit_code: int = 0) -> pb.LeaveResponse:
        """Leave the job (the agent is stopping); the service opens a new generation for the
        other nodes, or fails the job when too few are left."""
        request = pb.LeaveRequest(token=self._token, job_id=self.job_id, node_id=self.node_id, reason=reason[:1024],
                                  exit_code=exit_code)
        return self._call("leave", self._stub.Leave, request)

    def status(self) -> pb.StatusResponse:
        """The job's state, generation, members and last failure."""
        return self._call("status", self._stub.Status, pb.StatusRequest(token=self._token, job_id=self.job_id))
