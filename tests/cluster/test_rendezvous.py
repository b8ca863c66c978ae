"""The rendezvous service in-process: a RendezvousServer on a free loopback port and
RendezvousClients in threads. Tokens, job ids, stale generations, malformed and oversized
requests, the join timeout, generations on failure/join/loss/leave, and the store on the
same port. The service must keep serving after every bad request."""

import logging
import math
import re
import socket
import threading
import time

import grpc
import pytest

from axonml.cluster import GrpcStore
from axonml.cluster._proto import rendezvous_pb2 as pb
from axonml.cluster._proto import rendezvous_pb2_grpc as pb_grpc
from axonml.cluster.rendezvous import (
    JobState,
    RendezvousClient,
    RendezvousConfig,
    RendezvousServer,
    StaleGenerationError,
    parse_endpoint,
    state_name,
)
from axonml.errors import RendezvousError

TOKEN = "rdzv-test-token-42"
JOB = "job-under-test"


def make_server(**kw):
    cfg = dict(job_id=JOB, min_nodes=2, max_nodes=2, max_restarts=1, join_timeout=30, last_call_timeout=0.2,
               heartbeat_timeout=30)
    cfg.update(kw)
    return RendezvousServer(RendezvousConfig(**cfg), token=TOKEN).start()


def client(server, name, token=TOKEN, job=JOB):
    return RendezvousClient("127.0.0.1", server.port, token, job, hostname=name, retry_timeout=2)


def join_all(clients, nproc=(1,), min_nodes=2, max_nodes=2, timeout=10, ranks=None, stagger=0.05):
    """Join every client from its own thread; returns their assignments (or exceptions) in order."""
    out = [None] * len(clients)

    def one(i):
        try:
            out[i] = clients[i].join(nproc[i % len(nproc)], min_nodes=min_nodes, max_nodes=max_nodes,
                                     node_rank=-1 if ranks is None else ranks[i], timeout=timeout)
        except Exception as e:  # noqa: BLE001  (handed back to the test)
            out[i] = e

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(clients))]
    for t in threads:
        t.start()
        time.sleep(stagger)
    for t in threads:
        t.join(timeout + 5)
    return out


@pytest.fixture
def server():
    srv = make_server()
    yield srv
    srv.stop()


def test_nodes_get_ranks_offsets_and_the_store_endpoint(server):
    a, b = client(server, "hostA"), client(server, "hostB")
    ra, rb = join_all([a, b], nproc=(3, 2))
    assert (ra.node_rank, ra.rank_offset, rb.node_rank, rb.rank_offset) == (0, 0, 1, 3)
    assert ra.world_size == rb.world_size == 5 and ra.nnodes == 2 and ra.generation == 0
    assert (ra.master_addr, ra.master_port) == ("127.0.0.1", server.port)
    assert [n.hostname for n in ra.nodes] == ["hostA", "hostB"] and ra.run_id == JOB and ra.max_restarts == 1
    # the workers' store is served on the same port, with the same token
    with GrpcStore(ra.master_addr, ra.master_port, TOKEN) as store:
        store.set("hello", "world")
        assert store.get("hello") == b"world"
    status = a.status()
    assert status.state == JobState.RUNNING and len(status.nodes) == 2 and state_name(status.state) == "RUNNING"


def test_requested_node_ranks_are_kept_and_duplicates_refused(server):
    a, b = client(server, "first"), client(server, "second")
    dup = client(server, "dup")
    ra, rd, rb = join_all([a, dup, b], ranks=[1, 1, 0], timeout=5, stagger=0.1)
    assert isinstance(rd, RendezvousError) and "--node-rank 1 is already taken by host 'first'" in str(rd)
    assert (ra.node_rank, rb.node_rank) == (1, 0) and (rb.rank_offset, ra.rank_offset) == (0, 1)


@pytest.mark.parametrize("token", ["", "not-the-token"])
def test_wrong_or_missing_token_is_refused_and_logged(server, token, caplog):
    caplog.set_level(logging.WARNING, logger="axonml.cluster.rendezvous_service")
    stub = pb_grpc.RendezvousStub(grpc.insecure_channel(server.address))
    with pytest.raises(grpc.RpcError) as info:
        stub.Join(pb.JoinRequest(token=token, job_id=JOB, node_id="n1", nproc=1, min_nodes=2, max_nodes=2), timeout=5)
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    which = "missing" if not token else "wrong"
    assert "refused Join from ipv4:127.0.0.1:" in caplog.text and f"{which} job token" in caplog.text
    assert TOKEN not in caplog.text and (not token or token not in caplog.text)
    if token:
        with pytest.raises(RendezvousError, match="refused the job token on join"):
            client(server, "x", token=token).join(1, min_nodes=2, max_nodes=2, timeout=2)
    assert server.job_state() == (0, JobState.JOINING)  # nothing joined, still serving


def test_wrong_job_id_is_refused(server, caplog):
    caplog.set_level(logging.WARNING, logger="axonml.cluster.rendezvous_service")
    with pytest.raises(RendezvousError, match=f"serves job '{JOB}', not 'other-job'; use the same --rdzv-id"):
        client(server, "x", job="other-job").join(1, min_nodes=2, max_nodes=2, timeout=2)
    assert "job id 'other-job'" in caplog.text


def test_mismatched_node_counts_are_refused(server):
    with pytest.raises(RendezvousError, match="started with --nodes 1:3 but job 'job-under-test' runs with --nodes 2:2"):
        client(server, "x").join(1, min_nodes=1, max_nodes=3, timeout=2)


@pytest.mark.parametrize("field, request_kw, match", [
    ("node_id", dict(node_id=""), "node_id must be non-empty"),
    ("nproc", dict(nproc=0), r"nproc must be in \[1, 65536\], got 0"),
    ("timeout", dict(timeout_seconds=-1.0), "timeout_seconds must be finite and >= 0, got -1.0"),
    ("nan", dict(timeout_seconds=math.nan), "timeout_seconds must be finite"),
    ("rank", dict(requested_node_rank=5), r"--node-rank 5 is outside \[0, 2\)"),
    ("hostname", dict(hostname="h" * 5000), "hostname is 5000 bytes, over the limit of 256 bytes"),
])
def test_malformed_join_requests_are_refused_and_the_service_keeps_serving(server, field, request_kw, match):
    stub = pb_grpc.RendezvousStub(grpc.insecure_channel(server.address))
    request = dict(token=TOKEN, job_id=JOB, node_id="n1", hostname="h", nproc=1, min_nodes=2, max_nodes=2,
                   timeout_seconds=0.0)
    request.update(request_kw)
    with pytest.raises(grpc.RpcError) as info:
        stub.Join(pb.JoinRequest(**request), timeout=5)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert re.search(match, info.value.details()), info.value.details()
    ra, rb = join_all([client(server, "a"), client(server, "b")])
    assert ra.world_size == 2 and rb.world_size == 2


def test_oversized_requests_are_refused_and_the_service_keeps_serving(server):
    a, b = client(server, "a"), client(server, "b")
    ra, _ = join_all([a, b])
    with pytest.raises(ValueError, match="failure.traceback is 20000 bytes, over the limit"):
        a.report_failure(ra.generation, pb.Failure(rank=0, exit_code=1, traceback="x" * 20000))
    with pytest.raises(ValueError, match="RESOURCE_EXHAUSTED|refused"):  # over the server's message limit
        a.report_failure(ra.generation, pb.Failure(rank=0, exit_code=1, traceback="x" * (8 * 1024 * 1024)))
    assert a.heartbeat(ra.generation).state == JobState.RUNNING  # still serving, nothing changed


def test_join_timeout_fails_the_job_naming_the_missing_nodes():
    srv = make_server(min_nodes=3, max_nodes=3, join_timeout=0.6)
    try:
        with pytest.raises(RendezvousError, match=r"1 of 3 required node\(s\) joined, 2 node\(s\) missing"):
            client(srv, "lonely").join(1, min_nodes=3, max_nodes=3, timeout=10)
        assert srv.job_state() == (0, JobState.FAILED)
        # a late node is told the job failed, not left waiting
        with pytest.raises(RendezvousError, match="failed: rendezvous of job"):
            client(srv, "late").join(1, min_nodes=3, max_nodes=3, timeout=2)
    finally:
        srv.stop()


def test_client_side_join_deadline_names_the_missing_count(server):
    with pytest.raises(RendezvousError, match=r"gave up after 0.5 s: waiting for nodes: 1 of 2 .*; 1 node\(s\) missing of 2"):
        client(server, "alone").join(1, min_nodes=2, max_nodes=2, timeout=0.5)


def test_failure_opens_a_new_generation_then_exhausted_restarts_fail_the_job(server):
    a, b = client(server, "a"), client(server, "b")
    ra, rb = join_all([a, b])
    # b waits on a heartbeat: the failure reported by a wakes it at once
    woke = {}
    t = threading.Thread(target=lambda: woke.setdefault("hb", b.heartbeat(rb.generation, wait=10)))
    t.start()
    time.sleep(0.1)
    t0 = time.monotonic()
    reply = a.report_failure(ra.generation, pb.Failure(rank=0, local_rank=0, exit_code=3, reason="exit code 3"))
    t.join(5)
    assert reply.restarting and reply.generation == 1 and reply.restart_count == 1
    assert woke["hb"].generation == 1 and woke["hb"].state == JobState.JOINING and time.monotonic() - t0 < 2
    # reports about generation 0 are now stale
    with pytest.raises(StaleGenerationError, match="stale generation: the failure report is for generation 0 but"):
        b.report_failure(rb.generation, pb.Failure(rank=1, exit_code=1))
    with pytest.raises(StaleGenerationError, match="success report is for generation 0"):
        b.report_success(rb.generation)
    ra, rb = join_all([a, b])
    assert ra.generation == rb.generation == 1 and ra.restart_count == 1
    reply = b.report_failure(1, pb.Failure(rank=1, local_rank=0, node_rank=rb.node_rank, hostname="b", exit_code=137,
                                           reason="killed by SIGKILL", traceback="Traceback...\nValueError: x"))
    assert not reply.restarting and reply.state == JobState.FAILED and "no restarts left (max_restarts=1)" in reply.message
    view = a.heartbeat(1)
    assert view.state == JobState.FAILED and view.failure.rank == 1 and view.failure.exit_code == 137
    assert view.failure.traceback.endswith("ValueError: x")
    assert server.wait_settled(2.0)  # both nodes have seen the end


def test_success_needs_every_node(server):
    a, b = client(server, "a"), client(server, "b")
    ra, rb = join_all([a, b])
    assert a.report_success(ra.generation).state == JobState.RUNNING
    assert not server.wait_settled(0.2)
    done = b.report_success(rb.generation)
    assert done.state == JobState.SUCCEEDED and done.nodes_done == 2
    assert a.heartbeat(ra.generation).state == JobState.SUCCEEDED
    assert server.wait_settled(1.0)
    with pytest.raises(RendezvousError, match="has already finished"):
        client(server, "late").join(1, min_nodes=2, max_nodes=2, timeout=2)


def test_elastic_join_opens_a_new_generation_and_is_admitted():
    srv = make_server(min_nodes=1, max_nodes=3, last_call_timeout=0.2)
    try:
        a = client(srv, "a")
        ra = a.join(2, min_nodes=1, max_nodes=3, timeout=5)
        assert (ra.generation, ra.nnodes, ra.world_size) == (0, 1, 2)
        b = client(srv, "b")
        results = {}
        t = threading.Thread(target=lambda: results.setdefault("b", b.join(1, min_nodes=1, max_nodes=3, timeout=10)))
        t.start()
        view = a.heartbeat(ra.generation, wait=5)
        assert view.generation == 1 and view.state == JobState.JOINING and "node b joined" in view.message
        ra = a.join(2, min_nodes=1, max_nodes=3, timeout=5)
        t.join(10)
        assert ra.generation == results["b"].generation == 1 and ra.nnodes == 2 and ra.world_size == 3
        assert a.status().restart_count == 0  # membership changes do not count as restarts
    finally:
        srv.stop()


def test_full_elastic_job_keeps_the_extra_node_waiting():
    srv = make_server(min_nodes=1, max_nodes=1)
    try:
        a = client(srv, "a")
        ra = a.join(1, min_nodes=1, max_nodes=1, timeout=5)
        with pytest.raises(RendezvousError, match="running with the maximum of 1 node"):
            client(srv, "spare").join(1, min_nodes=1, max_nodes=1, timeout=0.5)
        assert a.heartbeat(ra.generation).generation == 0
    finally:
        srv.stop()


def test_a_silent_node_is_dropped_and_the_job_shrinks():
    srv = make_server(min_nodes=1, max_nodes=2, heartbeat_timeout=0.5)
    try:
        a, b = client(srv, "a"), client(srv, "b")
        ra, rb = join_all([a, b], min_nodes=1, max_nodes=2)
        assert ra.nnodes == 2
        # only a keeps sending heartbeats
        deadline = time.monotonic() + 5
        view = a.heartbeat(ra.generation)
        while view.generation == ra.generation and time.monotonic() < deadline:
            view = a.heartbeat(ra.generation, wait=0.2)
        assert view.generation == 1 and "lost 1 node(s) with no heartbeat for 0.5 s: b" in view.message
        ra2 = a.join(1, min_nodes=1, max_nodes=2, timeout=5)
        assert ra2.nnodes == 1 and ra2.world_size == 1 and ra2.generation == 1
    finally:
        srv.stop()


def test_leaving_below_the_minimum_fails_the_job(server):
    a, b = client(server, "a"), client(server, "b")
    ra, rb = join_all([a, b])
    reply = b.leave("agent on b got SIGTERM", 143)
    assert reply.state == JobState.FAILED
    view = a.heartbeat(ra.generation)
    assert view.state == JobState.FAILED and "left (agent on b got SIGTERM); 1 node(s) remain, below the minimum of 2" \
        in view.message
    assert view.failure.exit_code == 143 and view.failure.rank == -1


def test_fail_job_tells_every_node(server):
    a = client(server, "a")
    server.fail_job("the hosting agent stopped")
    with pytest.raises(RendezvousError, match="the hosting agent stopped"):
        a.join(1, min_nodes=2, max_nodes=2, timeout=2)


def test_config_and_endpoint_validation():
    with pytest.raises(ValueError, match="1 <= min_nodes <= max_nodes, got 3:2"):
        RendezvousConfig(min_nodes=3, max_nodes=2)
    with pytest.raises(ValueError, match="join_timeout must be finite"):
        RendezvousConfig(join_timeout=math.inf)
    with pytest.raises(TypeError, match="needs a RendezvousConfig"):
        RendezvousServer({"job_id": "x"})
    with pytest.raises(ValueError, match="needs the job's token"):
        RendezvousClient("127.0.0.1", 1, "", "job")
    assert parse_endpoint("node0:29500") == ("node0", 29500)
    assert parse_endpoint("node0") == ("node0", 29400)
    assert parse_endpoint("[::1]:7000") == ("::1", 7000)
    with pytest.raises(ValueError, match="port 'x' is not an integer"):
        parse_endpoint("node0:x")
    with pytest.raises(ValueError, match=r"port 70000 is outside \[1, 65535\]"):
        parse_endpoint("node0:70000")


def test_unreachable_service_is_a_clear_error():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    c = RendezvousClient("127.0.0.1", port, TOKEN, JOB, retry_timeout=0.5)
    t0 = time.monotonic()
    with pytest.raises(RendezvousError, match="is unreachable: join kept failing with UNAVAILABLE"):
        c.join(1, min_nodes=1, max_nodes=1, timeout=5)
    assert time.monotonic() - t0 < 4
