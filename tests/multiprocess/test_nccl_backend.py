"""The ``nccl`` backend.

Without a GPU (this machine, CI): registration, the clear errors when CuPy, NCCL or a GPU
is missing, the reduce-op and dtype tables, the unique-id bootstrap through a
MemoryStore, and the whole backend (buffer arithmetic, stream/event semantics of Work,
the watchdog) on ranks that are threads with a fake CuPy/NCCL runtime (nccl_fake.py).
With a GPU: real NCCL on a world of one, the clear error for two ranks on one GPU, and
(with two GPUs) two real processes.
"""

import contextlib
import sys
import threading
import time
import types

import numpy as np
import pytest
from nccl_fake import FakeRuntime
from nccl_targets import every_collective

import axonml.collectives as dist
from axonml.cluster import MemoryStore, PrefixStore
from axonml.collectives.backends import nccl as nccl_backend
from axonml.collectives.backends import nccl_support as ns
from axonml.collectives.backends.nccl import NcclProcessGroup
from axonml.collectives.process_group import get_backend_factory, registered_backends
from axonml.collectives.types import ReduceOp
from axonml.errors import CollectiveError, CollectiveTimeout, DeviceError, DTypeError

pytestmark = pytest.mark.timeout(120)

HAS_GPU = ns.nccl_available()
needs_gpu = pytest.mark.skipif(not HAS_GPU, reason="needs CuPy, NCCL (cupy-cuda12x, nvidia-nccl-cu12) and a CUDA GPU")


def _gpu_count():
    return ns.load_runtime().device_count() if HAS_GPU else 0


# -- registration and missing dependencies -------------------------------------------------------------------


def test_registered_as_nccl():
    assert "nccl" in registered_backends()
    assert get_backend_factory("nccl") is nccl_backend._factory
    assert NcclProcessGroup.devices == ("cuda",) and NcclProcessGroup.native_low_precision is False


@pytest.fixture
def fresh_runtime(monkeypatch):
    monkeypatch.setattr(ns, "_RUNTIME", None)  # forget a runtime loaded earlier (on a GPU machine)
    return monkeypatch


def _fake_cupy(monkeypatch, nccl_ok: bool, gpu: bool):
    cp = types.ModuleType("cupy")
    cp.cuda = types.SimpleNamespace(is_available=lambda: gpu)
    nccl = types.ModuleType("cupy.cuda.nccl")
    nccl.available = nccl_ok
    nccl.get_version = lambda: 22005
    monkeypatch.setitem(sys.modules, "cupy", cp)
    monkeypatch.setitem(sys.modules, "cupy.cuda", cp.cuda)
    monkeypatch.setitem(sys.modules, "cupy.cuda.nccl", nccl)


def test_clear_error_without_cupy(fresh_runtime):
    fresh_runtime.setitem(sys.modules, "cupy", None)  # import cupy raises ImportError, as on this machine
    with pytest.raises(DeviceError, match="needs CuPy.*install cupy-cuda12x and nvidia-nccl-cu12"):
        ns.load_runtime()
    assert ns.nccl_available() is False
    with pytest.raises(DeviceError, match="install cupy-cuda12x and nvidia-nccl-cu12"):
        dist.init_process_group("nccl", store=MemoryStore(timeout=5), rank=0, world_size=1)
    assert not dist.is_initialized()


def test_clear_error_without_nccl(fresh_runtime):
    _fake_cupy(fresh_runtime, nccl_ok=False, gpu=True)
    with pytest.raises(DeviceError, match="NCCL library could not be loaded.*nvidia-nccl-cu12"):
        ns.load_runtime()


def test_clear_error_without_gpu(fresh_runtime):
    _fake_cupy(fresh_runtime, nccl_ok=True, gpu=False)
    with pytest.raises(DeviceError, match="no CUDA GPU"):
        ns.load_runtime()
    assert ns.nccl_available() is False


def test_device_choice(monkeypatch):
    rt = FakeRuntime()
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    assert ns.pick_device(rt) == 0
    monkeypatch.setenv("LOCAL_RANK", "3")
    with pytest.raises(DeviceError, match=r"LOCAL_RANK=3 asks for GPU 3, but 1 GPU\(s\) are visible"):
        ns.pick_device(rt)
    monkeypatch.setenv("LOCAL_RANK", "x")
    with pytest.raises(ValueError, match="LOCAL_RANK='x' is not an integer"):
        ns.pick_device(rt)
    assert ns.pick_device(rt, 0) == 0


# -- the tables ------------------------------------------------------------------------------------------------


P = ns.ReducePlan
NEW, OLD = 22005, 2708  # NCCL 2.20.5 (ncclAvg, bfloat16) and 2.7.8 (neither; the old version code scheme)


@pytest.mark.parametrize("op, dtype, user, version, plan", [
    (ReduceOp.SUM, "float32", "", NEW, P("NCCL_FLOAT32", "NCCL_SUM")),
    (ReduceOp.PRODUCT, "float64", "", NEW, P("NCCL_FLOAT64", "NCCL_PROD")),
    (ReduceOp.MIN, "int64", "", NEW, P("NCCL_INT64", "NCCL_MIN")),
    (ReduceOp.MAX, "uint8", "", NEW, P("NCCL_UINT8", "NCCL_MAX")),
    (ReduceOp.SUM, "float16", "", NEW, P("NCCL_FLOAT16", "NCCL_SUM")),
    (ReduceOp.AVG, "float32", "", NEW, P("NCCL_FLOAT32", "NCCL_AVG")),
    (ReduceOp.AVG, "float32", "", OLD, P("NCCL_FLOAT32", "NCCL_SUM", divide=True)),
    (ReduceOp.SUM, "int16", "", NEW, P("NCCL_INT32", "NCCL_SUM", work="int32")),
    (ReduceOp.SUM, "bool", "", NEW, P("NCCL_UINT8", "NCCL_MAX", view="uint8")),
    (ReduceOp.PRODUCT, "bool", "", NEW, P("NCCL_UINT8", "NCCL_MIN", view="uint8")),
    (ReduceOp.BAND, "bool", "", NEW, P("NCCL_UINT8", "NCCL_MIN", view="uint8")),
    (ReduceOp.BOR, "bool", "", NEW, P("NCCL_UINT8", "NCCL_MAX", view="uint8")),
    (ReduceOp.AVG, "uint16", "bfloat16", NEW, P("NCCL_BFLOAT16", "NCCL_AVG")),
    (ReduceOp.SUM, "uint16", "", NEW, P("NCCL_INT32", "NCCL_SUM", work="int32")),
])
def test_reduce_plan_table(op, dtype, user, version, plan):
    assert ns.reduce_plan(op, dtype, user, version) == plan


@pytest.mark.parametrize("op, dtype, user, version, exc, match", [
    (ReduceOp.BAND, "int32", "", NEW, ValueError, "NCCL has no bitwise reductions"),
    (ReduceOp.BXOR, "int64", "", NEW, ValueError, "NCCL has no bitwise reductions"),
    (ReduceOp.BXOR, "bool", "", NEW, ValueError, "not supported for bool"),
    (ReduceOp.BOR, "float32", "", NEW, DTypeError, "needs an integer or bool"),
    (ReduceOp.AVG, "int32", "", NEW, DTypeError, "AVG needs a floating tensor"),
    (ReduceOp.SUM, "complex64", "", NEW, DTypeError, "NCCL cannot reduce complex64"),
    (ReduceOp.SUM, "uint16", "bfloat16", OLD, DTypeError, "needs NCCL >= 2.10.3, this is NCCL 2.7.8"),
    ("sum", "float32", "", NEW, TypeError, "must be a ReduceOp"),
])
def test_reduce_plan_refusals(op, dtype, user, version, exc, match):
    with pytest.raises(exc, match=match):
        ns.reduce_plan(op, dtype, user, version)


def test_dtype_table_covers_the_nccl_types():
    assert set(ns.NCCL_DTYPES) == {"int8", "uint8", "int32", "uint32", "int64", "uint64", "float16", "float32", "float64",
                                   "bfloat16"}
    assert {op.name for op in ns.NCCL_OPS} == {"SUM", "PRODUCT", "MIN", "MAX", "AVG"}


def test_unique_id_formats():
    raw = bytes((i * 37) % 256 for i in range(128))
    assert ns.encode_unique_id(raw) == raw  # CuPy >= 14: bytes
    signed = ns.signed_unique_id(raw)  # CuPy < 14: 128 signed chars
    assert all(-128 <= x <= 127 for x in signed) and min(signed) < 0
    assert ns.encode_unique_id(signed) == raw and ns.decode_unique_id(raw) == raw
    with pytest.raises(CollectiveError, match="has 128 bytes, got 3"):
        ns.encode_unique_id((1, 2, 3))
    with pytest.raises(CollectiveError, match="has 5 bytes instead of 128"):
        ns.decode_unique_id(b"12345")


def test_communicator_gets_the_id_in_the_installed_cupy_format():
    seen = []

    class New:  # CuPy >= 14: NcclCommunicator(int ndev, bytes commId, int rank)
        def __init__(self, n, uid, rank):
            if not isinstance(uid, bytes):
                raise TypeError("Argument 'commId' has incorrect type")
            seen.append(("new", uid))

    class Old:  # CuPy < 14: NcclCommunicator(int ndev, tuple commId, int rank)
        def __init__(self, n, uid, rank):
            if not isinstance(uid, tuple):
                raise TypeError("Argument 'commId' has incorrect type")
            seen.append(("old", uid))

    raw = bytes(range(128))
    for cls in (New, Old):
        rt = ns.CudaRuntime.__new__(ns.CudaRuntime)
        rt.nccl = types.SimpleNamespace(NcclCommunicator=cls)
        rt.communicator(2, raw, 0)
    assert seen == [("new", raw), ("old", ns.signed_unique_id(raw))]


# -- bootstrap through the store ------------------------------------------------------------------------------


def _threads(n, fn, timeout=20.0):
    results, errors = [None] * n, []

    def body(r):
        try:
            results[r] = fn(r)
        except BaseException as exc:  # noqa: BLE001
            errors.append((r, exc))

    ts = [threading.Thread(target=body, args=(r,), daemon=True) for r in range(n)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(timeout)
    assert not any(t.is_alive() for t in ts), "a rank thread hung"
    return results, sorted(errors, key=lambda e: e[0])


def test_bootstrap_shares_rank0_unique_id():
    store = MemoryStore(timeout=10)
    rts = [FakeRuntime(r) for r in range(3)]
    results, errors = _threads(3, lambda r: ns.bootstrap(PrefixStore("g", store), r, 3, 10.0, "g", rts[r], 0))
    assert not errors, errors
    created = [next(e for e in rt.log if e[0] == "communicator") for rt in rts]
    assert [c[1] for c in created] == [3, 3, 3] and [c[3] for c in created] == [0, 1, 2]
    assert created[0][2] == created[1][2] == created[2][2] and len(created[0][2]) == 128
    assert [gen for _comm, gen in results] == [1, 1, 1]
    assert store.num_keys() == 3  # only the per-rank generation counters remain
    # the same group again (destroy + init): a new generation and a fresh unique id, never a stale one
    results2, errors2 = _threads(3, lambda r: ns.bootstrap(PrefixStore("g", store), r, 3, 10.0, "g", rts[r], 0))
    assert not errors2 and [gen for _c, gen in results2] == [2, 2, 2]
    uids = [e[2] for e in rts[1].log if e[0] == "communicator"]
    assert uids[0] != uids[1]


def test_bootstrap_names_missing_ranks():
    store = MemoryStore(timeout=10)
    _res, errors = _threads(2, lambda r: ns.bootstrap(store, r, 3, 0.5, "g", FakeRuntime(r), 0))
    assert [r for r, _ in errors] == [0, 1]
    for _r, exc in errors:
        assert isinstance(exc, CollectiveTimeout)
        assert "creating nccl group 'g'" in str(exc) and "ranks [2] did not arrive" in str(exc)


def test_bootstrap_refuses_two_ranks_on_one_gpu():
    store = MemoryStore(timeout=10)
    same = "0000:3b:00.0"
    _res, errors = _threads(2, lambda r: ns.bootstrap(store, r, 2, 5.0, "g", FakeRuntime(r, bus=same), 0))
    assert len(errors) == 2
    for _r, exc in errors:
        assert isinstance(exc, DeviceError)
        assert "ranks 0 and 1 both use GPU 0 (PCI 0000:3b:00.0)" in str(exc) and "one GPU per rank" in str(exc)


def test_bootstrap_without_store():
    with pytest.raises(CollectiveError, match="bootstraps through a store"):
        ns.bootstrap(None, 0, 1, 1.0, "g", FakeRuntime(), 0)


# -- the backend on fake-runtime thread ranks ---------------------------------------------------------------------


def _calls(rt, kind):
    return [e[1] for e in rt.log if e[0] == kind]


def run_fake(n, fn, timeout=10.0, version=NEW):
    """Run ``fn(pg, rt, rank)`` on ``n`` thread ranks, each with an nccl group on a fake runtime."""
    store = MemoryStore(timeout=timeout)
    rts = [FakeRuntime(r, version) for r in range(n)]

    def body(r):
        pg = NcclProcessGroup(PrefixStore("pg", store), r, n, timeout, "pg", runtime=rts[r], device=0)
        try:
            return fn(pg, rts[r], r)
        finally:
            rts[r].release()
            pg.shutdown()

    results, errors = _threads(n, body, timeout + 10)
    if errors:
        raise errors[0][1]
    return results


@pytest.mark.parametrize("n", [1, 2, 3])
def test_every_collective_on_fake_nccl(n):
    for r, res in enumerate(run_fake(n, lambda pg, rt, rank: every_collective(pg, np, rank))):
        bad = [k for k, ok in res.items() if not ok]
        assert not bad, f"rank {r}: wrong results for {bad}"


def test_avg_without_ncclavg_divides():
    def body(pg, rt, r):
        a = np.array([r * 2.0, 1.0], np.float32)
        pg.allreduce([a], ReduceOp.AVG).wait()
        return a.tolist(), _calls(rt, "nccl")

    for vals, calls in run_fake(2, body, version=OLD):
        assert vals == [1.0, 1.0] and calls == ["allReduce"]


def test_bad_arguments_fail_before_communication():
    def body(pg, rt, r):
        with pytest.raises(ValueError, match="NCCL has no bitwise reductions"):
            pg.allreduce([np.ones(2, np.int32)], ReduceOp.BXOR)
        with pytest.raises(DeviceError, match="works on CuPy arrays on cuda:0, got list"):
            pg.broadcast([[1, 2]], 0)
        with pytest.raises(ValueError, match="needs contiguous arrays"):
            pg.allreduce([np.ones((3, 4), np.float32).T])
        with pytest.raises(ValueError, match="peer 0 must be another rank"):
            pg.send(np.ones(1), 0)
        a = np.ones(2, np.float32)  # the group is still usable
        pg.allreduce([a]).wait()
        return a.tolist()

    assert run_fake(1, body) == [[1.0, 1.0]]


def test_host_bytes_through_the_device():
    def body(pg, rt, r):
        blob = np.frombuffer(b"hello from rank 0" if r == 0 else bytes(17), np.uint8)
        dev = pg.to_device(blob)
        pg.broadcast([dev], 0).wait()
        return pg.to_host(dev).tobytes()

    assert run_fake(2, body) == [b"hello from rank 0"] * 2


def test_mismatch_is_reported_through_the_store():
    def body(pg, rt, r):
        with pytest.raises(CollectiveError, match="collective mismatch") as info:
            pg.allreduce([np.ones(3 + r, np.float32)]).wait()
        return str(info.value)

    for msg in run_fake(2, body):
        assert "(3,)" in msg and "(4,)" in msg


def test_stream_semantics_of_work():
    def body(pg, rt, r):
        a = np.ones(4, np.float32)
        rt.hold = True  # the "GPU" has not run the collective yet
        work = pg.allreduce([a], meta={"sync": False})
        time.sleep(0.05)
        ready = _calls(rt, "record_current")[0]
        done = _calls(rt, "record")[-1]
        order = [e[0] for e in rt.log if len(e) == 2 and (e[1] is ready or e[1] is done)]
        facts = {
            "stream waits for caller": order == ["record_current", "stream_wait", "record"],
            "not completed while running": not work.is_completed(),
            "wait() returns without blocking": work.wait() is True,
            "current stream waits": ("current_wait", done) in rt.log,
        }
        with pytest.raises(CollectiveTimeout, match="did not finish on the GPU within 0.1 s"):
            work.wait(timeout=0.1)
        fut = work.get_future()
        facts["future pending"] = not fut.done()
        rt.release()
        facts["completed after the event"] = work.wait(timeout=1.0) and work.is_completed() and work.is_success()
        deadline = time.monotonic() + 2
        while not fut.done() and time.monotonic() < deadline:
            time.sleep(0.01)
        facts["future settled by the watchdog"] = fut.done() and fut.result() is None and work._keep is None
        return facts

    facts = run_fake(1, body)[0]
    assert all(facts.values()), facts


def test_watchdog_aborts_on_timeout():
    def body(pg, rt, r):
        rt.hold = True
        work = pg.allreduce([np.ones(2, np.float32)], meta={"sync": False})
        with pytest.raises(CollectiveTimeout, match="did not finish on the GPU within 0.5 s.*aborted"):
            work.wait(timeout=5.0)
        assert rt.comms[0].aborted and isinstance(work.exception(), CollectiveTimeout)
        with pytest.raises(CollectiveError, match="unusable after an earlier failure"):
            pg.allreduce([np.ones(2, np.float32)]).wait()
        return True

    assert run_fake(1, body, timeout=0.5) == [True]


def test_async_error_fails_the_rank_and_its_peer():
    def body(pg, rt, r):
        rt.hold = True
        work = pg.allreduce([np.ones(2, np.float32)], meta={"sync": False})
        if r == 0:
            rt.comms[0].async_error = "remote process exited"
        with pytest.raises(CollectiveError) as info:
            work.wait(timeout=5.0)
        return str(info.value), rt.comms[0].aborted

    (msg0, aborted0), (msg1, aborted1) = run_fake(2, body, timeout=30.0)
    assert "NCCL reported an asynchronous error" in msg0 and "remote process exited" in msg0 and aborted0
    assert "a peer failed and aborted the group" in msg1 and "rank 0" in msg1 and aborted1


def test_a_failing_nccl_call_is_a_collective_error_naming_the_group():
    """An exception from the NCCL call itself (here: the communicator was aborted under the
    caller) becomes a CollectiveError naming the op and the group, not a raw RuntimeError;
    when the group already knows why it broke (a peer's failure), that reason is given."""
    def body(pg, rt, r):
        if r == 1:
            return None
        pg.check = False  # no cross-rank signature check: the peer never calls
        rt.comms[0].world.abort()  # the fake's wait for the peer sees the abort
        with pytest.raises(CollectiveError) as raw:
            pg.allreduce([np.ones(2, np.float32)]).wait(timeout=5)
        pg._error = CollectiveError("a peer failed and aborted the group: rank 1 died")  # as the watchdog sets it
        with pytest.raises(CollectiveError) as known:
            pg._launch([], types.SimpleNamespace(op="all_reduce"), lambda: rt.comms[0].world.wait_for(
                lambda: False, 1.0, "all_reduce"))
        return str(raw.value), str(known.value)

    raw, known = run_fake(2, body)[0]
    assert raw.startswith("all_reduce: NCCL call failed in nccl group 'pg'") and "communicator aborted" in raw, raw
    assert "unusable after an earlier failure" in known and "rank 1 died" in known, known


def test_completion_callbacks_run_on_the_group_stream():
    def body(pg, rt, r):
        seen = []

        @contextlib.contextmanager
        def spy(dev, stream):
            seen.append(("enter", stream is pg._stream))
            yield
            seen.append("exit")

        rt.hold = True
        pg.barrier(meta={"sync": False})  # keeps the communication thread busy until release()
        work = pg.allreduce([np.ones(2, np.float32)], meta={"sync": False})
        rt.activate = spy
        work._add_done_callback(lambda w: seen.append("callback"))
        rt.release()
        work.wait(timeout=5)
        return seen

    assert run_fake(1, body)[0][-3:] == [("enter", True), "callback", "exit"]


def test_queued_sends_and_receives_share_one_group_call():
    def body(pg, rt, r):
        peer = 1 - r
        got = np.zeros(3, np.float32)
        rt.hold = True  # keep the worker busy with the barrier while both p2p jobs queue up
        pg.barrier(meta={"sync": False})
        w1 = pg.send(np.full(3, r + 1.0, np.float32), peer)
        w2 = pg.recv(got, peer)
        time.sleep(0.05)
        rt.release()
        w1.wait(timeout=5)
        w2.wait(timeout=5)
        groups = "".join(e[1][0] for e in rt.log if e[0] == "group" or (e[0] == "nccl" and e[1] in ("send", "recv")))
        return got.tolist(), w2.result(), groups[-4:]

    # one group call holds both: s(tart), s(end)/r(ecv) in any order, e(nd)
    assert run_fake(2, body) == [([2.0] * 3, 1, "ssre"), ([1.0] * 3, 0, "ssre")]


# -- real GPUs -------------------------------------------------------------------------------------------------------


@needs_gpu
def test_world_of_one_on_a_gpu():
    import nccl_targets

    res = nccl_targets.check_collectives(0, 1)
    bad = [k for k, ok in res.items() if not ok]
    assert not bad, res


@needs_gpu
def test_two_processes_on_one_gpu_are_refused():
    from harness import RankFailure, run_ranks
    from nccl_targets import check_collectives

    with pytest.raises(RankFailure, match="NCCL needs one GPU per rank"):
        run_ranks(2, check_collectives, backend="nccl", rank_env={0: {"LOCAL_RANK": "0"}, 1: {"LOCAL_RANK": "0"}},
                  timeout=120, pg_timeout=60)


@needs_gpu
@pytest.mark.skipif(_gpu_count() < 2, reason="two NCCL ranks need two GPUs (NCCL refuses two ranks on one GPU)")
def test_two_processes_on_two_gpus():
    from harness import run_ranks
    from nccl_targets import check_collectives

    for res in run_ranks(2, check_collectives, backend="nccl", rank_env={0: {"LOCAL_RANK": "0"}, 1: {"LOCAL_RANK": "1"}},
                         timeout=180, pg_timeout=60):
        assert all(res.values()), res
