"""The reference training loop (axonml.llm.train) and its token datasets, in one process.

Oracles: NumPy slicing for the datasets; transformers' schedule for the learning rate; and a
PyTorch + transformers training loop (the same GPT-2 weights, data order, AdamW groups,
schedule and clipping) for the loss and gradient-norm sequence of ``Trainer``. The
multi-process strategies (ddp, fsdp) are in tests/multiprocess/test_llm_training.py.
"""

import dataclasses
import os

import numpy as np
import pytest

import axonml as ax
from axonml import nn
from axonml.errors import CheckpointError, ShapeError
from axonml.llm.data import TokenBlockDataset, train_val_split
from axonml.llm.train import (
    TrainConfig,
    Trainer,
    get_cosine_schedule_with_warmup,
    param_groups,
    wrap_model,
)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CORPUS = os.path.join(ROOT, "examples", "data", "kjv_pentateuch.txt")
BLOCK, BATCH = 16, 4


def corpus_bytes(n: int = 60_000) -> np.ndarray:
    """The first n bytes of the bundled corpus as token ids (a byte-level vocabulary of 256)."""
    with open(CORPUS, "rb") as f:
        return np.frombuffer(f.read(n), dtype=np.uint8).astype(np.int64)


def tiny_gpt(seed: int = 0):
    from axonml.llm.gpt2 import GPT2Config, GPT2LMHeadModel

    ax.manual_seed(seed)
    cfg = GPT2Config(vocab_size=256, n_positions=BLOCK, n_embd=32, n_layer=2, n_head=2,
                     resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=None, eos_token_id=None)
    return GPT2LMHeadModel(cfg)


def datasets():
    tr, va = train_val_split(corpus_bytes(), 0.2)
    return TokenBlockDataset(tr, BLOCK), TokenBlockDataset(va, BLOCK)


# -- datasets -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("stride", [None, 3, 16])
def test_blocks_are_the_slices_of_the_stream(stride):
    ids = np.random.default_rng(0).integers(0, 1000, 203)
    ds = TokenBlockDataset(ids, 16, stride=stride)
    s = 16 if stride is None else stride
    assert len(ds) == (203 - 1 - 16) // s + 1
    for i in (0, 1, len(ds) - 1, -1):
        x, y = ds[i]
        start = (i % len(ds)) * s
        np.testing.assert_array_equal(x.numpy(), ids[start:start + 16])
        np.testing.assert_array_equal(y.numpy(), ids[start + 1:start + 17])
        assert x.dtype == ax.int64
    idx = [3, 0, len(ds) - 1]
    xb, yb = ds.batch(idx)
    np.testing.assert_array_equal(xb.numpy(), np.stack([ds[i][0].numpy() for i in idx]))
    np.testing.assert_array_equal(yb.numpy(), np.stack([ds[i][1].numpy() for i in idx]))
    assert len(ds) * s + 16 <= 203 - 1 + s  # the last block's target still lies inside the stream


def test_dataset_errors_name_the_values():
    with pytest.raises(ShapeError, match=r"1-D.*\(2, 5\)"):
        TokenBlockDataset(np.zeros((2, 5), dtype=np.int64), 4)
    with pytest.raises(TypeError, match="integers.*float"):
        TokenBlockDataset(np.zeros(10), 4)
    with pytest.raises(ValueError, match="10 tokens cannot fill one block of 10"):
        TokenBlockDataset(np.arange(10), 10)
    with pytest.raises(ValueError, match="block_size must be a positive int, got 0"):
        TokenBlockDataset(np.arange(10), 0)
    ds = TokenBlockDataset(np.arange(10), 4)
    with pytest.raises(IndexError, match="block index 7 is out of range for 2 blocks"):
        ds.batch([0, 7])


def test_train_val_split_is_the_tail_and_deterministic():
    ids = np.arange(1000)
    tr, va = train_val_split(ids, 0.1)
    np.testing.assert_array_equal(np.concatenate([tr, va]), ids)
    assert len(va) == 100 and va[0] == 900
    tr2, _ = train_val_split(list(ids), 0.1)
    np.testing.assert_array_equal(tr, tr2)
    with pytest.raises(ValueError, match=r"val_fraction must be in \[0, 1\), got 1.0"):
        train_val_split(ids, 1.0)


# -- configuration, wrapping, schedule ----------------------------------------------------------------


def test_wrap_model_errors():
    with pytest.raises(ValueError, match=r"unknown strategy 'zero3'.*\('none', 'ddp', 'fsdp'\)"):
        wrap_model(nn.Linear(2, 2), "zero3")
    with pytest.raises(TypeError, match="has no 'blocks'"):
        wrap_model(nn.Linear(2, 2), "fsdp")
    with pytest.raises(RuntimeError, match="init_process_group"):
        wrap_model(nn.Linear(2, 2), "ddp")
    with pytest.raises(TypeError, match="axonml.nn.Module"):
        wrap_model("model", "none")
    m = nn.Linear(2, 2)
    assert wrap_model(m, "none") is m


@pytest.mark.parametrize("kwargs, match", [
    ({"strategy": "deepspeed"}, "unknown strategy 'deepspeed'"),
    ({"batch_size": 0}, "batch_size must be a positive int, got 0"),
    ({"ckpt_interval": 5}, "need out_dir"),
    ({"resume": True}, "need out_dir"),
    ({"grad_clip": -1.0}, "grad_clip must be positive"),
    ({"min_lr_rate": 2.0}, "min_lr_rate"),
])
def test_train_config_validates(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TrainConfig(**kwargs)


@pytest.mark.parametrize("warmup, total, rate", [(10, 50, 0.1), (0, 20, 0.0), (5, 6, 0.5)])
def test_schedule_matches_transformers(warmup, total, rate):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    p = torch.nn.Parameter(torch.zeros(1))
    topt = torch.optim.AdamW([p], lr=0.3)
    tsched = transformers.get_cosine_with_min_lr_schedule_with_warmup(topt, warmup, total, min_lr_rate=rate)
    opt = ax.optim.AdamW([ax.nn.Parameter(ax.zeros(1))], lr=0.3)
    sched = get_cosine_schedule_with_warmup(opt, warmup, total, min_lr_rate=rate)
    for _ in range(total):
        assert sched.get_last_lr()[0] == pytest.approx(tsched.get_last_lr()[0], rel=1e-12, abs=1e-15)
        topt.step(), tsched.step(), opt.step(), sched.step()


def test_param_groups_decay_matrices_only():
    model = tiny_gpt()
    decay, no_decay = param_groups(model, 0.1)
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert all(p.ndim >= 2 for p in decay["params"]) and all(p.ndim < 2 for p in no_decay["params"])
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))
    # the tied head is the token embedding: decayed once
    assert sum(p is model.transformer.wte.weight for p in decay["params"]) == 1


# -- the loop -------------------------------------------------------------------------------------------


def torch_reference(model, train_ds, cfg: TrainConfig, tmp_path) -> tuple[list, list]:
    """The same training in PyTorch + transformers: losses and pre-clip gradient norms per step."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    model.save_pretrained(tmp_path / "init")
    hf = transformers.GPT2LMHeadModel.from_pretrained(tmp_path / "init", attn_implementation="eager")
    hf.train()
    params = [p for p in hf.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.ndim >= 2], "weight_decay": cfg.weight_decay},
              {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}]
    opt = torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps)
    sched = transformers.get_cosine_with_min_lr_schedule_with_warmup(opt, cfg.warmup_steps, cfg.max_steps,
                                                                     min_lr_rate=cfg.min_lr_rate)
    ids, n, per_epoch = train_ds.ids, len(train_ds), len(train_ds) // cfg.batch_size
    losses, norms = [], []
    for step in range(cfg.max_steps):
        epoch, k = divmod(step, per_epoch)
        # DistributedSampler(shuffle=True, seed) of a world of one: NumPy's PCG64 seeded with seed + epoch
        perm = np.random.Generator(np.random.PCG64(cfg.seed + epoch)).permutation(n)
        starts = perm[k * cfg.batch_size:(k + 1) * cfg.batch_size] * BLOCK
        pos = starts[:, None] + np.arange(BLOCK)
        x, y = torch.tensor(ids[pos]), torch.tensor(ids[pos + 1])
        logits = hf(x).logits
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
        opt.zero_grad()
        loss.backward()
        norms.append(float(torch.nn.utils.clip_grad_norm_(hf.parameters(), cfg.grad_clip)))
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
    return losses, norms


def test_trainer_matches_a_pytorch_loop(tmp_path):
    train_ds, val_ds = datasets()
    cfg = TrainConfig(strategy="none", max_steps=12, batch_size=BATCH, lr=3e-3, warmup_steps=3, min_lr_rate=0.1,
                      grad_clip=0.5, eval_interval=0, seed=3)
    model = tiny_gpt()
    ref_losses, ref_norms = torch_reference(model, train_ds, cfg, tmp_path)
    history = Trainer(model, train_ds, val_ds, cfg).train()
    assert [h.step for h in history] == list(range(1, 13))
    np.testing.assert_allclose([h.loss for h in history], ref_losses, rtol=2e-5)
    np.testing.assert_allclose([h.grad_norm for h in history], ref_norms, rtol=2e-4)
    assert history[-1].loss < history[0].loss - 0.5  # it learns (ln 256 = 5.55 at the start)
    assert all(h.tokens_per_s > 0 and h.val_loss is None for h in history)


def test_evaluate_is_the_mean_loss_over_the_first_val_batches():
    train_ds, val_ds = datasets()
    cfg = TrainConfig(strategy="none", max_steps=2, batch_size=BATCH, eval_interval=2, eval_batches=3)
    model = tiny_gpt()
    trainer = Trainer(model, train_ds, val_ds, cfg)
    history = trainer.train()
    assert history[0].val_loss is None and history[1].val_loss is not None
    with ax.no_grad():
        x, y = val_ds.batch(np.arange(3 * BATCH))
        logits = model(x).logits.numpy().astype(np.float64)
    logp = logits - logits.max(-1, keepdims=True)
    logp -= np.log(np.exp(logp).sum(-1, keepdims=True))
    want = -np.take_along_axis(logp, y.numpy()[..., None], -1).mean()
    assert history[1].val_loss == pytest.approx(want, rel=1e-5)
    assert trainer.evaluate() == pytest.approx(want, rel=1e-5)


def test_checkpoint_resume_continues_exactly(tmp_path):
    train_ds, val_ds = datasets()
    base = TrainConfig(strategy="none", max_steps=9, batch_size=BATCH, lr=3e-3, warmup_steps=2, eval_interval=3,
                       eval_batches=1, seed=1)
    full = Trainer(tiny_gpt(), train_ds, val_ds, base).train()

    class Crash(Exception):
        pass

    def crash_at_5(trainer, log):
        if log.step == 5:
            raise Crash

    cfg = dataclasses.replace(base, out_dir=str(tmp_path / "run"), ckpt_interval=4)
    with pytest.raises(Crash):
        Trainer(tiny_gpt(), train_ds, val_ds, cfg, callbacks=[crash_at_5]).train()
    resumed = Trainer(tiny_gpt(seed=99), train_ds, val_ds, dataclasses.replace(cfg, resume=True))
    assert resumed.step == 4 and len(resumed.history) == 4
    history = resumed.train()
    assert [h.step for h in history] == list(range(1, 10))
    for a, b in zip(history, full):
        assert a.loss == b.loss and a.lr == b.lr and a.grad_norm == b.grad_norm and a.val_loss == b.val_loss, (a, b)
    # resuming a finished run does nothing more; other settings are refused
    again = Trainer(tiny_gpt(), train_ds, val_ds, dataclasses.replace(cfg, resume=True))
    assert again.step == 9 and again.train()[-1].loss == full[-1].loss
    with pytest.raises(CheckpointError, match="batch_size=4 but this run has batch_size=8"):
        Trainer(tiny_gpt(), train_ds, val_ds, dataclasses.replace(cfg, resume=True, batch_size=8))
    with pytest.raises(CheckpointError, match="another strategy than 'fsdp'"):
        Trainer(tiny_gpt(), train_ds, val_ds, dataclasses.replace(cfg, resume=True, strategy="fsdp"))


def test_trainer_input_errors():
    train_ds, val_ds = datasets()
    small = TokenBlockDataset(np.arange(40), BLOCK)
    with pytest.raises(ValueError, match="train_data has 2 blocks, fewer than one global batch of 4"):
        Trainer(tiny_gpt(), small, None, TrainConfig(strategy="none", batch_size=4))
    with pytest.raises(ValueError, match="val_data has 2 blocks"):
        Trainer(tiny_gpt(), train_ds, small, TrainConfig(strategy="none", batch_size=4))
    with pytest.raises(TypeError, match="TokenBlockDataset"):
        Trainer(tiny_gpt(), list(range(10)), None, TrainConfig(strategy="none", batch_size=4))



def test_steps_feed_the_prometheus_exporter():
    import urllib.request

    from axonml.cluster import metrics

    train_ds, _ = datasets()
    m = metrics.start_worker_metrics(0)
    try:
        Trainer(tiny_gpt(), train_ds, None, TrainConfig(strategy="none", max_steps=3, batch_size=BATCH)).train()
        assert m.steps == 3
        text = urllib.request.urlopen(f"http://127.0.0.1:{m.port}/metrics", timeout=10).read().decode()
    finally:
        metrics.stop_worker_metrics()
    tokens = [line for line in text.splitlines() if line.startswith("axonml_tokens_total")]
    samples = [line for line in text.splitlines() if line.startswith("axonml_samples_total")]
    assert len(tokens) == 1 and float(tokens[0].split()[-1]) == 3 * BATCH * BLOCK, tokens
    assert len(samples) == 1 and float(samples[0].split()[-1]) == 3 * BATCH, samples


def test_gradient_checkpointing_gives_the_same_training():
    train_ds, _ = datasets()
    cfg = TrainConfig(strategy="none", max_steps=4, batch_size=BATCH, lr=3e-3, warmup_steps=0)
    plain = Trainer(tiny_gpt(), train_ds, None, cfg).train()
    ckpt_trainer = Trainer(tiny_gpt(), train_ds, None, dataclasses.replace(cfg, gradient_checkpointing=True))
    assert ckpt_trainer.module.is_gradient_checkpointing
    recomputed = ckpt_trainer.train()
    np.testing.assert_allclose([h.loss for h in recomputed], [h.loss for h in plain], rtol=1e-6)
    np.testing.assert_allclose([h.grad_norm for h in recomputed], [h.grad_norm for h in plain], rtol=1e-5)
