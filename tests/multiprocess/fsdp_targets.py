"""Rank bodies of the multi-process FSDP tests (tests/multiprocess/test_fsdp_processes.py).

Each target runs many settings inside one spawn (DESIGN.md section 5) and returns plain
NumPy data; the parent compares with single-process references.
"""

from __future__ import annotations

import gc
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "fsdp"))

from fsdp_models import fsdp_run, local_batch, make_model, make_opt, shard_model  # noqa: E402

import axonml as ax  # noqa: E402
import axonml.collectives as dist  # noqa: E402
from axonml import nn  # noqa: E402
from axonml.collectives.api import resolve_group  # noqa: E402
from axonml.fsdp import (  # noqa: E402
    ShardingStrategy,
    fully_shard,
    load_sharded_checkpoint,
    memory_plan,
    save_sharded_checkpoint,
)

STEPS = 3
PARITY = [  # (strategy, prefetch, mixed precision dtype name)
    ("full", True, None),
    ("full", False, None),
    ("grad_op", True, None),
    ("grad_op", False, None),
    ("NO_SHARD", True, None),
    ("HYBRID_SHARD", True, None),
    ("full", True, "bfloat16"),
    ("grad_op", False, "bfloat16"),
    ("HYBRID_SHARD", False, "float16"),
]


def parity(rank: int, world: int) -> dict:
    out = {}
    for strategy, prefetch, mp in PARITY:
        dt = None if mp is None else getattr(ax, mp)
        out[(strategy, prefetch, mp)] = fsdp_run(rank, world, STEPS, strategy=strategy, prefetch=prefetch, mp_dtype=dt)
    return out


def _counting(pg) -> dict:
    """Count the collectives the group's backend actually runs (independent of FSDP's own stats)."""
    counts = {"allgather": 0, "reduce_scatter": 0, "allreduce": 0}
    for name in counts:
        orig = getattr(pg, name)

        def wrapped(*a, _orig=orig, _name=name, **k):
            counts[_name] += 1
            return _orig(*a, **k)

        setattr(pg, name, wrapped)
    return counts


def comm_counts(rank: int, world: int) -> dict:
    """FULL_SHARD, one training step: collectives seen by the process group, and per unit."""
    pg = resolve_group(None, "test")
    model = shard_model(make_model())
    opt = make_opt(model, "adamw", 0.05)
    x, y = local_batch(0, rank, world)
    model(x, y).backward()  # first iteration: no forward prefetch yet (no recorded order)
    opt.step()
    opt.zero_grad()
    counts = _counting(pg)
    before = model.comm_stats()
    x, y = local_batch(1, rank, world)
    model(x, y).backward()
    opt.step()
    after = model.comm_stats()
    per_unit = {u: {k: after[u][k] - before[u][k] for k in after[u]} for u in after}
    for name in counts:
        delattr(pg, name)
    return {"group": counts, "units": per_unit}


# -- memory ---------------------------------------------------------------------------------------------

WIDTH, N_BLOCKS, MEM_BATCH = 128, 6, 4


class MemBlock(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(WIDTH, WIDTH)
        self.b = nn.Linear(WIDTH, WIDTH)

    def forward(self, x):
        return x + self.b(self.a(x).relu())


class MemNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.inp = nn.Linear(16, WIDTH)
        self.blocks = nn.ModuleList([MemBlock() for _ in range(N_BLOCKS)])
        self.head = nn.Linear(WIDTH, 4)

    def forward(self, x, y):
        h = self.inp(x)
        for b in self.blocks:
            h = b(h)
        return nn.functional.cross_entropy(self.head(h), y)


def _current() -> int:
    return ax.memory_stats("cpu")["current_bytes"]


def _peak() -> int:
    return ax.memory_stats("cpu")["peak_bytes"]


def _mem_data(rank: int) -> tuple:
    rng = np.random.default_rng(rank)
    return ax.tensor(rng.standard_normal((MEM_BATCH, 16)).astype(np.float32)), ax.tensor(rng.integers(0, 4, MEM_BATCH))


def _activation_bytes(x, y) -> int:
    """Peak bytes of one forward/backward of the plain model beyond its parameters and
    gradients (activations, their gradients, temporaries), plus one weight matrix of room."""
    ax.manual_seed(0)
    model = MemNet()
    gc.collect()
    base = _current()  # includes the parameters
    ax.reset_peak_memory_stats("cpu")
    model(x, y).backward()
    act = _peak() - base - 4 * model.num_parameters()
    del model
    gc.collect()
    return max(0, act) + 4 * WIDTH * WIDTH


def memory(rank: int, world: int) -> dict:
    """Measured bytes per rank at init / after forward / backward / step, and the plan, per strategy."""
    x, y = _mem_data(rank)
    act = _activation_bytes(x, y)
    out = {"activation_bound": act}
    for strategy in (ShardingStrategy.FULL_SHARD, ShardingStrategy.SHARD_GRAD_OP):
        gc.collect()
        dist.barrier()  # the backend keeps the last collective's output until the next one
        base = _current()
        ax.manual_seed(0)
        model = MemNet()
        for b in model.blocks:
            fully_shard(b, reshard_after_forward=strategy is ShardingStrategy.FULL_SHARD)
        fully_shard(model, reshard_after_forward=strategy is ShardingStrategy.FULL_SHARD)
        gc.collect()
        plan = memory_plan(model, strategy, world)
        opt = ax.optim.AdamW(model.parameters(), lr=1e-3)
        phases = {"init": (_current() - base, None)}
        ax.reset_peak_memory_stats("cpu")
        for _ in range(2):  # the second step has the optimizer state in place
            opt.zero_grad()
            ax.reset_peak_memory_stats("cpu")
            loss = model(x, y)
            phases["forward"] = (_current() - base, _peak() - base)
            loss.backward()
            del loss
            phases["backward"] = (_current() - base, _peak() - base)
            opt.step()
            phases["step"] = (_current() - base, _peak() - base)
        out[strategy.name] = {"phases": phases, "plan": plan}
        del model, opt, b
        gc.collect()
    return out


# -- sharded checkpoints across world sizes ----------------------------------------------------------------


def _train(model, opt, rank: int, world: int, steps: range) -> list:
    from fsdp_models import full_params

    out = []
    for s in steps:
        x, y = local_batch(s, rank, world)
        opt.zero_grad()
        model(x, y).backward()
        opt.step()
        out.append(full_params(model))
    return out


def checkpoint_save(rank: int, world: int, path: str) -> list:
    """Train 2 steps, save a sharded checkpoint, then continue 2 steps (the reference)."""
    model = shard_model(make_model())
    opt = make_opt(model, "adamw", 0.05)
    _train(model, opt, rank, world, range(2))
    save_sharded_checkpoint(path, model, opt, extra={"step": 2})
    return _train(model, opt, rank, world, range(2, 4))


def checkpoint_load(rank: int, world: int, path: str) -> list:
    """Load the checkpoint into a differently initialised model at this world size and continue."""
    model = shard_model(make_model(seed=123))
    opt = make_opt(model, "adamw", 0.05)
    extra = load_sharded_checkpoint(path, model, opt)
    assert extra == {"step": 2}, extra
    return _train(model, opt, rank, world, range(2, 4))


def full_state(rank: int, world: int) -> dict:
    """The full state dict after 2 steps (rank 0 only with cpu_offload)."""
    from axonml.fsdp import StateDictOptions, get_model_state_dict

    model = shard_model(make_model())
    opt = make_opt(model, "adamw", 0.05)
    _train(model, opt, rank, world, range(2))
    sd = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    return {k: v.numpy() for k, v in sd.items()}


def everything(rank: int, world: int, ckpt_dir: str, save: bool) -> dict:
    """All settings of one world size in one spawn."""
    out = {"parity": parity(rank, world), "full_state": full_state(rank, world)}
    if save:
        out["ckpt"] = checkpoint_save(rank, world, ckpt_dir)
        out["comm"] = comm_counts(rank, world)
    else:
        out["ckpt"] = checkpoint_load(rank, world, ckpt_dir)
    if world in (2, 4):
        out["memory"] = memory(rank, world)
    dist.barrier()
    return out
