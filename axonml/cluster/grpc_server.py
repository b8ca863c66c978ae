"""``GrpcStoreServer``: the key-value store served over gRPC (``proto/store.proto``).

Design note (one event loop, no thread per waiter): the server is a ``grpc.aio`` server
running on an asyncio loop in one background thread. A ``Get`` or ``Wait`` that must
wait parks a coroutine, not a thread, so a thousand ranks waiting for rank 0's key cost
a thousand small coroutines; a thread pool could instead fill up with waiters and leave
the ``Set`` that would release them queued behind them. All state lives on that loop
and every handler runs there, so changes need no lock: each change sets an
``asyncio.Event`` that waiters sleep on and replaces it with a fresh one.

Design note (safety): the server binds to loopback unless told otherwise. Every request
must carry the job token (compared in constant time); a refusal is logged with the
peer's address, never the token, and answered with UNAUTHENTICATED. Keys and values over
the limits are refused with INVALID_ARGUMENT and a message that names the limit. A bad
request never stops the server. ``request_id`` lets a retried ``Add``, ``CompareSet`` or
``Delete`` get its first answer instead of being applied twice.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import math
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import grpc

from ..errors import RendezvousError
from ._proto import store_pb2 as pb
from ._proto import store_pb2_grpc as pb_grpc
from .store_base import apply_add, apply_compare_set

__all__ = ["GrpcStoreServer", "format_address"]

logger = logging.getLogger(__name__)

_REPLAY_CACHE = 16384  # answers kept for retried requests


def format_address(host: str, port: int) -> str:
    """``host:port``, with IPv6 hosts in brackets."""
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"{host}:{port}"


class _Servicer(pb_grpc.StoreServicer):
    """The store's state and the RPC handlers; lives on the server's event loop."""

    def __init__(self, token: str, max_key_bytes: int, max_value_bytes: int, server_id: str) -> None:
        self._token = token.encode("utf-8")
        self._max_key = max_key_bytes
        self._max_value = max_value_bytes
        self._server_id = server_id
        self._started = time.monotonic()
        self._data: dict[str, bytes] = {}
        self._changed = asyncio.Event()
        self._replies: OrderedDict[str, Any] = OrderedDict()

    # -- checks ---------------------------------------------------------------------------
    async def _authorize(self, request: Any, context: grpc.aio.ServicerContext, method: str) -> None:
        if hmac.compare_digest(request.token.encode("utf-8"), self._token):
            return
        which = "missing" if not request.token else "wrong"
        logger.warning("store server refused %s from %s: %s job token", method, context.peer(), which)
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, f"{which} job token")

    async def _check_key(self, key: str, context: grpc.aio.ServicerContext) -> None:
        if not key:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "store keys must be non-empty")
        n = len(key.encode("utf-8"))
        if n > self._max_key:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"key {key[:60]!r}... is {n} bytes, over the store server's limit of {self._max_key} bytes",
            )

    async def _check_value(self, key: str, value: bytes, context: grpc.aio.ServicerContext) -> None:
        if len(value) > self._max_value:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"value for key {key!r} is {len(value)} bytes, over the store server's limit of {self._max_value} bytes; "
                "keep large data out of the store (send it with the collectives or through a file), "
                "or start the server with a larger max_message_bytes",
            )

    async def _check_timeout(self, seconds: float, context: grpc.aio.ServicerContext) -> float:
        if not math.isfinite(seconds) or seconds < 0:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"timeout_seconds must be finite and >= 0, got {seconds}")
        return seconds

    # -- state ----------------------------------------------------------------------------
    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def _wait_until(self, done: Callable[[], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not done():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            try:
                await asyncio.wait_for(self._changed.wait(), remaining)
            except TimeoutError:
                return done()
        return True

    def _replay(self, request_id: str) -> Any:
        return self._replies.get(request_id) if request_id else None

    def _remember(self, request_id: str, reply: Any) -> Any:
        if request_id:
            self._replies[request_id] = reply
            if len(self._replies) > _REPLAY_CACHE:
                self._replies.popitem(last=False)
        return reply

    # -- handlers (no await between reading and writing the state: each change is atomic) --
    async def Set(self, request: pb.SetRequest, context: grpc.aio.ServicerContext) -> pb.SetResponse:
        await self._authorize(request, context, "Set")
        await self._check_key(request.key, context)
        await self._check_value(request.key, request.value, context)
        self._data[request.key] = request.value
        self._notify()
        return pb.SetResponse()

    async def Get(self, request: pb.GetRequest, context: grpc.aio.ServicerContext) -> pb.GetResponse:
        await self._authorize(request, context, "Get")
        await self._check_key(request.key, context)
        timeout = await self._check_timeout(request.timeout_seconds, context)
        if await self._wait_until(lambda: request.key in self._data, timeout):
            return pb.GetResponse(found=True, value=self._data[request.key])
        return pb.GetResponse(found=False)

    async def Add(self, request: pb.AddRequest, context: grpc.aio.ServicerContext) -> pb.AddResponse:
        await self._authorize(request, context, "Add")
        await self._check_key(request.key, context)
        reply = self._replay(request.request_id)
        if reply is not None:
            return reply
        try:
            result = apply_add(request.key, self._data.get(request.key), request.amount)
        except ValueError as e:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(e))
        self._data[request.key] = str(result).encode("ascii")
        self._notify()
        return self._remember(request.request_id, pb.AddResponse(value=result))

    async def CompareSet(self, request: pb.CompareSetRequest, context: grpc.aio.ServicerContext) -> pb.CompareSetResponse:
        await self._authorize(request, context, "CompareSet")
        await self._check_key(request.key, context)
        await self._check_value(request.key, request.desired, context)
        reply = self._replay(request.request_id)
        if reply is not None:
            return reply
        new, result = apply_compare_set(self._data.get(request.key), request.expected, request.desired)
        if new is not None:
            self._data[request.key] = new
            self._notify()
        return self._remember(request.request_id, pb.CompareSetResponse(value=result))

    async def Delete(self, request: pb.DeleteRequest, context: grpc.aio.ServicerContext) -> pb.DeleteResponse:
        await self._authorize(request, context, "Delete")
        await self._check_key(request.key, context)
        reply = self._replay(request.request_id)
        if reply is not None:
            return reply
        deleted = self._data.pop(request.key, None) is not None
        return self._remember(request.request_id, pb.DeleteResponse(deleted=deleted))

    async def Wait(self, request: pb.WaitRequest, context: grpc.aio.ServicerContext) -> pb.WaitResponse:
        await self._authorize(request, context, "Wait")
        keys = list(request.keys)
        for key in keys:
            await self._check_key(key, context)
        timeout = await self._check_timeout(request.timeout_seconds, context)
        await self._wait_until(lambda: all(k in self._data for k in keys), timeout)
        return pb.WaitResponse(missing=[k for k in keys if k not in self._data])

    async def NumKeys(self, request: pb.NumKeysRequest, context: grpc.aio.ServicerContext) -> pb.NumKeysResponse:
        await self._authorize(request, context, "NumKeys")
        return pb.NumKeysResponse(count=len(self._data))

    async def Ping(self, request: pb.PingRequest, context: grpc.aio.ServicerContext) -> pb.PingResponse:
        await self._authorize(request, context, "Ping")
        return pb.PingResponse(server_id=self._server_id, uptime_seconds=time.monotonic() - self._started)


class GrpcStoreServer:
    """Serve a key-value store over gRPC for the ranks of one job.

    Args:
        host: the interface to bind; loopback by default. Use ``"0.0.0.0"`` (or ``"::"``)
            to serve other hosts.
        port: the TCP port; 0 picks a free one (read :attr:`port` after :meth:`start`).
        token: the job's shared secret that every request must carry; None generates one
            (read :attr:`token` and hand it to the ranks).
        max_message_bytes: the largest value a client may store (requests may be a few KiB
            larger, for the key and token).
        max_key_bytes: the longest key, in UTF-8 bytes.

    Example::

        with GrpcStoreServer(token="s3cret") as server:
            store = GrpcStore("127.0.0.1", server.port, token="s3cret")
            store.set("hello", "world")
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        token: str | None = None,
        *,
        max_message_bytes: int = 4 * 1024 * 1024,
        max_key_bytes: int = 4096,
    ) -> None:
        if token is None:
            token = secrets.token_urlsafe(24)
        if not isinstance(token, str) or not token:
            raise ValueError("GrpcStoreServer needs a non-empty str token (or None to generate one)")
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            raise ValueError(f"GrpcStoreServer port must be an int in [0, 65535], got {port!r}")
        for name, value in (("max_message_bytes", max_message_bytes), ("max_key_bytes", max_key_bytes)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"GrpcStoreServer {name} must be a positive int, got {value!r}")
        self._host = host
        self._requested_port = port
        self._port: int | None = None
        self._token = token
        self._max_value = max_message_bytes
        self._max_key = max_key_bytes
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_event: asyncio.Event | None = None
        self._grace = 1.0
        self.server_id = secrets.token_hex(8)

    @property
    def host(self) -> str:
        return self._host

    @property
    def port(self) -> int:
        """The bound port (known after :meth:`start`)."""
        if self._port is None:
            raise RendezvousError("GrpcStoreServer.port is known only after start()")
        return self._port

    @property
    def address(self) -> str:
        """``host:port`` of the running server."""
        return format_address(self._host, self.port)

    @property
    def token(self) -> str:
        """The job token clients must send."""
        return self._token

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self, timeout: float = 30.0) -> GrpcStoreServer:
        """Bind and start serving in a background thread; returns self.

        Raises:
            RendezvousError: the address could not be bound (port in use, bad host).
        """
        if self.running:
            raise RendezvousError(f"store server at {self.address} is already running")
        ready = threading.Event()
        failure: list[BaseException] = []
        self._thread = threading.Thread(target=self._run, args=(ready, failure), name="axonml-store-server", daemon=True)
        self._thread.start()
        if not ready.wait(timeout):
            where = format_address(self._host, self._requested_port)
            raise RendezvousError(f"store server on {where} did not start in {timeout:g} s")
        if failure:
            self._thread.join()
            self._thread = None
            raise RendezvousError(
                f"store server could not listen on {format_address(self._host, self._requested_port)}: {failure[0]}; "
                "is the port in use? pass port=0 to take a free one"
            ) from failure[0]
        logger.info("store server %s listening on %s", self.server_id, self.address)
        return self

    def stop(self, grace: float = 1.0) -> None:
        """Stop serving (in-flight calls get ``grace`` seconds) and join the thread. Safe to call twice."""
        if self._thread is None:
            return
        self._grace = grace
        loop, event = self._loop, self._stop_event
        if loop is not None and event is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(event.set)
            except RuntimeError:  # the loop closed meanwhile
                pass
        self._thread.join()
        self._thread = None
        logger.info("store server %s stopped", self.server_id)

    def __enter__(self) -> GrpcStoreServer:
        return self if self.running else self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        where = self.address if self._port is not None else format_address(self._host, self._requested_port)
        return f"GrpcStoreServer({where}, running={self.running})"

    # -- the server thread ----------------------------------------------------------------
    def _run(self, ready: threading.Event, failure: list[BaseException]) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._serve(ready, failure))
        except BaseException as e:  # a failure before ready is reported by start()
            if not ready.is_set():
                failure.append(e)
                ready.set()
            else:
                logger.exception("store server %s crashed", self.server_id)
        finally:
            loop.close()

    async def _serve(self, ready: threading.Event, failure: list[BaseException]) -> None:
        slack = self._max_key + 64 * 1024  # room for the key, token and framing around a maximal value
        options = [
            ("grpc.max_receive_message_length", self._max_value + slack),
            ("grpc.max_send_message_length", self._max_value + slack),
            ("grpc.so_reuseport", 0),  # a port given explicitly must really be free
        ]
        server = grpc.aio.server(options=options)
        pb_grpc.add_StoreServicer_to_server(_Servicer(self._token, self._max_key, self._max_value, self.server_id), server)
        try:
            port = server.add_insecure_port(format_address(self._host, self._requested_port))
        except RuntimeError as e:
            failure.append(e)
            ready.set()
            return
        if port == 0:  # older grpcio reports a failed bind this way
            failure.append(OSError("bind failed"))
            ready.set()
            return
        self._add_services(server, port)
        await server.start()
        tasks = [asyncio.get_running_loop().create_task(c) for c in self._background()]
        self._port = port
        self._stop_event = asyncio.Event()
        ready.set()
        try:
            await self._stop_event.wait()
        finally:
            for t in tasks:
                t.cancel()
            await server.stop(self._grace)

    def _add_services(self, server: Any, port: int) -> None:
        """Hook: add more servicers to ``server`` (bound to ``port``, not started yet)."""

    def _background(self) -> list:
        """Hook: coroutines to run on the server's loop while it serves (cancelled at stop)."""
        return []
