"""Stores shared by real processes (spawn): 3 processes on one FileStore, 4 processes on
one GrpcStoreServer that the test started on a port it bound.

The runner sends a failing rank's traceback to the parent, kills every rank on the first
failure, has a hung rank dump its stacks (faulthandler) before it is killed, and always
finishes within a bounded time."""

import faulthandler
import multiprocessing as mp
import os
import queue
import time
import traceback

from axonml.cluster import FileStore, GrpcStore, GrpcStoreServer, PrefixStore

TOKEN = "multiprocess-token"


def _rank_entry(target, rank, world, args, results, hang_s):
    faulthandler.dump_traceback_later(hang_s, exit=True)  # a hung rank prints its stacks and exits
    try:
        results.put((rank, "ok", target(rank, world, *args)))
    except BaseException:
        results.put((rank, "error", traceback.format_exc()))


def run_ranks(target, world, args=(), timeout=30.0):
    """Run ``target(rank, world, *args)`` in ``world`` spawned processes; return the results by rank."""
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    procs = [
        ctx.Process(target=_rank_entry, args=(target, r, world, args, results, timeout - 3), daemon=True) for r in range(world)
    ]
    for p in procs:
        p.start()
    out = {}
    deadline = time.monotonic() + timeout
    try:
        while len(out) < world:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                hung = sorted(set(range(world)) - set(out))
                raise AssertionError(f"ranks {hung} did not finish within {timeout} s (their stacks are in the captured stderr)")
            try:
                rank, status, value = results.get(timeout=min(remaining, 0.5))
            except queue.Empty:
                dead = {r: p.exitcode for r, p in enumerate(procs) if r not in out and p.exitcode not in (None, 0)}
                if dead:
                    why = f"ranks died without a result (rank: exit code): {dead}; a hung rank dumps its stacks to stderr"
                    raise AssertionError(why) from None
                continue
            if status == "error":
                raise AssertionError(f"rank {rank} failed:\n{value}")
            out[rank] = value
    finally:
        for p in procs:
            p.join(timeout=5 if len(out) == world else 0)
            if p.is_alive():
                p.kill()
                p.join()
    return [out[r] for r in range(world)]


def _file_store_rank(rank, world, path):
    store = FileStore(path, world_size=world, timeout=20)
    for _ in range(100):
        store.add("counter", 1)
    # barrier: the last to arrive opens it
    if store.add("arrived", 1) == world:
        store.set("all_arrived", "1")
    store.wait(["all_arrived"])
    total = int(store.get("counter"))  # every add happened before the barrier
    leader = store.compare_set("leader", "", f"rank{rank}")
    store.close()
    return total, leader


def test_file_store_with_three_processes(tmp_path):
    path = str(tmp_path / "job.store")
    results = run_ranks(_file_store_rank, 3, (path,))
    assert [total for total, _ in results] == [300, 300, 300]
    leaders = {leader for _, leader in results}
    assert len(leaders) == 1 and leaders.pop() in {b"rank0", b"rank1", b"rank2"}
    assert not os.path.exists(path)  # the last of world_size stores deleted it


def _grpc_rank(rank, world, port):
    store = PrefixStore("job/0", GrpcStore("127.0.0.1", port, TOKEN, timeout=20))
    store.add("sum", rank + 1)
    store.set(f"rank/{rank}", str(os.getpid()))
    if rank == 0:
        store.wait([f"rank/{r}" for r in range(world)])
        store.set("go", store.get("sum"))
    got = int(store.get("go"))
    store.underlying_store.close()
    return got


def test_grpc_store_with_four_processes():
    with GrpcStoreServer(token=TOKEN) as server:
        results = run_ranks(_grpc_rank, 4, (server.port,))
        probe = GrpcStore("127.0.0.1", server.port, TOKEN)
        assert probe.get("job/0/sum") == b"10" and probe.num_keys() == 6  # sum, go, 4 ranks
        probe.close()
    assert results == [10, 10, 10, 10]  # the sum over ranks of rank + 1
