"""generate(): greedy tokens equal transformers' generate for the same weights, logits processors equal
transformers' processors, KV-cached == uncached, seeding, stop tokens, and the per-token cost of the cache."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import axonml as ax  # noqa: E402
from axonml import nn  # noqa: E402
from axonml.llm.generation import (  # noqa: E402
    GenerationConfig,
    apply_repetition_penalty,
    apply_top_k,
    apply_top_p,
    generate,
    sample_tokens,
)
from axonml.llm.gpt2 import GPT2Config, GPT2LMHeadModel  # noqa: E402

transformers.logging.set_verbosity_error()

HF_TINY = dict(vocab_size=97, n_positions=64, n_embd=32, n_layer=2, n_head=4, resid_pdrop=0.0, embd_pdrop=0.0,
               attn_pdrop=0.0, bos_token_id=96, eos_token_id=96)


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    torch.manual_seed(0)
    hf = transformers.GPT2LMHeadModel(transformers.GPT2Config(**HF_TINY)).eval()
    with torch.no_grad():
        for p in hf.parameters():  # larger weights: sharper, less repetitive greedy continuations
            p.add_(torch.randn_like(p) * 0.3)
    d = tmp_path_factory.mktemp("hf_gpt2_gen")
    hf.save_pretrained(d)
    return GPT2LMHeadModel.from_pretrained(d), hf


def _prompt(shape, seed=0, vocab=96):
    return np.random.default_rng(seed).integers(0, vocab, shape).astype(np.int64)


def _left_padded(lengths, width, seed=1, pad=0):
    ids = _prompt((len(lengths), width), seed)
    mask = np.zeros_like(ids)
    for i, n in enumerate(lengths):
        ids[i, : width - n] = pad
        mask[i, width - n :] = 1
    return ids, mask


def _hf_greedy(hf, ids, mask=None, **kw):
    out = hf.generate(torch.tensor(ids), attention_mask=None if mask is None else torch.tensor(mask), do_sample=False, **kw)
    return out.numpy()


# -- parity with transformers ---------------------------------------------------------------------
@pytest.mark.parametrize("use_cache", [True, False])
def test_greedy_single_prompt_matches_transformers(pair, use_cache):
    ours, hf = pair
    ids = _prompt((1, 6))
    ref = _hf_greedy(hf, ids, max_new_tokens=15, eos_token_id=[], pad_token_id=0)
    got = generate(ours, ax.tensor(ids), max_new_tokens=15, eos_token_id=[], use_cache=use_cache).numpy()
    assert got.dtype == np.int64 and got.shape == (1, 21)
    np.testing.assert_array_equal(got, ref)
    assert len(set(got[0, 6:].tolist())) > 2  # a non-degenerate continuation


def test_greedy_left_padded_batch_and_stop_token_match_transformers(pair):
    ours, hf = pair
    ids, mask = _left_padded([7, 3, 5], 7)
    free = _hf_greedy(hf, ids, mask, max_new_tokens=12, eos_token_id=[], pad_token_id=0)
    got = ours.generate(ax.tensor(ids), attention_mask=ax.tensor(mask), max_new_tokens=12, eos_token_id=[]).numpy()
    np.testing.assert_array_equal(got, free)
    # make the 4th token of row 1 a stop token: transformers stops that row and pads it
    stop = int(free[1, 7 + 3])
    ref = _hf_greedy(hf, ids, mask, max_new_tokens=12, eos_token_id=stop, pad_token_id=95)
    got = ours.generate(ax.tensor(ids), attention_mask=ax.tensor(mask), max_new_tokens=12, eos_token_id=stop,
                        pad_token_id=95).numpy()
    np.testing.assert_array_equal(got, ref)
    first = int(np.argmax(got[1, 7:] == stop))
    assert (got[1, 7 + first + 1 :] == 95).all()


def test_greedy_with_repetition_penalty_matches_transformers(pair):
    ours, hf = pair
    ids = _prompt((1, 5), seed=3)
    ref = _hf_greedy(hf, ids, max_new_tokens=15, eos_token_id=[], pad_token_id=0, repetition_penalty=1.8)
    got = generate(ours, ids, max_new_tokens=15, eos_token_id=[], repetition_penalty=1.8).numpy()
    np.testing.assert_array_equal(got, ref)
    plain = generate(ours, ids, max_new_tokens=15, eos_token_id=[]).numpy()
    assert not np.array_equal(plain, got)  # the penalty changed something


def _hf_process(proc, ids, scores):
    return proc(torch.tensor(ids), torch.tensor(scores)).numpy()


def test_logits_processors_match_transformers():
    rng = np.random.default_rng(0)
    scores = (rng.standard_normal((4, 50)) * 3).astype(np.float32)
    ids = rng.integers(0, 50, (4, 9))
    seen = np.zeros((4, 50), bool)
    seen[np.arange(4)[:, None], ids] = True
    from transformers.generation import logits_process as lp

    np.testing.assert_allclose(apply_repetition_penalty(scores, seen, 1.3),
                               _hf_process(lp.RepetitionPenaltyLogitsProcessor(1.3), ids, scores), rtol=1e-6)
    for k in (1, 5, 49):
        np.testing.assert_array_equal(apply_top_k(scores, k), _hf_process(lp.TopKLogitsWarper(k), ids, scores))
    for p in (0.05, 0.5, 0.9, 0.999):
        got, ref = apply_top_p(scores, p), _hf_process(lp.TopPLogitsWarper(p), ids, scores)
        np.testing.assert_array_equal(np.isinf(got), np.isinf(ref))
        np.testing.assert_array_equal(got[~np.isinf(got)], ref[~np.isinf(ref)])
    # kept sets shrink with p, and at least one token always survives
    assert (np.isfinite(apply_top_p(scores, 1e-9)).sum(-1) == 1).all()


def test_sampling_follows_the_softmax():
    scores = np.array([[0.0, 1.0, 2.0, -np.inf, 0.5]], dtype=np.float32)
    rng = np.random.default_rng(0)
    draws = np.array([sample_tokens(np.repeat(scores, 1000, 0), rng) for _ in range(100)]).ravel()
    freq = np.bincount(draws, minlength=5) / draws.size
    p = np.exp(scores[0] - scores[0].max())
    p /= p.sum()
    np.testing.assert_allclose(freq, p, atol=0.006)  # ~4 standard errors
    assert freq[3] == 0


# -- cache, seeds, knobs ---------------------------------------------------------------------------
SAMPLING = dict(do_sample=True, temperature=0.7, top_k=20, top_p=0.9, repetition_penalty=1.2)


@pytest.mark.parametrize("knobs", [{}, SAMPLING], ids=["greedy", "sampling"])
def test_cached_equals_uncached(pair, knobs):
    ours, _ = pair
    ids, mask = _left_padded([6, 2, 4], 6, seed=4)
    runs = [
        generate(ours, ids, attention_mask=mask, max_new_tokens=14, eos_token_id=[], use_cache=c,
                 generator=ax.Generator().manual_seed(7), **knobs).numpy()
        for c in (True, False)
    ]
    np.testing.assert_array_equal(runs[0], runs[1])


def test_seeds_reproduce_and_differ(pair):
    ours, _ = pair
    ids = _prompt((2, 4), seed=5)

    def run(seed):
        return generate(ours, ids, max_new_tokens=20, eos_token_id=[], generator=ax.Generator().manual_seed(seed),
                        do_sample=True, temperature=1.5).numpy()

    a, b, c = run(1), run(1), run(2)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    ax.manual_seed(3)  # the default generator serves calls without one
    d = generate(ours, ids, max_new_tokens=20, eos_token_id=[], do_sample=True, temperature=1.5).numpy()
    ax.manual_seed(3)
    e = generate(ours, ids, max_new_tokens=20, eos_token_id=[], do_sample=True, temperature=1.5).numpy()
    np.testing.assert_array_equal(d, e)


def test_top_k_one_is_greedy(pair):
    ours, _ = pair
    ids, mask = _left_padded([5, 3], 5, seed=6)
    greedy = generate(ours, ids, attention_mask=mask, max_new_tokens=12, eos_token_id=[]).numpy()
    sampled = generate(ours, ids, attention_mask=mask, max_new_tokens=12, eos_token_id=[], do_sample=True, top_k=1,
                       temperature=3.0, generator=ax.Generator().manual_seed(0)).numpy()
    np.testing.assert_array_equal(sampled, greedy)


def test_stop_tokens_min_new_tokens_and_early_exit(pair):
    ours, _ = pair
    ids = _prompt((2, 5), seed=7)
    free = generate(ours, ids, max_new_tokens=10, eos_token_id=[]).numpy()
    new = free[:, 5:]
    stops = [int(new[0, 0]), int(next(t for t in new[1, 1:] if t != new[0, 0]))]
    ends = [int(np.argmax(np.isin(row, stops))) for row in new]  # each row's first stop token
    assert ends[0] == 0 and 0 < ends[1] < 9
    got = generate(ours, ids, max_new_tokens=10, eos_token_id=stops, pad_token_id=0).numpy()
    assert got.shape == (2, 5 + max(ends) + 1)  # once every row finished no more columns are made
    for r in range(2):  # the free run up to the stop token, then padding
        np.testing.assert_array_equal(got[r, : 5 + ends[r] + 1], free[r, : 5 + ends[r] + 1])
        assert (got[r, 5 + ends[r] + 1 :] == 0).all()
    # min_new_tokens bans the stop tokens for the first steps
    late = generate(ours, ids, max_new_tokens=10, eos_token_id=stops, pad_token_id=0, min_new_tokens=4).numpy()
    assert not np.isin(late[:, 5:9], stops).any()
    # the model's config supplies the stop token when none is given
    cfg_stop = generate(ours, ids, max_new_tokens=10).numpy()
    ref = generate(ours, ids, max_new_tokens=10, eos_token_id=ours.config.eos_token_id).numpy()
    np.testing.assert_array_equal(cfg_stop, ref)


def test_cached_steps_feed_one_row_per_sequence(pair):
    ours, _ = pair
    rows: list[int] = []
    handles = [m.register_forward_hook(lambda mod, inp, out: rows.append(int(np.prod(inp[0].shape[:-1]))))
               for m in ours.modules() if isinstance(m, nn.Linear)]
    n_linear = len(handles)
    try:
        ids = _prompt((2, 7), seed=8)
        generate(ours, ids, max_new_tokens=6, eos_token_id=[], use_cache=True)
        per_call = np.array(rows).reshape(6, n_linear)
        assert (per_call[0] == 2 * 7).all()  # the prompt, once
        assert (per_call[1:] == 2).all()  # then one row per sequence, whatever the prefix length
        rows.clear()
        generate(ours, ids, max_new_tokens=6, eos_token_id=[], use_cache=False)
        per_call = np.array(rows).reshape(6, n_linear)
        np.testing.assert_array_equal(per_call[:, 0], 2 * np.arange(7, 13))  # uncached: the prefix grows
    finally:
        for h in handles:
            h.remove()


# -- inputs and modes ---------------------------------------------------------------------------------
def test_ragged_lists_are_left_padded(pair):
    ours, _ = pair
    prompts = [[5, 6, 7, 8], [9, 10]]
    got = generate(ours, prompts, max_new_tokens=5, eos_token_id=[], pad_token_id=1).numpy()
    ids = np.array([[5, 6, 7, 8], [1, 1, 9, 10]])
    mask = np.array([[1, 1, 1, 1], [0, 0, 1, 1]])
    np.testing.assert_array_equal(got, generate(ours, ids, attention_mask=mask, max_new_tokens=5, eos_token_id=[]).numpy())
    single = generate(ours, [9, 10], max_new_tokens=5, eos_token_id=[]).numpy()  # a 1-D prompt is one row
    np.testing.assert_array_equal(single[0], got[1, 2:])


def test_generation_config_and_model_state(pair):
    ours, _ = pair
    ids = _prompt((1, 4), seed=9)
    cfg = GenerationConfig(max_new_tokens=7, do_sample=True, top_k=5, eos_token_id=[])
    a = generate(ours, ids, generation_config=cfg, generator=ax.Generator().manual_seed(0)).numpy()
    b = generate(ours, ids, max_new_tokens=7, do_sample=True, top_k=5, eos_token_id=[], generator=ax.Generator().manual_seed(0))
    np.testing.assert_array_equal(a, b.numpy())
    assert generate(ours, ids, generation_config=cfg, max_new_tokens=3).shape == (1, 7)  # keyword overrides config
    ours.train()
    out = generate(ours, ids, max_new_tokens=2)
    assert ours.training and not out.requires_grad  # mode restored; no graph
    ours.eval()


def test_bad_arguments_raise_clear_errors(pair):
    ours, _ = pair
    ids = _prompt((2, 4))
    right = np.array([[1, 1, 1, 0], [1, 1, 1, 1]])
    with pytest.raises(ValueError, match="left"):
        generate(ours, ids, attention_mask=right)
    with pytest.raises(ValueError, match="temperature"):
        generate(ours, ids, do_sample=True, temperature=0.0)
    with pytest.raises(ValueError, match="top_p"):
        generate(ours, ids, top_p=0.0)
    with pytest.raises(ValueError, match=r"64 positions"):
        generate(ours, ids, max_new_tokens=61)
    with pytest.raises(ValueError, match="max_new_tokens"):
        generate(ours, ids, max_new_tokens=-1)
    assert generate(ours, ids, max_new_tokens=0).shape == (2, 4)


def test_tiny_config_generates_end_to_end():
    ax.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config.from_name("tiny"))
    out = model.generate(ax.tensor([[1, 2, 3]]), max_new_tokens=8, do_sample=True, generator=ax.Generator().manual_seed(1))
    assert out.shape[0] == 1 and 4 <= out.shape[1] <= 11 and out.dtype == ax.int64
