"""BERT against transformers' BertModel / BertForMaskedLM / BertForSequenceClassification (the oracle):
hidden states, pooler, MLM and classification logits and losses on a padded batch with segments,
gradients, checkpoints both ways, cross-class loading, errors, gradient checkpointing, training."""

import dataclasses
import json
import logging
import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import axonml as ax  # noqa: E402
import axonml.llm.bert as bert_module  # noqa: E402
from axonml.errors import CheckpointError, DTypeError, ShapeError  # noqa: E402
from axonml.llm import _hf  # noqa: E402
from axonml.llm.bert import BertConfig, BertModel  # noqa: E402
from axonml.llm.bert_heads import BertForMaskedLM, BertForSequenceClassification  # noqa: E402

transformers.logging.set_verbosity_error()
torch.set_num_threads(1)

VOCAB, T = 97, 9
HF_TINY = dict(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=48,
               max_position_embeddings=40, type_vocab_size=2)
MASK = np.array([[1] * T, [1] * 6 + [0] * 3, [1] * 3 + [0] * 6], dtype=np.int64)  # right padding, as BERT pads


def _perturb(model, seed=0):
    """transformers initialises biases to 0 and LayerNorms to 1: randomise everything so a wrong mapping shows."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.1)
    return model


def _hf_dir(tmp_path_factory, cls, name, seed=0, **cfg):
    torch.manual_seed(seed)
    hf = _perturb(cls(transformers.BertConfig(**{**HF_TINY, **cfg})), seed).eval()
    d = tmp_path_factory.mktemp(name)
    hf.save_pretrained(d)
    return str(d), hf


@pytest.fixture(scope="module")
def mlm_dir(tmp_path_factory):
    return _hf_dir(tmp_path_factory, transformers.BertForMaskedLM, "hf_mlm")


@pytest.fixture(scope="module")
def cls_dir(tmp_path_factory):
    return _hf_dir(tmp_path_factory, transformers.BertForSequenceClassification, "hf_cls", seed=1, num_labels=3)


def _batch(seed=0, b=3):
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, VOCAB, (b, T)).astype(np.int64)
    ids[MASK[:b] == 0] = 0  # pad token
    types = (rng.random((b, T)) < 0.5).astype(np.int64) * MASK[:b]
    return ids, MASK[:b].copy(), types


def _np(t):
    return t.detach().numpy()


def _close(a, b, rel=1e-5):
    np.testing.assert_allclose(a, b, atol=rel * max(1.0, float(np.abs(b).max())), rtol=0)


def _hf_kwargs(ids, mask, types):
    return dict(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask), token_type_ids=torch.tensor(types))


def _ax_kwargs(ids, mask, types):
    return dict(input_ids=ax.tensor(ids), attention_mask=ax.tensor(mask), token_type_ids=ax.tensor(types))


# -- forward parity ----------------------------------------------------------------------------
@pytest.mark.parametrize("act", ["gelu", "gelu_new", "relu"])
def test_bert_model_matches_transformers(tmp_path, act):
    torch.manual_seed(3)
    hf = _perturb(transformers.BertModel(transformers.BertConfig(**HF_TINY, hidden_act=act)), 3).eval()
    hf.save_pretrained(tmp_path)  # a bare BertModel: unprefixed names
    ours = BertModel.from_pretrained(tmp_path).eval()
    assert ours.config.hidden_act == act
    ids, mask, types = _batch()
    with torch.no_grad():
        ref = hf(**_hf_kwargs(ids, mask, types), output_hidden_states=True)
    out = ours(**_ax_kwargs(ids, mask, types), output_hidden_states=True)
    _close(_np(out.last_hidden_state), ref.last_hidden_state.numpy())  # padded query rows included
    _close(_np(out.pooler_output), ref.pooler_output.numpy())
    assert len(out.hidden_states) == len(ref.hidden_states) == 3
    for a, b in zip(out.hidden_states, ref.hidden_states):
        _close(_np(a), b.numpy())
    # without a mask and segments: transformers' defaults (all attend, type 0, positions 0..T-1)
    with torch.no_grad():
        ref2 = hf(input_ids=torch.tensor(ids))
    _close(_np(ours(ids).last_hidden_state), ref2.last_hidden_state.numpy())


def test_bert_model_from_head_checkpoint_matches_transformers(cls_dir):
    d, _ = cls_dir
    hf = transformers.BertModel.from_pretrained(d).eval()  # takes the bert.-prefixed weights
    ours = BertModel.from_pretrained(d).eval()
    ids, mask, types = _batch(1)
    with torch.no_grad():
        ref = hf(**_hf_kwargs(ids, mask, types))
    out = ours(**_ax_kwargs(ids, mask, types))
    _close(_np(out.last_hidden_state), ref.last_hidden_state.numpy())
    _close(_np(out.pooler_output), ref.pooler_output.numpy())
    no_pool = BertModel.from_pretrained(d, add_pooling_layer=False)
    assert no_pool.pooler is None and no_pool(ids).pooler_output is None


def test_masked_lm_logits_and_loss_match_transformers(mlm_dir):
    d, hf = mlm_dir
    ours = BertForMaskedLM.from_pretrained(d).eval()
    ids, mask, types = _batch(2)
    labels = np.full_like(ids, -100)
    labels[0, [1, 4]] = ids[0, [1, 4]]
    labels[1, 2] = 5
    labels[2, 0] = ids[2, 0]
    with torch.no_grad():
        ref = hf(**_hf_kwargs(ids, mask, types), labels=torch.tensor(labels))
    out = ours(**_ax_kwargs(ids, mask, types), labels=ax.tensor(labels))
    _close(_np(out.logits), ref.logits.numpy())
    np.testing.assert_allclose(out.loss.item(), ref.loss.item(), rtol=1e-5)
    # the decoder is the embedding matrix, its bias is cls.predictions.bias
    pred = ours.cls.predictions
    assert pred.decoder.weight is ours.bert.embeddings.word_embeddings.weight and pred.decoder.bias is pred.bias


def test_sequence_classification_logits_and_losses_match_transformers(cls_dir, tmp_path_factory):
    d, hf = cls_dir
    ours = BertForSequenceClassification.from_pretrained(d).eval()
    assert ours.config.num_labels == 3
    ids, mask, types = _batch(3)
    y = np.array([2, 0, 1], dtype=np.int64)
    with torch.no_grad():
        ref = hf(**_hf_kwargs(ids, mask, types), labels=torch.tensor(y))
    out = ours(**_ax_kwargs(ids, mask, types), labels=y)
    _close(_np(out.logits), ref.logits.numpy())
    np.testing.assert_allclose(out.loss.item(), ref.loss.item(), rtol=1e-5)
    # float labels (B, num_labels): multi-label, binary cross-entropy with logits
    multi = (np.random.default_rng(0).random((3, 3)) < 0.5).astype(np.float32)
    hf.config.problem_type = None  # transformers fixes problem_type at its first loss; ours decides per call
    with torch.no_grad():
        ref_m = hf(**_hf_kwargs(ids, mask, types), labels=torch.tensor(multi))
    np.testing.assert_allclose(ours(**_ax_kwargs(ids, mask, types), labels=multi).loss.item(), ref_m.loss.item(), rtol=1e-5)
    # one label: regression with mean squared error
    rd, hf_r = _hf_dir(tmp_path_factory, transformers.BertForSequenceClassification, "hf_reg", seed=2, num_labels=1)
    ours_r = BertForSequenceClassification.from_pretrained(rd).eval()
    target = np.array([0.5, -1.0, 2.0], dtype=np.float32)
    with torch.no_grad():
        ref_r = hf_r(**_hf_kwargs(ids, mask, types), labels=torch.tensor(target))
    out_r = ours_r(**_ax_kwargs(ids, mask, types), labels=target)
    _close(_np(out_r.logits), ref_r.logits.numpy())
    np.testing.assert_allclose(out_r.loss.item(), ref_r.loss.item(), rtol=1e-5)


# -- gradients ---------------------------------------------------------------------------------
def test_masked_lm_gradients_match_torch(mlm_dir):
    d, _ = mlm_dir
    hf = transformers.BertForMaskedLM.from_pretrained(d).eval()  # a fresh copy: grads of its own
    ours = BertForMaskedLM.from_pretrained(d).eval()
    ids, mask, types = _batch(4)
    ids[0, 0] = 0  # a pad-token id inside the text: padding_idx gets no embedding gradient in both
    labels = np.where(np.random.default_rng(1).random(ids.shape) < 0.4, ids, -100)
    hf(**_hf_kwargs(ids, mask, types), labels=torch.tensor(labels)).loss.backward()
    ours(**_ax_kwargs(ids, mask, types), labels=ax.tensor(labels)).loss.backward()
    ref = dict(hf.named_parameters())
    names = ["bert.embeddings.word_embeddings.weight", "bert.embeddings.token_type_embeddings.weight",
             "bert.encoder.layer.0.attention.self.query.weight", "bert.encoder.layer.0.attention.self.key.bias",
             "bert.encoder.layer.1.output.LayerNorm.weight", "bert.encoder.layer.1.intermediate.dense.weight",
             "cls.predictions.transform.dense.weight", "cls.predictions.bias"]
    for n in names:
        g = ours.get_parameter(n).grad
        assert g is not None, n
        _close(_np(g), ref[n].grad.numpy(), rel=1e-4)


def test_gradient_checkpointing_gives_the_same_gradients(monkeypatch):
    cfg = BertConfig(**HF_TINY)  # dropout 0.1 everywhere: the recomputation must replay the same masks
    ax.manual_seed(0)
    model = BertForMaskedLM(cfg).train()
    ids, mask, types = _batch(5)
    labels = np.where(ids > 50, ids, -100)

    def grads():
        model.zero_grad()
        ax.manual_seed(123)
        loss = model(**_ax_kwargs(ids, mask, types), labels=labels).loss
        loss.backward()
        return loss.item(), {n: _np(p.grad) for n, p in model.named_parameters()}

    loss_plain, g_plain = grads()
    model.gradient_checkpointing_enable()
    assert model.is_gradient_checkpointing
    calls = []
    real = bert_module.checkpoint
    monkeypatch.setattr(bert_module, "checkpoint", lambda *a, **k: calls.append(1) or real(*a, **k))
    loss_ckpt, g_ckpt = grads()
    assert len(calls) == 2  # one per layer
    model.gradient_checkpointing_disable()
    assert loss_plain == loss_ckpt
    for n in g_plain:
        np.testing.assert_allclose(g_ckpt[n], g_plain[n], rtol=1e-6, atol=1e-7, err_msg=n)
    assert len(model.blocks) == 2 and type(model.blocks[0]).__name__ == "BertLayer"


# -- checkpoints -------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["mlm", "cls", "base"])
def test_save_pretrained_loads_in_transformers(tmp_path, kind):
    ax.manual_seed(7)
    cfg = BertConfig(**HF_TINY, num_labels=4)
    ours = {"mlm": BertForMaskedLM, "cls": BertForSequenceClassification, "base": BertModel}[kind](cfg).eval()
    with ax.no_grad():  # move every tensor off its init value (zero biases, unit LayerNorms)
        for p in ours.parameters():
            p.copy_(p + ax.tensor(np.random.default_rng(p.numel()).normal(0, 0.1, p.shape).astype(np.float32)))
    ours.save_pretrained(tmp_path)
    hf_cls = {"mlm": transformers.BertForMaskedLM, "cls": transformers.BertForSequenceClassification,
              "base": transformers.BertModel}[kind]
    hf, info = hf_cls.from_pretrained(tmp_path, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info
    ids, mask, types = _batch(6)
    with torch.no_grad():
        ref = hf.eval()(**_hf_kwargs(ids, mask, types))
    out = ours(**_ax_kwargs(ids, mask, types))
    field = {"mlm": "logits", "cls": "logits", "base": "last_hidden_state"}[kind]
    _close(_np(getattr(out, field)), getattr(ref, field).numpy())
    again = type(ours).from_pretrained(tmp_path).eval()
    np.testing.assert_array_equal(_np(getattr(again(**_ax_kwargs(ids, mask, types)), field)), _np(getattr(out, field)))
    if kind == "cls":
        assert hf.config.num_labels == 4 and again.config.num_labels == 4


def test_head_checkpoint_into_other_head(mlm_dir, caplog):
    d, hf = mlm_dir
    with caplog.at_level(logging.WARNING, logger="axonml.llm.bert"):
        clf = BertForSequenceClassification.from_pretrained(d, num_labels=5)
    fresh = " ".join(r.getMessage() for r in caplog.records)
    assert "classifier.weight" in fresh and "bert.pooler.dense.weight" in fresh
    assert clf.classifier.weight.shape == (5, 32)
    np.testing.assert_array_equal(_np(clf.bert.encoder.layer[1].output.dense.weight),
                                  hf.bert.encoder.layer[1].output.dense.weight.detach().numpy())
    # a bare BertModel directory under a head: the backbone gets the bert. prefix
    base_dir = os.path.join(os.path.dirname(d), "base_from_mlm")
    BertModel.from_pretrained(d, add_pooling_layer=False).save_pretrained(base_dir)
    mlm = BertForMaskedLM.from_pretrained(base_dir)
    np.testing.assert_array_equal(_np(mlm.bert.embeddings.word_embeddings.weight),
                                  hf.bert.embeddings.word_embeddings.weight.detach().numpy())


def _edit_config(src, dst, **changes):
    os.makedirs(dst, exist_ok=True)
    with open(os.path.join(src, "config.json")) as f:
        cfg = json.load(f)
    cfg.update(changes)
    with open(os.path.join(dst, "config.json"), "w") as f:
        json.dump(cfg, f)
    os.symlink(os.path.join(src, "model.safetensors"), os.path.join(dst, "model.safetensors"))
    return dst


def test_config_and_weights_mismatch_are_clear_errors(mlm_dir, tmp_path):
    d, _ = mlm_dir
    fewer = r"has 2 encoder layers.*num_hidden_layers=1.*no place for: \['bert\.encoder\.layer\.1"
    with pytest.raises(CheckpointError, match=fewer):
        BertForMaskedLM.from_pretrained(_edit_config(d, tmp_path / "fewer", num_hidden_layers=1))
    with pytest.raises(CheckpointError, match=r"has 2 encoder layers.*num_hidden_layers=3.*missing.*\['encoder\.layer\.2\."):
        BertModel.from_pretrained(_edit_config(d, tmp_path / "more", num_hidden_layers=3))
    with pytest.raises(CheckpointError, match=r"shape \(40, 32\).*\(64, 32\)"):
        BertModel.from_pretrained(_edit_config(d, tmp_path / "pos", max_position_embeddings=64))
    with pytest.raises(CheckpointError, match="lacks"):
        BertModel.from_pretrained(tmp_path)
    with pytest.raises(ValueError, match="model_type"):
        BertModel.from_pretrained(_edit_config(d, tmp_path / "gpt", model_type="gpt2"))
    with pytest.raises(ValueError, match="relative_key"):
        BertModel.from_pretrained(_edit_config(d, tmp_path / "rel", position_embedding_type="relative_key"))


def test_bad_inputs_are_clear_errors():
    model = BertForSequenceClassification(BertConfig.from_name("tiny", max_position_embeddings=8)).eval()
    ids = np.ones((2, 5), dtype=np.int64)
    with pytest.raises(DTypeError, match="int64"):
        model(ids.astype(np.float32))
    with pytest.raises(ShapeError, match=r"\(batch, seq_len\)"):
        model(ids[0])
    with pytest.raises(ShapeError, match=r"attention_mask must be .*\(2, 5\).*\(2, 4\)"):
        model(ids, attention_mask=np.ones((2, 4)))
    with pytest.raises(ShapeError, match="token_type_ids"):
        model(ids, token_type_ids=np.zeros((2, 4), dtype=np.int64))
    with pytest.raises(ShapeError, match="max_position_embeddings=8"):
        model(np.ones((1, 9), dtype=np.int64))
    with pytest.raises(ShapeError, match=r"labels must be \(batch,\)"):
        model(ids, labels=np.array([0, 1, 1]))
    with pytest.raises(ShapeError, match="labels must be"):
        BertForMaskedLM(BertConfig.from_name("tiny"))(ids, labels=ids[:, :3])


# -- configs -----------------------------------------------------------------------------------
def test_config_round_trips_through_transformers():
    ours = BertConfig.from_name("tiny", num_labels=3, hidden_act="gelu_new", classifier_dropout=0.2)
    hf = transformers.BertConfig.from_dict(ours.to_dict())
    assert (hf.num_labels, hf.hidden_act, hf.classifier_dropout, hf.hidden_size) == (3, "gelu_new", 0.2, 32)
    assert BertConfig.from_dict(hf.to_dict()) == ours
    named = BertConfig.from_dict(transformers.BertConfig(id2label={0: "neg", 1: "pos"}).to_dict())
    assert named.id2label == {0: "neg", 1: "pos"} and named.to_dict()["label2id"] == {"neg": 0, "pos": 1}
    base, large = BertConfig.from_name("bert-base-uncased"), BertConfig.from_name("bert-large-uncased")
    assert dataclasses.astuple(base)[:5] == (30522, 768, 12, 12, 3072)
    assert (large.hidden_size, large.num_hidden_layers, large.num_attention_heads) == (1024, 24, 16)
    with pytest.raises(ValueError, match="divisible"):
        BertConfig(hidden_size=30, num_attention_heads=4)
    with pytest.raises(ValueError, match="hidden_act"):
        BertConfig(hidden_act="swiglu")
    with pytest.raises(ValueError, match="unknown name"):
        BertConfig.from_name("bert-huge")


# -- training ----------------------------------------------------------------------------------
def test_masked_lm_training_reduces_the_loss():
    ax.manual_seed(0)
    model = BertForMaskedLM(BertConfig.from_name("tiny", hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0))
    model.train()
    rng = np.random.default_rng(0)
    ids = rng.integers(5, 40, (4, 12)).astype(np.int64)
    masked = rng.random(ids.shape) < 0.25
    masked[:, 0] = True
    labels = np.where(masked, ids, -100)
    inputs = np.where(masked, 4, ids)  # 4 plays [MASK]
    opt = ax.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(25):
        opt.zero_grad()
        loss = model(inputs, labels=labels).loss
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses


def test_legacy_checkpoint_names_load(mlm_dir, tmp_path):
    """Original BERT releases: LayerNorm gamma/beta, a position_ids buffer, the explicit tied decoder, the NSP head."""
    d, hf = mlm_dir
    cfg, tensors = _hf.read_pretrained(d)
    legacy = {k.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta"): v
              for k, v in tensors.items()}
    legacy["bert.embeddings.position_ids"] = np.arange(40, dtype=np.int64)[None]
    legacy["cls.predictions.decoder.weight"] = tensors["bert.embeddings.word_embeddings.weight"]
    legacy["cls.seq_relationship.weight"] = np.zeros((2, 32), np.float32)
    legacy["bert.pooler.dense.weight"] = np.zeros((32, 32), np.float32)
    _hf.write_pretrained(tmp_path, cfg, legacy)
    ours = BertForMaskedLM.from_pretrained(tmp_path).eval()
    ids, mask, types = _batch(7)
    with torch.no_grad():
        ref = hf(**_hf_kwargs(ids, mask, types)).logits.numpy()
    _close(_np(ours(**_ax_kwargs(ids, mask, types)).logits), ref)
