"""A training script that test_ray.py runs with ``axonml.cluster.ray.launch_script``.

``python ray_script.py OUTDIR FAIL_RANK FAIL_CODE``: joins the job (env://), checks an
all-reduce, writes ``OUTDIR/rank<r>-attempt<a>.json`` with the environment contract it
saw, prints a line, and exits with FAIL_CODE when its rank is FAIL_RANK (-1: none).
"""

import json
import os
import sys

import numpy as np

import axonml as ax
import axonml.collectives as dist

if __name__ == "__main__":
    out, fail_rank, fail_code = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    dist.init_process_group(timeout=30)
    rank, n = dist.get_rank(), dist.get_world_size()
    t = ax.from_numpy(np.array([rank + 1.0], dtype=np.float32))
    dist.all_reduce(t)
    assert t.numpy().tolist() == [n * (n + 1) / 2], t.numpy()
    attempt = os.environ["AXONML_RESTART_COUNT"]
    keys = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "NODE_RANK", "AXONML_MAX_RESTARTS", "AXONML_RUN_ID")
    with open(os.path.join(out, f"rank{rank}-attempt{attempt}.json"), "w") as f:
        json.dump({k: os.environ.get(k) for k in keys} | {"argv0": sys.argv[0], "backend": dist.get_backend()}, f)
    print(f"script says hello from rank {rank} attempt {attempt}", flush=True)
    dist.barrier()
    dist.destroy_process_group()
    if rank == fail_rank:
        sys.exit(fail_code)
