"""The launch recipes of launch/ run as documented: ``launch/multinode.sh local`` rehearses
a 2-node job on this machine (2 agents on loopback) that trains to the end."""

import os
import re
import subprocess
import sys

import pytest
from launch_util import ROOT, TRAIN, clean_env


@pytest.mark.timeout(60)
def test_multinode_recipe_rehearses_a_two_node_job(tmp_path):
    env = clean_env(PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""), PYTHON=sys.executable)
    done = subprocess.run([os.path.join(ROOT, "launch", "multinode.sh"), "local", "2", "1", TRAIN, "--steps", "3",
                           "--ckpt-dir", str(tmp_path / "ckpt")], env=env, capture_output=True, text=True, timeout=50)
    assert done.returncode == 0, done.stdout + done.stderr
    ranks = sorted(set(re.findall(r"^\[rank(\d)\]: rank \1: step 2 ", done.stdout, re.M)))
    assert ranks == ["0", "1"], done.stdout
    assert (tmp_path / "ckpt" / "last.safetensors").exists()


def test_multinode_recipe_explains_itself_without_arguments():
    done = subprocess.run([os.path.join(ROOT, "launch", "multinode.sh")], capture_output=True, text=True, timeout=10)
    assert done.returncode == 2 and "launch/multinode.sh node 4 8" in done.stdout
