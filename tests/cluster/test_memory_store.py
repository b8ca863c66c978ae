"""MemoryStore under thread contention: atomic adds, waiting gets, racing compare_set,
bounded waits."""

import threading
import time

import pytest

from axonml.cluster import MemoryStore
from axonml.errors import RendezvousError


def _run(threads):
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=20)
        assert not t.is_alive(), "a store thread hung"


def test_add_is_atomic_under_8_threads_times_1000():
    store = MemoryStore()
    returned = [[] for _ in range(8)]

    def work(i):
        for _ in range(1000):
            returned[i].append(store.add("n", 1))

    _run([threading.Thread(target=work, args=(i,)) for i in range(8)])
    assert store.get("n") == b"8000"
    # every intermediate value was handed out exactly once
    assert sorted(v for r in returned for v in r) == list(range(1, 8001))


def test_get_waits_until_set_and_releases_every_waiter():
    store = MemoryStore(timeout=10)
    got = []

    def waiter():
        got.append(store.get("go"))

    threads = [threading.Thread(target=waiter) for _ in range(16)]
    for t in threads:
        t.start()
    time.sleep(0.1)
    assert got == []  # nobody got past get before the set
    store.set("go", "now")
    for t in threads:
        t.join(timeout=5)
    assert got == [b"now"] * 16


def test_barrier_pattern_with_add_and_wait():
    store = MemoryStore(timeout=10)
    world = 6
    order = []

    def rank(r):
        if store.add("arrived", 1) == world:
            store.set("all_arrived", "1")
        store.wait(["all_arrived"])
        order.append(r)

    _run([threading.Thread(target=rank, args=(r,)) for r in range(world)])
    assert sorted(order) == list(range(world))


def test_compare_set_races_elect_exactly_one_leader_per_round():
    store = MemoryStore()
    for round_ in range(20):
        key = f"leader/{round_}"
        results = [None] * 8

        def contend(i, key=key, results=results):
            results[i] = store.compare_set(key, "", str(i))

        _run([threading.Thread(target=contend, args=(i,)) for i in range(8)])
        leader = store.get(key)
        assert [r == str(i).encode() for i, r in enumerate(results)].count(True) == 1
        assert all(r == leader for r in results)


def test_wait_timeout_raises_within_the_bound_naming_the_keys():
    store = MemoryStore()
    store.set("a", "1")
    start = time.monotonic()
    with pytest.raises(RendezvousError, match=r"memory://.*0\.2 s.*\['b', 'c'\]"):
        store.wait(["a", "b", "c"], timeout=0.2)
    elapsed = time.monotonic() - start
    assert 0.18 <= elapsed < 1.0


def test_a_waiting_get_does_not_block_writers():
    store = MemoryStore()
    errors = []

    def waiter():
        try:
            store.get("never", timeout=0.5)
        except RendezvousError as e:
            errors.append(e)

    blocked = threading.Thread(target=waiter)
    blocked.start()
    time.sleep(0.05)
    start = time.monotonic()
    for i in range(100):
        store.set(f"k{i}", "v")
    assert time.monotonic() - start < 0.4  # the waiter sleeps without holding the lock
    blocked.join()
    assert len(errors) == 1 and store.num_keys() == 100


def test_long_key_lists_are_shortened_in_messages():
    store = MemoryStore()
    keys = [f"rank{i}" for i in range(20)]
    with pytest.raises(RendezvousError, match=r"rank7', '\.\.\. \(12 more\)'"):
        store.wait(keys, timeout=0)
