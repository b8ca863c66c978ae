"""Models and a reference trainer shared by the FSDP tests (threaded and multi-process).

The model has deliberately uneven parameter sizes (7, 13, 35, 91, ... elements) so that
no world size of 2, 3 or 4 divides them: padding bugs show up as wrong numbers.
"""

from __future__ import annotations

import threading

import numpy as np

import axonml as ax
import axonml.collectives as dist
from axonml import nn
from axonml.fsdp import MixedPrecisionPolicy, fully_shard

D_IN, D, H, D_OUT, N_BLOCKS = 5, 7, 13, 3, 3
BATCH = 12  # divisible by 1, 2, 3 and 4


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.ln = nn.LayerNorm(D)
        self.fc = nn.Linear(D, H)
        self.out = nn.Linear(H, D)

    def forward(self, x):
        return x + self.out(self.fc(self.ln(x)).tanh())


class Net(nn.Module):
    def __init__(self, n_blocks: int = N_BLOCKS) -> None:
        super().__init__()
        self.inp = nn.Linear(D_IN, D)
        self.blocks = nn.ModuleList([Block() for _ in range(n_blocks)])
        self.head = nn.Linear(D, D_OUT)

    def forward(self, x, y, checkpoint: bool = False):
        h = self.inp(x)
        for b in self.blocks:
            h = ax.autograd.checkpoint(b, h) if checkpoint else b(h)
        return nn.functional.cross_entropy(self.head(h), y)


_INIT_LOCK = threading.RLock()  # threaded ranks share the global generator: build one model at a time


def make_model(seed: int = 0, n_blocks: int = N_BLOCKS) -> Net:
    with _INIT_LOCK:
        ax.manual_seed(seed)
        return Net(n_blocks)


def data(step: int, batch: int = BATCH) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1000 + step)
    return rng.standard_normal((batch, D_IN)).astype(np.float32), rng.integers(0, D_OUT, batch)


def local_batch(step: int, rank: int, world: int) -> tuple:
    x, y = data(step)
    n = BATCH // world
    return ax.tensor(x[rank * n:(rank + 1) * n]), ax.tensor(y[rank * n:(rank + 1) * n])


def shard_model(model: Net, reshard_after_forward: bool = True, mp: MixedPrecisionPolicy | None = None,
                group=None) -> Net:
    kw = {} if mp is None else {"mp_policy": mp}
    for b in model.blocks:
        fully_shard(b, group=group, reshard_after_forward=reshard_after_forward, **kw)
    fully_shard(model, group=group, reshard_after_forward=reshard_after_forward, **kw)
    return model


def full_params(model) -> dict[str, np.ndarray]:
    """Full parameter values by name (a collective for FSDP models)."""
    from axonml.fsdp import StateDictOptions, get_model_state_dict

    if any(isinstance(m, ax.fsdp.FSDPModule) for m in model.modules()):
        sd = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True))
    else:
        sd = model.state_dict()
    return {k: v.numpy().astype(np.float64) for k, v in sd.items()}


def reference_run(steps: int, world: int = 1, lr: float = 0.05, mp_dtype=None, clip: float | None = None,
                  opt_name: str = "adamw", seed: int = 0) -> list[dict[str, np.ndarray]]:
    """One process, the whole batch: parameters after each step. With ``mp_dtype``, emulate
    FSDP mixed precision exactly: ``world`` micro-batches with low-precision parameters,
    gradients averaged in float32 over them, float32 master parameters."""
    model = make_model(seed)
    opt = make_opt(model, opt_name, lr)
    out = []
    for step in range(steps):
        if mp_dtype is None:
            x, y = data(step)
            opt.zero_grad()
            model(ax.tensor(x), ax.tensor(y)).backward()
        else:
            low = make_model(seed)
            low.load_state_dict({k: v.detach() for k, v in model.state_dict().items()})
            low.to(mp_dtype)
            grads = None
            for r in range(world):
                xb, yb = local_batch(step, r, world)
                low.zero_grad()
                low(xb.to(mp_dtype), yb).backward()
                g = [p.grad.numpy().astype(np.float32) for p in low.parameters()]
                grads = g if grads is None else [a + b for a, b in zip(grads, g)]
            opt.zero_grad()
            for p, g in zip(model.parameters(), grads):
                p.grad = ax.tensor(g / world)
        if clip is not None:
            nn.utils.clip_grad_norm_(model.parameters(), clip)
        opt.step()
        out.append({k: v.numpy().astype(np.float64) for k, v in model.state_dict().items()})
    return out


def make_opt(model, name: str, lr: float):
    if name == "adamw":
        return ax.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.1)
    if name == "sgd":
        return ax.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    raise ValueError(name)


def fsdp_run(rank: int, world: int, steps: int, *, strategy: str = "full", prefetch: bool = True, mp_dtype=None,
             clip: float | None = None, opt_name: str = "adamw", lr: float = 0.05, checkpoint: bool = False,
             seed: int = 0) -> list[dict[str, np.ndarray]]:
    """Train the FSDP model on this rank's slice of each batch; full parameters after each step."""
    model = make_model(seed)
    if dist.is_initialized():
        # threaded ranks share the global generator, which a checkpointed backward restores:
        # let every rank finish building its model before any rank trains
        dist.barrier()
    mp = None if mp_dtype is None else MixedPrecisionPolicy(param_dtype=mp_dtype, reduce_dtype=ax.float32)
    if strategy in ("full", "grad_op"):
        shard_model(model, reshard_after_forward=strategy == "full", mp=mp)
    else:
        from axonml.fsdp import FullyShardedDataParallel, ModuleWrapPolicy, ShardingStrategy

        model = FullyShardedDataParallel(model, sharding_strategy=getattr(ShardingStrategy, strategy),
                                         auto_wrap_policy=ModuleWrapPolicy({Block}), mixed_precision=mp,
                                         hybrid_shard_size=2 if world % 2 == 0 else 1)
    if not prefetch:
        model.set_prefetch(forward=False, backward=False)
    opt = make_opt(model, opt_name, lr)
    out = []
    for step in range(steps):
        x, y = local_batch(step, rank, world)
        opt.zero_grad()
        model(x, y, checkpoint).backward()
        if clip is not None:
            model.clip_grad_norm_(clip)
        opt.step()
        out.append(full_params(model))
    dist.barrier()
    return out
