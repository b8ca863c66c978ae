"""Collective bandwidth and latency on this machine: AxonML's tcp and mpi backends,
mpi4py called directly, and PyTorch torch.distributed with gloo, in one run.

Run: python bench/collectives.py [--ranks 2 4] [--max-mib 256] [--iters 20]
Conventions (../shared/DESIGN.md section 6, nccl-tests): "size" is the bytes of the full
buffer (for all-gather the gathered output, for reduce-scatter the full input); algbw =
size / time; busbw = algbw * factor with factor 2(n-1)/n for all-reduce, (n-1)/n for
all-gather and reduce-scatter, 1 for broadcast. Medians and p95 over --iters timed
iterations after warm-up. Memory-copy bandwidth is measured as the physical limit.
Each system runs in its own fresh processes; MPI systems are started with mpiexec.
``axonml-tcp-shared`` is the tcp backend on tensors allocated with
``axonml.collectives.shared_empty`` (they live in shared memory and are read in place:
the all-reduce tensor, the all-gather and reduce-scatter inputs, the broadcast tensor).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)

OPS = ("all_reduce", "all_gather", "reduce_scatter", "broadcast")
FACTOR = {
    "all_reduce": lambda n: 2 * (n - 1) / n,
    "all_gather": lambda n: (n - 1) / n,
    "reduce_scatter": lambda n: (n - 1) / n,
    "broadcast": lambda n: 1.0,
}


def sizes_bytes(max_mib: int) -> list[int]:
    out, s = [], 4096
    while s <= max_mib * 2**20:
        out.append(s)
        s *= 4
    return out


# -- one rank of one system ------------------------------------------------------------------
def _timed(fn, iters: int, barrier) -> dict:
    for _ in range(3 if iters < 100 else 20):  # small sizes: warm caches and lazily built state, as a loop would
        fn()
    samples = []
    for _ in range(iters):
        barrier()
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    samples.sort()
    return {"median_s": statistics.median(samples), "p95_s": samples[int(round(0.95 * (len(samples) - 1)))]}


def _iters_for(nbytes: int, iters: int) -> int:
    if nbytes <= 2**20:  # latency-bound: 20 samples of a few microseconds are noise (same rule for every system)
        return max(iters, 200)
    return iters if nbytes <= 64 * 2**20 else max(20, iters // 2)


def worker(system: str, rank: int, world: int, sizes: list[int], iters: int, out_path: str) -> None:
    import numpy as np

    n = world
    results = []
    np.seterr(all="ignore")  # repeated sums of ones overflow to inf: same speed, no warnings
    if system in ("axonml-tcp", "axonml-mpi", "axonml-tcp-shared"):
        import axonml as ax
        import axonml.collectives as dist
        from axonml.collectives.shared_memory import shared_empty

        dist.init_process_group(backend="mpi" if system == "axonml-mpi" else "tcp", timeout=600)
        rank, n = dist.get_rank(), dist.get_world_size()

        def mk(count):
            return ax.from_numpy(np.ones(count, np.float32))

        def mk_shared(count):
            if system != "axonml-tcp-shared":
                return mk(count)
            t = shared_empty(count)
            t.numpy()[:] = 1.0
            return t

        def ops(count):
            x, full = mk_shared(count), mk_shared(count)
            shard = mk_shared(max(count // n, 1))
            return {
                "all_reduce": lambda: dist.all_reduce(x),
                "all_gather": lambda: dist.all_gather_into_tensor(mk_out[0], shard),
                "reduce_scatter": lambda: dist.reduce_scatter_tensor(shard, full),
                "broadcast": lambda: dist.broadcast(x, 0),
            }, shard

        barrier = dist.barrier

        def table_bcast(flag):
            t = ax.from_numpy(flag)
            dist.broadcast(t, 0)
            return bool(t.numpy()[0])
    elif system == "gloo":
        import torch
        import torch.distributed as tdist

        torch.set_num_threads(1)
        tdist.init_process_group("gloo", rank=rank, world_size=world)

        def ops(count):
            x, full = torch.ones(count), torch.ones(count)
            shard = torch.ones(max(count // n, 1))
            return {
                "all_reduce": lambda: tdist.all_reduce(x),
                "all_gather": lambda: tdist.all_gather_into_tensor(mk_out[0], shard),
                "reduce_scatter": lambda: tdist.reduce_scatter_tensor(shard, full),
                "broadcast": lambda: tdist.broadcast(x, 0),
            }, shard

        def mk(count):
            return torch.ones(count)

        barrier = tdist.barrier

        def table_bcast(flag):
            t = torch.from_numpy(flag)
            tdist.broadcast(t, 0)
            return bool(t[0].item())
    elif system == "mpi4py":
        from mpi4py import MPI

        comm = MPI.COMM_WORLD
        rank, n = comm.Get_rank(), comm.Get_size()

        def mk(count):
            return np.ones(count, np.float32)

        def ops(count):
            x, full = mk(count), mk(count)
            shard = mk(max(count // n, 1))
            return {
                "all_reduce": lambda: comm.Allreduce(MPI.IN_PLACE, x),
                "all_gather": lambda: comm.Allgather(shard, mk_out[0]),
                "reduce_scatter": lambda: comm.Reduce_scatter_block(full, shard),
                "broadcast": lambda: comm.Bcast(x, 0),
            }, shard

        barrier = comm.Barrier

        def table_bcast(flag):
            comm.Bcast(flag, 0)
            return bool(flag[0])
    else:
        raise SystemExit(f"unknown system {system}")

    mk_out = [None]
    # settle before the first sample (every system alike): right after start-up the first size's
    # latency measured 2x its steady value (background start-up work still running in the ranks,
    # idle cores waking up): half a second of rest, then two seconds of barriers (rank 0's clock)
    time.sleep(0.5)
    flag = np.zeros(1, np.int64)
    t_end = time.perf_counter() + 2.0
    while True:
        for _ in range(100):
            barrier()
        flag[0] = rank == 0 and time.perf_counter() < t_end
        go = table_bcast(flag)
        if not go:
            break
    for nbytes in sizes:
        count = nbytes // 4
        count -= count % n
        table, shard = ops(count)
        mk_out[0] = mk(shard.shape[0] * n)
        for op in OPS:
            t = _timed(table[op], _iters_for(nbytes, iters), barrier)
            results.append({"op": op, "bytes": count * 4, **t})
    if rank == 0:
        with open(out_path, "w") as f:
            json.dump(results, f)
    if system.startswith("axonml"):
        del table, shard
        dist.destroy_process_group()
    elif system == "gloo":
        tdist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_system(system: str, world: int, sizes: list[int], iters: int) -> list | None:
    out = tempfile.mktemp(prefix=f"axbench-{system}-", suffix=".json")
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    args = [
        HERE + "/collectives.py",
        "--worker",
        system,
        "--world",
        str(world),
        "--out",
        out,
        "--iters",
        str(iters),
        "--sizes",
        ",".join(map(str, sizes)),
    ]
    if system in ("axonml-mpi", "mpi4py"):
        mpiexec = shutil.which("mpiexec", path=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
        if mpiexec is None:
            print(f"  {system}: skipped (no mpiexec; pip install mpi4py mpich)")
            return None
        cmd = [mpiexec, "-n", str(world), sys.executable, *args]
        procs = [subprocess.Popen(cmd, env=env)]
    else:
        port = _free_port()
        procs = []
        for r in range(world):
            e = dict(env, RANK=str(r), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
            procs.append(subprocess.Popen([sys.executable, *args, "--rank", str(r)], env=e))
    try:
        codes = [p.wait(timeout=1800) for p in procs]
    except subprocess.TimeoutExpired:
        for p in procs:
            p.kill()
        raise
    if any(codes) or not os.path.exists(out):
        print(f"  {system} with {world} ranks failed (exit codes {codes})")
        return None
    with open(out) as f:
        res = json.load(f)
    os.unlink(out)
    return res


def memcpy_gbs() -> float:
    import numpy as np

    a = np.ones(64 * 2**20 // 4, np.float32)
    b = np.empty_like(a)
    best = min(_t(lambda: np.copyto(b, a)) for _ in range(10))
    return a.nbytes / best / 1e9


def _t(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--ranks", type=int, nargs="+", default=[2, 4])
    ap.add_argument("--max-mib", type=int, default=256)
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--systems", nargs="+", default=["axonml-tcp", "axonml-tcp-shared", "gloo", "axonml-mpi", "mpi4py"])
    ap.add_argument("--worker")
    ap.add_argument("--world", type=int)
    ap.add_argument("--rank", type=int, default=0)
    ap.add_argument("--out")
    ap.add_argument("--sizes")
    a = ap.parse_args()
    if a.worker:
        worker(a.worker, a.rank, a.world, [int(s) for s in a.sizes.split(",")], a.iters, a.out)
        return
    from common import write_results

    sizes = sizes_bytes(a.max_mib)
    copy = memcpy_gbs()
    print(f"memory copy (64 MiB, one thread): {copy:.2f} GB/s  -- the physical limit for a one-copy transfer")
    rows = []
    # a discarded run first: the first ranks started after this machine sat idle measured up to 2x
    # slower at 1 MiB than the same ranks started again right after (memory and cores waking up)
    print(f"warm-up run of {a.systems[0]} (discarded) ...", flush=True)
    run_system(a.systems[0], 2, [4096, 2**20], 20)
    for world in a.ranks:
        table = {}
        for system in a.systems:
            print(f"running {system} with {world} ranks ...", flush=True)
            res = run_system(system, world, sizes, a.iters)
            if res:
                table[system] = {(r["op"], r["bytes"]): r for r in res}
        for op in OPS:
            print(f"\n{op}, {world} ranks: size, then per system median latency (us) / busbw (GB/s)")
            for nbytes in sizes:
                line = f"  {nbytes / 2**20:9.3f} MiB"
                row = {"op": op, "ranks": world, "bytes": nbytes}
                for system, res in table.items():
                    key = next((k for k in res if k[0] == op and abs(k[1] - nbytes) <= 64 * world), None)
                    if key is None:
                        continue
                    r = res[key]
                    alg = r["bytes"] / r["median_s"] / 1e9
                    bus = alg * FACTOR[op](world)
                    row[system] = {
                        "latency_us": r["median_s"] * 1e6,
                        "p95_us": r["p95_s"] * 1e6,
                        "algbw_gbs": alg,
                        "busbw_gbs": bus,
                    }
                    line += f" | {system} {r['median_s'] * 1e6:10.1f} / {bus:6.2f}"
                for ours in ("axonml-tcp", "axonml-tcp-shared", "axonml-mpi"):
                    for peer in ("gloo", "mpi4py"):
                        if ours in row and peer in row:
                            row[f"{ours}/{peer}_busbw_ratio"] = row[ours]["busbw_gbs"] / row[peer]["busbw_gbs"]
                rows.append(row)
                print(line)
    write_results("collectives", "torch.distributed gloo " + _torch_version() + "; mpi4py direct", rows, {"memcpy_gbs": copy})


def _torch_version() -> str:
    try:
        import torch

        return torch.__version__
    except ImportError:
        return "(not installed)"


if __name__ == "__main__":
    main()
