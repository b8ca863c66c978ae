"""Ray job submission example: data-parallel training of a small model on a Ray cluster.

Submit it to a running cluster (the head's dashboard address) from a checkout::

    ray job submit --address http://HEAD:8265 --working-dir . \
        --runtime-env-json '{"pip": ["numpy", "ml_dtypes", "safetensors", "grpcio", "protobuf", "prometheus-client"]}' \
        -- python launch/ray_job.py --num-workers 4 --steps 50

or run it as a driver on any node of the cluster (``RAY_ADDRESS`` or ``--address``)::

    python launch/ray_job.py --address auto --num-workers 4

The same training script runs under ``axonml-launch --ray --nodes 2 --nproc-per-node 2
train.py``; this file shows the Python API: :func:`axonml.cluster.ray.run` places one Ray
actor per rank (a placement group), gives each the launcher's environment contract
(RANK, WORLD_SIZE, MASTER_ADDR, ...), streams their output prefixed with the rank,
restarts the group up to ``--max-failures`` times, and returns each rank's result.
"""

import argparse
import os
import sys

import numpy as np

import axonml as ax
import axonml.collectives as dist
from axonml.cluster.ray import run


def train(steps: int, lr: float, per_rank: int) -> float:
    """One rank: a Linear(8, 1) regression on this rank's shard, gradients averaged over ranks."""
    dist.init_process_group()  # env:// from the contract; the backend from run(backend=...)
    rank, world = dist.get_rank(), dist.get_world_size()
    rng = np.random.default_rng(1234)  # every rank draws the same global batch and keeps its shard
    x = rng.standard_normal((per_rank * world, 8)).astype(np.float32)
    y = (x @ rng.standard_normal((8, 1)) + 0.5).astype(np.float32)
    xs, ys = ax.from_numpy(x[rank::world]), ax.from_numpy(y[rank::world])
    ax.manual_seed(0)  # the same initial weights on every rank
    model = ax.nn.Linear(8, 1)
    opt = ax.optim.SGD(model.parameters(), lr=lr)
    for _ in range(steps):
        opt.zero_grad()
        loss = ax.nn.functional.mse_loss(model(xs), ys)
        loss.backward()
        for p in model.parameters():
            dist.all_reduce(p.grad, op=dist.ReduceOp.AVG)
        opt.step()
    final = float(loss.item())
    print(f"rank {rank} (node {os.environ['NODE_RANK']}, restart {os.environ['AXONML_RESTART_COUNT']}): "
          f"final shard loss {final:.5f}", flush=True)
    weights = np.concatenate([model.weight.detach().numpy().ravel(), model.bias.detach().numpy().ravel()])
    dist.destroy_process_group()
    return final, weights


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--address", default=None, help="Ray cluster address (default: RAY_ADDRESS, else a local cluster)")
    parser.add_argument("--num-workers", type=int, default=2)
    parser.add_argument("--cpus-per-worker", type=float, default=1.0)
    parser.add_argument("--max-failures", type=int, default=1)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--backend", default="tcp")
    args = parser.parse_args(argv)
    results = run(train, num_workers=args.num_workers, resources_per_worker={"CPU": args.cpus_per_worker},
                  max_failures=args.max_failures, backend=args.backend, address=args.address,
                  args=(args.steps, args.lr, 16))
    for rank, (loss, _) in enumerate(results):
        print(f"rank {rank}: loss {loss:.5f}")
    agree = all(np.array_equal(results[0][1], w) for _, w in results)
    print(f"ranks agree: {agree}")  # data parallelism keeps every replica identical
    return 0 if agree else 1


if __name__ == "__main__":
    sys.exit(main())
