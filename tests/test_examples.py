"""The README's main job and the examples run as a user runs them (a subprocess)."""

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_train_mlp_example_loss_falls():
    env = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS="1")
    out = subprocess.run(
        [sys.executable, os.path.join(ROOT, "examples", "train_mlp.py"), "--steps", "120"],
        capture_output=True, text=True, env=env, timeout=120,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "full-data loss" in out.stdout
    first = float(out.stdout.split("loss ")[1].split()[0])
    final = float(out.stdout.split("full-data loss ")[1].split()[0])
    assert final < first / 5, out.stdout


def test_train_mlp_example_under_the_launcher_two_processes():
    """The README's `make run`: two processes under axonml-launch, DDP; same weights everywhere."""
    env = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS="1")
    out = subprocess.run(
        [sys.executable, "-m", "axonml.launch", "--standalone", "--nproc-per-node", "2",
         os.path.join(ROOT, "examples", "train_mlp.py"), "--steps", "120"],
        capture_output=True, text=True, env=env, timeout=180,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "on 2 process(es)" in out.stdout, out.stdout
    assert "identical on all 2 process(es)" in out.stdout, out.stdout
    first = float(out.stdout.split("loss ")[1].split()[0])
    final = float(out.stdout.split("full-data loss ")[1].split()[0])
    assert final < first / 5, out.stdout
