"""Training checkpoints: N steps, save, M steps equals N steps, save, then a FRESH
process that loads and runs M steps: bit for bit. Plus atomicity and bad files."""

import os
import subprocess
import sys

import numpy as np
import pytest

import axonml as ax
from axonml.errors import CheckpointError

JOB = os.path.join(os.path.dirname(__file__), "resume_job.py")
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _run(*args):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    subprocess.run([sys.executable, JOB, *args], check=True, env=env, timeout=120)


def test_resume_in_fresh_process_is_bit_exact(tmp_path):
    ck = str(tmp_path / "ck.safetensors")
    # uninterrupted: 5 steps, save (the save must not perturb training), 4 more steps
    _run("--steps", "5", "--save", ck, "--out", str(tmp_path / "a5.npz"))
    _run("--steps", "4", "--load", ck, "--out", str(tmp_path / "resumed.npz"))
    _run("--steps", "9", "--out", str(tmp_path / "straight.npz"))
    resumed = np.load(tmp_path / "resumed.npz")
    straight = np.load(tmp_path / "straight.npz")
    assert sorted(resumed.files) == sorted(straight.files)
    for k in straight.files:
        np.testing.assert_array_equal(resumed[k], straight[k], err_msg=k)
    a5 = np.load(tmp_path / "a5.npz")
    assert any(not np.array_equal(a5[k], straight[k]) for k in straight.files), "training did not move"


def test_checkpoint_contents_and_metadata(tmp_path):
    lin = ax.nn.Linear(3, 2)
    opt = ax.optim.SGD(lin.parameters(), lr=0.1, momentum=0.9)
    lin(ax.randn(4, 3)).sum().backward()
    opt.step()
    p = tmp_path / "c.safetensors"
    ax.save_checkpoint(p, model=lin, optimizer=opt, step=7, metadata={"run": "x", "lr": 0.1}, epoch=2)
    lin2 = ax.nn.Linear(3, 2)
    opt2 = ax.optim.SGD(lin2.parameters(), lr=0.5, momentum=0.9)
    state = ax.load_checkpoint(p, model=lin2, optimizer=opt2)
    assert state["step"] == 7 and state["metadata"] == {"run": "x", "lr": 0.1} and state["extra"] == {"epoch": 2}
    np.testing.assert_array_equal(lin2.weight.detach().numpy(), lin.weight.detach().numpy())
    assert opt2.param_groups[0]["lr"] == 0.1
    s1, s2 = opt.state_dict()["state"], opt2.state_dict()["state"]
    assert sorted(s1) == sorted(s2)
    for k in s1:
        np.testing.assert_array_equal(s1[k]["momentum_buffer"].numpy(), s2[k]["momentum_buffer"].numpy())
    # a plain state-dict file is not a training checkpoint
    ax.save(lin.state_dict(), tmp_path / "plain.safetensors")
    with pytest.raises(CheckpointError, match="not an AxonML training checkpoint"):
        ax.load_checkpoint(tmp_path / "plain.safetensors", model=lin2)
    raw = p.read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(CheckpointError, match="cut.safetensors"):
        ax.load_checkpoint(tmp_path / "cut.safetensors", model=lin2)


def test_unsupported_values_are_refused_before_writing(tmp_path):
    p = tmp_path / "c.safetensors"
    with pytest.raises(CheckpointError, match="object"):
        ax.save_checkpoint(p, metadata={"bad": object()})
    assert not p.exists()
