"""Rank bodies of tests/multiprocess/test_llm_training.py: a tiny GPT-2 trained on the bundled
corpus (byte-level tokens) with the reference loop of axonml.llm.train.

One spawn runs everything (DESIGN.md section 5): for ddp and for fsdp, an uninterrupted run,
a run that crashes after its checkpoint, and its resumption. Values come back as plain
lists and NumPy arrays; the parent compares them with each other and with a single-process
("none") run of the same global batches.
"""

from __future__ import annotations

import dataclasses
import os
import shutil

import numpy as np

import axonml as ax
from axonml.llm.data import TokenBlockDataset, train_val_split
from axonml.llm.gpt2 import GPT2Config, GPT2LMHeadModel
from axonml.llm.train import CKPT_FILE, StepLog, TrainConfig, Trainer

CORPUS = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "examples", "data",
                      "kjv_pentateuch.txt")
BLOCK, BATCH, STEPS = 32, 8, 60
CKPT, CRASH = 20, 30  # the interrupted run checkpoints at step 20 and dies after step 30
BASE = TrainConfig(strategy="ddp", max_steps=STEPS, batch_size=BATCH, lr=3e-3, warmup_steps=5, min_lr_rate=0.1,
                   grad_clip=1.0, eval_interval=20, eval_batches=2, seed=0)


def datasets(n_bytes: int = 200_000) -> tuple[TokenBlockDataset, TokenBlockDataset]:
    """Byte-level token ids (vocabulary 256) of the corpus's first ``n_bytes``; the last 10% validates."""
    with open(CORPUS, "rb") as f:
        ids = np.frombuffer(f.read(n_bytes), dtype=np.uint8).astype(np.int64)
    tr, va = train_val_split(ids, 0.1)
    return TokenBlockDataset(tr, BLOCK), TokenBlockDataset(va, BLOCK)


def tiny_gpt(seed: int = 0) -> GPT2LMHeadModel:
    ax.manual_seed(seed)
    cfg = GPT2Config(vocab_size=256, n_positions=BLOCK, n_embd=32, n_layer=2, n_head=2, resid_pdrop=0.0,
                     embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=None, eos_token_id=None)
    return GPT2LMHeadModel(cfg)


def rows(history: list[StepLog]) -> list[tuple]:
    return [(h.step, h.loss, h.lr, h.grad_norm, h.val_loss) for h in history]


def full_params(trainer: Trainer) -> dict[str, np.ndarray]:
    """Rank 0: the full parameters by name (a collective under FSDP); other ranks: {}."""
    return {k: v.numpy() for k, v in trainer.full_state_dict().items()}


class Crash(Exception):
    """Raised by a callback on every rank at the same step: a job killed after that step."""


def _crash_after(step: int):
    def callback(trainer: Trainer, log: StepLog) -> None:
        if log.step == step:
            raise Crash(f"simulated failure after step {step}")
    return callback


def everything(rank: int, world: int, tmp: str) -> dict:
    train, val = datasets()
    out: dict = {}
    try:
        Trainer(tiny_gpt(), train, val, dataclasses.replace(BASE, batch_size=7))
        out["odd_batch_error"] = None
    except ValueError as e:
        out["odd_batch_error"] = str(e)
    for strategy in ("ddp", "fsdp"):
        cfg = dataclasses.replace(BASE, strategy=strategy)
        trainer = Trainer(tiny_gpt(), train, val, cfg)
        res = {"history": rows(trainer.train()), "params": full_params(trainer)}
        # a run that checkpoints at CKPT and dies at CRASH, then a fresh model resumed from the checkpoint
        run_dir = os.path.join(tmp, strategy)
        cfg_ckpt = dataclasses.replace(cfg, out_dir=run_dir, ckpt_interval=CKPT)
        try:
            Trainer(tiny_gpt(), train, val, cfg_ckpt, callbacks=[_crash_after(CRASH)]).train()
            raise AssertionError("the callback did not stop the run")
        except Crash:
            pass
        if strategy == "ddp" and rank == 0:  # kept for the parent: resumed there by one process
            shutil.copy(os.path.join(run_dir, CKPT_FILE), os.path.join(tmp, "ddp_step20.safetensors"))
        resumed = Trainer(tiny_gpt(seed=123), train, val, dataclasses.replace(cfg_ckpt, resume=True))
        res["resumed_from"] = resumed.step
        res["resumed"] = rows(resumed.train())
        res["resumed_params"] = full_params(resumed)
        resumed.save_pretrained(os.path.join(tmp, f"{strategy}_model"))
        out[strategy] = res
    return out
