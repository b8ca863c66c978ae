"""Text generation for any decoder of this package: greedy or sampled, with a KV cache.

A model qualifies when ``model(input_ids, attention_mask=..., past_key_values=..., use_cache=...)``
returns an object with ``.logits`` (B, T, vocab) and, with ``use_cache=True``, ``.past_key_values``.

Example::

    g = ax.Generator().manual_seed(0)
    out = generate(model, prompt_ids, max_new_tokens=32, do_sample=True, top_k=50, top_p=0.9,
                   temperature=0.8, generator=g)                  # (B, T + n) int64

Note on logits processing: the steps and their order are those of Hugging Face transformers'
``generate``: repetition penalty, the minimum-length ban of stop tokens, then (sampling only)
temperature, top-k and top-p. They run on the host in NumPy on the (B, vocab) scores of the last
position: a small array next to the model's work, and it makes sampling reproducible with an
``ax.Generator`` on every device. One deliberate difference: the repetition penalty counts only
real tokens (``attention_mask == 1``), where transformers also penalises the padding id.

Note on batches: prompts of different lengths are left-padded (``attention_mask`` 0 on the left),
so every row's next token is appended in the same column. Rows that emitted a stop token keep
receiving ``pad_token_id`` until all rows are done or ``max_new_tokens`` is reached.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from ..autograd import no_grad
from ..errors import ShapeError
from ..tensor import Generator, Tensor, tensor
from ..tensor.random import get_generator


@dataclass(frozen=True)
class GenerationConfig:
    """The knobs of :func:`generate` (same names and defaults as its keyword arguments).

    Example::

        cfg = GenerationConfig(max_new_tokens=50, do_sample=True, top_p=0.9)
        generate(model, ids, generation_config=cfg, generator=g)
    """

    max_new_tokens: int = 20
    min_new_tokens: int = 0
    do_sample: bool = False
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    repetition_penalty: float = 1.0
    eos_token_id: int | Sequence[int] | None = None
    pad_token_id: int | None = None
    use_cache: bool = True

    def __post_init__(self) -> None:
        for name in ("max_new_tokens", "min_new_tokens", "top_k"):
            v = getattr(self, name)
            if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 0:
                raise ValueError(f"generate: {name} must be a non-negative int, got {v!r}")
        if self.do_sample and not self.temperature > 0:
            raise ValueError(
                f"generate: temperature must be > 0 when sampling, got {self.temperature!r}; use do_sample=False for greedy"
            )
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"generate: top_p must be in (0, 1], got {self.top_p!r}")
        if not self.repetition_penalty > 0:
            raise ValueError(f"generate: repetition_penalty must be > 0 (1.0 = off), got {self.repetition_penalty!r}")

    @property
    def stop_tokens(self) -> list[int]:
        if self.eos_token_id is None:
            return []
        if isinstance(self.eos_token_id, (int, np.integer)):
            return [int(self.eos_token_id)]
        return [int(t) for t in self.eos_token_id]


# -- logits processors (NumPy, (B, V) float scores) -----------------------------------------------
def apply_repetition_penalty(scores: np.ndarray, seen: np.ndarray, penalty: float) -> np.ndarray:
    """Divide positive / multiply negative scores of tokens marked in ``seen`` (B, V) by ``penalty``."""
    if penalty == 1.0:
        return scores
    penalised = np.where(scores > 0, scores / penalty, scores * penalty)
    return np.where(seen, penalised, scores).astype(scores.dtype, copy=False)


def apply_top_k(scores: np.ndarray, top_k: int) -> np.ndarray:
    """Keep the ``top_k`` highest scores per row (and ties with the k-th); the rest become -inf."""
    v = scores.shape[-1]
    if top_k <= 0 or top_k >= v:
        return scores
    kth = np.partition(scores, v - top_k, axis=-1)[:, v - top_k : v - top_k + 1]  # (B, 1)
    return np.where(scores < kth, -np.inf, scores).astype(scores.dtype, copy=False)


def apply_top_p(scores: np.ndarray, top_p: float) -> np.ndarray:
    """Nucleus filter: keep the smallest set of most likely tokens whose probability sums to at
    least ``top_p`` (always at least one); the rest become -inf."""
    if top_p >= 1.0:
        return scores
    order = np.argsort(-scores, axis=-1, kind="stable")  # most likely first
    ranked = np.take_along_axis(scores, order, axis=-1).astype(np.float64)
    probs = np.exp(ranked - ranked[:, :1])
    probs /= probs.sum(axis=-1, keepdims=True)
    before = np.cumsum(probs, axis=-1) - probs  # probability mass ranked strictly above each token
    drop_ranked = before >= top_p
    drop_ranked[:, 0] = False
    drop = np.zeros_like(drop_ranked)
    np.put_along_axis(drop, order, drop_ranked, axis=-1)
    return np.where(drop, -np.inf, scores).astype(scores.dtype, copy=False)


def sample_tokens(scores: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Draw one token per row from softmax(scores) by inverting the CDF with one uniform per row."""
    z = scores.astype(np.float64)
    z = np.exp(z - z.max(axis=-1, keepdims=True))
    cdf = np.cumsum(z, axis=-1)
    u = rng.random(scores.shape[0])[:, None] * cdf[:, -1:]
    # the first token whose CDF exceeds u: zero-probability tokens have no width and are never chosen
    return np.minimum((cdf <= u).sum(axis=-1), scores.shape[-1] - 1).astype(np.int64)


# -- inputs -----------------------------------------------------------------------------------------
def _host(x: Any) -> np.ndarray:
    return x.numpy() if isinstance(x, Tensor) else np.asarray(x)


def _prompts(input_ids: Any, attention_mask: Any, pad: int) -> tuple[np.ndarray, np.ndarray]:
    """(ids, mask) as int64 (B, T); a list of unequal-length token lists is left-padded."""
    if isinstance(input_ids, (list, tuple)) and input_ids and all(isinstance(r, (list, tuple, np.ndarray)) for r in input_ids):
        lengths = {len(r) for r in input_ids}
        if len(lengths) > 1:
            if attention_mask is not None:
                raise ValueError("generate: give either ragged token lists (padded here) or padded ids with an attention_mask")
            width = max(lengths)
            ids = np.full((len(input_ids), width), pad, dtype=np.int64)
            mask = np.zeros((len(input_ids), width), dtype=np.int64)
            for i, row in enumerate(input_ids):
                if len(row):
                    ids[i, width - len(row) :] = row
                    mask[i, width - len(row) :] = 1
            input_ids, attention_mask = ids, mask
    ids = _host(input_ids)
    if ids.ndim == 1:
        ids = ids[None, :]
    if ids.ndim != 2 or ids.dtype.kind not in "iu":
        raise ShapeError(f"generate: input_ids must be integer token ids of shape (batch, seq_len), got {ids.dtype} {ids.shape}")
    ids = ids.astype(np.int64)
    if ids.shape[1] == 0:
        raise ShapeError("generate: input_ids is empty (seq_len 0); give at least one prompt token (e.g. a BOS token)")
    mask = np.ones_like(ids) if attention_mask is None else _host(attention_mask).astype(np.int64)
    if mask.shape != ids.shape:
        raise ShapeError(f"generate: attention_mask of shape {mask.shape} must match input_ids of shape {ids.shape}")
    if not mask[:, -1].all():
        rows = np.nonzero(mask[:, -1] == 0)[0].tolist()
        raise ValueError(
            f"generate: rows {rows} end in padding (attention_mask 0 in the last column): prompts must be left-padded "
            f"(a tokenizer with padding_side='left'), and no row may be empty"
        )
    if (np.diff(mask, axis=1) < 0).any():
        raise ValueError("generate: attention_mask has padding after real tokens; pad prompts on the left only")
    return ids, mask


def _position_limit(model: Any) -> int | None:
    cfg = getattr(model, "config", None)
    for name in ("n_positions", "max_position_embeddings"):
        v = getattr(cfg, name, None)
        if isinstance(v, int):
            return v
    return None


def _device(model: Any) -> Any:
    for p in model.parameters():
        return p.device
    return None


# -- the loop -----------------------------------------------------------------------------------------
def generate(
    model: Any,
    input_ids: Any,
    attention_mask: Any = None,
    max_new_tokens: int = 20,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    repetition_penalty: float = 1.0,
    eos_token_id: int | Sequence[int] | None = None,
    pad_token_id: int | None = None,
    use_cache: bool = True,
    generator: Generator | None = None,
    min_new_tokens: int = 0,
    generation_config: GenerationConfig | None = None,
) -> Tensor:
    """Continue each prompt by up to ``max_new_tokens`` tokens; returns int64 (B, T + n), prompts included.

    Args:
        model: a decoder of this package (or any model with the same call signature).
        input_ids: (B, T) int token ids (a Tensor, array, or list of lists; unequal-length lists
            are left-padded here). A 1-D sequence is one prompt.
        attention_mask: (B, T), 1 = token, 0 = left padding.
        do_sample: sample from the processed distribution; else take the argmax (greedy, which
            ignores ``temperature``, ``top_k`` and ``top_p`` as in transformers).
        temperature, top_k (0 = off), top_p (1.0 = off), repetition_penalty (1.0 = off): the
            logits processors, applied in transformers' order.
        eos_token_id: stop token(s); None takes ``model.config.eos_token_id``; ``[]`` never stops.
        pad_token_id: emitted by finished rows and used to left-pad lists (default: the first stop
            token, else 0).
        use_cache: run the prompt once and then one position per new token; False recomputes the
            whole sequence at every step (same tokens, slower).
        generator: an ``ax.Generator`` for reproducible sampling (default: the global one).
        min_new_tokens: stop tokens are banned until this many tokens were generated.
        generation_config: a :class:`GenerationConfig` supplying the knobs; keyword arguments that
            differ from their defaults override it.
    Runs under ``no_grad`` in eval mode (the model's training mode is restored afterwards).
    """
    given = dict(
        max_new_tokens=max_new_tokens, min_new_tokens=min_new_tokens, do_sample=do_sample, temperature=temperature,
        top_k=top_k, top_p=top_p, repetition_penalty=repetition_penalty, eos_token_id=eos_token_id,
        pad_token_id=pad_token_id, use_cache=use_cache,
    )
    if generation_config is not None:
        defaults = GenerationConfig()
        base = dataclasses.asdict(generation_config)
        base.update({k: v for k, v in given.items() if v != getattr(defaults, k)})
        given = base
    if given["eos_token_id"] is None:
        given["eos_token_id"] = getattr(getattr(model, "config", None), "eos_token_id", None)
    cfg = GenerationConfig(**given)
    stops = cfg.stop_tokens
    pad = cfg.pad_token_id if cfg.pad_token_id is not None else (stops[0] if stops else 0)
    ids, mask = _prompts(input_ids, attention_mask, pad)
    limit = _position_limit(model)
    if limit is not None and int(mask.sum(axis=1).max()) + cfg.max_new_tokens > limit:
        raise ValueError(
            f"generate: the longest prompt ({int(mask.sum(axis=1).max())} tokens) + max_new_tokens ({cfg.max_new_tokens}) "
            f"exceeds the model's {limit} positions; shorten the prompt or lower max_new_tokens"
        )
    device = _device(model)
    rng = get_generator(generator)
    was_training = bool(getattr(model, "training", False))
    model.eval()
    try:
        with no_grad():
            return _loop(model, ids, mask, cfg, stops, pad, rng, device)
    finally:
        model.train(was_training)


def _loop(model: Any, ids: np.ndarray, mask: np.ndarray, cfg: GenerationConfig, stops: list[int], pad: int,
          rng: np.random.Generator, device: Any) -> Tensor:
    bsz = ids.shape[0]
    vocab = None
    seen = None
    unfinished = np.ones(bsz, dtype=bool)
    cache = None
    padded = not bool(mask.all())
    for step in range(cfg.max_new_tokens):
        feed = ids if (step == 0 or not cfg.use_cache) else ids[:, -1:]
        out = model(
            tensor(feed, device=device),
            attention_mask=tensor(mask, device=device) if padded else None,
            past_key_values=cache,
            use_cache=cfg.use_cache,
        )
        if cfg.use_cache:
            cache = out.past_key_values
            if cache is None:
                raise ValueError(
                    f"generate: {type(model).__name__} returned no past_key_values with use_cache=True; pass use_cache=False"
                )
        scores = out.logits[:, -1].numpy().astype(np.float32)  # (B, V)
        if vocab is None:
            vocab = scores.shape[-1]
            seen = np.zeros((bsz, vocab), dtype=bool)
            if cfg.repetition_penalty != 1.0:
                rows, cols = np.nonzero(mask)
                seen[rows, np.clip(ids[rows, cols], 0, vocab - 1)] = True
        scores = apply_repetition_penalty(scores, seen, cfg.repetition_penalty)
        if step < cfg.min_new_tokens and stops:
            scores[:, [t for t in stops if 0 <= t < vocab]] = -np.inf
        if cfg.do_sample:
            scores = scores / np.float32(cfg.temperature) if cfg.temperature != 1.0 else scores
            scores = apply_top_p(apply_top_k(scores, cfg.top_k), cfg.top_p)
            nxt = sample_tokens(scores, rng)
        else:
            nxt = scores.argmax(axis=-1).astype(np.int64)
        if stops:
            nxt = np.where(unfinished, nxt, pad)
        ids = np.concatenate([ids, nxt[:, None]], axis=1)
        mask = np.concatenate([mask, np.ones((bsz, 1), dtype=mask.dtype)], axis=1)
        seen[np.arange(bsz), np.clip(nxt, 0, vocab - 1)] = True
        if stops:
            unfinished &= ~np.isin(nxt, stops)
            if not unfinished.any():
                break
    return tensor(ids, device=device)


__all__ = ["GenerationConfig", "apply_repetition_penalty", "apply_top_k", "apply_top_p", "generate", "sample_tokens"]
