"""Functions that test_ray.py runs on Ray actors through ``axonml.cluster.ray.run``.

Each is an ordinary training function: it reads nothing but the environment contract,
calls ``init_process_group()`` and returns what the test checks.
"""

import os

import numpy as np

import axonml as ax
import axonml.collectives as dist

CONTRACT = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "NODE_RANK", "MASTER_ADDR", "MASTER_PORT",
            "AXONML_RESTART_COUNT", "AXONML_MAX_RESTARTS", "AXONML_RUN_ID", "AXONML_BACKEND", "OMP_NUM_THREADS",
            "EXTRA_FLAG")


def allreduce_job():
    """The sum over ranks of rank + 1, the backend, and the contract as this rank saw it."""
    dist.init_process_group()
    t = ax.from_numpy(np.full(4, dist.get_rank() + 1.0, dtype=np.float32))
    dist.all_reduce(t)
    out = {"sum": t.numpy().tolist(), "backend": dist.get_backend(), "rank": dist.get_rank(),
           "size": dist.get_world_size(), "env": {k: os.environ.get(k) for k in CONTRACT}}
    dist.destroy_process_group()
    return out


def data(world_size, per_rank=4):
    rng = np.random.default_rng(7)
    x = rng.standard_normal((per_rank * world_size, 3))
    y = x @ np.array([0.5, -1.0, 2.0]) + 0.25
    return x, y


def train_job(steps, lr):
    """Data-parallel SGD of a Linear(3, 1) on this rank's shard, gradients averaged by all_reduce."""
    dist.init_process_group()
    rank, n = dist.get_rank(), dist.get_world_size()
    x, y = data(n)
    xs = ax.from_numpy(x[4 * rank:4 * rank + 4].astype(np.float32))
    ys = ax.from_numpy(y[4 * rank:4 * rank + 4, None].astype(np.float32))
    model = ax.nn.Linear(3, 1)
    with ax.no_grad():
        model.weight.copy_(ax.zeros(1, 3))
        model.bias.copy_(ax.zeros(1))
    opt = ax.optim.SGD(model.parameters(), lr=lr)
    for _ in range(steps):
        opt.zero_grad()
        loss = ax.nn.functional.mse_loss(model(xs), ys)
        loss.backward()
        for p in model.parameters():
            dist.all_reduce(p.grad, op=dist.ReduceOp.AVG)
        opt.step()
    dist.destroy_process_group()
    return np.concatenate([model.weight.detach().numpy().ravel(), model.bias.detach().numpy().ravel()]).tolist()


def flaky_job():
    """Attempt 0: rank 0's process dies while rank 1 waits in an all-reduce; attempt 1 succeeds."""
    attempt = int(os.environ["AXONML_RESTART_COUNT"])
    dist.init_process_group()
    if attempt == 0 and dist.get_rank() == 0:
        os._exit(3)
    t = ax.ones(2)
    dist.all_reduce(t)
    dist.destroy_process_group()
    return (attempt, t.numpy().tolist())


def always_fails():
    if os.environ["RANK"] == "1":
        raise ValueError("boom at rank 1")
    return "rank 0 is fine"
