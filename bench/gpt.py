"""GPT-2 benchmark: training tokens/s, DDP tokens/s and generation tokens/s, AxonML vs PyTorch.

Run: OMP_NUM_THREADS=1 python bench/gpt.py [--quick] [--iters 20] [--gen-iters 20] [--profile]

Protocol (issue 8), on CPU, one BLAS thread per process:

1. Training (one process): a small GPT-2 (vocab 2048, 4 layers, width 256, 4 heads, sequence
   128, batch 8, dropout 0), a step = zero_grad, forward with labels, backward, AdamW step.
   AxonML's ``GPT2LMHeadModel`` against two PyTorch peers with the same weights: transformers'
   ``GPT2LMHeadModel`` (SDPA attention), loaded from the folder AxonML's ``save_pretrained``
   wrote, and a nanoGPT-style twin (bench/gpt_torch.py). Like for like: before timing, the
   three models' logits must agree to 1e-5 (relative to the largest) and the losses of their
   first two steps on the same batch to rtol 1e-5. Samples are interleaved (medians, p95).
2. DDP (two rank processes): AxonML DDP (tcp backend) against PyTorch DDP (gloo) on both
   peers, per-rank batch 8 (weak scaling, a different batch per rank; the same checks per
   rank); a barrier before each sample; the step time of an iteration is the slower
   rank's; global tokens/s = 2 * 8 * 128 / step time.
3. Generation (one process): batch 1, greedy, 256 new tokens after a 16-token prompt
   (n_positions 512, otherwise the training model): AxonML with the KV cache, without it,
   and transformers' ``generate`` with its cache. The prompt's logits must agree with
   transformers'; the generated tokens are compared and the agreeing prefix reported.

Goals: AxonML training tokens/s >= 0.8x each PyTorch peer; KV-cached generation >= 3x
uncached. Ratios are AxonML / peer in tokens/s (higher is better). Writes
bench/results/gpt.json; ``--quick`` (batch 2, seq 64, 32 new tokens, 3 samples: a smoke
run of about a minute) and runs with ``--skip`` write gpt_quick.json instead. ``--profile``
adds a cProfile of the AxonML training step (own time per function) to the output.
A full run takes about 4 minutes on 2 quiet cores (the uncached generations dominate).

``--device cuda`` (a lent GPU machine): the same training and generation parts on one GPU, AxonML
on CuPy against PyTorch CUDA, every timed call ending in a device synchronisation of both
frameworks; the DDP part is skipped (it needs one GPU per rank). Writes gpt_cuda.json.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import statistics
import sys
import tempfile
import time
from typing import Any, Callable

os.environ.setdefault("OMP_NUM_THREADS", "1")
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import numpy as np  # noqa: E402
from common import _summary, free_port, interleaved_samples, read_rank_results, train_step, write_results  # noqa: E402

MODEL = dict(vocab_size=2048, n_positions=128, n_embd=256, n_layer=4, n_head=4,
             resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
BATCH, SEQ, WORLD = 8, 128, 2  # --quick: batch 2, seq 64
PROMPT, NEW_TOKENS, GEN_POSITIONS = 16, 256, 512
LR, WEIGHT_DECAY = 1e-4, 0.01
GOALS = {"train_tokens_per_s_ratio_min": 0.8, "kv_cache_speedup_min": 3.0}
TRAINERS = ("axonml", "transformers", "twin")
DEVICE = "cpu"  # --device


def _synced(fn: Callable[[], Any]) -> Callable[[], Any]:
    """``fn`` followed by a synchronisation of both frameworks' device work (timing on a GPU)."""
    if DEVICE == "cpu":
        return fn
    import torch

    import axonml as ax

    dev = ax.Device(DEVICE)

    def run() -> Any:
        out = fn()
        torch.cuda.synchronize()
        dev.synchronize()
        return out

    return run


def _host(t: Any) -> np.ndarray:
    """A torch tensor's values as a NumPy array, wherever it lives."""
    return t.detach().cpu().numpy()


def _config(**over: Any) -> Any:
    from axonml.llm.gpt2 import GPT2Config

    # no bos/eos: every generate() call of the benchmark makes all its new tokens
    return GPT2Config(**{**MODEL, "bos_token_id": None, "eos_token_id": None, **over})


def _axonml_model(seed: int, **over: Any) -> Any:
    import axonml as ax
    from axonml.llm.gpt2 import GPT2LMHeadModel

    ax.manual_seed(seed)
    return GPT2LMHeadModel(_config(**over))


def _batch(seed: int, batch: int, seq: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, MODEL["vocab_size"], (batch, seq), dtype=np.int64)


def interleave(fns: dict[str, Callable[[], Any]], iters: int, warmup: int) -> dict[str, dict]:
    """Time several functions with interleaved samples (a, b, c, a, b, c, ...); summaries by name."""
    return {name: _summary(s) for name, s in interleaved_samples(fns, iters, warmup).items()}


def row(name: str, tokens: int, ours: dict, peer: dict) -> dict:
    """A result row: step times (ms) and tokens/s of both sides; ratio = ours/peer tokens/s (higher is better)."""
    r = {
        "name": name,
        "unit": "tokens/s",
        "tokens_per_sample": tokens,
        "axonml_tokens_per_s": tokens / ours["median_s"],
        "peer_tokens_per_s": tokens / peer["median_s"],
        "axonml_median_ms": ours["median_s"] * 1e3,
        "axonml_p95_ms": ours["p95_s"] * 1e3,
        "peer_median_ms": peer["median_s"] * 1e3,
        "peer_p95_ms": peer["p95_s"] * 1e3,
        "ratio": peer["median_s"] / ours["median_s"],
    }
    print(f"{name:<58} axonml {r['axonml_tokens_per_s']:9.0f} tok/s ({r['axonml_median_ms']:8.1f} ms, p95 "
          f"{r['axonml_p95_ms']:8.1f})  peer {r['peer_tokens_per_s']:9.0f} tok/s ({r['peer_median_ms']:8.1f} ms)  "
          f"ratio {r['ratio']:5.2f}x")
    return r


# ---------------------------------------------------------------- training steps


def build_trainers(pretrained: str, ids: np.ndarray, ddp: bool = False) -> dict[str, Callable[[], Any]]:
    """One step function per framework, all from the weights in ``pretrained``; each returns the loss."""
    import torch
    from gpt_torch import TwinGPT2, hf_from_pretrained

    import axonml as ax
    from axonml.llm.gpt2 import GPT2LMHeadModel

    am = GPT2LMHeadModel.from_pretrained(pretrained)
    hf = hf_from_pretrained(pretrained)
    twin = TwinGPT2(**{k: MODEL[k] for k in ("vocab_size", "n_positions", "n_embd", "n_layer", "n_head")})
    twin.load_axonml_state(am.state_dict())
    for m in (am, hf, twin):
        m.to(DEVICE)
    a_ids, t_ids = ax.tensor(ids, device=DEVICE), torch.from_numpy(ids).to(DEVICE)
    check_logits(am, hf, twin, a_ids, t_ids)
    for m in (am, hf, twin):
        m.train()
    if ddp:
        from axonml.ddp import DistributedDataParallel

        am = DistributedDataParallel(am)
        hf = torch.nn.parallel.DistributedDataParallel(hf)
        twin = torch.nn.parallel.DistributedDataParallel(twin)
    a_opt = ax.optim.AdamW(am.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)
    h_opt = torch.optim.AdamW(hf.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)
    t_opt = torch.optim.AdamW(twin.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)

    return {
        "axonml": _synced(train_step(a_opt, lambda: am(a_ids, labels=a_ids).loss)),
        "transformers": _synced(train_step(h_opt, lambda: hf(t_ids, labels=t_ids).loss)),
        "twin": _synced(train_step(t_opt, lambda: twin(t_ids, t_ids))),
    }


def check_logits(am: Any, hf: Any, twin: Any, a_ids: Any, t_ids: Any) -> None:
    """The three models' logits must agree to float32 rounding (max |diff| <= 1e-5 * max |logit|).

    Losses alone cannot tell: at GPT-2's initial scale, replacing the tanh GELU by the erf
    GELU moves the loss by 2e-7 (relative) but the logits by 1e-4, which this catches.
    """
    import torch

    import axonml as ax

    with torch.no_grad(), ax.no_grad():
        ref = am(a_ids).logits.numpy()
        peers = {"transformers": _host(hf(t_ids).logits), "twin": _host(twin.logits(t_ids))}
    scale = float(np.abs(ref).max())
    for name, got in peers.items():
        err = float(np.abs(got - ref).max()) / scale
        if got.shape != ref.shape or err > 1e-5:
            raise SystemExit(f"logits of {name} {got.shape} differ from axonml's {ref.shape} by {err:.3g} (relative to "
                             f"max |logit| {scale:.3g}; limit 1e-5): the models are not the same, timings would not compare")


def check_losses(steps: dict[str, Callable[[], Any]], where: str) -> dict[str, list[float]]:
    """Run two steps of each (same batch): the losses before and after one AdamW step must agree."""
    losses = {name: [float(fn().item()) for _ in range(2)] for name, fn in steps.items()}
    ref = losses["axonml"]
    rtol = 1e-5 if DEVICE == "cpu" else 1e-4  # GPU kernels sum in other orders (cuBLAS, atomics)
    for name, got in losses.items():
        if not (np.isclose(got[0], ref[0], rtol=rtol, atol=0) and np.isclose(got[1], ref[1], rtol=rtol, atol=0)):
            raise SystemExit(f"{where}: losses of the first two steps disagree, {name} {got} vs axonml {ref}; "
                             "the frameworks do not compute the same model, so timings would not compare")
    return losses


def bench_training(pretrained: str, batch: int, seq: int, iters: int, warmup: int) -> tuple[list, dict]:
    steps = build_trainers(pretrained, _batch(1, batch, seq))
    losses = check_losses(steps, "training")
    s = interleave(steps, iters, warmup)
    tokens = batch * seq
    shape = f"GPT-2 4x256 vocab 2048, seq {seq}, batch {batch}"
    rows = [row(f"train {shape}: axonml vs transformers", tokens, s["axonml"], s["transformers"]),
            row(f"train {shape}: axonml vs torch twin", tokens, s["axonml"], s["twin"])]
    return rows, {"first_two_losses": losses}


# ---------------------------------------------------------------- DDP


def rank_main(rank: int, port_ax: int, port_torch: int, pretrained: str, batch: int, seq: int, iters: int, warmup: int,
              out: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(WORLD), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port_ax))
    import torch
    import torch.distributed as tdist

    import axonml.collectives as dist

    torch.set_num_threads(1)
    dist.init_process_group("tcp", timeout=300)
    tdist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port_torch}", rank=rank, world_size=WORLD)
    steps = build_trainers(pretrained, _batch(100 + rank, batch, seq), ddp=True)
    losses = check_losses(steps, f"DDP rank {rank}")
    samples = interleaved_samples(steps, iters, warmup, before=dist.barrier)
    with open(out, "w") as f:
        json.dump({"losses": losses, "samples": samples}, f)
    tdist.destroy_process_group()
    dist.destroy_process_group()


def bench_ddp(pretrained: str, batch: int, seq: int, iters: int, warmup: int) -> tuple[list, dict]:
    import multiprocessing as mp

    tmp = tempfile.mkdtemp(prefix="axonml-bench-gpt-")
    outs = [os.path.join(tmp, f"rank{r}.json") for r in range(WORLD)]
    ctx = mp.get_context("spawn")
    ports = (free_port(), free_port())
    procs = [ctx.Process(target=rank_main, args=(r, *ports, pretrained, batch, seq, iters, warmup, outs[r]))
             for r in range(WORLD)]
    for p in procs:
        p.start()
    deadline = time.monotonic() + 1200
    for p in procs:
        p.join(max(1.0, deadline - time.monotonic()))
    if any(p.exitcode != 0 for p in procs):
        for p in procs:
            if p.is_alive():
                p.kill()
        raise SystemExit(f"DDP: a rank failed or hung: exit codes {[p.exitcode for p in procs]}")
    per_rank = read_rank_results(outs, tmp)
    # an iteration lasts as long as its slower rank
    s = {name: _summary([max(pr["samples"][name][i] for pr in per_rank) for i in range(iters)]) for name in TRAINERS}
    tokens = WORLD * batch * seq
    shape = f"GPT-2 4x256, seq {seq}, {WORLD} ranks x batch {batch}"
    rows = [row(f"DDP {shape}: axonml tcp vs transformers gloo", tokens, s["axonml"], s["transformers"]),
            row(f"DDP {shape}: axonml tcp vs torch twin gloo", tokens, s["axonml"], s["twin"])]
    extra = {"per_rank_median_ms": {name: [statistics.median(pr["samples"][name]) * 1e3 for pr in per_rank]
                                    for name in TRAINERS},
             "first_two_losses_per_rank": [pr["losses"] for pr in per_rank]}
    return rows, extra


# ---------------------------------------------------------------- generation


def bench_generation(tmp: str, new_tokens: int, iters: int, warmup: int) -> tuple[list, dict]:
    import torch
    from gpt_torch import hf_from_pretrained

    import axonml as ax

    gm = _axonml_model(2, n_positions=GEN_POSITIONS)
    gm.eval()
    path = os.path.join(tmp, "gen")
    gm.save_pretrained(path)
    hf = hf_from_pretrained(path).eval().to(DEVICE)
    gm.to(DEVICE)
    prompt = _batch(3, 1, PROMPT)
    a_prompt, t_prompt = ax.tensor(prompt, device=DEVICE), torch.from_numpy(prompt).to(DEVICE)

    with ax.no_grad(), torch.no_grad():
        a_logits = gm(a_prompt).logits.numpy()
        t_logits = _host(hf(t_prompt).logits)
    err = float(np.abs(a_logits - t_logits).max()) / float(np.abs(t_logits).max())
    if a_logits.shape != t_logits.shape or err > 1e-5:
        raise SystemExit(f"generation: prompt logits differ from transformers' by {err:.3g} relative to the largest "
                         "(limit 1e-5); the models are not the same")

    def ax_gen(use_cache: bool) -> Callable[[], np.ndarray]:
        return lambda: gm.generate(a_prompt, max_new_tokens=new_tokens, do_sample=False, use_cache=use_cache,
                                   eos_token_id=[]).numpy()

    def hf_gen() -> np.ndarray:
        with torch.no_grad():
            return _host(hf.generate(t_prompt, max_new_tokens=new_tokens, do_sample=False, use_cache=True, pad_token_id=0))

    fns = {"cached": _synced(ax_gen(True)), "uncached": _synced(ax_gen(False)), "transformers": _synced(hf_gen)}
    outs = {name: fn() for name, fn in fns.items()}
    for name, out in outs.items():
        if out.shape != (1, PROMPT + new_tokens):
            raise SystemExit(f"generation: {name} returned shape {out.shape}, expected {(1, PROMPT + new_tokens)}")
    agree = {f"{a}_vs_{b}": _common_prefix(outs[a][0, PROMPT:], outs[b][0, PROMPT:])
             for a, b in (("cached", "uncached"), ("cached", "transformers"))}
    for key, n in agree.items():
        if n < new_tokens:
            print(f"note: greedy tokens {key} agree on the first {n} of {new_tokens} (float near-ties can flip later)")
    s = interleave(fns, iters, warmup)
    what = f"generate batch 1, greedy, {PROMPT}+{new_tokens} tokens"
    rows = [row(f"{what}: axonml cached vs axonml uncached", new_tokens, s["cached"], s["uncached"]),
            row(f"{what}: axonml cached vs transformers cached", new_tokens, s["cached"], s["transformers"]),
            row(f"{what}: (ref) axonml uncached vs transformers cached", new_tokens, s["uncached"], s["transformers"])]
    return rows, {"generated_tokens_agree": agree}


def _common_prefix(a: np.ndarray, b: np.ndarray) -> int:
    diff = np.nonzero(a != b)[0]
    return int(diff[0]) if diff.size else int(len(a))


# ---------------------------------------------------------------- profile


def profile_training(pretrained: str, batch: int, seq: int, steps: int, top: int = 30) -> list[dict]:
    """cProfile over ``steps`` AxonML training steps; the functions with the most own time."""
    ax_step = build_trainers(pretrained, _batch(1, batch, seq))["axonml"]
    ax_step()
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(steps):
        ax_step()
    prof.disable()
    st = pstats.Stats(prof)
    total = sum(v[2] for v in st.stats.values())
    rows = []
    for (file, line, fn), (_cc, calls, tt, ct, _callers) in sorted(st.stats.items(), key=lambda kv: -kv[1][2])[:top]:
        rows.append({"function": f"{os.path.relpath(file, os.path.dirname(HERE)) if file.startswith('/') else file}"
                                 f":{line}({fn})", "calls_per_step": calls / steps, "tottime_ms_per_step": tt / steps * 1e3,
                     "cumtime_ms_per_step": ct / steps * 1e3, "share": tt / total})
    print(f"\ncProfile of {steps} axonml training steps (own time per step; total {total / steps * 1e3:.1f} ms):")
    for r in rows:
        print(f"  {r['tottime_ms_per_step']:8.2f} ms {100 * r['share']:5.1f}%  {r['calls_per_step']:7.0f} calls  {r['function']}")
    return rows


# ---------------------------------------------------------------- main


def main() -> None:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: 3 samples, 32 new tokens, gpt_quick.json")
    parser.add_argument("--iters", type=int, default=20, help="timed training/DDP samples per framework")
    parser.add_argument("--gen-iters", type=int, default=20, help="timed generate() calls per variant")
    parser.add_argument("--profile", action="store_true", help="also cProfile the AxonML training step")
    parser.add_argument("--skip", nargs="*", default=[], choices=["train", "ddp", "gen"],
                        help="parts to leave out (writes gpt_quick.json)")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu",
                        help="cuda: AxonML on CuPy vs PyTorch CUDA on one GPU, without the DDP part (gpt_cuda.json)")
    args = parser.parse_args()
    global DEVICE
    DEVICE = args.device
    if DEVICE == "cuda":
        import axonml as ax

        if not (torch.cuda.is_available() and ax.runtime.cuda_available()):
            raise SystemExit(f"--device cuda needs a GPU seen by PyTorch ({torch.cuda.is_available()}) and by "
                             f"AxonML/CuPy ({ax.runtime.cuda_available()}); install axonml[cuda] and a CUDA torch build")
        args.skip = sorted(set(args.skip) | {"ddp"})
    iters, gen_iters, warmup = (3, 3, 1) if args.quick else (args.iters, args.gen_iters, 2)
    new_tokens, batch, seq = (32, 2, 64) if args.quick else (NEW_TOKENS, BATCH, SEQ)
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    print(f"OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}, torch {torch.__version__}; "
          "ratios are axonml/peer tokens/s (higher is better)")

    rows: list = []
    extra: dict = {"config": {**MODEL, "batch": batch, "seq": seq, "world": WORLD, "prompt": PROMPT,
                              "new_tokens": new_tokens, "gen_n_positions": GEN_POSITIONS, "quick": args.quick}}
    with tempfile.TemporaryDirectory(prefix="axonml-bench-gpt-") as tmp:
        pretrained = os.path.join(tmp, "train")
        _axonml_model(0).save_pretrained(pretrained)
        if "train" not in args.skip:
            r, e = bench_training(pretrained, batch, seq, iters, warmup)
            rows += r
            extra["training"] = e
        if "ddp" not in args.skip:
            r, e = bench_ddp(pretrained, batch, seq, iters, warmup)
            rows += r
            extra["ddp"] = e
        if "gen" not in args.skip:
            r, e = bench_generation(tmp, new_tokens, gen_iters, warmup)
            rows += r
            extra["generation"] = e
        if args.profile and DEVICE == "cpu":
            extra["profile_top"] = profile_training(pretrained, batch, seq, steps=3 if args.quick else 10)

    by_name = {r["name"]: r for r in rows}
    met: dict = {}
    train = [r["ratio"] for n, r in by_name.items() if n.startswith("train ")]
    if train:
        met["train_tokens_per_s_ratio"] = {"value": min(train), "met": min(train) >= GOALS["train_tokens_per_s_ratio_min"]}
    kv = [r["ratio"] for n, r in by_name.items() if n.endswith("axonml cached vs axonml uncached")]
    if kv:
        met["kv_cache_speedup"] = {"value": kv[0], "met": kv[0] >= GOALS["kv_cache_speedup_min"]}
    for goal, v in met.items():
        print(f"goal {goal}: {v['value']:.2f} -> {'met' if v['met'] else 'NOT met'}")
    if args.quick:
        print("(--quick: smaller batch, 32 new tokens and 3 samples; the goals are set for the full run)")
    name = "gpt_cuda" if DEVICE == "cuda" else "gpt_quick" if args.quick or args.skip else "gpt"
    peer = (f"transformers GPT2LMHeadModel (sdpa) and a nanoGPT-style twin, PyTorch {torch.__version__} eager "
            f"{DEVICE.upper()}" + ("; DDP: torch.distributed gloo" if DEVICE == "cpu" else ""))
    write_results(name, peer, rows, {"goals": GOALS, "goals_met": met, "device": DEVICE, **extra})


if __name__ == "__main__":
    main()
