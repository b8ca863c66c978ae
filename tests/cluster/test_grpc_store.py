"""GrpcStore against a real GrpcStoreServer on a port the test bound (port 0): tokens,
limits, retries, server-side waiting, and a server that keeps serving after bad requests."""

import logging
import pickle
import socket
import threading
import time

import grpc
import pytest

from axonml.cluster import GrpcStore, GrpcStoreServer
from axonml.cluster._proto import store_pb2 as pb
from axonml.cluster._proto import store_pb2_grpc as pb_grpc
from axonml.errors import RendezvousError

TOKEN = "grpc-test-token-123"


@pytest.fixture(scope="module")
def server():
    with GrpcStoreServer(token=TOKEN, max_message_bytes=1024, max_key_bytes=64) as srv:
        yield srv


@pytest.fixture
def store(server):
    with GrpcStore("127.0.0.1", server.port, TOKEN, timeout=5, retry_timeout=2) as s:
        yield s


@pytest.fixture
def stub(server):
    channel = grpc.insecure_channel(server.address)
    yield pb_grpc.StoreStub(channel)
    channel.close()


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_server_binds_loopback_and_answers_ping(server, store):
    assert server.host == "127.0.0.1" and server.port > 0 and server.running
    assert server.address == f"127.0.0.1:{server.port}"
    assert TOKEN not in repr(server) and TOKEN not in repr(store)
    assert 0 < store.ping() < 1.0
    reply = pb_grpc.StoreStub(store._channel).Ping(pb.PingRequest(token=TOKEN), timeout=5)
    assert reply.server_id == server.server_id and reply.uptime_seconds > 0


def test_all_operations(store):
    store.set("k", b"v")
    assert store.get("k") == b"v"
    assert store.add("n", 2) == 2 and store.add("n", 3) == 5
    assert store.compare_set("c", "", "x") == b"x"
    assert store.compare_set("c", "y", "z") == b"x"
    store.wait(["k", "n", "c"], timeout=1)
    assert store.delete("k") is True and store.delete("k") is False
    assert store.num_keys() >= 2


@pytest.mark.parametrize("token", ["wrong-token", "grpc-test-token-12"])
def test_wrong_token_is_refused_without_retry_and_logged_without_the_token(server, store, token, caplog):
    caplog.set_level(logging.WARNING, logger="axonml.cluster.grpc_server")
    bad = GrpcStore("127.0.0.1", server.port, token, retry_timeout=30)
    start = time.monotonic()
    refused = rf"store at 127\.0\.0\.1:{server.port} refused the token on set\('k'\) \(wrong job token\)"
    with pytest.raises(RendezvousError, match=refused):
        bad.set("k", "v")
    assert time.monotonic() - start < 2.0  # UNAUTHENTICATED is not retried
    bad.close()
    assert "refused Set from ipv4:127.0.0.1:" in caplog.text
    assert token not in caplog.text and TOKEN not in caplog.text
    # the server keeps serving the right token
    store.set("after_refusal", "ok")
    assert store.get("after_refusal") == b"ok"


def test_missing_token_is_refused(server, stub, store, caplog):
    caplog.set_level(logging.WARNING, logger="axonml.cluster.grpc_server")
    for call, request in [
        (stub.Get, pb.GetRequest(key="k")),
        (stub.Add, pb.AddRequest(key="k", amount=1)),
        (stub.NumKeys, pb.NumKeysRequest()),
        (stub.Ping, pb.PingRequest()),
    ]:
        with pytest.raises(grpc.RpcError) as info:
            call(request, timeout=5)
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert "missing job token" in info.value.details()
    assert "missing job token" in caplog.text
    assert store.ping() > 0
    with pytest.raises(ValueError, match="needs the job's token"):
        GrpcStore("127.0.0.1", server.port, "")


def test_oversized_values_and_keys_are_refused_and_the_server_keeps_serving(store):
    store.set("fits", b"x" * 1024)
    with pytest.raises(ValueError, match=r"value for key 'big' is 1025 bytes, over the store server's limit of 1024 bytes"):
        store.set("big", b"x" * 1025)
    with pytest.raises(ValueError, match="over the store server's limit of 1024 bytes"):
        store.compare_set("big", "", b"x" * 2000)
    with pytest.raises(ValueError, match="over the store server's limit of 64 bytes"):
        store.set("k" * 65, "v")
    with pytest.raises(ValueError, match="message limit.*max_message_bytes"):  # over gRPC's own limit too
        store.set("huge", b"x" * 200_000)
    assert store.get("fits") == b"x" * 1024
    with pytest.raises(RendezvousError):
        store.get("big", timeout=0)


def test_bad_requests_do_not_stop_the_server(stub, store):
    for request in [pb.GetRequest(token=TOKEN, key="k", timeout_seconds=-1), pb.GetRequest(token=TOKEN, key="")]:
        with pytest.raises(grpc.RpcError) as info:
            stub.Get(request, timeout=5)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    store.set("text", "abc")
    with pytest.raises(grpc.RpcError) as info:
        stub.Add(pb.AddRequest(token=TOKEN, key="text", amount=1), timeout=5)
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert store.ping() > 0


def test_retried_add_is_applied_once(stub):
    request = pb.AddRequest(token=TOKEN, key="once", amount=5, request_id="client-1")
    assert stub.Add(request, timeout=5).value == 5
    assert stub.Add(request, timeout=5).value == 5  # a retry gets the first answer
    assert stub.Add(pb.AddRequest(token=TOKEN, key="once", amount=5, request_id="client-2"), timeout=5).value == 10


def test_get_waits_in_the_server_with_one_call(store):
    calls = []
    real_get = store._stub.Get

    def counting(request, timeout):
        calls.append(request.timeout_seconds)
        return real_get(request, timeout=timeout)

    store._stub.Get = counting
    with pytest.raises(RendezvousError, match="timed out after 0.3 s"):
        store.get("absent", timeout=0.3)
    assert calls == [pytest.approx(0.3, abs=0.05)]  # no client-side polling


def test_many_waiting_gets_across_threads_are_released_by_one_set(store):
    got = []
    threads = [threading.Thread(target=lambda: got.append(store.get("release", timeout=10))) for _ in range(64)]
    for t in threads:
        t.start()
    time.sleep(0.2)
    assert got == []
    start = time.monotonic()
    store.set("release", "now")  # must not queue behind the 64 waiting calls
    for t in threads:
        t.join(timeout=10)
    assert got == [b"now"] * 64
    assert time.monotonic() - start < 3.0


def test_unreachable_server_raises_after_the_retry_deadline():
    port = _free_port()  # nothing listens there
    store = GrpcStore("127.0.0.1", port, TOKEN, retry_timeout=0.6, backoff_initial=0.05, backoff_max=0.2)
    start = time.monotonic()
    unreachable = rf"store at 127\.0\.0\.1:{port} is unreachable: set\('k'\) kept failing with UNAVAILABLE"
    with pytest.raises(RendezvousError, match=unreachable):
        store.set("k", "v")
    assert 0.5 <= time.monotonic() - start < 4.0
    store.close()
    with pytest.raises(RendezvousError, match="is closed"):
        store.set("k", "v")


def test_client_started_before_the_server_connects_once_it_is_up():
    port = _free_port()
    store = GrpcStore("127.0.0.1", port, TOKEN, retry_timeout=10, backoff_max=0.2)
    late = GrpcStoreServer(port=port, token=TOKEN)
    timer = threading.Timer(0.4, late.start)
    timer.start()
    try:
        start = time.monotonic()
        store.set("k", "v")
        assert 0.3 <= time.monotonic() - start < 5.0
        assert store.get("k") == b"v"
    finally:
        timer.join()
        late.stop()
        store.close()


def test_port_in_use_is_a_clear_error(server):
    with pytest.raises(RendezvousError, match=rf"could not listen on 127\.0\.0\.1:{server.port}.*port=0"):
        GrpcStoreServer(port=server.port, token=TOKEN).start()


def test_server_life_cycle_and_arguments():
    srv = GrpcStoreServer()  # generates a token
    assert len(srv.token) >= 16
    with pytest.raises(RendezvousError, match="only after start"):
        srv.port
    srv.start()
    with pytest.raises(RendezvousError, match="already running"):
        srv.start()
    srv.stop()
    srv.stop()  # twice is fine
    assert not srv.running
    with pytest.raises(ValueError, match="non-empty str token"):
        GrpcStoreServer(token="")
    with pytest.raises(ValueError, match="port must be an int"):
        GrpcStoreServer(port=70000)
    with pytest.raises(ValueError, match="max_message_bytes must be a positive int"):
        GrpcStoreServer(max_message_bytes=0)
    with pytest.raises(ValueError, match="port must be an int in \\[1, 65535\\]"):
        GrpcStore("127.0.0.1", 0, TOKEN)
    with pytest.raises(ValueError, match="backoff_initial <= backoff_max"):
        GrpcStore("127.0.0.1", 1, TOKEN, backoff_initial=3, backoff_max=1)


def test_a_client_pickles_into_a_new_connection(server, store):
    store.set("shared", "1")
    copy = pickle.loads(pickle.dumps(store))
    assert copy is not store and copy.address == store.address and copy.timeout == store.timeout
    assert copy.get("shared") == b"1"
    copy.close()
    assert store.get("shared") == b"1"  # the original keeps its own connection
