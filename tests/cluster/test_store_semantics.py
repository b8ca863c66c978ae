"""The behaviour every store shares, checked on each: MemoryStore, FileStore, GrpcStore
(against a real server on a port it bound) and a PrefixStore over a MemoryStore.
The rules follow PyTorch's torch.distributed.Store."""

import datetime
import threading
import time

import pytest

from axonml.cluster import FileStore, GrpcStore, GrpcStoreServer, MemoryStore, PrefixStore, Store
from axonml.errors import RendezvousError

TOKEN = "semantics-token"


@pytest.fixture(scope="module")
def server():
    with GrpcStoreServer(token=TOKEN) as srv:
        yield srv


@pytest.fixture(params=["memory", "file", "grpc", "prefix"])
def store(request, tmp_path, server):
    if request.param == "memory":
        s = MemoryStore(timeout=5)
    elif request.param == "file":
        s = FileStore(tmp_path / "store", timeout=5)
    elif request.param == "grpc":
        # every test gets a fresh namespace on the shared server
        s = PrefixStore(f"test{time.monotonic_ns()}", GrpcStore("127.0.0.1", server.port, TOKEN, timeout=5))
    else:
        s = PrefixStore("group/0", MemoryStore(timeout=5))
    yield s
    s.close()
    if isinstance(s, PrefixStore):
        s.underlying_store.close()


def _keys(store):
    """num_keys of a fresh store (the shared gRPC server holds other tests' keys)."""
    return store.num_keys()


def test_set_get_bytes_and_str(store):
    store.set("a", b"\x00\xff")
    store.set("b", "héllo")
    store.set("empty", b"")
    assert store.get("a") == b"\x00\xff"
    assert store.get("b") == "héllo".encode()
    assert store.get("empty") == b""
    store.set("a", bytearray(b"new"))
    assert store.get("a") == b"new"


def test_get_waits_for_a_set_from_another_thread(store):
    timer = threading.Timer(0.2, store.set, args=("late", "v"))
    start = time.monotonic()
    timer.start()
    try:
        assert store.get("late", timeout=5) == b"v"
    finally:
        timer.join()
    assert 0.15 <= time.monotonic() - start < 3


def test_get_timeout_names_key_address_and_timeout(store):
    start = time.monotonic()
    with pytest.raises(RendezvousError, match=r"get\('nope'\).*timed out after 0\.3 s.*\['nope'\]") as info:
        store.get("nope", timeout=0.3)
    assert 0.25 <= time.monotonic() - start < 2.5
    assert store.address in str(info.value)


def test_timeouts_accept_timedelta_and_zero(store):
    with pytest.raises(RendezvousError, match="0.1 s"):
        store.get("missing", timeout=datetime.timedelta(milliseconds=100))
    store.set("k", "v")
    assert store.get("k", timeout=0) == b"v"
    store.wait(["k"], timeout=0)


def test_default_timeout_is_used_and_configurable(store):
    assert store.timeout == 5
    store.set_timeout(datetime.timedelta(seconds=0.2))
    assert store.timeout == pytest.approx(0.2)
    start = time.monotonic()
    with pytest.raises(RendezvousError, match="0.2 s"):
        store.wait(["x"])
    assert time.monotonic() - start < 2


def test_add(store):
    assert store.add("n", 5) == 5  # a missing key counts as 0
    assert store.add("n", -7) == -2
    assert store.add("n", 0) == -2
    assert store.get("n") == b"-2"  # stored as decimal ASCII, as in PyTorch
    store.set("m", "41")
    assert store.add("m", 1) == 42


def test_add_refuses_non_integers(store):
    store.set("text", "hello")
    with pytest.raises(ValueError, match=r"add on key .*text.* not a decimal integer"):
        store.add("text", 1)
    assert store.get("text") == b"hello"
    with pytest.raises(TypeError, match="integer amount"):
        store.add("n", 1.5)
    with pytest.raises(ValueError, match="int64"):
        store.add("n", 2**63)
    store.add("big", 2**63 - 1)
    with pytest.raises(ValueError, match="does not fit in int64"):
        store.add("big", 1)


def test_compare_set(store):
    # missing key + empty expected: set
    assert store.compare_set("c", "", "first") == b"first"
    # match: swap, returns desired
    assert store.compare_set("c", "first", "second") == b"second"
    # mismatch: returns current, unchanged
    assert store.compare_set("c", "first", "third") == b"second"
    assert store.get("c") == b"second"
    # missing key + non-empty expected: PyTorch returns expected and sets nothing
    assert store.compare_set("absent", "x", "y") == b"x"
    with pytest.raises(RendezvousError):
        store.get("absent", timeout=0)


def test_delete(store):
    store.set("d", "1")
    assert store.delete("d") is True
    assert store.delete("d") is False
    assert store.delete_key("d") is False
    with pytest.raises(RendezvousError):
        store.get("d", timeout=0)
    store.set("d", "2")  # can be set again
    assert store.get("d") == b"2"


def test_wait(store):
    store.set("w1", "1")
    store.wait(["w1"])
    store.wait("w1")  # a single str is one key
    store.wait([])
    timer = threading.Timer(0.15, store.set, args=("w2", "2"))
    timer.start()
    try:
        store.wait(["w1", "w2"], timeout=5)
    finally:
        timer.join()


def test_wait_timeout_names_only_the_missing_keys(store):
    store.set("here", "1")
    start = time.monotonic()
    with pytest.raises(RendezvousError, match=r"wait .*timed out after 0\.3 s .*\['gone1', 'gone2'\]") as info:
        store.wait(["here", "gone1", "gone2"], timeout=0.3)
    assert "'here'" not in str(info.value)
    assert 0.25 <= time.monotonic() - start < 2.5


def test_num_keys(store):
    before = _keys(store)
    store.set("k1", "1")
    store.add("k2", 1)
    store.compare_set("k3", "", "x")
    assert _keys(store) == before + 3
    store.delete("k1")
    assert _keys(store) == before + 2


def test_compare_set_race_has_one_winner(store):
    results = []
    lock = threading.Lock()

    def contend(i):
        got = store.compare_set("leader", "", f"rank{i}")
        with lock:
            results.append((i, got))

    threads = [threading.Thread(target=contend, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    leader = store.get("leader")
    winners = [i for i, got in results if got == f"rank{i}".encode()]
    assert len(winners) == 1 and leader == f"rank{winners[0]}".encode()
    assert all(got == leader for _, got in results)


def test_concurrent_adds_from_threads(store):
    def work():
        for _ in range(50):
            store.add("counter", 1)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert store.add("counter", 0) == 200


@pytest.mark.parametrize(
    "call, exc, match",
    [
        (lambda s: s.set(1, "v"), TypeError, "keys must be str"),
        (lambda s: s.set("", "v"), ValueError, "non-empty"),
        (lambda s: s.set("k", 3), TypeError, "must be bytes or str"),
        (lambda s: s.get("k", timeout=-1), ValueError, "finite number of seconds >= 0"),
        (lambda s: s.get("k", timeout=float("inf")), ValueError, "no store call waits forever"),
        (lambda s: s.get("k", timeout="5"), TypeError, "seconds .float. or a datetime.timedelta"),
        (lambda s: s.wait(5), TypeError, "list of str keys"),
        (lambda s: s.wait(["a", 2]), TypeError, "keys must be str"),
        (lambda s: s.compare_set("k", None, "x"), TypeError, "expected value must be bytes or str"),
    ],
)
def test_bad_arguments(store, call, exc, match):
    with pytest.raises(exc, match=match):
        call(store)


def test_prefix_store_namespaces_and_nests():
    base = MemoryStore(timeout=1)
    g0 = PrefixStore("pg/0", base)
    g1 = PrefixStore("pg/1", base)
    g0.set("addr", "a0")
    g1.set("addr", "a1")
    assert base.get("pg/0/addr") == b"a0" and base.get("pg/1/addr") == b"a1"
    assert g0.get("addr") == b"a0" and g1.get("addr") == b"a1"
    inner = PrefixStore("sub", g0)
    inner.add("n", 2)
    assert base.get("pg/0/sub/n") == b"2"
    assert inner.num_keys() == base.num_keys() == 3  # as in PyTorch: the whole store
    assert inner.timeout == 1 and inner.underlying_store is g0 and inner.prefix == "sub"
    # errors use the caller's key names and say which prefix
    with pytest.raises(RendezvousError, match=r"\['sub/x'\]") as info:
        PrefixStore("pg", base).wait(["sub/x"], timeout=0.05)
    assert "(prefix 'pg')" in str(info.value)
    with pytest.raises(RendezvousError, match=r"\['y'\].*") as info:
        inner.wait(["y"], timeout=0.05)
    assert "pg/0" in str(info.value) and "sub" in str(info.value)
    with pytest.raises(ValueError, match="non-empty str prefix"):
        PrefixStore("", base)
    with pytest.raises(TypeError, match="wraps an axonml Store"):
        PrefixStore("p", {})


def test_store_is_abstract():
    with pytest.raises(TypeError):
        Store()
