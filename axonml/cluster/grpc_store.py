"""``GrpcStore``: the client of :class:`~axonml.cluster.grpc_server.GrpcStoreServer`.

Design note (waiting in the server): ``get`` and ``wait`` send their timeout to the
server, which holds the call until the keys exist or the time is up; the client never
polls. The call's gRPC deadline is that timeout plus ``rpc_timeout``, so
DEADLINE_EXCEEDED means a slow or unreachable server, never a missing key.

Design note (retries): UNAVAILABLE (no server yet, connection lost) and
DEADLINE_EXCEEDED are retried with exponential backoff and jitter (``backoff_initial``
doubling up to ``backoff_max``, each sleep scaled by a random factor in [0.5, 1.5) so
that many ranks do not retry in step) until ``retry_timeout`` seconds have passed since
the call's first failure; then ``RendezvousError`` says the server is unreachable. A
waiting call resumes with the time it has left. ``add``, ``compare_set`` and ``delete``
carry a request id so that the server answers a retry with its first answer instead
of applying it twice. A refused token (UNAUTHENTICATED) is never retried.
"""

from __future__ import annotations

import itertools
import random
import time
import uuid
from collections.abc import Callable
from typing import Any

import grpc

from ..errors import RendezvousError
from ._proto import store_pb2 as pb
from ._proto import store_pb2_grpc as pb_grpc
from .grpc_server import format_address
from .store_base import Store, Timeout

__all__ = ["GrpcStore"]

_RETRYABLE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
_BAD_REQUEST = (
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.OUT_OF_RANGE,
)


class GrpcStore(Store):
    """A store served by a :class:`GrpcStoreServer` at ``host:port``.

    Args:
        host, port: the server's address.
        token: the job's shared token (the server refuses requests without it).
        timeout: default seconds that ``get``/``wait`` block (300 when None).
        rpc_timeout: seconds one attempt of a call may take beyond its waiting time.
        retry_timeout: seconds to keep retrying an unreachable or unresponsive server,
            counted from a call's first failure.
        backoff_initial, backoff_max: the first and the largest pause between retries.

    Example::

        store = GrpcStore("10.0.0.1", 29400, token=os.environ["AXONML_STORE_TOKEN"])
        n = store.add("arrived", 1)
        store.wait(["rank0_addr"], timeout=60)
    """

    def __init__(
        self,
        host: str,
        port: int,
        token: str,
        *,
        timeout: Timeout = None,
        rpc_timeout: float = 30.0,
        retry_timeout: float = 60.0,
        backoff_initial: float = 0.05,
        backoff_max: float = 2.0,
    ) -> None:
        super().__init__(timeout)
        if not isinstance(host, str) or not host:
            raise ValueError(f"GrpcStore needs a host name or address, got {host!r}")
        if isinstance(port, bool) or not isinstance(port, int) or not 0 < port <= 65535:
            raise ValueError(f"GrpcStore port must be an int in [1, 65535], got {port!r}")
        if not isinstance(token, str) or not token:
            raise ValueError("GrpcStore needs the job's token (a non-empty str); the server refuses requests without it")
        for name, value in (("rpc_timeout", rpc_timeout), ("retry_timeout", retry_timeout)):
            if not isinstance(value, (int, float)) or not value >= 0:
                raise ValueError(f"GrpcStore {name} must be seconds >= 0, got {value!r}")
        if not 0 < backoff_initial <= backoff_max:
            raise ValueError(f"GrpcStore needs 0 < backoff_initial <= backoff_max, got {backoff_initial!r}, {backoff_max!r}")
        # what __reduce__ needs to open an equal client in another process
        self._init_kwargs = dict(
            timeout=self.timeout,
            rpc_timeout=rpc_timeout,
            retry_timeout=retry_timeout,
            backoff_initial=backoff_initial,
            backoff_max=backoff_max,
        )
        self._host, self._port = host, port
        self._token = token
        self._rpc_timeout = float(rpc_timeout)
        self._retry_timeout = float(retry_timeout)
        self._backoff = (float(backoff_initial), float(backoff_max))
        self._ids = itertools.count()
        self._client_id = uuid.uuid4().hex
        options = [
            ("grpc.max_send_message_length", -1),  # the server enforces its own limits and says which
            ("grpc.max_receive_message_length", -1),
            ("grpc.enable_http_proxy", 0),  # store traffic stays inside the cluster
            # gRPC's own reconnect backoff defaults to 1 s growing to 120 s; keep it short so
            # that a rank started before the server connects soon after the server is up
            ("grpc.initial_reconnect_backoff_ms", 50),
            ("grpc.min_reconnect_backoff_ms", 50),
            ("grpc.max_reconnect_backoff_ms", 1000),
        ]
        self._channel = grpc.insecure_channel(format_address(host, port), options=options)
        self._stub = pb_grpc.StoreStub(self._channel)
        self._closed = False

    @property
    def host(self) -> str:
        return self._host

    @property
    def port(self) -> int:
        return self._port

    @property
    def address(self) -> str:
        return format_address(self._host, self._port)

    def __reduce__(self) -> tuple:
        # A channel cannot be pickled; a spawned process gets a new client to the same server
        # (with the token: passing the store to a worker hands it the job's token, as intended).
        return _open_grpc_store, (self._host, self._port, self._token, self._init_kwargs)

    def close(self) -> None:
        """Close the connection. Safe to call twice."""
        if not self._closed:
            self._closed = True
            self._channel.close()

    def ping(self) -> float:
        """Check the server is up and accepts the token; returns the round trip in seconds."""
        start = time.perf_counter()
        self._call("ping", self._stub.Ping, lambda _: pb.PingRequest(token=self._token))
        return time.perf_counter() - start

    # -- the retry loop -------------------------------------------------------------------
    def _request_id(self) -> str:
        return f"{self._client_id}-{next(self._ids)}"

    def _call(self, op: str, method: Callable[..., Any], make_request: Callable[[float], Any], wait: float = 0.0) -> Any:
        """Call ``method`` with ``make_request(seconds left to wait)``, retrying transient failures."""
        if self._closed:
            raise RendezvousError(f"store client for {self.address} is closed; create a new GrpcStore")
        wait_deadline = time.monotonic() + wait
        first_failure: float | None = None
        delay, delay_max = self._backoff
        while True:
            left = max(0.0, wait_deadline - time.monotonic())
            try:
                return method(make_request(left), timeout=left + self._rpc_timeout)
            except grpc.RpcError as e:
                code, details = e.code(), e.details()
                if code == grpc.StatusCode.UNAUTHENTICATED:
                    raise RendezvousError(
                        f"store at {self.address} refused the token on {op} ({details}); every rank must use "
                        "the token of the job the store belongs to (check the launcher's environment)"
                    ) from None
                if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
                    raise ValueError(
                        f"store {op} at {self.address} was refused: {details}. The request is over the server's "
                        "message limit: keep large data out of the store, or start the server with a larger max_message_bytes"
                    ) from None
                if code in _BAD_REQUEST:
                    raise ValueError(f"store {op} at {self.address} was refused: {details}") from None
                if code not in _RETRYABLE:
                    raise RendezvousError(f"store {op} at {self.address} failed: {code.name}: {details}") from None
                now = time.monotonic()
                if first_failure is None:
                    first_failure = now
                failing_for = now - first_failure
                if failing_for >= self._retry_timeout:
                    raise RendezvousError(
                        f"store at {self.address} is unreachable: {op} kept failing with {code.name} for "
                        f"{failing_for:.1f} s (retry_timeout={self._retry_timeout:g} s); last error: {details}. "
                        "Check that the store server is running and that host and port are right"
                    ) from None
                pause = min(delay * random.uniform(0.5, 1.5), self._retry_timeout - failing_for)
                time.sleep(max(pause, 0.0))
                delay = min(2 * delay, delay_max)

    # -- primitives -----------------------------------------------------------------------
    def _set(self, key: str, value: bytes) -> None:
        self._call(f"set({key!r:.60})", self._stub.Set, lambda _: pb.SetRequest(token=self._token, key=key, value=value))

    def _get(self, key: str, timeout: float) -> bytes | None:
        reply = self._call(
            f"get({key!r:.60})",
            self._stub.Get,
            lambda left: pb.GetRequest(token=self._token, key=key, timeout_seconds=left),
            wait=timeout,
        )
        return reply.value if reply.found else None

    def _add(self, key: str, amount: int) -> int:
        rid = self._request_id()
        req = pb.AddRequest(token=self._token, key=key, amount=amount, request_id=rid)
        return self._call(f"add({key!r:.60})", self._stub.Add, lambda _: req).value

    def _compare_set(self, key: str, expected: bytes, desired: bytes) -> bytes:
        req = pb.CompareSetRequest(token=self._token, key=key, expected=expected, desired=desired, request_id=self._request_id())
        return self._call(f"compare_set({key!r:.60})", self._stub.CompareSet, lambda _: req).value

    def _delete(self, key: str) -> bool:
        req = pb.DeleteRequest(token=self._token, key=key, request_id=self._request_id())
        return self._call(f"delete({key!r:.60})", self._stub.Delete, lambda _: req).deleted

    def _wait(self, keys: list[str], timeout: float) -> list[str]:
        reply = self._call(
            "wait",
            self._stub.Wait,
            lambda left: pb.WaitRequest(token=self._token, keys=keys, timeout_seconds=left),
            wait=timeout,
        )
        return list(reply.missing)

    def _num_keys(self) -> int:
        return self._call("num_keys", self._stub.NumKeys, lambda _: pb.NumKeysRequest(token=self._token)).count


def _open_grpc_store(host: str, port: int, token: str, kwargs: dict) -> GrpcStore:
    """Unpickle a :class:`GrpcStore`: a new client with the same settings."""
    return GrpcStore(host, port, token, **kwargs)
