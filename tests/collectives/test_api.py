"""The process-group API: registry, life cycle, validation before communication, failures,
and ``Work`` (on the threaded backend and on a tcp world of one, in this process)."""

import threading

import numpy as np
import pytest

import axonml as ax
import axonml.collectives as dist
from axonml.collectives import ReduceOp
from axonml.collectives.api import resolve_group
from axonml.collectives.testing import run_threaded
from axonml.collectives.types import CompletedWork, Work
from axonml.errors import CollectiveError, CollectiveTimeout, DeviceError, DTypeError, ShapeError

pytestmark = pytest.mark.timeout(60)


# -- registry and life cycle ------------------------------------------------------------------


def test_registry_refuses_duplicates_and_lists_known_backends():
    with pytest.raises(ValueError, match="already registered"):
        dist.register_backend("tcp", lambda **kw: None)
    with pytest.raises(ValueError, match=r"unknown collectives backend 'nope'.*'tcp'.*'threaded'"):
        dist.init_process_group("nope", rank=0, world_size=1)
    assert {"tcp", "threaded"} <= set(dist.registered_backends())


@pytest.fixture
def no_world_env(monkeypatch):
    for v in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(v, raising=False)
    yield
    dist.destroy_process_group()


def test_world_of_one_without_environment(no_world_env):
    assert not dist.is_initialized()
    with pytest.raises(CollectiveError, match="init_process_group"):
        dist.get_rank()
    dist.init_process_group()
    assert dist.is_initialized() and dist.get_rank() == 0 and dist.get_world_size() == 1
    assert dist.get_backend() == "tcp"
    with pytest.raises(CollectiveError, match="already initialized"):
        dist.init_process_group()
    t = ax.tensor([1.0, 2.0])
    dist.all_reduce(t, op=ReduceOp.AVG)
    assert t.tolist() == [1.0, 2.0]
    out = ax.zeros(2, 2)
    dist.all_gather_into_tensor(out, ax.ones(2, 2))
    assert out.tolist() == [[1.0, 1.0], [1.0, 1.0]]
    objs = [None]
    dist.all_gather_object(objs, {"a": 1})
    assert objs == [{"a": 1}]
    dist.barrier()
    dist.destroy_process_group()
    assert not dist.is_initialized()


def test_env_rendezvous_needs_master_address(no_world_env, monkeypatch):
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ValueError, match=r"MASTER_ADDR.*MASTER_PORT"):
        dist.init_process_group("tcp")
    monkeypatch.setenv("RANK", "x")
    with pytest.raises(ValueError, match="RANK='x' is not an integer"):
        dist.init_process_group("tcp")


def test_bad_init_arguments(no_world_env):
    with pytest.raises(ValueError, match="unknown init_method"):
        dist.init_process_group("tcp", init_method="udp://x:1", rank=0, world_size=1)
    with pytest.raises(ValueError, match="rank 3 is outside"):
        dist.init_process_group("tcp", init_method="file:///tmp/unused-axonml", rank=3, world_size=2)
    with pytest.raises(ValueError, match="rank and world_size"):
        dist.init_process_group("tcp", store=object())
    with pytest.raises(ValueError, match="timeout must be positive"):
        dist.init_process_group("tcp", timeout=0)
    assert not dist.is_initialized()


# -- validation happens before any communication --------------------------------------------------

BAD_CALLS = {
    "src outside group": (lambda n: dist.broadcast(ax.ones(2), src=n), ValueError, "src=.* is not a rank of group"),
    "list length": (lambda n: dist.all_gather([ax.ones(2)] * (n + 1), ax.ones(2)), ValueError, "has 3 tensors but the group"),
    "list dtype": (lambda n: dist.all_gather([ax.ones(2, dtype=ax.int64)] * n, ax.ones(2)), DTypeError, "dtype int64"),
    "list shape": (lambda n: dist.all_gather([ax.ones(3)] * n, ax.ones(2)), ShapeError, r"shape \(3,\)"),
    "output numel": (lambda n: dist.all_gather_into_tensor(ax.zeros(3), ax.ones(2)), ShapeError, "needs 4"),
    "reduce_scatter numel": (lambda n: dist.reduce_scatter_tensor(ax.zeros(2), ax.ones(5)), ShapeError, "needs 4"),
    "band on float": (lambda n: dist.all_reduce(ax.ones(2), op=ReduceOp.BAND), DTypeError, "integer or bool"),
    "avg on int": (lambda n: dist.all_reduce(ax.ones(2, dtype=ax.int32), op=ReduceOp.AVG), DTypeError, "floating"),
    "not a ReduceOp": (lambda n: dist.all_reduce(ax.ones(2), op="sum"), TypeError, "must be a ReduceOp"),
    "not a tensor": (lambda n: dist.all_reduce(np.ones(2)), TypeError, "must be an axonml Tensor"),
    "gather_list off root": (lambda n: dist.gather(ax.ones(2), [ax.ones(2)] * n, dst=1), ValueError, "must be None or empty"),
    "scatter_list missing": (lambda n: dist.scatter(ax.ones(2), None, src=0), ValueError, "scatter_list is required"),
    "uneven split": (lambda n: dist.all_to_all_single(ax.zeros(3), ax.ones(3)), ShapeError, "cannot split evenly"),
    "bad split sum": (lambda n: dist.all_to_all_single(ax.zeros(3), ax.ones(3), [1, 2], [1, 1]), ValueError, "summing"),
    "send to self": (lambda n: dist.send(ax.ones(2), dst=0), ValueError, "this rank itself"),
    "recv any source": (lambda n: dist.recv(ax.ones(2)), ValueError, "any source is not supported"),
    "new_group range": (lambda n: dist.new_group([0, 5]), ValueError, r"subset of the world \[0, 2\)"),
    "object list": (lambda n: dist.all_gather_object([None], 1), ValueError, "has 1 tensors"),
}


@pytest.mark.parametrize("name", list(BAD_CALLS))
def test_bad_call_raises_before_communicating(name):
    call, exc, pattern = BAD_CALLS[name]

    def body(rank):
        if rank == 0:
            with pytest.raises(exc, match=pattern):
                call(2)
        t = ax.ones(3)
        dist.all_reduce(t)  # both ranks still agree: the bad call sent nothing
        return t.tolist()

    assert run_threaded(2, body) == [[2.0] * 3] * 2


def test_wrong_device_is_refused():
    def body(rank):
        pg = resolve_group(None, "test")
        pg.devices = ("cuda",)  # pretend the backend serves only GPUs
        with pytest.raises(DeviceError, match=r"is on cpu.*works on cuda tensors"):
            dist.all_reduce(ax.ones(2))
        pg.devices = ("cpu",)
        return True

    assert run_threaded(2, body) == [True, True]


def test_non_member_group_cannot_be_used():
    def body(rank):
        g = dist.new_group([0])
        if rank == 1:
            assert g is dist.GroupMember.NON_GROUP_MEMBER
            with pytest.raises(ValueError, match="not a member"):
                dist.all_reduce(ax.ones(1), group=g)
        else:
            with pytest.raises(ValueError, match="world rank 1 is not in group"):
                dist.get_group_rank(g, 1)
            with pytest.raises(ValueError, match="group rank 1 is outside"):
                dist.get_global_rank(g, 1)
            t = ax.ones(1)
            dist.all_reduce(t, group=g)
            assert t.item() == 1.0
        return True

    assert run_threaded(2, body) == [True, True]


# -- failures between ranks ---------------------------------------------------------------------------


@pytest.mark.parametrize("n", [2, 3])
def test_divergence_is_reported_on_every_rank(n):
    def body(rank):
        t = ax.ones(4 if rank == n - 1 else 3)
        with pytest.raises(CollectiveError, match=r"(?s)collective mismatch.*\(3,\).*\(4,\)"):
            dist.all_reduce(t)
        with pytest.raises(CollectiveError, match="unusable after an earlier failure"):
            dist.barrier()
        return True

    assert run_threaded(n, body) == [True] * n


def test_different_ops_are_reported():
    def body(rank):
        with pytest.raises(CollectiveError, match=r"(?s)all_reduce.*broadcast|broadcast.*all_reduce"):
            if rank == 0:
                dist.broadcast(ax.ones(2), src=0)
            else:
                dist.all_reduce(ax.ones(2))
        return True

    assert run_threaded(2, body) == [True, True]


def test_rank_that_never_arrives_is_named():
    done = threading.Event()

    def body(rank):
        if rank == 0:
            with pytest.raises(CollectiveTimeout, match=r"ranks \[1\] did not arrive"):
                dist.all_reduce(ax.ones(2))
            done.set()
        else:
            done.wait(10)
        return True

    assert run_threaded(2, body, timeout=0.5) == [True, True]


def test_check_can_be_switched_off(monkeypatch):
    monkeypatch.setenv("AXONML_CHECK_COLLECTIVES", "0")

    def body(rank):
        assert resolve_group(None, "t").check is False
        t = ax.full((3,), float(rank))
        dist.all_reduce(t)
        dist.barrier()
        return t.tolist()

    assert run_threaded(3, body) == [[3.0] * 3] * 3


# -- Work ---------------------------------------------------------------------------------------------


def test_work_wait_timeout_error_and_future():
    w = Work("op", timeout=5)
    assert not w.is_completed() and w.exception() is None
    with pytest.raises(CollectiveTimeout, match="did not finish within 0.1 s"):
        w.wait(timeout=0.1)
    seen = []
    w._add_done_callback(lambda work: seen.append(work))
    w._complete(result=[1])
    assert seen == [w] and w.is_success() and w.result() == [1] and w.get_future().result() == [1]
    bad = Work("op2")
    fut = bad.get_future()
    bad._complete(exc=CollectiveError("peer died"))
    with pytest.raises(CollectiveError, match="peer died"):
        bad.wait()
    assert isinstance(bad.exception(), CollectiveError) and not bad.is_success()
    assert isinstance(fut.exception(), CollectiveError)
    assert CompletedWork([3]).result() == [3]


def test_failing_callback_fails_the_work():
    w = Work("op")
    w._add_done_callback(lambda work: 1 / 0)
    w._complete(result=None)
    with pytest.raises(ZeroDivisionError):
        w.wait()


def test_auto_backend_follows_the_launcher(monkeypatch):
    from axonml.collectives.api import _auto_backend

    for v in ("RANK", "WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE"):
        monkeypatch.delenv(v, raising=False)
    assert _auto_backend() == "tcp"
    monkeypatch.setenv("PMI_SIZE", "4")  # mpiexec -n 4 of MPICH
    assert _auto_backend() == "mpi"
    monkeypatch.setenv("RANK", "0")  # axonml-launch / torchrun set RANK: their rendezvous wins
    assert _auto_backend() == "tcp"
