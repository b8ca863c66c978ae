"""Optimizer set-up of the reference training loop: AdamW parameter groups (weight decay on
matrices only) and the warmup + cosine learning-rate schedule of transformers."""

from __future__ import annotations

import math
from typing import Any

from ..nn import Module
from ..optim.lr_scheduler import LambdaLR

__all__ = ["get_cosine_schedule_with_warmup", "param_groups"]


class _WarmupCosine:
    """lr factor: linear 0 -> 1 over ``warmup`` steps, then cosine 1 -> ``min_rate`` at ``total``
    (transformers' formula). A callable object, not a lambda, so that LambdaLR's state_dict
    saves its fields."""

    def __init__(self, warmup: int, total: int, min_rate: float) -> None:
        self.warmup, self.total, self.min_rate = int(warmup), int(total), float(min_rate)

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return step / max(1, self.warmup)
        progress = min(1.0, (step - self.warmup) / max(1, self.total - self.warmup))
        return self.min_rate + (1.0 - self.min_rate) * 0.5 * (1.0 + math.cos(math.pi * progress))


def get_cosine_schedule_with_warmup(optimizer: Any, num_warmup_steps: int, num_training_steps: int,
                                    min_lr_rate: float = 0.0, last_epoch: int = -1) -> LambdaLR:
    """Linear warmup from 0 to the optimizer's lr, then a half cosine down to ``min_lr_rate * lr``.

    The values of transformers' ``get_cosine_schedule_with_warmup`` (``min_lr_rate=0``) and
    ``get_cosine_with_min_lr_schedule_with_warmup(..., min_lr_rate=r)``; past
    ``num_training_steps`` the rate stays at the minimum.

    Example::

        sched = get_cosine_schedule_with_warmup(opt, num_warmup_steps=100, num_training_steps=1000, min_lr_rate=0.1)
        ... opt.step(); sched.step()
    """
    if num_warmup_steps < 0 or num_training_steps < 1:
        raise ValueError(f"get_cosine_schedule_with_warmup: need num_warmup_steps >= 0 and num_training_steps >= 1, got "
                         f"{num_warmup_steps} and {num_training_steps}")
    if not 0.0 <= min_lr_rate <= 1.0:
        raise ValueError(f"get_cosine_schedule_with_warmup: min_lr_rate must be in [0, 1], got {min_lr_rate}")
    return LambdaLR(optimizer, _WarmupCosine(num_warmup_steps, num_training_steps, min_lr_rate), last_epoch)



def param_groups(model: Module, weight_decay: float) -> list[dict]:
    """AdamW groups: weight decay on matrices (2+ dims: linear and embedding weights), none on
    biases and norm gains. Sharded FSDP parameters are judged by their global shape."""
    decay, no_decay = [], []
    for _, p in model.named_parameters():
        if not p.requires_grad:
            continue
        shape = getattr(p, "global_shape", p.shape)
        (decay if len(shape) >= 2 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
