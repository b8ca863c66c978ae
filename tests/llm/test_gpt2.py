"""GPT-2 against transformers' GPT2LMHeadModel (the oracle): logits, loss, gradients, hidden states,
checkpoints both ways, the KV cache, gradient checkpointing, configs and parameter counts."""

import dataclasses
import json
import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import axonml as ax  # noqa: E402
from axonml.errors import CheckpointError, DTypeError, ShapeError  # noqa: E402
from axonml.llm import _hf  # noqa: E402
from axonml.llm.cache import KVCache  # noqa: E402
from axonml.llm.gpt2 import GPT2Block, GPT2Config, GPT2LMHeadModel  # noqa: E402

transformers.logging.set_verbosity_error()

HF_TINY = dict(vocab_size=97, n_positions=64, n_embd=32, n_layer=2, n_head=4, resid_pdrop=0.0, embd_pdrop=0.0,
               attn_pdrop=0.0, bos_token_id=96, eos_token_id=96)
CONV1D = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")


def _perturb(model):
    """transformers initialises biases to 0 and LayerNorms to 1: randomise everything so a wrong mapping shows."""
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model


@pytest.fixture(scope="module")
def hf_pair(tmp_path_factory):
    torch.manual_seed(0)
    hf = _perturb(transformers.GPT2LMHeadModel(transformers.GPT2Config(**HF_TINY))).eval()
    d = tmp_path_factory.mktemp("hf_gpt2")
    hf.save_pretrained(d)
    return str(d), hf


def _ids(shape, seed=0, vocab=97):
    return np.random.default_rng(seed).integers(0, vocab, shape).astype(np.int64)


def _ours(out):
    return out.detach().numpy()


def _close(a, b, rel=1e-4):
    np.testing.assert_allclose(a, b, atol=rel * max(1.0, float(np.abs(b).max())), rtol=0)


# -- forward parity ----------------------------------------------------------------------------
def test_logits_and_hidden_states_match_transformers(hf_pair):
    d, hf = hf_pair
    ours = GPT2LMHeadModel.from_pretrained(d)
    ids = _ids((3, 11))
    out = ours(ax.tensor(ids), output_hidden_states=True)
    ref = hf(torch.tensor(ids), output_hidden_states=True)
    _close(_ours(out.logits), ref.logits.detach().numpy())
    assert len(out.hidden_states) == len(ref.hidden_states) == HF_TINY["n_layer"] + 1
    for a, b in zip(out.hidden_states, ref.hidden_states):
        _close(_ours(a), b.detach().numpy())
    assert out.loss is None and out.past_key_values is None


def test_padded_batch_logits_match_transformers(hf_pair):
    d, hf = hf_pair
    ours = GPT2LMHeadModel.from_pretrained(d)
    ids = _ids((3, 10), seed=1)
    mask = np.ones_like(ids)
    mask[0, :4] = 0  # left padding
    mask[2, 7:] = 0  # right padding
    pos = np.maximum(np.cumsum(mask, 1) - 1, 0)  # the documented default position ids
    out = ours(ax.tensor(ids), attention_mask=ax.tensor(mask))
    ref = hf(torch.tensor(ids), attention_mask=torch.tensor(mask), position_ids=torch.tensor(pos)).logits.detach().numpy()
    real = mask == 1
    _close(_ours(out.logits)[real], ref[real])
    # the padding really changes row 0 (else this test could not fail)
    unpadded = _ours(ours(ax.tensor(ids)).logits)
    assert np.abs(unpadded[0, 4:] - _ours(out.logits)[0, 4:]).max() > 1e-3


@pytest.mark.parametrize("padded", [False, True])
def test_loss_and_gradients_match_transformers(hf_pair, padded):
    d, hf = hf_pair
    ours = GPT2LMHeadModel.from_pretrained(d)
    ids = _ids((2, 12), seed=2)
    labels = ids.copy()
    labels[0, 3:6] = -100
    labels[1, -1] = -100  # the last label is never predicted anyway
    mask = np.ones_like(ids)
    if padded:
        mask[1, :4] = 0
        labels[1, :4] = -100
    pos = np.maximum(np.cumsum(mask, 1) - 1, 0)
    out = ours(ax.tensor(ids), attention_mask=ax.tensor(mask) if padded else None, labels=ax.tensor(labels))
    hf.zero_grad()
    ref = hf(torch.tensor(ids), attention_mask=torch.tensor(mask), position_ids=torch.tensor(pos), labels=torch.tensor(labels))
    assert abs(out.loss.item() - ref.loss.item()) < 1e-5
    out.loss.backward()
    ref.loss.backward()
    hf_params = dict(hf.named_parameters())
    ours_params = dict(ours.named_parameters())
    for name in ("transformer.wte.weight", "transformer.wpe.weight", "transformer.h.0.attn.c_attn.weight",
                 "transformer.h.1.mlp.c_fc.bias", "transformer.h.1.mlp.c_proj.weight", "transformer.ln_f.weight",
                 "transformer.h.0.ln_1.bias"):
        g = ours_params[name].grad.numpy()
        ref_g = hf_params[name].grad.numpy()
        _close(g.T if name.endswith(CONV1D) else g, ref_g, rel=1e-4)


def test_labels_all_but_shift_match_explicit_cross_entropy():
    ax.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config.from_name("tiny", embd_pdrop=0.0, resid_pdrop=0.0, attn_pdrop=0.0))
    ids = _ids((2, 7), seed=3, vocab=256)
    out = model(ax.tensor(ids), labels=ax.tensor(ids))
    logits = torch.tensor(_ours(out.logits))
    ref = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, 256), torch.tensor(ids[:, 1:]).reshape(-1))
    assert abs(out.loss.item() - ref.item()) < 1e-5


# -- checkpoints --------------------------------------------------------------------------------
@pytest.mark.parametrize("tied", [True, False])
def test_save_pretrained_loads_in_transformers(tmp_path, tied):
    ax.manual_seed(1)
    cfg = GPT2Config.from_name("tiny", vocab_size=101, n_positions=32, tie_word_embeddings=tied, resid_pdrop=0.0)
    ours = GPT2LMHeadModel(cfg)
    with ax.no_grad():  # non-trivial biases and norms
        for p in ours.parameters():
            p.add_(ax.randn(*p.shape) * 0.05)
    ours.eval()
    ours.save_pretrained(tmp_path)
    hf = transformers.GPT2LMHeadModel.from_pretrained(tmp_path).eval()
    assert hf.config.tie_word_embeddings == tied and hf.config.n_embd == 64
    ids = _ids((2, 9), seed=4, vocab=101)
    _close(_ours(ours(ax.tensor(ids)).logits), hf(torch.tensor(ids)).logits.detach().numpy())
    back = GPT2LMHeadModel.from_pretrained(tmp_path)
    assert back.config == cfg
    for (n1, p1), (n2, p2) in zip(ours.state_dict().items(), back.state_dict().items()):
        assert n1 == n2
        np.testing.assert_array_equal(p1.numpy(), p2.numpy())
    assert (back.lm_head.weight is back.transformer.wte.weight) == tied


def _rewrite(src, dst, edit):
    cfg, tensors = _hf.read_pretrained(src)
    cfg, tensors = edit(cfg, tensors)
    _hf.write_pretrained(dst, cfg, tensors)
    return dst


def test_checkpoint_errors_name_the_tensor(hf_pair, tmp_path):
    d, _ = hf_pair

    def bad_shape(cfg, t):
        t["transformer.h.1.mlp.c_fc.weight"] = t["transformer.h.1.mlp.c_fc.weight"][:, :-1]
        return cfg, t

    with pytest.raises(CheckpointError, match=r"h\.1\.mlp\.c_fc\.weight.*shape"):
        GPT2LMHeadModel.from_pretrained(_rewrite(d, tmp_path / "a", bad_shape))

    def missing(cfg, t):
        del t["transformer.ln_f.bias"]
        return cfg, t

    with pytest.raises(CheckpointError, match=r"ln_f\.bias.*missing"):
        GPT2LMHeadModel.from_pretrained(_rewrite(d, tmp_path / "b", missing))

    def extra(cfg, t):
        t["transformer.h.2.attn.c_attn.weight"] = t["transformer.h.1.attn.c_attn.weight"]
        return cfg, t

    with pytest.raises(CheckpointError, match=r"unexpected.*h\.2\.attn"):
        GPT2LMHeadModel.from_pretrained(_rewrite(d, tmp_path / "c", extra))

    def wrong_width(cfg, t):
        return dict(cfg, n_embd=48), t  # config and weights disagree

    with pytest.raises(CheckpointError, match="wte.weight"):
        GPT2LMHeadModel.from_pretrained(_rewrite(d, tmp_path / "d", wrong_width))

    os.makedirs(tmp_path / "empty")
    with pytest.raises(CheckpointError, match="model.safetensors"):
        GPT2LMHeadModel.from_pretrained(tmp_path / "empty")


def test_bare_backbone_checkpoint_and_old_buffers_load(hf_pair, tmp_path):
    d, hf = hf_pair

    def strip(cfg, t):  # the hub's old layout: no "transformer." prefix, attention buffers saved
        t = {k[len("transformer."):]: v for k, v in t.items() if k.startswith("transformer.")}
        t["h.0.attn.bias"] = np.tril(np.ones((1, 1, 64, 64), dtype=np.float32))
        t["h.0.attn.masked_bias"] = np.array(-1e4, dtype=np.float32)
        return cfg, t

    ours = GPT2LMHeadModel.from_pretrained(_rewrite(d, tmp_path / "bare", strip))
    ids = _ids((1, 8), seed=5)
    _close(_ours(ours(ax.tensor(ids)).logits), hf(torch.tensor(ids)).logits.detach().numpy())


# -- KV cache -----------------------------------------------------------------------------------
def test_incremental_forward_with_cache_equals_full_forward(hf_pair):
    d, _ = hf_pair
    model = GPT2LMHeadModel.from_pretrained(d).eval()
    ids = _ids((2, 12), seed=6)
    mask = np.ones_like(ids)
    mask[1, :3] = 0
    with ax.no_grad():
        for m in (None, mask):
            full = _ours(model(ax.tensor(ids), attention_mask=None if m is None else ax.tensor(m)).logits)
            cache, parts = None, []
            for lo, hi in ((0, 5), (5, 8), (8, 9), (9, 10), (10, 12)):  # chunks of 5, 3, 1, 1, 2 positions
                out = model(ax.tensor(ids[:, lo:hi]), attention_mask=None if m is None else ax.tensor(m[:, :hi]),
                            past_key_values=cache, use_cache=True)
                cache = out.past_key_values
                assert isinstance(cache, KVCache) and cache.seq_length == hi
                parts.append(_ours(out.logits))
            inc = np.concatenate(parts, axis=1)
            real = np.ones_like(ids, bool) if m is None else m == 1
            _close(inc[real], full[real], rel=1e-5)


def test_bad_inputs_raise_clear_errors():
    model = GPT2LMHeadModel(GPT2Config.from_name("tiny", n_positions=16))
    with pytest.raises(DTypeError, match="int64"):
        model(ax.randn(1, 4))
    with pytest.raises(ShapeError, match="batch"):
        model(ax.tensor([1, 2, 3]))
    with pytest.raises(ShapeError, match=r"attention_mask.*\(1, 4\)"):
        model(ax.tensor([[1, 2, 3, 4]]), attention_mask=ax.tensor([[1, 1, 1]]))
    with pytest.raises(ShapeError, match="n_positions=16"):
        model(ax.tensor(_ids((1, 17), vocab=256)))
    with pytest.raises(ShapeError, match="labels"):
        model(ax.tensor([[1, 2, 3]]), labels=ax.tensor([[1, 2]]))
    with pytest.raises(IndexError, match="256"):
        model(ax.tensor([[1, 256]]))


# -- training features -----------------------------------------------------------------------------
def test_gradient_checkpointing_same_gradients_and_recomputes():
    cfg = GPT2Config.from_name("tiny", n_layer=3)  # dropouts 0.1: the RNG replay matters
    ax.manual_seed(3)
    model = GPT2LMHeadModel(cfg).train()
    assert len(model.blocks) == 3 and all(isinstance(b, GPT2Block) for b in model.blocks)
    ids = ax.tensor(_ids((2, 10), seed=7, vocab=256))
    calls = []
    model.blocks[1].register_forward_hook(lambda *a: calls.append(1))

    def grads():
        model.zero_grad()
        calls.clear()
        ax.manual_seed(11)
        loss = model(ids, labels=ids).loss
        loss.backward()
        return loss.item(), {n: p.grad.numpy().copy() for n, p in model.named_parameters()}, len(calls)

    loss0, g0, n0 = grads()
    model.gradient_checkpointing_enable()
    assert model.is_gradient_checkpointing
    loss1, g1, n1 = grads()
    assert (n0, n1) == (1, 2)  # the block ran again in backward
    assert loss0 == pytest.approx(loss1, abs=1e-6)
    for n in g0:
        np.testing.assert_allclose(g1[n], g0[n], atol=1e-6, rtol=1e-5, err_msg=n)
    with ax.no_grad():  # inference: no recomputation machinery
        calls.clear()
        model(ids)
        assert len(calls) == 1
    model.gradient_checkpointing_disable()
    assert not model.is_gradient_checkpointing


def test_init_is_seeded_and_follows_gpt2_scheme():
    cfg = GPT2Config.from_name("tiny", n_layer=4, n_embd=128, n_head=4, vocab_size=512)
    ax.manual_seed(5)
    a = GPT2LMHeadModel(cfg)
    ax.manual_seed(5)
    b = GPT2LMHeadModel(cfg)
    for (n, p), q in zip(a.named_parameters(), b.parameters()):
        np.testing.assert_array_equal(p.detach().numpy(), q.detach().numpy(), err_msg=n)
    blk = a.blocks[0]
    assert np.std(blk.attn.c_attn.weight.detach().numpy()) == pytest.approx(0.02, rel=0.05)
    assert np.std(blk.mlp.c_proj.weight.detach().numpy()) == pytest.approx(0.02 / np.sqrt(8), rel=0.05)
    assert not blk.attn.c_attn.bias.detach().numpy().any() and (blk.ln_1.weight.detach().numpy() == 1).all()
    assert a.lm_head.weight is a.transformer.wte.weight


# -- configs -------------------------------------------------------------------------------------------
PUBLISHED = {"gpt2": 124_439_808, "gpt2-medium": 354_823_168, "gpt2-large": 774_030_080, "gpt2-xl": 1_557_611_200}


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_published_sizes_count_like_transformers(name):
    cfg = GPT2Config.from_name(name)
    assert cfg.num_parameters() == PUBLISHED[name]
    with torch.device("meta"):  # no memory: the oracle counts its own module tree
        hf = transformers.GPT2LMHeadModel(transformers.GPT2Config(**cfg.to_dict()))
    assert hf.num_parameters() == PUBLISHED[name]


@pytest.mark.parametrize("tied", [True, False])
def test_num_parameters_formula_matches_built_model(tied):
    cfg = GPT2Config.from_name("tiny", n_inner=96, tie_word_embeddings=tied)
    assert GPT2LMHeadModel(cfg).num_parameters() == cfg.num_parameters()


def test_config_round_trips_through_transformers():
    cfg = GPT2Config.from_name("tiny", n_inner=80, activation_function="gelu_new", layer_norm_epsilon=1e-6)
    hf_cfg = transformers.GPT2Config(**cfg.to_dict())
    assert (hf_cfg.n_embd, hf_cfg.n_inner, hf_cfg.layer_norm_epsilon, hf_cfg.eos_token_id) == (64, 80, 1e-6, 255)
    assert GPT2Config.from_dict(hf_cfg.to_dict()) == cfg  # transformers' extra keys are ignored
    assert GPT2Config.from_dict(json.loads(hf_cfg.to_json_string())) == cfg
    with pytest.raises(ValueError, match="quick_gelu"):
        GPT2Config.from_dict(dict(cfg.to_dict(), activation_function="quick_gelu"))
    with pytest.raises(ValueError, match="bert"):
        GPT2Config.from_dict(dict(cfg.to_dict(), model_type="bert"))
    with pytest.raises(ValueError, match="cross"):
        GPT2Config.from_dict(dict(cfg.to_dict(), add_cross_attention=True))
    with pytest.raises(ValueError, match=r"n_embd \(64\).*n_head \(5\)"):
        dataclasses.replace(cfg, n_head=5)
    with pytest.raises(ValueError, match="unknown name"):
        GPT2Config.from_name("gpt3")


def test_inverse_layer_idx_scaling_matches_transformers(tmp_path):
    torch.manual_seed(2)
    hf = _perturb(transformers.GPT2LMHeadModel(transformers.GPT2Config(**HF_TINY, scale_attn_by_inverse_layer_idx=True)))
    hf.eval().save_pretrained(tmp_path)
    ours = GPT2LMHeadModel.from_pretrained(tmp_path)
    assert ours.config.scale_attn_by_inverse_layer_idx
    ids = _ids((2, 8), seed=8)
    _close(_ours(ours(ax.tensor(ids)).logits), hf(torch.tensor(ids)).logits.detach().numpy())


def test_autocast_bfloat16_with_padding_stays_close_to_float32(hf_pair):
    d, _ = hf_pair
    model = GPT2LMHeadModel.from_pretrained(d)
    ids = _ids((2, 9), seed=9)
    mask = np.ones_like(ids)
    mask[0, :2] = 0
    ref = _ours(model(ax.tensor(ids), attention_mask=ax.tensor(mask)).logits)
    with ax.autocast("cpu", dtype=ax.bfloat16):
        out = model(ax.tensor(ids), attention_mask=ax.tensor(mask), labels=ax.tensor(ids))
    assert out.logits.dtype == ax.bfloat16 and np.isfinite(out.loss.item())
    got = out.logits.float().detach().numpy()
    real = mask == 1
    np.testing.assert_allclose(got[real], ref[real], atol=0.05 * np.abs(ref).max())
