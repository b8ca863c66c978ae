"""The reference training loop for the language models of this package (none, DDP or FSDP).

One loop, three strategies: ``"none"`` (one process), ``"ddp"``
(:class:`axonml.ddp.DistributedDataParallel`) and ``"fsdp"`` (:func:`axonml.fsdp.fully_shard`
on each of ``model.blocks``, then on the root). AdamW with weight decay on matrices only,
linear warmup then cosine decay, gradient clipping, periodic evaluation, checkpoints with
exact resume, Prometheus step metrics and a per-step history.

Note on the data order: ``config.batch_size`` is the *global* batch. The order of blocks is
one permutation per epoch (a :class:`~axonml.data.DistributedSampler` with ``seed`` and
``drop_last``; rank ``r`` of ``W`` takes every W-th index), so the global batch of step ``s``
is the same set of blocks at every world size: 1 process on 16 blocks computes the same
gradient as 2 ranks on 8 each. The epoch and the position in it follow from the step
number, so a resumed run needs no saved iterator state.

Note on the reported loss: each rank's mean over its blocks is all-reduced into the
global-batch mean, so every rank logs the same number, and ``none``, ``ddp`` and ``fsdp``
runs of one seed log the same sequence (up to float rounding).

Note on randomness: every rank builds the model after the same ``ax.manual_seed`` (FSDP
needs identical initial values; DDP broadcasts rank 0's anyway). The trainer then reseeds
the default generator with ``(seed, rank)``, so dropout masks differ between ranks.
Checkpoints store each rank's generator state; resuming at the same world size continues
every stream exactly.

Note on checkpoints: ``none``/``ddp`` write one file (``axonml.save_checkpoint``, by rank 0);
``fsdp`` writes a sharded directory (``axonml.fsdp.save_sharded_checkpoint``, loadable at
any world size), saved beside the previous one and swapped in by renames. Both hold the
model, optimizer, scheduler, step, history and every rank's generator state.

Example::

    dist.init_process_group()
    ax.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=512, n_positions=128, n_embd=128, n_layer=4, n_head=4))
    cfg = TrainConfig(strategy="ddp", max_steps=500, batch_size=32, out_dir="runs/gpt", ckpt_interval=100)
    history = Trainer(model, train_ds, val_ds, cfg).train()
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from .. import collectives as dist
from ..autograd import no_grad
from ..cluster.metrics import record_step
from ..data import DistributedSampler
from ..ddp import DistributedDataParallel
from ..errors import CheckpointError
from ..fsdp import StateDictOptions, fully_shard, get_model_state_dict, load_sharded_checkpoint, save_sharded_checkpoint
from ..fsdp import clip_grad_norm_ as fsdp_clip_grad_norm_
from ..nn import Module
from ..nn import functional as F
from ..nn.utils import clip_grad_norm_
from ..optim import AdamW
from ..serialize import load_checkpoint, save_checkpoint
from ..tensor import Tensor, manual_seed, tensor
from ..tensor.random import get_rng_state, set_rng_state
from .data import TokenBlockDataset
from .schedule import get_cosine_schedule_with_warmup, param_groups

__all__ = ["StepLog", "TrainConfig", "Trainer", "get_cosine_schedule_with_warmup", "param_groups", "train", "wrap_model"]

logger = logging.getLogger(__name__)

STRATEGIES = ("none", "ddp", "fsdp")
CKPT_FILE = "checkpoint.safetensors"  # none / ddp: one file written by rank 0
CKPT_DIR = "checkpoint_sharded"  # fsdp: a sharded checkpoint directory


def _world() -> tuple[int, int]:
    return (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)


# -- configuration and records ----------------------------------------------------------------------


@dataclass(frozen=True)
class TrainConfig:
    """What :class:`Trainer` does. ``batch_size`` is the global batch (blocks per step, all ranks).

    Args:
        strategy: ``"none"``, ``"ddp"`` or ``"fsdp"``.
        max_steps: optimizer steps (the cosine schedule ends there).
        lr, min_lr_rate, warmup_steps: peak lr, final lr / peak lr, warmup steps.
        weight_decay, betas, eps: AdamW's (decay applies to parameters with 2+ dims only).
        grad_clip: max global gradient norm (None: no clipping).
        eval_interval: evaluate every this many steps and at the end (0: never).
        eval_batches: global batches of the validation set per evaluation (0: all of it).
        ckpt_interval: checkpoint every this many steps (0: only at the end); needs ``out_dir``.
        out_dir: where checkpoints go (None: no checkpoints).
        resume: continue from the checkpoint in ``out_dir`` when there is one.
        seed: data order and the per-rank generator streams.
        gradient_checkpointing: recompute each block's activations in backward.
    """

    strategy: str = "ddp"
    max_steps: int = 1000
    batch_size: int = 16
    lr: float = 1e-3
    min_lr_rate: float = 0.1
    warmup_steps: int = 50
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = 1e-8
    grad_clip: float | None = 1.0
    eval_interval: int = 100
    eval_batches: int = 8
    ckpt_interval: int = 0
    out_dir: str | None = None
    resume: bool = False
    seed: int = 0
    gradient_checkpointing: bool = False

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ValueError(f"TrainConfig: unknown strategy {self.strategy!r}; choose one of {STRATEGIES}")
        for name in ("max_steps", "batch_size"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"TrainConfig: {name} must be a positive int, got {v!r}")
        for name in ("warmup_steps", "eval_interval", "eval_batches", "ckpt_interval"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ValueError(f"TrainConfig: {name} must be a non-negative int, got {v!r}")
        if not self.lr > 0 or not 0.0 <= self.min_lr_rate <= 1.0 or self.weight_decay < 0:
            raise ValueError(f"TrainConfig: need lr > 0, 0 <= min_lr_rate <= 1, weight_decay >= 0; got lr={self.lr}, "
                             f"min_lr_rate={self.min_lr_rate}, weight_decay={self.weight_decay}")
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise ValueError(f"TrainConfig: grad_clip must be positive or None, got {self.grad_clip!r}")
        if (self.ckpt_interval or self.resume) and not self.out_dir:
            raise ValueError("TrainConfig: ckpt_interval and resume need out_dir (where the checkpoint lives)")


@dataclass
class StepLog:
    """One optimizer step: ``step`` counts completed steps (1 after the first update).
    ``loss`` is the global-batch mean; ``val_loss`` is set on evaluation steps."""

    step: int
    loss: float
    lr: float
    grad_norm: float
    tokens_per_s: float
    seconds: float
    val_loss: float | None = None


# -- wrapping --------------------------------------------------------------------------------------------


def wrap_model(model: Module, strategy: str, process_group: Any = None) -> Module:
    """Prepare ``model`` for ``strategy`` and return what to call in the training step.

    * ``"none"``: the model itself (a world of one only).
    * ``"ddp"``: ``DistributedDataParallel(model)`` (needs an initialized process group).
    * ``"fsdp"``: ``fully_shard`` on each of ``model.blocks``, then on the root; the model
      is sharded in place and returned.

    Example::

        ddp_model = wrap_model(model, "ddp")
        out = ddp_model(input_ids)
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"wrap_model: unknown strategy {strategy!r}; choose one of {STRATEGIES}")
    if not isinstance(model, Module):
        raise TypeError(f"wrap_model expects an axonml.nn.Module, got {type(model).__name__}")
    _, world = _world()
    if strategy == "none":
        if world > 1:
            raise ValueError(f"wrap_model: strategy 'none' trains one process, but the world has {world} ranks; "
                             "use 'ddp' or 'fsdp' (or run without axonml-launch)")
        return model
    if strategy == "ddp":
        if not dist.is_initialized():
            raise RuntimeError("wrap_model: 'ddp' needs a process group; call axonml.collectives.init_process_group() "
                               "first (it makes a world of one when the script runs alone)")
        return DistributedDataParallel(model, process_group=process_group)
    blocks = getattr(model, "blocks", None)
    if blocks is None:
        raise TypeError(f"wrap_model: 'fsdp' shards each of model.blocks, but {type(model).__name__} has no 'blocks' "
                        "(the ModuleList of transformer blocks)")
    for block in blocks:
        fully_shard(block, group=process_group)
    fully_shard(model, group=process_group)
    return model


def _lm_loss(output: Any, targets: Tensor) -> Tensor:
    """Mean cross-entropy of the logits (B, T, V) against the next tokens (B, T)."""
    logits = output.logits if hasattr(output, "logits") else output
    b, t, v = logits.shape
    return F.cross_entropy(logits.reshape(b * t, v), targets.reshape(b * t))


def _all_sum(values: Sequence[float]) -> np.ndarray:
    """Sum float64 values over the ranks (identical result on every rank)."""
    t = tensor(np.asarray(values, dtype=np.float64))
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.numpy()


# -- the trainer -----------------------------------------------------------------------------------------


class Trainer:
    """Train a causal language model on a :class:`TokenBlockDataset` (see the module notes).

    Args:
        model: the plain model (called as ``model(input_ids)``; output with ``.logits``). It is
            wrapped here for ``config.strategy``; build it after the same seed on every rank.
        train_data, val_data: token block datasets (val_data may be None: no evaluation).
        config: :class:`TrainConfig`.
        callbacks: ``fn(trainer, log)`` after every step, on every rank; set
            ``trainer.should_stop = True`` to end after this step.
        loss_fn: ``fn(output, targets) -> loss`` (default: mean next-token cross-entropy).

    Attributes: ``module`` (the plain or sharded model), ``wrapped`` (what the step calls),
    ``optimizer``, ``scheduler``, ``step`` (completed steps), ``history`` (list of StepLog).
    """

    def __init__(self, model: Module, train_data: TokenBlockDataset, val_data: TokenBlockDataset | None = None,
                 config: TrainConfig | None = None, callbacks: Sequence[Callable[["Trainer", StepLog], Any]] = (),
                 loss_fn: Callable[[Any, Tensor], Tensor] | None = None) -> None:
        self.config = cfg = config or TrainConfig()
        self.rank, self.world = _world()
        if cfg.batch_size % self.world:
            raise ValueError(f"Trainer: the global batch_size {cfg.batch_size} must be divisible by the world size "
                             f"{self.world}; pick a multiple of {self.world}")
        for name, ds in (("train_data", train_data), ("val_data", val_data)):
            if ds is not None and not hasattr(ds, "batch"):
                raise TypeError(f"Trainer: {name} must be a TokenBlockDataset (with .batch(indices)), got "
                                f"{type(ds).__name__}")
        if len(train_data) < cfg.batch_size:
            raise ValueError(f"Trainer: train_data has {len(train_data)} blocks, fewer than one global batch of "
                             f"{cfg.batch_size}; lower batch_size or block_size")
        if val_data is not None and cfg.eval_interval and len(val_data) < cfg.batch_size:
            raise ValueError(f"Trainer: val_data has {len(val_data)} blocks, fewer than one global batch of "
                             f"{cfg.batch_size}; enlarge the validation split or lower batch_size")
        self.train_data, self.val_data = train_data, val_data
        self.callbacks, self.loss_fn = list(callbacks), loss_fn or _lm_loss
        self.local_batch = cfg.batch_size // self.world
        self.model_class, self.model_config = type(model), getattr(model, "config", None)
        if cfg.gradient_checkpointing:
            model.gradient_checkpointing_enable()
        self.wrapped = wrap_model(model, cfg.strategy)
        self.module = model
        self.optimizer = AdamW(param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=cfg.betas, eps=cfg.eps)
        self.scheduler = get_cosine_schedule_with_warmup(self.optimizer, cfg.warmup_steps, cfg.max_steps, cfg.min_lr_rate)
        self.sampler = DistributedSampler(train_data, num_replicas=self.world, rank=self.rank, shuffle=True,
                                          seed=cfg.seed, drop_last=True)
        self.steps_per_epoch = len(self.sampler) // self.local_batch
        self.step, self.history, self.should_stop = 0, [], False
        self._epoch, self._order = -1, []
        manual_seed(cfg.seed * 1_000_003 + 7919 * self.rank + 1)  # per-rank dropout streams (module note)
        if cfg.resume and self.checkpoint_exists():
            self.load_checkpoint()

    # -- the loop --------------------------------------------------------------------------------------
    def _batch(self, step: int) -> tuple[Tensor, Tensor]:
        epoch, k = divmod(step, self.steps_per_epoch)
        if epoch != self._epoch:
            self.sampler.set_epoch(epoch)
            self._order, self._epoch = list(self.sampler), epoch
        return self.train_data.batch(self._order[k * self.local_batch:(k + 1) * self.local_batch])

    def _clip(self) -> float:
        params = list(self.module.parameters())
        max_norm = self.config.grad_clip if self.config.grad_clip is not None else math.inf
        clip = fsdp_clip_grad_norm_ if self.config.strategy == "fsdp" else clip_grad_norm_
        return float(clip(params, max_norm).item())

    def train_step(self) -> StepLog:
        """One optimizer step on the global batch of ``self.step``; returns its log."""
        t0, lr = time.perf_counter(), float(self.scheduler.get_last_lr()[0])
        x, y = self._batch(self.step)
        self.module.train()
        loss = self.loss_fn(self.wrapped(x), y)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = self._clip()
        self.optimizer.step()
        self.scheduler.step()
        mean_loss = float(_all_sum([loss.item()])[0]) / self.world
        seconds, tokens = time.perf_counter() - t0, x.numel()
        record_step(seconds, samples=int(x.shape[0]), tokens=int(tokens))
        self.step += 1
        return StepLog(self.step, mean_loss, lr, grad_norm, tokens * self.world / max(seconds, 1e-9), seconds)

    def train(self) -> list[StepLog]:
        """Run until ``config.max_steps`` (or ``should_stop``); returns the history (resumed part included)."""
        cfg = self.config
        saved_at = self.step if cfg.resume else -1
        while self.step < cfg.max_steps and not self.should_stop:
            log = self.train_step()
            last = self.step == cfg.max_steps
            if self.val_data is not None and cfg.eval_interval and (self.step % cfg.eval_interval == 0 or last):
                log.val_loss = self.evaluate()
            self.history.append(log)
            if cfg.out_dir and cfg.ckpt_interval and self.step % cfg.ckpt_interval == 0:
                self.save_checkpoint()
                saved_at = self.step
            for cb in self.callbacks:
                cb(self, log)
        if cfg.out_dir and saved_at != self.step:
            self.save_checkpoint()
        return self.history

    def evaluate(self) -> float:
        """Mean next-token loss over the first ``eval_batches`` global batches of val_data (all ranks)."""
        if self.val_data is None:
            raise ValueError("Trainer.evaluate: no val_data was given")
        n = len(self.val_data) // self.config.batch_size
        if self.config.eval_batches:
            n = min(n, self.config.eval_batches)
        mine = np.arange(n * self.config.batch_size)[self.rank::self.world]  # equal counts: B divides by world
        total, count = 0.0, 0
        self.module.eval()
        with no_grad():
            for i in range(0, len(mine), self.local_batch):
                x, y = self.val_data.batch(mine[i:i + self.local_batch])
                total += float(self.loss_fn(self.module(x), y).item()) * y.numel()
                count += y.numel()
        self.module.train()
        s = _all_sum([total, count])
        return float(s[0] / s[1])

    # -- checkpoints -----------------------------------------------------------------------------------
    def _ckpt_path(self, strategy: str | None = None) -> str:
        strategy = strategy or self.config.strategy
        return os.path.join(self.config.out_dir or ".", CKPT_DIR if strategy == "fsdp" else CKPT_FILE)

    def _existing_ckpt(self) -> str | None:
        path = self._ckpt_path()
        for p in (path, path + ".old"):  # .old: a crash came between the two renames of the sharded swap
            if os.path.exists(p):
                return p
        return None

    def checkpoint_exists(self) -> bool:
        """Whether ``out_dir`` holds a checkpoint of this strategy's format (raises on the other format)."""
        if self._existing_ckpt() is not None:
            return True
        other = self._ckpt_path("ddp" if self.config.strategy == "fsdp" else "fsdp")
        if os.path.exists(other):
            raise CheckpointError(f"resume: {other} was written by another strategy than {self.config.strategy!r}; "
                                  f"resume with the strategy that wrote it, or use another out_dir")
        return False

    def _state(self) -> dict:
        rngs: list = [get_rng_state()] * self.world
        if self.world > 1:
            dist.all_gather_object(rngs, get_rng_state())
        c = self.config
        return {"step": self.step, "world_size": self.world, "strategy": c.strategy, "seed": c.seed,
                "batch_size": c.batch_size, "max_steps": c.max_steps, "rng": rngs,
                "history": [[h.step, h.loss, h.lr, h.grad_norm, h.tokens_per_s, h.seconds, h.val_loss]
                            for h in self.history]}

    def save_checkpoint(self) -> str:
        """Write model, optimizer, scheduler, step, history and every rank's RNG state (a collective)."""
        state = self._state()
        path = self._ckpt_path()
        if self.config.strategy == "fsdp":
            tmp = path + ".tmp"
            if self.rank == 0:
                shutil.rmtree(tmp, ignore_errors=True)
            self._barrier()
            save_sharded_checkpoint(tmp, self.module, self.optimizer,
                                    extra={"trainer": state, "scheduler": self.scheduler.state_dict()})
            if self.rank == 0:  # swap in the complete directory (a crash leaves the old one or the new one)
                old = path + ".old"
                shutil.rmtree(old, ignore_errors=True)
                if os.path.exists(path):
                    os.rename(path, old)
                os.rename(tmp, path)
                shutil.rmtree(old, ignore_errors=True)
        elif self.rank == 0:
            os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
            save_checkpoint(path, model=self.module, optimizer=self.optimizer, scheduler=self.scheduler,
                            step=self.step, save_rng=False, trainer=state)
        self._barrier()
        logger.info("rank=%d saved the checkpoint of step %d to %s", self.rank, self.step, path)
        return path

    def load_checkpoint(self) -> None:
        """Restore everything :meth:`save_checkpoint` wrote; the next step continues exactly."""
        path = self._existing_ckpt()
        if path is None:
            raise CheckpointError(f"resume: no checkpoint at {self._ckpt_path()}; train without resume first")
        if self.config.strategy == "fsdp":
            extra = load_sharded_checkpoint(path, self.module, self.optimizer)
            state = extra["trainer"]
            self.scheduler.load_state_dict(extra["scheduler"])
        else:
            st = load_checkpoint(path, model=self.module, optimizer=self.optimizer, scheduler=self.scheduler,
                                 restore_rng=False)
            state = st["extra"]["trainer"]
        c = self.config
        for key in ("seed", "batch_size", "max_steps"):
            if state[key] != getattr(c, key):
                raise CheckpointError(f"resume: {path} was written with {key}={state[key]} but this run has {key}="
                                      f"{getattr(c, key)}; an exact continuation needs the same value")
        self.step = int(state["step"])
        self.history = [StepLog(int(h[0]), *h[1:6], val_loss=h[6]) for h in state["history"]]
        if state["world_size"] == self.world:
            set_rng_state(state["rng"][self.rank])
        else:  # the data order does not depend on the world size; only dropout streams change
            logger.warning("rank=%d resuming a %d-rank checkpoint on %d ranks: generator streams are reseeded",
                           self.rank, state["world_size"], self.world)
            manual_seed(c.seed * 1_000_003 + 7919 * self.rank + 1 + self.step)
        logger.info("rank=%d resumed from %s at step %d", self.rank, path, self.step)

    def _barrier(self) -> None:
        if self.world > 1:
            dist.barrier()

    # -- export ----------------------------------------------------------------------------------------
    def full_state_dict(self) -> dict:
        """The full (unsharded) state dict on rank 0, ``{}`` elsewhere (a collective under FSDP)."""
        if self.config.strategy == "fsdp":
            return get_model_state_dict(self.module, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        return self.module.state_dict() if self.rank == 0 else {}

    def save_pretrained(self, directory: str | os.PathLike) -> None:
        """Rank 0 writes the trained model with ``save_pretrained`` (a plain model, loadable by
        ``from_pretrained``); a collective."""
        if self.config.strategy == "fsdp":
            sd = self.full_state_dict()
            if self.rank == 0:
                rng = get_rng_state()  # building the plain model must not move the training streams
                plain = self.model_class(self.model_config)
                set_rng_state(rng)
                plain.load_state_dict(sd)
                plain.save_pretrained(directory)
        elif self.rank == 0:
            self.module.save_pretrained(directory)
        self._barrier()


def train(model: Module, train_data: TokenBlockDataset, val_data: TokenBlockDataset | None = None,
          config: TrainConfig | None = None, callbacks: Sequence[Callable[[Trainer, StepLog], Any]] = ()) -> list[StepLog]:
    """Build a :class:`Trainer` and run it; returns the history. Example::

        history = train(model, train_ds, val_ds, TrainConfig(strategy="fsdp", max_steps=200))
    """
    return Trainer(model, train_data, val_data, config, callbacks).train()

