"""Train a small GPT-2 on the King James Pentateuch, with DDP (default), FSDP or one process.

The main job of the README (`make run`)::

    OMP_NUM_THREADS=1 axonml-launch --standalone --nproc-per-node 2 examples/train_gpt.py

What it does: rank 0 trains a byte-level BPE tokenizer on `examples/data/kjv_pentateuch.txt`
(saved in `<out-dir>/tokenizer` and reused by later runs; the other ranks wait at a barrier
and load it); every rank tokenizes the corpus (the last 10% is validation), builds the same
GPT-2 from the same seed and trains it with `axonml.llm.train.Trainer`: AdamW, warmup +
cosine learning rate, gradient clipping, an evaluation every `--eval-interval` steps and a
checkpoint every `--ckpt-interval` steps (`--resume` continues from it exactly). Rank 0 shows
a progress bar with the loss and tokens/s, then writes `<out-dir>/loss_curve.png` (train and
validation loss), `<out-dir>/history.json` and the model (`<out-dir>/model`, a Hugging Face
`save_pretrained` folder with the tokenizer beside it), and prints a few seeded samples.

Expected: with the defaults (0.9M parameters: 4 layers, n_embd 128, block 128, vocabulary
1024, global batch 16, 900 steps, about 8 passes over the training tokens) two CPU processes
(OMP_NUM_THREADS=1 each) train for about 2.5 minutes on a quiet 2-core machine (measured:
144 s, 14,300 tokens/s; longer when the cores are shared). The training loss falls from
ln(1024) = 6.9 at the first step to about 2.5-2.7 (mean of the last 10 steps); the validation
loss ends near 3.4-3.5 (the held-out tail, Deuteronomy, reads a little differently from the
rest, and the small model starts to memorise its training text). The samples are
KJV-flavoured pseudo-verses.
Run alone (`python examples/train_gpt.py`) it is a world of one.

Flags: --strategy ddp|fsdp|none, --steps, --batch-size (global), --block-size, --n-layer,
--n-embd, --n-head, --dropout, --vocab-size, --lr, --warmup, --out-dir, --eval-interval,
--ckpt-interval, --resume, --metrics [PORT] (serve Prometheus metrics; the launcher's
--metrics-port does the same for every worker), --seed, --num-samples, --max-new-tokens.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time

import numpy as np
from tqdm import tqdm

import axonml as ax
import axonml.collectives as dist
from axonml.cluster.metrics import worker_metrics
from axonml.llm.bpe import GPT2Tokenizer, train_bpe
from axonml.llm.data import TokenBlockDataset, train_val_split
from axonml.llm.gpt2 import GPT2Config, GPT2LMHeadModel
from axonml.llm.train import StepLog, TrainConfig, Trainer

HERE = os.path.dirname(os.path.abspath(__file__))
CORPUS = os.path.join(HERE, "data", "kjv_pentateuch.txt")
PROMPTS = ("And God said", "In the beginning", "And Moses spake unto")


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--strategy", choices=("ddp", "fsdp", "none"), default="ddp")
    ap.add_argument("--steps", type=int, default=900)
    ap.add_argument("--batch-size", type=int, default=16, help="global batch (sequences per step, all ranks)")
    ap.add_argument("--block-size", type=int, default=128, help="context length in tokens")
    ap.add_argument("--n-layer", type=int, default=4)
    ap.add_argument("--n-embd", type=int, default=128)
    ap.add_argument("--n-head", type=int, default=4)
    ap.add_argument("--dropout", type=float, default=0.0)
    ap.add_argument("--vocab-size", type=int, default=1024, help="BPE vocabulary (256 bytes + merges + <|endoftext|>)")
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--warmup", type=int, default=20, help="warmup steps")
    ap.add_argument("--weight-decay", type=float, default=0.1)
    ap.add_argument("--out-dir", default=os.path.join("runs", "gpt"))
    ap.add_argument("--eval-interval", type=int, default=100)
    ap.add_argument("--eval-batches", type=int, default=8, help="global batches per evaluation")
    ap.add_argument("--ckpt-interval", type=int, default=300, help="0: a checkpoint only at the end")
    ap.add_argument("--resume", action="store_true", help="continue from the checkpoint in --out-dir when there is one")
    ap.add_argument("--metrics", type=int, nargs="?", const=0, default=None, metavar="PORT",
                    help="serve Prometheus metrics on PORT + local rank (no PORT: a free port) and print where")
    ap.add_argument("--gradient-checkpointing", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--num-samples", type=int, default=3, help="samples printed at the end")
    ap.add_argument("--max-new-tokens", type=int, default=48)
    return ap.parse_args()


def load_tokenizer(out_dir: str, vocab_size: int, rank: int) -> GPT2Tokenizer:
    """Rank 0 trains the BPE (or reuses the saved one of the same size); the others wait and load it."""
    tok_dir = os.path.join(out_dir, "tokenizer")
    if rank == 0:
        tok = None
        if os.path.isdir(tok_dir):
            tok = GPT2Tokenizer.from_pretrained(tok_dir)
            if len(tok) != vocab_size:
                print(f"{tok_dir} holds a {len(tok)}-token vocabulary, not {vocab_size}: training a new one")
                tok = None
        if tok is None:
            t0 = time.perf_counter()
            with open(CORPUS, encoding="utf-8") as f:
                tok = train_bpe([f.read()], vocab_size)
            tok.save_pretrained(tok_dir)
            print(f"trained a {len(tok)}-token BPE on {os.path.basename(CORPUS)} in {time.perf_counter() - t0:.1f} s "
                  f"-> {tok_dir}")
    if dist.get_world_size() > 1:
        dist.barrier()
    return tok if rank == 0 else GPT2Tokenizer.from_pretrained(tok_dir)


def plot(history: list[StepLog], path: str, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = np.array([h.step for h in history])
    loss = np.array([h.loss for h in history])
    smooth = np.empty_like(loss)  # exponential moving average of the noisy per-batch loss
    for i, v in enumerate(loss):
        smooth[i] = v if i == 0 else 0.9 * smooth[i - 1] + 0.1 * v
    val = [(h.step, h.val_loss) for h in history if h.val_loss is not None]
    fig, ax_ = plt.subplots(figsize=(7, 4.2))
    ax_.plot(steps, loss, color="tab:blue", alpha=0.3, lw=0.8, label="train (per batch)")
    ax_.plot(steps, smooth, color="tab:blue", lw=1.6, label="train (moving average)")
    if val:
        ax_.plot(*zip(*val), "o-", color="tab:orange", lw=1.6, label="validation")
    ax_.set_xlabel("step")
    ax_.set_ylabel("cross-entropy (nats per token)")
    ax_.set_title(title, fontsize=10)
    ax_.grid(alpha=0.3)
    ax_.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    args = parse_args()
    if args.metrics is not None and not os.environ.get("AXONML_METRICS_PORT"):
        local_rank = int(os.environ.get("LOCAL_RANK", "0") or 0)
        os.environ["AXONML_METRICS_PORT"] = str(args.metrics + local_rank if args.metrics else 0)
    dist.init_process_group(backend="auto")  # env:// under axonml-launch, a world of one otherwise
    rank, world = dist.get_rank(), dist.get_world_size()
    say = print if rank == 0 else (lambda *a, **k: None)
    if args.strategy == "none" and world > 1:
        raise SystemExit(f"--strategy none trains one process, but {world} were started; use ddp or fsdp")
    if args.batch_size % world:
        raise SystemExit(f"--batch-size {args.batch_size} must be divisible by the {world} processes")
    m = worker_metrics()
    if m is not None:
        print(f"rank {rank}: Prometheus metrics on http://{m.addr}:{m.port}/metrics", flush=True)
    os.makedirs(args.out_dir, exist_ok=True)

    tok = load_tokenizer(args.out_dir, args.vocab_size, rank)
    with open(CORPUS, encoding="utf-8") as f:
        ids = np.asarray(tok.encode(f.read()), dtype=np.int64)
    train_ids, val_ids = train_val_split(ids, 0.1)
    train_ds = TokenBlockDataset(train_ids, args.block_size)
    val_ds = TokenBlockDataset(val_ids, args.block_size)

    ax.manual_seed(args.seed)  # the same initial weights on every rank (FSDP needs it; DDP broadcasts rank 0's)
    config = GPT2Config(vocab_size=len(tok), n_positions=args.block_size, n_embd=args.n_embd, n_layer=args.n_layer,
                        n_head=args.n_head, resid_pdrop=args.dropout, embd_pdrop=args.dropout, attn_pdrop=args.dropout,
                        bos_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id)
    model = GPT2LMHeadModel(config)
    n_params = sum(p.numel() for p in model.parameters())
    cfg = TrainConfig(strategy=args.strategy, max_steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                      warmup_steps=min(args.warmup, args.steps), weight_decay=args.weight_decay,
                      eval_interval=args.eval_interval, eval_batches=args.eval_batches, ckpt_interval=args.ckpt_interval,
                      out_dir=args.out_dir, resume=args.resume, seed=args.seed,
                      gradient_checkpointing=args.gradient_checkpointing)
    say(f"GPT-2 with {n_params / 1e6:.2f}M parameters (n_layer {args.n_layer}, n_embd {args.n_embd}, n_head "
        f"{args.n_head}, vocabulary {len(tok)}), strategy {args.strategy} on {world} process(es); global batch "
        f"{args.batch_size} x {args.block_size} tokens; {len(train_ids):,} train / {len(val_ids):,} validation tokens")

    bar = tqdm(total=args.steps, desc="train", unit="step", disable=rank != 0, mininterval=1.0, dynamic_ncols=True)

    def progress(trainer: Trainer, log: StepLog) -> None:
        bar.update(1)
        bar.set_postfix(loss=f"{log.loss:.3f}", tok_s=f"{log.tokens_per_s:,.0f}", refresh=False)
        if log.val_loss is not None and rank == 0:
            bar.write(f"step {log.step:5d}  train loss {log.loss:.4f}  val loss {log.val_loss:.4f}  "
                      f"lr {log.lr:.2e}  {log.tokens_per_s:,.0f} tokens/s")

    t0 = time.perf_counter()
    trainer = Trainer(model, train_ds, val_ds, cfg, callbacks=[progress])
    if trainer.step:
        say(f"resumed from the checkpoint of step {trainer.step} in {args.out_dir}")
        bar.update(trainer.step)
    elif args.resume:  # resume-if-present, so an elastic restart and a first run share one command line
        say(f"--resume: no checkpoint in {args.out_dir} yet; starting from step 0")
    history = trainer.train()
    bar.close()
    elapsed = time.perf_counter() - t0
    model_dir = os.path.join(args.out_dir, "model")
    trainer.save_pretrained(model_dir)  # a collective under FSDP (gathers the shards)
    dist.destroy_process_group()
    if rank != 0:
        return

    tok.save_pretrained(model_dir)
    title = (f"GPT-2 {n_params / 1e6:.2f}M on the KJV Pentateuch: {args.strategy}, {world} process(es), "
             f"batch {args.batch_size}x{args.block_size}")
    plot(history, os.path.join(args.out_dir, "loss_curve.png"), title)
    with open(os.path.join(args.out_dir, "history.json"), "w") as f:
        json.dump([dataclasses.asdict(h) for h in history], f, indent=1)
    tail = history[-10:]
    vals = [h.val_loss for h in history if h.val_loss is not None]
    tps = float(np.median([h.tokens_per_s for h in history[1:] or history]))
    print(f"done: {len(history)} steps ({elapsed:.1f} s this run); train loss {history[0].loss:.3f} -> "
          f"{np.mean([h.loss for h in tail]):.3f} (mean of the last {len(tail)} steps)"
          + (f"; val loss {vals[-1]:.3f}" if vals else "") + f"; {tps:,.0f} tokens/s")
    print(f"wrote {os.path.join(args.out_dir, 'loss_curve.png')}, {os.path.join(args.out_dir, 'history.json')} and "
          f"{model_dir}")

    lm = GPT2LMHeadModel.from_pretrained(model_dir)  # the saved model, as a user would load it
    gen = ax.Generator().manual_seed(args.seed)
    for i in range(args.num_samples):
        prompt = PROMPTS[i % len(PROMPTS)]
        out = lm.generate(ax.tensor([tok.encode(prompt)]), max_new_tokens=args.max_new_tokens, do_sample=True,
                          temperature=0.8, top_k=40, generator=gen)
        text = tok.decode(out[0].numpy().tolist())
        print(f"--- sample {i + 1} ---\n{text.strip()}")


if __name__ == "__main__":
    main()
