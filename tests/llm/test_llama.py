"""LLaMA decoder against transformers' LlamaForCausalLM (same weights through save_pretrained folders),
RoPE against a NumPy complex-rotation reference, the KV cache against full recomputation."""

import copy
import json

import numpy as np
import pytest

import axonml as ax
from axonml.errors import CheckpointError, DTypeError, ShapeError
from axonml.llm._hf import read_pretrained, write_pretrained
from axonml.llm.llama import (
    LlamaConfig,
    LlamaDecoderLayer,
    LlamaForCausalLM,
    LlamaRMSNorm,
    LlamaRotaryEmbedding,
    apply_rotary_pos_emb,
)

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

VOCAB = 128
HF_KW = dict(
    vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
    num_key_value_heads=2, max_position_embeddings=64, rms_norm_eps=1e-5, rope_theta=500.0, pad_token_id=0,
    initializer_range=0.1,
)


def _hf_model(tmp_dir, **overrides):
    """A random transformers Llama (norm weights perturbed away from 1) saved to ``tmp_dir``."""
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(**{**HF_KW, **overrides})
    model = transformers.LlamaForCausalLM(cfg).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(1.0 + 0.2 * torch.randn_like(p))
            elif name.endswith("bias"):
                p.copy_(0.1 * torch.randn_like(p))
    model.save_pretrained(tmp_dir)
    return model


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """(transformers model, our model loaded from its save_pretrained folder)."""
    d = tmp_path_factory.mktemp("hf_llama")
    hf = _hf_model(d)
    return hf, LlamaForCausalLM.from_pretrained(d)


def _ids(b, t, seed=0):
    return np.random.default_rng(seed).integers(1, VOCAB, size=(b, t)).astype(np.int64)


def _hf_positions(mask):
    return torch.tensor(np.maximum(np.cumsum(mask, axis=1) - 1, 0))


def test_config_from_transformers_dict_and_back():
    hf_cfg = transformers.LlamaConfig(**HF_KW)
    cfg = LlamaConfig.from_dict(hf_cfg.to_dict())
    assert (cfg.hidden_size, cfg.num_key_value_heads, cfg.head_dim, cfg.rope_theta, cfg.rms_norm_eps) == (64, 2, 16, 500.0, 1e-5)
    # 4.x-style keys (rope_theta at top level, rope_scaling null) read the same
    legacy = {k: v for k, v in hf_cfg.to_dict().items() if k != "rope_parameters"}
    assert LlamaConfig.from_dict({**legacy, "rope_theta": 500.0, "rope_scaling": None}) == cfg
    assert LlamaConfig.from_dict(cfg.to_dict()) == cfg
    back = transformers.LlamaConfig(**cfg.to_dict())
    assert back.rope_parameters["rope_theta"] == 500.0 and back.num_key_value_heads == 2
    assert LlamaConfig(num_attention_heads=8, hidden_size=64).num_key_value_heads == 8


def test_config_errors():
    base = transformers.LlamaConfig(**HF_KW).to_dict()
    with pytest.raises(ValueError, match="rope_scaling"):
        LlamaConfig.from_dict({**base, "rope_scaling": {"type": "linear", "factor": 2.0}})
    with pytest.raises(ValueError, match="'llama3'"):
        LlamaConfig.from_dict({**base, "rope_parameters": {"rope_type": "llama3", "rope_theta": 5e5, "factor": 8.0}})
    with pytest.raises(ValueError, match="model_type"):
        LlamaConfig.from_dict({**base, "model_type": "mistral"})
    with pytest.raises(ValueError, match=r"num_attention_heads \(4\) must be a multiple of num_key_value_heads \(3\)"):
        LlamaConfig.from_name("tiny", num_key_value_heads=3)
    with pytest.raises(ValueError, match="hidden_act"):
        LlamaConfig.from_name("tiny", hidden_act="tanh")
    with pytest.raises(ValueError, match="unknown name"):
        LlamaConfig.from_name("llama-9000")


def test_num_parameters_matches_transformers():
    for kw in ({}, dict(attention_bias=True, mlp_bias=True, tie_word_embeddings=True)):
        hf = transformers.LlamaForCausalLM(transformers.LlamaConfig(**{**HF_KW, **kw}))
        ours = LlamaConfig.from_dict(hf.config.to_dict())
        assert ours.num_parameters() == hf.num_parameters() == LlamaForCausalLM(ours).num_parameters()


def test_rope_matches_numpy_complex_rotation():
    rng = np.random.default_rng(1)
    b, h, t, d, theta = 2, 3, 5, 8, 10000.0
    q, k = rng.standard_normal((2, b, h, t, d)).astype(np.float32)
    pos = np.array([[0, 1, 2, 7, 30], [3, 4, 5, 6, 1000]])
    cos, sin = LlamaRotaryEmbedding(d, theta)(pos)
    qr, kr = apply_rotary_pos_emb(ax.tensor(q), ax.tensor(k), cos, sin)

    def ref(x):  # pairs (i, i + d/2) as complex numbers, rotated by position * theta^(-2i/d)
        angle = pos[:, None, :, None] * theta ** (-np.arange(0, d, 2) / d)  # (B, 1, T, d/2)
        z = (x[..., : d // 2] + 1j * x[..., d // 2 :]).astype(np.complex128) * np.exp(1j * angle)
        return np.concatenate([z.real, z.imag], axis=-1)

    np.testing.assert_allclose(qr.numpy(), ref(q), rtol=1e-4, atol=2e-5)
    np.testing.assert_allclose(kr.numpy(), ref(k), rtol=1e-4, atol=2e-5)
    # the point of RoPE: a rotated query . key depends only on the distance of the positions
    one_q, one_k = ax.tensor(q[:1, :1, :1]), ax.tensor(k[:1, :1, :1])

    def score(m, n):
        cq, sq = LlamaRotaryEmbedding(d, theta)(np.array([[m]]))
        ck, sk = LlamaRotaryEmbedding(d, theta)(np.array([[n]]))
        return float((apply_rotary_pos_emb(one_q, one_q, cq, sq)[0] * apply_rotary_pos_emb(one_k, one_k, ck, sk)[1]).sum().item())

    assert score(9, 4) == pytest.approx(score(25, 20), rel=1e-4, abs=1e-5)
    assert score(9, 4) != pytest.approx(score(9, 5), rel=1e-3)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_rms_norm_matches_transformers(dtype):
    from transformers.models.llama.modeling_llama import LlamaRMSNorm as HFRMSNorm

    rng = np.random.default_rng(2)
    x = (3.0 * rng.standard_normal((4, 16, 64))).astype(np.float32)
    w = (1.0 + 0.3 * rng.standard_normal(64)).astype(np.float32)
    hf = HFRMSNorm(64, eps=1e-5)
    ours = LlamaRMSNorm(64, eps=1e-5)
    with torch.no_grad():
        hf.weight.copy_(torch.tensor(w))
    with ax.no_grad():
        ours.weight.copy_(ax.tensor(w))
    tdt, adt = getattr(torch, dtype), getattr(ax, dtype)
    expect = hf.to(tdt)(torch.tensor(x).to(tdt)).float().detach().numpy()
    got = ours.to(dtype=adt)(ax.tensor(x).to(adt)).float().detach().numpy()
    tol = 1e-6 if dtype == "float32" else 8e-3  # bfloat16: one rounding step
    np.testing.assert_allclose(got, expect, rtol=tol, atol=tol)
    if dtype == "bfloat16":  # normalised values are rounded before the weight scales them (one rounding: ~75% equal)
        assert np.mean(got == expect) > 0.99


def test_logits_and_hidden_states_match_transformers(pair):
    hf, ours = pair
    ids = _ids(2, 9)
    with torch.no_grad():
        expect = hf(torch.tensor(ids), output_hidden_states=True)
    out = ours(ax.tensor(ids), output_hidden_states=True)
    assert out.logits.shape == (2, 9, VOCAB) and float(np.abs(expect.logits.detach().numpy()).max()) > 0.5
    np.testing.assert_allclose(out.logits.detach().numpy(), expect.logits.detach().numpy(), rtol=1e-4, atol=1e-4)
    assert len(out.hidden_states) == len(expect.hidden_states) == 3
    for a, e in zip(out.hidden_states, expect.hidden_states):
        np.testing.assert_allclose(a.detach().numpy(), e.numpy(), rtol=1e-4, atol=1e-4)


def test_left_padded_logits_match_transformers(pair):
    hf, ours = pair
    ids = _ids(3, 8, seed=3)
    mask = np.ones_like(ids)
    mask[0, :3] = 0
    mask[2, :1] = 0
    ids[mask == 0] = 0
    with torch.no_grad():
        expect = hf(torch.tensor(ids), attention_mask=torch.tensor(mask), position_ids=_hf_positions(mask)).logits.numpy()
    got = ours(ax.tensor(ids), attention_mask=ax.tensor(mask)).logits.detach().numpy()
    real = mask.astype(bool)
    np.testing.assert_allclose(got[real], expect[real], rtol=1e-4, atol=1e-4)
    # a left-padded row equals the same prompt run alone
    alone = ours(ax.tensor(ids[:1, 3:])).logits.detach().numpy()
    np.testing.assert_allclose(got[0, 3:], alone[0], rtol=1e-4, atol=1e-5)


def test_bfloat16_autocast_with_padding_stays_close_to_float32(pair):
    # float32 rotary tables and masks meet bf16 activations under autocast: they are cast, as transformers does
    _, ours = pair
    ids = _ids(2, 8, seed=5)
    mask = np.ones_like(ids)
    mask[0, :2] = 0
    ref = ours(ax.tensor(ids), attention_mask=ax.tensor(mask), labels=ax.tensor(ids)).loss.item()
    with ax.autocast("cpu", dtype=ax.bfloat16):
        got = ours(ax.tensor(ids), attention_mask=ax.tensor(mask), labels=ax.tensor(ids)).loss.item()
    assert abs(got - ref) < 0.02 * abs(ref), (got, ref)


def test_explicit_position_ids_match_transformers(pair):
    hf, ours = pair  # RoPE sees only position differences, so the ids must be uneven to matter
    ids, pos = _ids(2, 5, seed=10), np.array([[0, 1, 2, 9, 10], [4, 5, 7, 8, 30]])
    with torch.no_grad():
        expect = hf(torch.tensor(ids), position_ids=torch.tensor(pos)).logits.numpy()
    got = ours(ax.tensor(ids), position_ids=ax.tensor(pos)).logits.detach().numpy()
    np.testing.assert_allclose(got, expect, rtol=1e-4, atol=1e-4)
    assert np.abs(got - ours(ax.tensor(ids)).logits.detach().numpy()).max() > 1e-3


def test_loss_and_gradients_match_transformers(pair):
    hf, ours = pair
    ids = _ids(2, 7, seed=4)
    labels = ids.copy()
    labels[0, 2] = labels[1, 5:] = -100
    hf.zero_grad()
    ours.zero_grad()
    hf_out = hf(torch.tensor(ids), labels=torch.tensor(labels))
    hf_out.loss.backward()
    out = ours(ax.tensor(ids), labels=ax.tensor(labels))
    out.loss.backward()
    assert out.loss.item() == pytest.approx(hf_out.loss.item(), rel=1e-5)
    hf_params = dict(hf.named_parameters())
    names = ["model.embed_tokens.weight", "model.layers.0.self_attn.q_proj.weight", "model.layers.0.self_attn.k_proj.weight",
             "model.layers.1.self_attn.v_proj.weight", "model.layers.1.mlp.gate_proj.weight",
             "model.layers.0.input_layernorm.weight", "model.norm.weight", "lm_head.weight"]
    ours_params = dict(ours.named_parameters())
    assert set(ours_params) == set(hf_params)
    for n in names:
        g, e = ours_params[n].grad.numpy(), hf_params[n].grad.numpy()
        np.testing.assert_allclose(g, e, rtol=1e-3, atol=1e-5 * float(np.abs(e).max()), err_msg=n)
    ours.zero_grad()


def test_save_pretrained_loads_in_transformers(tmp_path):
    ax.manual_seed(3)
    cfg = LlamaConfig.from_name("tiny", vocab_size=VOCAB, rope_theta=321.0, tie_word_embeddings=True, attention_bias=True)
    ours = LlamaForCausalLM(cfg)
    with ax.no_grad():
        for n, p in ours.named_parameters():
            if "norm" in n or n.endswith("bias"):
                p.copy_(ax.randn(*p.shape) * 0.2 + (1.0 if "norm" in n else 0.0))
    ours.save_pretrained(tmp_path)
    assert "lm_head.weight" not in read_pretrained(tmp_path)[1]  # tied: written once, as transformers does
    hf = transformers.LlamaForCausalLM.from_pretrained(tmp_path).eval()
    assert hf.config.rope_parameters["rope_theta"] == 321.0 and hf.config.tie_word_embeddings
    ids = _ids(2, 6, seed=5)
    with torch.no_grad():
        expect = hf(torch.tensor(ids)).logits.detach().numpy()
    np.testing.assert_allclose(ours(ax.tensor(ids)).logits.detach().numpy(), expect, rtol=1e-4, atol=1e-4)
    # and back: our loader reads transformers' folder of the tied, biased model
    hf.save_pretrained(tmp_path / "again")
    again = LlamaForCausalLM.from_pretrained(tmp_path / "again")
    assert again.lm_head.weight is again.model.embed_tokens.weight
    np.testing.assert_allclose(again(ax.tensor(ids)).logits.detach().numpy(), expect, rtol=1e-4, atol=1e-4)


def test_bfloat16_checkpoint_loads(tmp_path, pair):
    hf, _ = pair
    copy.deepcopy(hf).to(torch.bfloat16).save_pretrained(tmp_path)  # a copy: the fixture keeps float32 weights
    ours = LlamaForCausalLM.from_pretrained(tmp_path)
    assert ours.lm_head.weight.dtype == ax.float32
    ref = transformers.LlamaForCausalLM.from_pretrained(tmp_path, dtype=torch.float32).eval()
    ids = _ids(1, 5, seed=6)
    with torch.no_grad():
        expect = ref(torch.tensor(ids)).logits.detach().numpy()
    np.testing.assert_allclose(ours(ax.tensor(ids)).logits.detach().numpy(), expect, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("padded", [False, True])
def test_cached_incremental_forward_equals_full(pair, padded):
    _, ours = pair
    ids = _ids(2, 9, seed=7)
    mask = np.ones_like(ids)
    if padded:
        mask[1, :2] = 0
    full = ours(ax.tensor(ids), attention_mask=ax.tensor(mask)).logits.detach().numpy()
    with ax.no_grad():
        out = ours(ax.tensor(ids[:, :4]), attention_mask=ax.tensor(mask[:, :4]), use_cache=True)
        pieces, cache = [out.logits.detach().numpy()], out.past_key_values
        assert cache.seq_length == 4
        # one chunk of two tokens (a bottom-right causal mask), then one token at a time
        for lo, hi in ((4, 6), (6, 7), (7, 8), (8, 9)):
            out = ours(ax.tensor(ids[:, lo:hi]), attention_mask=ax.tensor(mask[:, :hi]), past_key_values=cache, use_cache=True)
            assert out.past_key_values is cache
            pieces.append(out.logits.detach().numpy())
    assert cache.seq_length == 9
    real = mask.astype(bool)
    np.testing.assert_allclose(np.concatenate(pieces, axis=1)[real], full[real], rtol=1e-4, atol=1e-5)


def test_greedy_generation_matches_transformers(pair):
    hf, ours = pair
    hf.generation_config.eos_token_id = None
    ids = _ids(2, 5, seed=8)
    mask = np.ones_like(ids)
    mask[0, :2] = 0
    ids[mask == 0] = 0
    with torch.no_grad():
        expect = hf.generate(
            torch.tensor(ids), attention_mask=torch.tensor(mask), max_new_tokens=8, do_sample=False, pad_token_id=0,
        ).numpy()
    got = ours.generate(ax.tensor(ids), attention_mask=ax.tensor(mask), max_new_tokens=8, eos_token_id=[], pad_token_id=0)
    np.testing.assert_array_equal(got.numpy(), expect)
    np.testing.assert_array_equal(ours.generate(ax.tensor(ids[1:]), max_new_tokens=8, eos_token_id=[]).numpy(), expect[1:])


def test_gradient_checkpointing_gives_same_gradients(pair):
    _, base = pair
    ours = LlamaForCausalLM(base.config)
    ours.load_state_dict(base.state_dict())
    ids = _ids(2, 6, seed=9)
    grads = []
    calls = []
    handle = ours.blocks[0].register_forward_hook(lambda *a: calls.append(1))
    for enable in (False, True):
        ours.train()
        (ours.gradient_checkpointing_enable if enable else ours.gradient_checkpointing_disable)()
        ours.zero_grad()
        calls.clear()
        ours(ax.tensor(ids), labels=ax.tensor(ids)).loss.backward()
        grads.append({n: p.grad.numpy().copy() for n, p in ours.named_parameters()})
        assert len(calls) == (2 if enable else 1)  # checkpointing reruns each block in backward
    handle.remove()
    assert ours.is_gradient_checkpointing and isinstance(ours.blocks[0], LlamaDecoderLayer) and len(ours.blocks) == 2
    for n in grads[0]:
        np.testing.assert_allclose(grads[1][n], grads[0][n], rtol=1e-5, atol=1e-7, err_msg=n)


def test_bad_inputs_and_checkpoints(tmp_path, pair):
    _, ours = pair
    with pytest.raises(DTypeError, match="int64"):
        ours(ax.tensor(np.ones((1, 3), dtype=np.float32)))
    with pytest.raises(ShapeError, match=r"\(1, 4\)"):
        ours(ax.tensor(_ids(1, 4)), attention_mask=ax.tensor(np.ones((1, 3), dtype=np.int64)))
    with pytest.raises(ShapeError, match="labels"):
        ours(ax.tensor(_ids(1, 4)), labels=ax.tensor(_ids(1, 3)))
    with pytest.raises(ShapeError, match="position_ids"):
        ours(ax.tensor(_ids(1, 4)), position_ids=ax.tensor(_ids(1, 3)))
    cfg = ours.config
    tensors = {n: p.numpy() for n, p in ours.state_dict().items()}
    write_pretrained(tmp_path / "short", cfg.to_dict(), {n: a for n, a in tensors.items() if "layers.1.mlp.up_proj" not in n})
    with pytest.raises(CheckpointError, match="layers.1.mlp.up_proj.weight"):
        LlamaForCausalLM.from_pretrained(tmp_path / "short")
    extra = {**tensors, "model.layers.2.mlp.up_proj.weight": np.zeros((2, 2), np.float32)}
    write_pretrained(tmp_path / "extra", cfg.to_dict(), extra)
    with pytest.raises(CheckpointError, match="unexpected tensors.*layers.2"):
        LlamaForCausalLM.from_pretrained(tmp_path / "extra")
    write_pretrained(tmp_path / "wide", {**cfg.to_dict(), "intermediate_size": 100}, tensors)
    with pytest.raises(CheckpointError, match=r"gate_proj.weight.*\(96, 64\).*\(100, 64\)"):
        LlamaForCausalLM.from_pretrained(tmp_path / "wide")
    assert json.loads((tmp_path / "wide" / "config.json").read_text())["architectures"] == ["LlamaForCausalLM"]
