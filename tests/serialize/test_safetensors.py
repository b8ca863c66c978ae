"""ax.save/ax.load and the safetensors format: interop with the safetensors package
(NumPy and PyTorch sides), atomic writes, and clear errors on bad files."""

import os
import stat

import numpy as np
import pytest
import safetensors.numpy as stn
import safetensors.torch as stt
from helpers import torch

import axonml as ax
from axonml.errors import CheckpointError


def _state():
    g = ax.Generator().manual_seed(0)
    return {
        "layers.0.weight": ax.randn(4, 3, generator=g),
        "layers.0.bias": ax.randn(4, generator=g, dtype=ax.float64),
        "emb": ax.randn(5, 2, generator=g).half(),
        "steps": ax.arange(6).reshape(2, 3),
        "i32": ax.arange(3, dtype=ax.int32),
        "u8": ax.arange(3, dtype=ax.uint8),
        "mask": ax.tensor([True, False, True]),
        "empty": ax.zeros(0, 3),
        "scalar": ax.tensor(3.5),
    }


def test_roundtrip_all_dtypes(tmp_path):
    sd = _state()
    sd["bf"] = ax.randn(3).bfloat16()
    p = tmp_path / "m.safetensors"
    ax.save(sd, p, metadata={"format": "pt"})
    back = ax.load(p)
    assert list(back) == list(sd)
    for k, v in sd.items():
        assert back[k].dtype == v.dtype and back[k].shape == v.shape, k
        np.testing.assert_array_equal(np.asarray(back[k].numpy(), dtype=np.float64), np.asarray(v.numpy(), dtype=np.float64))
    assert ax.serialize.load_metadata(p) == {"format": "pt"}


def test_our_files_load_in_safetensors_numpy_and_torch(tmp_path):
    sd = _state()
    p = tmp_path / "m.safetensors"
    ax.save(sd, p)
    n = stn.load_file(str(p))
    t = stt.load_file(str(p))
    for k, v in sd.items():
        np.testing.assert_array_equal(n[k], v.numpy())
        np.testing.assert_array_equal(t[k].numpy(), v.numpy())
    bf = tmp_path / "bf.safetensors"
    ax.save({"w": ax.tensor([1.5, -2.0, 3.25]).bfloat16()}, bf)
    assert stt.load_file(str(bf))["w"].dtype == torch.bfloat16
    np.testing.assert_array_equal(stt.load_file(str(bf))["w"].float().numpy(), [1.5, -2.0, 3.25])


def test_torch_written_file_loads_into_a_module(tmp_path):
    torch.manual_seed(0)
    tm = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    p = tmp_path / "torch.safetensors"
    stt.save_file({k: v.contiguous() for k, v in tm.state_dict().items()}, str(p))
    sd = ax.load(p)
    assert sorted(sd) == sorted(tm.state_dict())
    for k, v in tm.state_dict().items():
        np.testing.assert_array_equal(sd[k].numpy(), v.numpy())
    am = ax.nn.Sequential(ax.nn.Linear(3, 4), ax.nn.ReLU(), ax.nn.Linear(4, 2))
    am.load_state_dict(sd)
    x = np.random.default_rng(0).standard_normal((5, 3)).astype(np.float32)
    # float32 sums in another order: an output near 0 needs an absolute tolerance too
    np.testing.assert_allclose(am(ax.tensor(x)).detach().numpy(), tm(torch.tensor(x)).detach().numpy(), rtol=1e-6, atol=1e-6)
    # and the reverse: our file into the torch model
    ax.save(am.state_dict(), tmp_path / "ours.safetensors")
    tm2 = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    tm2.load_state_dict(stt.load_file(str(tmp_path / "ours.safetensors")))
    np.testing.assert_allclose(tm2(torch.tensor(x)).detach().numpy(), tm(torch.tensor(x)).detach().numpy(), rtol=1e-6)


def test_refuses_non_tensors(tmp_path):
    with pytest.raises(CheckpointError, match="'lr'.*save_checkpoint"):
        ax.save({"lr": 0.1}, tmp_path / "x.safetensors")


def test_corrupt_and_truncated_files_are_named(tmp_path):
    p = tmp_path / "m.safetensors"
    ax.save({"w": ax.randn(100)}, p)
    raw = p.read_bytes()
    (tmp_path / "trunc.safetensors").write_bytes(raw[:-10])
    with pytest.raises(CheckpointError, match=r"trunc\.safetensors.*truncated"):
        ax.load(tmp_path / "trunc.safetensors")
    (tmp_path / "short.safetensors").write_bytes(raw[:5])
    with pytest.raises(CheckpointError, match=r"short\.safetensors.*not a safetensors file"):
        ax.load(tmp_path / "short.safetensors")
    bad = bytearray(raw)
    bad[8] = ord("x")  # the JSON header now starts with garbage
    (tmp_path / "bad.safetensors").write_bytes(bytes(bad))
    with pytest.raises(CheckpointError, match=r"bad\.safetensors.*corrupt"):
        ax.load(tmp_path / "bad.safetensors")
    (tmp_path / "huge.safetensors").write_bytes((10**9).to_bytes(8, "little") + b"{}")
    with pytest.raises(CheckpointError, match="header length"):
        ax.load(tmp_path / "huge.safetensors")
    with pytest.raises(CheckpointError, match="no such checkpoint file"):
        ax.load(tmp_path / "missing.safetensors")


def test_failed_save_keeps_the_previous_file(tmp_path, monkeypatch):
    p = tmp_path / "m.safetensors"
    ax.save({"w": ax.ones(4)}, p)
    before = p.read_bytes()

    def crash(*a, **k):
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="simulated"):
        ax.save({"w": ax.zeros(4)}, p)
    monkeypatch.undo()
    assert p.read_bytes() == before
    assert [f.name for f in tmp_path.iterdir()] == ["m.safetensors"], "temporary file left behind"


def test_read_slice_reads_rows(tmp_path):
    p = tmp_path / "m.safetensors"
    w = ax.arange(20, dtype=ax.float32).reshape(5, 4)
    ax.save({"w": w}, p)
    np.testing.assert_array_equal(ax.serialize.read_slice(p, "w", 1, 3), w.numpy()[1:3])
    with pytest.raises(CheckpointError, match="out of range"):
        ax.serialize.read_slice(p, "w", 3, 9)


def test_atomic_write_gives_the_mode_open_would(tmp_path):
    # mkstemp creates 0600 files; saved models must be readable like any file the user writes
    from axonml.serialize import atomic_write

    old = os.umask(0o027)
    try:
        atomic_write(tmp_path / "a.bin", lambda f: f.write(b"x"))
        with open(tmp_path / "b.bin", "wb") as f:
            f.write(b"x")
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / "a.bin").st_mode) == stat.S_IMODE(os.stat(tmp_path / "b.bin").st_mode) == 0o640
