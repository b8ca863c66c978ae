"""A worker script for the launcher tests (run by ``axonml-launch`` or plain ``python``).

Prints one ``ENV {json}`` line with the environment contract and the world it sees after
``init_process_group``; then, per flags: fails on a rank (a printed traceback and a chosen
exit code), waits for SIGTERM, or exits.

    launch_worker.py [--fail-rank R --exit-code C] [--wait-signal] [--metric-steps N]

With ``--metric-steps N`` it runs N pretend training steps (an all-reduce each, recorded
with ``axonml.cluster.metrics.record_step``), printing ``rank R metrics step S done`` after each.
"""

import argparse
import json
import os
import signal
import sys
import time
import traceback

import axonml as ax
import axonml.collectives as dist
from axonml.cluster import metrics

CONTRACT = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "NODE_RANK", "MASTER_ADDR", "MASTER_PORT",
            "AXONML_RESTART_COUNT", "AXONML_MAX_RESTARTS", "AXONML_RUN_ID", "OMP_NUM_THREADS", "AXONML_METRICS_PORT",
            "AXONML_USE_AGENT_STORE", "AXONML_BACKEND")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--fail-rank", type=int, default=-1)
    ap.add_argument("--exit-code", type=int, default=3)
    ap.add_argument("--wait-signal", action="store_true")
    ap.add_argument("--metric-steps", type=int, default=0)
    a = ap.parse_args()
    got = []
    signal.signal(signal.SIGTERM, lambda s, f: got.append(s))
    dist.init_process_group()
    rank, world = dist.get_rank(), dist.get_world_size()
    env = {k: os.environ.get(k) for k in CONTRACT}
    env.update(world_rank=rank, world_size=world, pid=os.getpid())
    print("ENV " + json.dumps(env), flush=True)
    if rank == a.fail_rank:
        try:
            raise ValueError(f"boom on rank {rank} in generation {os.environ.get('AXONML_RESTART_COUNT')}")
        except ValueError:
            traceback.print_exc()
        sys.stdout.flush()
        os._exit(a.exit_code)
    if a.wait_signal:
        print(f"rank {rank} ready", flush=True)
        deadline = time.monotonic() + 30
        while not got and time.monotonic() < deadline:
            time.sleep(0.02)
        print(f"rank {rank} got {signal.Signals(got[0]).name if got else 'nothing'}", flush=True)
        os._exit(0)
    for step in range(a.metric_steps):
        t0 = time.perf_counter()
        dist.all_reduce(ax.ones(256))
        time.sleep(0.1)
        metrics.record_step(time.perf_counter() - t0, samples=8)
        print(f"rank {rank} metrics step {step} done", flush=True)
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
