"""Elastic membership with ``--nodes 1:2``: a node lost above MIN restarts the job at the
smaller size; a node that arrives later is admitted at the next generation. Either way the
job resumes from its checkpoint and ends with the parameters of a plain run of the same
steps (the training script's math does not depend on the world size)."""

import os
import re
import signal
import subprocess
import sys

import pytest
from launch_util import TRAIN, Launch, assert_same_params, clean_env, free_port, load_params, wait_listening

STEPS = 12
CONF = "heartbeat_timeout=3,heartbeat_interval=0.5,last_call_timeout=0.5,join_timeout=30"


@pytest.fixture(scope="module")
def plain_params(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("plain")
    out = str(tmp / "plain.safetensors")
    done = subprocess.run([sys.executable, TRAIN, "--steps", str(STEPS), "--ckpt-dir", str(tmp / "ckpt"), "--out", out],
                          env=clean_env(), capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return load_params(out)


def _agent(tmp_path, port, node_rank=None, sleep=0.15):
    token = tmp_path / "token"
    token.write_text("elastic-token")
    args = ["--nodes", "1:2", "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", "elastic", "--rdzv-token-file",
            str(token), "--max-restarts", "3", "--rdzv-conf", CONF]
    args += ["--node-rank", str(node_rank)] if node_rank is not None else []
    return Launch(args + [TRAIN, "--steps", str(STEPS), "--sleep", str(sleep), "--ckpt-dir", str(tmp_path / "ckpt"), "--out",
                          str(tmp_path / "final.safetensors")])


def _steps(output, rank):
    return [int(s) for s in re.findall(rf"^\[rank{rank}\]: rank {rank}: step (\d+) ", output, re.M)]


@pytest.mark.timeout(90)
def test_losing_a_node_above_min_restarts_the_job_at_the_smaller_size(tmp_path, plain_params):
    port = free_port()
    a = _agent(tmp_path, port, node_rank=0)
    wait_listening(port)
    b = _agent(tmp_path, port)
    try:
        b.wait_for("[rank1]: rank 1: step 2 ")
        b.proc.send_signal(signal.SIGKILL)  # the node is gone: its workers die with their agent
        assert a.wait(60) == 0, a.output
    finally:
        b.kill()
    # the job went on as a world of one, from its checkpoint
    resumed = re.search(r"^\[rank0\]: rank 0: resumed from the checkpoint of step (\d+) \(restart \d+, world size 1\)",
                        a.output, re.M)
    assert resumed, a.output
    tail = a.output[a.output.index(resumed[0]):]
    assert _steps(tail, 0) == list(range(int(resumed[1]), STEPS))
    assert_same_params(load_params(str(tmp_path / "final.safetensors")), plain_params, exact=False)


@pytest.mark.timeout(90)
def test_a_node_joining_later_is_admitted_at_the_next_generation(tmp_path, plain_params):
    port = free_port()
    # slow steps: b must arrive before a finishes alone, even when a loaded machine starts b slowly (at 0.15 s
    # per step a CI run finished all steps first)
    a = _agent(tmp_path, port, node_rank=0, sleep=0.5)
    try:
        a.wait_for("[rank0]: rank 0: step 2 ")
        b = _agent(tmp_path, port, sleep=0.5)
        assert b.wait(60) == 0, b.output
        assert a.wait(30) == 0, a.output
    finally:
        a.kill()
    # b arrived while a ran alone: both restarted together at world size 2 and resumed
    pattern = r"^\[rank1\]: rank 1: resumed from the checkpoint of step (\d+) \(restart 1, world size 2\)"
    resumed = re.search(pattern, b.output, re.M)
    assert resumed, b.output
    k = int(resumed[1])
    assert 3 <= k < STEPS and _steps(b.output, 1) == list(range(k, STEPS))
    assert _steps(a.output, 0)[-1] == STEPS - 1 and "moved to generation 1" in a.output
    assert os.path.exists(tmp_path / "final.safetensors")
    assert_same_params(load_params(str(tmp_path / "final.safetensors")), plain_params, exact=False)
