"""Rank bodies for the DDP tests between real processes (tests/multiprocess/test_ddp*.py).

Each function runs as ``target(rank, world_size, *args)`` inside an initialised process
group (harness.run_ranks) and returns plain data. Run as a script under
``mpiexec -n N python ddp_targets.py`` it trains the parity model on the ``mpi`` backend
and prints ``OK rank r <max difference>`` per rank.
"""

from __future__ import annotations

import os
import signal
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "ddp"))

from ddp_helpers import ParityNet, init_params, loss_of, make_data, max_diff, oracle_steps, snapshot  # noqa: E402

import axonml as ax  # noqa: E402
import axonml.collectives as dist  # noqa: E402
from axonml import nn  # noqa: E402
from axonml.data import DataLoader, DistributedSampler, TensorDataset  # noqa: E402
from axonml.ddp import DDPError, DistributedDataParallel  # noqa: E402
from axonml.errors import CollectiveError  # noqa: E402

SEED = 7
N_SAMPLES = 96


def rank_indices(world: int, rank: int, shuffle: bool, seed: int) -> list[int]:
    """This rank's sample order from a DistributedSampler (no process group needed)."""
    return list(DistributedSampler(range(N_SAMPLES), num_replicas=world, rank=rank, shuffle=shuffle, seed=seed))


def global_batches(world: int, steps: int, batch: int, shuffle: bool, seed: int) -> list[np.ndarray]:
    """The oracle's global batch of each step: the union of the ranks' shards."""
    per = batch // world
    orders = [rank_indices(world, r, shuffle, seed) for r in range(world)]
    return [np.concatenate([o[i * per:(i + 1) * per] for o in orders]) for i in range(steps)]


def parity(rank: int, world: int, configs: list[dict], steps: int, batch: int) -> list[list[dict]]:
    """Train ParityNet under DDP for each config; per config, a snapshot after every step.

    Data comes through DataLoader + DistributedSampler (shuffled or not); every rank starts
    from other weights, so the construction broadcast is part of what is checked."""
    img, tok, y = make_data(N_SAMPLES)
    dataset = TensorDataset(ax.tensor(img), ax.tensor(tok), ax.tensor(y))
    out = []
    for cfg in configs:
        model = init_params(ParityNet(), SEED if rank == 0 else 500 + rank)
        ddp = DistributedDataParallel(model, bucket_cap_mb=cfg["bucket_cap_mb"],
                                      gradient_as_bucket_view=cfg["gradient_as_bucket_view"])
        opt = ax.optim.SGD(ddp.parameters(), lr=0.1, momentum=0.9)
        sampler = DistributedSampler(dataset, shuffle=cfg["shuffle"], seed=cfg["seed"])
        loader = DataLoader(dataset, batch_size=batch // world, sampler=sampler)
        snaps = []
        for _step, (xb, tb, yb) in zip(range(steps), loader):
            opt.zero_grad(set_to_none=cfg.get("set_to_none", True))
            ax.nn.functional.cross_entropy(ddp(xb, tb), yb).backward()
            opt.step()
            snaps.append(snapshot(model))
        out.append(snaps)
    return out


def features(rank: int, world: int) -> dict:
    """no_sync, unused parameters (error and flag), a model mismatch, overlap and join, in one spawn."""
    res: dict = {}
    img, tok, y = make_data(N_SAMPLES)

    # -- a model that differs on the last rank: every rank raises naming it
    try:
        DistributedDataParallel(nn.Sequential(nn.Linear(4, 3 if rank < world - 1 else 2)))
        res["mismatch"] = "no error"
    except DDPError as e:
        res["mismatch"] = str(e)

    # -- no_sync: local gradients inside, averaged after the syncing step
    model = init_params(ParityNet(), SEED)
    ddp = DistributedDataParallel(model, bucket_cap_mb=0.001)
    micro = [np.arange(world * 4 * k, world * 4 * (k + 1)) for k in range(2)]
    with ddp.no_sync():
        s = micro[0][rank::world]
        loss_of(ddp, img[s], tok[s], y[s]).backward()
    res["no_sync_inside"] = model.fc1.weight.grad.numpy().copy()
    s = micro[1][rank::world]
    loss_of(ddp, img[s], tok[s], y[s]).backward()
    ref = init_params(ParityNet(), SEED)
    for m in micro:
        loss_of(ref, img[m], tok[m], y[m]).backward()
    res["no_sync_after_diff"] = max(float(np.abs(p.grad.numpy() - q.grad.numpy()).max())
                                    for p, q in zip(model.parameters(), ref.parameters()))
    res["no_sync_after"] = model.fc1.weight.grad.numpy().copy()

    # -- unused parameters: an error naming them without the flag, parity with it
    ddp = DistributedDataParallel(init_params(ParityNet(extra_unused=True), SEED))
    s = np.arange(8)[rank::world]
    loss_of(ddp, img[s], tok[s], y[s]).backward()
    try:
        loss_of(ddp, img[s], tok[s], y[s]).backward()
        res["unused_error"] = "no error"
    except DDPError as e:
        res["unused_error"] = str(e)
    batches = [np.arange(8 * i, 8 * (i + 1)) for i in range(3)]
    want = oracle_steps(SEED, (img, tok, y), batches)
    model = init_params(ParityNet(extra_unused=True), 1)
    model.load_state_dict({**snapshot(model), **snapshot(init_params(ParityNet(), SEED))})  # spare: any values
    ddp = DistributedDataParallel(model, find_unused_parameters=True, bucket_cap_mb=0.001)
    opt = ax.optim.SGD([p for n, p in model.named_parameters() if not n.startswith("spare")], lr=0.1, momentum=0.9)
    diffs = []
    for b, w in zip(batches, want):
        s = b[rank::world]
        opt.zero_grad()
        loss_of(ddp, img[s], tok[s], y[s]).backward()
        opt.step()
        got = {k: v for k, v in snapshot(model).items() if not k.startswith("spare")}
        diffs.append(max_diff(got, w))
    res["unused_flag_diffs"] = diffs
    res["unused_grad_is_none"] = model.spare.weight.grad is None

    res["overlap"] = _overlap(rank, world)
    res["join"] = _join(rank, world, img, tok, y)
    return res


def _overlap(rank: int, world: int) -> list[dict]:
    """An 8-layer MLP, one layer per bucket: record, when the gradient of the first layer's
    output is computed (backward still has the first layer to do), which buckets were
    launched and which had already finished."""
    layers = []
    for _ in range(8):
        layers += [nn.Linear(256, 256), nn.Tanh()]
    model = init_params(nn.Sequential(*layers), 3)
    ddp = DistributedDataParallel(model, bucket_cap_mb=0.25)
    x = ax.tensor(np.random.default_rng(rank).standard_normal((512, 256)).astype(np.float32))
    records = []
    seen: dict = {}

    def at_first_layer(_grad):
        buckets = ddp.reducer._buckets
        seen["t"] = time.monotonic()
        seen["launched"] = sum(b.future is not None for b in buckets)
        seen["finished"] = sum(b.future is not None and b.future.done() for b in buckets)
        seen["buckets"] = len(buckets)

    def arm(_module, _args, out):
        out.register_hook(at_first_layer)

    model[0].register_forward_hook(arm)
    for _ in range(5):
        seen.clear()
        model.zero_grad()
        ddp(x).square().mean().backward()
        stats = ddp._get_ddp_logging_data()
        seen["launch_times_before"] = sum(t < seen["t"] for t in stats["launch_times"])
        seen["without_first_layer"] = sum(not any(n.startswith("0.") for n in names) for names in stats["bucket_params"])
        records.append(dict(seen))
    return records


def _join(rank: int, world: int, img: np.ndarray, tok: np.ndarray, y: np.ndarray) -> float:
    """Rank r has r + 1 batches; returns the difference to the single-process oracle."""
    counts = [r + 1 for r in range(world)]
    batch = 4
    model = init_params(ParityNet(), SEED)
    ddp = DistributedDataParallel(model, bucket_cap_mb=0.001)
    opt = ax.optim.SGD(ddp.parameters(), lr=0.1)
    with ddp.join():
        for i in range(counts[rank]):
            s = np.arange(batch) + batch * (i * world + rank)
            opt.zero_grad()
            loss_of(ddp, img[s], tok[s], y[s]).backward()
            opt.step()
    ref = init_params(ParityNet(), SEED)
    ropt = ax.optim.SGD(ref.parameters(), lr=0.1)
    for i in range(max(counts)):
        ropt.zero_grad()
        total = None
        for r in range(world):
            if i < counts[r]:
                s = np.arange(batch) + batch * (i * world + r)
                term = loss_of(ref, img[s], tok[s], y[s]) / world
                total = term if total is None else total + term
        total.backward()
        ropt.step()
    return max_diff(snapshot(model), snapshot(ref))


def killed_mid_training(rank: int, world: int, victim: int) -> tuple[str, float] | None:
    """The victim SIGKILLs itself in the middle of its third backward; the others must fail
    with an error naming it, within seconds."""
    layers = [nn.Linear(512, 512) for _ in range(4)]
    model = init_params(nn.Sequential(*layers), 1)
    ddp = DistributedDataParallel(model, bucket_cap_mb=1)
    x = ax.tensor(np.ones((64, 512), np.float32))
    if rank == victim:
        def die(_g):
            if ddp.reducer.iteration == 2:
                os.kill(os.getpid(), signal.SIGKILL)
        model[0].weight.register_hook(die)
    t0 = None
    try:
        for _ in range(10):
            t0 = time.monotonic()
            ddp(x).square().mean().backward()
        return "no error", 0.0
    except CollectiveError as e:
        return str(e), time.monotonic() - t0


def gpu_parity(rank: int, world: int, steps: int, batch: int) -> list[dict]:
    """ParityNet on the GPU under DDP (nccl); snapshots (host arrays) after each step."""
    img, tok, y = make_data(N_SAMPLES)
    model = init_params(ParityNet(), SEED).to(f"cuda:{rank}")
    ddp = DistributedDataParallel(model, bucket_cap_mb=0.001)
    opt = ax.optim.SGD(ddp.parameters(), lr=0.1, momentum=0.9)
    dev = f"cuda:{rank}"
    snaps = []
    for i in range(steps):
        s = np.arange(i * batch, (i + 1) * batch)[rank::world]
        opt.zero_grad()
        out = ddp(ax.tensor(img[s], device=dev), ax.tensor(tok[s], device=dev))
        ax.nn.functional.cross_entropy(out, ax.tensor(y[s], device=dev)).backward()
        opt.step()
        snaps.append(snapshot(model))
    return snaps


def _mpi_main() -> None:
    """Under mpiexec: parity on the mpi backend; prints OK with the max difference."""
    from axonml.collectives.backends import mpi as _mpi  # noqa: F401  (registers "mpi")

    dist.init_process_group("mpi", timeout=60)
    rank, world = dist.get_rank(), dist.get_world_size()
    configs = [{"bucket_cap_mb": 1e-5, "gradient_as_bucket_view": False, "shuffle": True, "seed": 3},
               {"bucket_cap_mb": 25, "gradient_as_bucket_view": True, "shuffle": True, "seed": 4}]
    got = parity(rank, world, configs, 3, 12)
    worst = 0.0
    for cfg, snaps in zip(configs, got):
        ref = oracle_steps(SEED, make_data(N_SAMPLES), global_batches(world, 3, 12, cfg["shuffle"], cfg["seed"]))
        worst = max([worst] + [max_diff(a, b) for a, b in zip(snaps, ref)])
    dist.destroy_process_group()
    print(f"{'OK' if worst < 2e-6 else 'FAIL'} rank {rank} {worst:.3g}", flush=True)


if __name__ == "__main__":
    _mpi_main()
