"""KVCache: appending in place equals concatenation, growth, errors; _hf directory helpers."""

import json

import numpy as np
import pytest

import axonml as ax
from axonml.errors import CheckpointError, ShapeError
from axonml.llm._hf import read_pretrained, take, write_pretrained
from axonml.llm.cache import KVCache


def test_update_equals_concatenation_across_growth():
    rng = np.random.default_rng(0)
    cache = KVCache(num_layers=2, capacity=3)  # forces two doublings over 9 positions
    ks, vs = [], []
    with ax.no_grad():
        for t_new in (2, 1, 1, 4, 1):
            k = rng.standard_normal((2, 3, t_new, 4)).astype(np.float32)
            v = rng.standard_normal((2, 3, t_new, 4)).astype(np.float32)
            ks.append(k), vs.append(v)
            assert cache.seq_length == sum(x.shape[2] for x in ks[:-1])
            for layer in range(2):
                k_all, v_all = cache.update(layer, ax.tensor(k), ax.tensor(v))
            np.testing.assert_array_equal(k_all.numpy(), np.concatenate(ks, axis=2))
            np.testing.assert_array_equal(v_all.numpy(), np.concatenate(vs, axis=2))
    assert cache.seq_length == 9 and cache.layer_length(1) == 9


def test_update_is_differentiable_when_grad_is_needed():
    cache = KVCache(1)
    k0 = ax.randn(1, 1, 2, 3, requires_grad=True)
    k1 = ax.randn(1, 1, 1, 3, requires_grad=True)
    cache.update(0, k0, k0)
    k_all, _ = cache.update(0, k1, k1)
    k_all.sum().backward()
    np.testing.assert_array_equal(k0.grad.numpy(), np.ones((1, 1, 2, 3), np.float32))
    np.testing.assert_array_equal(k1.grad.numpy(), np.ones((1, 1, 1, 3), np.float32))


def test_reorder_keeps_rows():
    cache = KVCache(1)
    with ax.no_grad():
        k = ax.tensor(np.arange(24, dtype=np.float32).reshape(3, 1, 2, 4))
        cache.update(0, k, k)
        cache.reorder([2, 0])
        k_all, _ = cache.update(0, k[[2, 0], :, :1], k[[2, 0], :, :1])
    np.testing.assert_array_equal(k_all.numpy()[:, :, :2], k.numpy()[[2, 0]])


def test_errors_name_the_shapes():
    cache = KVCache(2)
    with pytest.raises(ShapeError, match=r"\(B, H, T, D\)"):
        cache.update(0, ax.zeros(1, 2, 3), ax.zeros(1, 2, 3))
    cache.update(0, ax.zeros(1, 2, 3, 4), ax.zeros(1, 2, 3, 4))
    with pytest.raises(ShapeError, match="fresh cache"):
        cache.update(0, ax.zeros(2, 2, 1, 4), ax.zeros(2, 2, 1, 4))
    with pytest.raises(IndexError, match="layer 5"):
        cache.update(5, ax.zeros(1, 2, 3, 4), ax.zeros(1, 2, 3, 4))
    with pytest.raises(ValueError, match="num_layers"):
        KVCache(0)


def test_pretrained_dir_round_trip_and_errors(tmp_path):
    tensors = {"a.weight": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.ones(4, np.float32)}
    write_pretrained(tmp_path / "m", {"model_type": "gpt2", "n_embd": 3}, tensors)
    cfg, got = read_pretrained(tmp_path / "m")
    assert cfg == {"model_type": "gpt2", "n_embd": 3}
    np.testing.assert_array_equal(got["a.weight"], tensors["a.weight"])
    with pytest.raises(CheckpointError, match=r"'a.weight' has shape \(2, 3\) but the config implies \(3, 2\)"):
        take(got, "a.weight", (3, 2), "test")
    with pytest.raises(CheckpointError, match="'missing' is missing"):
        take(got, "missing", (1,), "test")
    with pytest.raises(CheckpointError, match="not a directory"):
        read_pretrained(tmp_path / "nope")
    (tmp_path / "only_cfg").mkdir()
    (tmp_path / "only_cfg" / "config.json").write_text(json.dumps({}))
    with pytest.raises(CheckpointError, match=r"lacks \['model.safetensors'\]"):
        read_pretrained(tmp_path / "only_cfg")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "config.json").write_text("{not json")
    (tmp_path / "bad" / "model.safetensors").write_bytes(b"")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        read_pretrained(tmp_path / "bad")
