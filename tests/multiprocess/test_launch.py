"""``axonml-launch`` end to end: real agents and workers on loopback.

* a 4-node job (4 agents, 1-2 workers each) trains and finishes, and its parameters equal
  a plain ``python train.py`` run (a world of one on the global batch);
* a SIGKILLed worker: the job restarts, resumes from its checkpoint without losing a
  completed step, and ends with exactly the parameters of an uninterrupted run;
* a node that never arrives: the job fails after the join timeout naming the missing count;
* a wrong or missing token is refused; the environment contract, the failure summary and
  exit code, the log files, and SIGTERM forwarding.
"""

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest
from launch_util import (
    TRAIN,
    WORKER,
    Launch,
    assert_same_params,
    clean_env,
    free_port,
    load_params,
    wait_listening,
    worker_pid,
)


def _token(tmp_path, name="token", value="s3cret-job-token"):
    path = tmp_path / name
    path.write_text(value + "\n")
    return str(path)


@pytest.mark.timeout(120)
def test_four_node_job_trains_and_finishes_like_a_world_of_one(tmp_path):
    port, token = free_port(), _token(tmp_path)
    ckpt, out = str(tmp_path / "ckpt"), str(tmp_path / "four.safetensors")
    train = [TRAIN, "--steps", "4", "--global-batch", "20", "--ckpt-dir", ckpt, "--out", out]
    common = ["--nodes", "4", "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", "four-nodes", "--rdzv-token-file", token]
    # node 0 serves the rendezvous; the others get their node rank from it
    agents = [Launch(common + ["--nproc-per-node", str(n)] + (["--node-rank", "0"] if i == 0 else []) + train)
              for i, n in enumerate([2, 1, 1, 1])]
    plain_out = str(tmp_path / "plain.safetensors")
    plain = subprocess.run([sys.executable, TRAIN, "--steps", "4", "--global-batch", "20", "--ckpt-dir",
                            str(tmp_path / "plain"), "--out", plain_out], env=clean_env(), capture_output=True, text=True,
                           timeout=60)
    codes = [a.wait(90) for a in agents]
    assert codes == [0, 0, 0, 0], "\n\n".join(a.output for a in agents)
    # node 0 runs ranks 0 and 1; every rank trained every step, its lines prefixed with its rank
    assert "[rank0]: rank 0: step 3" in agents[0].output and "[rank1]: rank 1: step 3" in agents[0].output
    seen = sorted(int(m) for a in agents for m in re.findall(r"^\[rank(\d)\]: rank \1: step 3 ", a.output, re.M))
    assert seen == [0, 1, 2, 3, 4]
    # plain `python train.py`: a world of one, no launcher
    assert plain.returncode == 0, plain.stderr
    assert "rank 0: step 3" in plain.stdout and "[rank" not in plain.stdout
    assert_same_params(load_params(out), load_params(plain_out), exact=False)


@pytest.mark.timeout(120)
def test_sigkilled_worker_restarts_resumes_and_matches_an_uninterrupted_run(tmp_path):
    train = [TRAIN, "--steps", "10", "--sleep", "0.1"]
    job = Launch(["--standalone", "--nproc-per-node", "2", "--max-restarts", "2", *train, "--ckpt-dir",
                  str(tmp_path / "a"), "--out", str(tmp_path / "a.safetensors")])
    job.wait_for("[rank1]: rank 1: step 3 ")
    os.kill(worker_pid(job.proc.pid, 1), signal.SIGKILL)
    assert job.wait(90) == 0, job.output
    lines = job.output.splitlines()
    restart = next(i for i, line in enumerate(lines) if "restarting the job" in line)
    assert "worker rank 1 killed by SIGKILL; restarting the job (restart 1 of 2)" in lines[restart]
    pattern = r"\[rank0\]: rank 0: resumed from the checkpoint of step (\d+) \(restart 1, world size 2\)"
    resumed_at = next(i for i, line in enumerate(lines) if re.search(pattern, line))
    resumed = int(re.search(pattern, lines[resumed_at])[1])
    # split at the new generation's first line, not at the agent's restart line: the killed generation's
    # last lines are relayed from its pipe and may reach the log after the agent's own message
    before = [int(m) for line in lines[:resumed_at] for m in re.findall(r"^\[rank0\]: rank 0: step (\d+) ", line)]
    after = [int(m) for line in lines[resumed_at:] for m in re.findall(r"^\[rank0\]: rank 0: step (\d+) ", line)]
    # every step rank 0 completed before the kill is kept (its checkpoint is written before its line), and
    # rank 1 finished step 3 before the kill, so rank 0 had saved the checkpoint of steps 0..2 at least
    assert resumed >= before[-1] + 1 and resumed >= 3, (before, resumed)
    assert after == list(range(resumed, 10)), (resumed, after)  # then every remaining step, once
    # an uninterrupted run (python -m axonml.launch) ends with exactly the same parameters
    clean = Launch(["--standalone", "--nproc-per-node", "2", *train[:3], "--ckpt-dir", str(tmp_path / "b"), "--out",
                    str(tmp_path / "b.safetensors")], module=True)
    assert clean.wait(60) == 0, clean.output
    assert "resumed" not in clean.output
    assert_same_params(load_params(str(tmp_path / "a.safetensors")), load_params(str(tmp_path / "b.safetensors")), exact=True)


@pytest.mark.timeout(60)
def test_a_node_that_never_arrives_fails_the_job_after_the_join_timeout(tmp_path):
    t0 = time.monotonic()
    job = Launch(["--nodes", "3", "--node-rank", "0", "--rdzv-endpoint", f"127.0.0.1:{free_port()}", "--rdzv-id", "j",
                  "--rdzv-token-file", _token(tmp_path), "--rdzv-conf", "join_timeout=1.5", WORKER])
    assert job.wait(30) == 1, job.output
    assert "1 of 3 required node(s) joined, 2 node(s) missing" in job.output, job.output
    assert time.monotonic() - t0 < 15
    assert "ENV" not in job.output  # no worker started


@pytest.mark.timeout(60)
def test_wrong_or_missing_token_is_refused(tmp_path):
    port = free_port()
    common = ["--nodes", "2", "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", "tok", "--rdzv-conf", "join_timeout=20"]
    host = Launch(common + ["--node-rank", "0", "--rdzv-token-file", _token(tmp_path, "a", "right-token"), WORKER])
    wait_listening(port)  # else the other agent of this host could be the one serving the endpoint
    wrong = Launch(common + ["--rdzv-token-file", _token(tmp_path, "b", "wrong-token"), WORKER])
    assert wrong.wait(30) == 1, wrong.output
    assert "refused the job token on join (wrong job token)" in wrong.output
    missing = Launch(common + [WORKER])  # neither --rdzv-token-file nor AXONML_STORE_TOKEN
    assert missing.wait(30) == 2, missing.output
    assert "the job needs a token: pass --rdzv-token-file FILE or set AXONML_STORE_TOKEN" in missing.output
    host.wait_for("refused Join from ipv4:127.0.0.1:")  # the host logs the refusal, never the token
    assert "wrong-token" not in host.output and "right-token" not in host.output
    host.proc.send_signal(signal.SIGTERM)
    assert host.wait(30) == 128 + signal.SIGTERM, host.output


@pytest.mark.timeout(90)
def test_environment_contract_failure_summary_restart_and_log_files(tmp_path):
    logs = tmp_path / "logs"
    env = clean_env()
    del env["OMP_NUM_THREADS"]  # the launcher picks it
    job = Launch(["--nproc-per-node", "2", "--max-restarts", "1", "--log-dir", str(logs), "--tee", "--rdzv-id", "envjob",
                  WORKER, "--fail-rank", "1", "--exit-code", "7"], env=env)
    assert job.wait(60) == 7, job.output  # the failing worker's exit code
    envs = [json.loads(line.split("ENV ", 1)[1]) for line in job.output.splitlines() if "ENV {" in line]
    assert len(envs) == 4, job.output  # 2 workers x 2 generations
    for e in envs:
        r = e["world_rank"]
        assert (e["RANK"], e["LOCAL_RANK"], e["WORLD_SIZE"], e["LOCAL_WORLD_SIZE"], e["NODE_RANK"]) == (str(r), str(r), "2",
                                                                                                        "2", "0")
        assert e["world_size"] == 2 and e["MASTER_ADDR"] == "127.0.0.1" and int(e["MASTER_PORT"]) > 0
        assert e["AXONML_MAX_RESTARTS"] == "1" and e["AXONML_RUN_ID"] == "envjob" and e["AXONML_USE_AGENT_STORE"] == "1"
        assert int(e["OMP_NUM_THREADS"]) == max(1, len(os.sched_getaffinity(0)) // 2)
        assert not e["AXONML_METRICS_PORT"] and e["AXONML_BACKEND"] is None
    assert sorted(e["AXONML_RESTART_COUNT"] for e in envs) == ["0", "0", "1", "1"]
    assert "worker rank 1 exit code 7; restarting the job (restart 1 of 1)" in job.output
    summary = job.output[job.output.index("axonml-launch: job 'envjob' failed"):]
    assert "no restarts left (max_restarts=1)" in summary
    assert "rank 1 (local rank 1 on node 0" in summary and "ended with exit code 7" in summary
    assert "Traceback (most recent call last)" in summary and "ValueError: boom on rank 1 in generation 1" in summary
    stderr_log = (logs / "envjob" / "gen1" / "rank1.stderr.log").read_text()
    assert "ValueError: boom on rank 1 in generation 1" in stderr_log and "[rank" not in stderr_log
    assert "ENV {" in (logs / "envjob" / "gen0" / "rank0.stdout.log").read_text()


@pytest.mark.timeout(60)
def test_sigterm_is_forwarded_to_every_worker():
    job = Launch(["--standalone", "--nproc-per-node", "2", WORKER, "--wait-signal"])
    job.wait_for("[rank0]: rank 0 ready")
    job.wait_for("[rank1]: rank 1 ready")
    pids = [worker_pid(job.proc.pid, r) for r in (0, 1)]
    job.proc.send_signal(signal.SIGTERM)
    assert job.wait(30) == 128 + signal.SIGTERM, job.output
    assert "[rank0]: rank 0 got SIGTERM" in job.output and "[rank1]: rank 1 got SIGTERM" in job.output
    assert "axonml-launch: stopped by SIGTERM" in job.output
    for pid in pids:
        assert not os.path.exists(f"/proc/{pid}") or "zombie" in open(f"/proc/{pid}/status").read().lower()
