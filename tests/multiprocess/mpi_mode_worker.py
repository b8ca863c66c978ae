"""Run by test_mpi_mode.py as ``mpiexec -n N python mpi_mode_worker.py BACKENDS`` (or alone).

An ordinary training script's view of MPI mode: it calls ``init_process_group(backend)``
with no rank, size or address, for each backend of the comma-separated ``BACKENDS``
in turn (``tcp``, ``mpi``, ``auto``), checks that rank and size are MPI's (from the
launcher's environment), runs collectives against closed-form values, takes a few
data-parallel SGD steps of a linear model and compares them with the single-process
run of the global batch, then destroys the group. Prints one
``OK rank r backend b size n store s mpi4py m master a`` line per backend, or ``FAIL rank r`` and the
traceback (exit code 1). ``argv[2] == "expect-error"``: init must raise; the message is
printed as ``ERROR <message>`` (exit code 0).
"""

import faulthandler
import os
import sys
import traceback

import numpy as np

import axonml as ax
import axonml.collectives as dist
from axonml.collectives.api import _state

RANK_VARS = ("PMI_RANK", "OMPI_COMM_WORLD_RANK", "PMIX_RANK")
SIZE_VARS = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE")


def launcher_world():
    rank = next((int(os.environ[v]) for v in RANK_VARS if v in os.environ), 0)
    size = next((int(os.environ[v]) for v in SIZE_VARS if v in os.environ), 1)
    return rank, size


def sgd_oracle(x, y, steps, lr):
    """Full-batch gradient descent on the mean squared error of y = x @ w (NumPy, float64)."""
    w = np.zeros(x.shape[1])
    for _ in range(steps):
        w -= lr * 2.0 * x.T @ (x @ w - y) / len(y)
    return w


def check(backend):
    dist.init_process_group(backend, timeout=30)
    rank, size = dist.get_rank(), dist.get_world_size()
    want_rank, want_size = launcher_world()
    assert (rank, size) == (want_rank, want_size), f"rank/size {(rank, size)} != launcher's {(want_rank, want_size)}"
    used = dist.get_backend()
    if backend == "auto":  # AXONML_BACKEND (the launcher's --backend) wins, else mpi under mpiexec
        forced = os.environ.get("AXONML_BACKEND", "auto")
        want = forced if forced != "auto" else ("mpi" if size > 1 else "tcp")
        assert used == want, f"auto picked {used!r} with world size {size}, AXONML_BACKEND={forced!r}"
    else:
        assert used == backend, used
    store = type(_state().store).__name__
    # collectives, closed form
    t = ax.from_numpy(np.full(5, rank + 1.0, dtype=np.float32))
    dist.all_reduce(t)
    assert np.array_equal(t.numpy(), np.full(5, size * (size + 1) / 2, dtype=np.float32)), t.numpy()
    parts = [ax.zeros(2) for _ in range(size)]
    dist.all_gather(parts, ax.from_numpy(np.array([rank, -rank], dtype=np.float32)))
    assert [p.numpy().tolist() for p in parts] == [[r, -r] for r in range(size)]
    b = ax.from_numpy(np.array([rank * 10.0], dtype=np.float32))
    dist.broadcast(b, src=size - 1)
    assert b.numpy().tolist() == [(size - 1) * 10.0]
    # data-parallel SGD: each rank a shard of the global batch, gradients averaged
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4 * size, 3))
    y = x @ np.array([1.0, -2.0, 0.5]) + 0.1 * rng.standard_normal(4 * size)
    xs, ys = x[4 * rank:4 * rank + 4], y[4 * rank:4 * rank + 4]
    w = np.zeros(3)
    for _ in range(5):
        g = ax.from_numpy(2.0 * xs.T @ (xs @ w - ys) / len(ys))
        dist.all_reduce(g, op=dist.ReduceOp.AVG)
        w -= 0.1 * g.numpy()
    np.testing.assert_allclose(w, sgd_oracle(x, y, 5, 0.1), rtol=1e-12, atol=1e-12)
    dist.barrier()
    dist.destroy_process_group()
    print(f"OK rank {rank} backend {used} size {size} store {store} mpi4py {'mpi4py.MPI' in sys.modules} "
          f"master {os.environ.get('MASTER_ADDR', '-')}", flush=True)


def main():
    faulthandler.dump_traceback_later(float(os.environ.get("MPI_WORKER_HANG_S", "50")), exit=True)
    rank = launcher_world()[0]
    if len(sys.argv) > 2 and sys.argv[2] == "expect-error":
        try:
            dist.init_process_group(sys.argv[1], timeout=20)
        except Exception as exc:  # noqa: BLE001  (the test reads the message)
            print(f"ERROR {type(exc).__name__}: {exc}", flush=True)
            return 0
        print(f"FAIL rank {rank}: init_process_group did not raise", flush=True)
        return 1
    try:
        for backend in sys.argv[1].split(","):
            check(backend)
    except BaseException:  # noqa: BLE001  (reported to the test)
        print(f"FAIL rank {rank}\n{traceback.format_exc()}", flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
