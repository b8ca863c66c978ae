"""Ray mode on a real local Ray cluster (one per module: about 2.5 s and 700 MB to start).

``axonml.cluster.ray.run`` runs training functions (tests/multiprocess/ray_targets.py) as
Ray actors with the environment contract, restarts the group after a rank fails, and
returns results in rank order; ``launch_script`` (``axonml-launch --ray``) runs a script
(ray_script.py) and returns its exit code; ``launch/ray_job.py``, the job-submission
example, runs as a driver of the test cluster. Skips when Ray is not installed.
"""

import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np
import pytest
import ray_targets

from axonml.cluster import ray as axray

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
SCRIPT = os.path.join(HERE, "ray_script.py")
TOKEN = os.path.expanduser("~/.ray/auth_token")

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def cluster():
    ray = pytest.importorskip("ray")
    tmp = tempfile.mkdtemp(prefix="axr", dir="/tmp")  # short: Ray's socket paths must fit in 107 bytes
    had_token = os.path.exists(TOKEN)
    saved = {k: os.environ.get(k) for k in ("PYTHONPATH", "RAY_AUTH_MODE", "OMP_NUM_THREADS")}
    # the workers (started by this cluster) inherit this environment: they import ray_targets
    os.environ["PYTHONPATH"] = os.pathsep.join([REPO, HERE] + ([saved["PYTHONPATH"]] if saved["PYTHONPATH"] else []))
    os.environ["RAY_AUTH_MODE"] = "disabled"
    os.environ["OMP_NUM_THREADS"] = "1"
    try:
        ray.init(num_cpus=2, include_dashboard=False, _temp_dir=tmp, log_to_driver=True)
    except Exception as e:  # Ray's own 30 s start-up wait ran out (seen on a loaded CI machine): one more try
        if "timed out during startup" not in str(e):
            raise
        ray.shutdown()
        ray.init(num_cpus=2, include_dashboard=False, _temp_dir=tmp, log_to_driver=True)
    try:
        yield ray
    finally:
        ray.shutdown()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        shutil.rmtree(tmp, ignore_errors=True)
        if not had_token and os.path.exists(TOKEN):
            os.remove(TOKEN)


def test_all_reduce_job_gets_the_contract(cluster):
    out = axray.run(ray_targets.allreduce_job, num_workers=2, backend="tcp", env={"EXTRA_FLAG": "yes"})
    assert [o["rank"] for o in out] == [0, 1] and [o["size"] for o in out] == [2, 2]
    assert all(o["sum"] == [3.0] * 4 and o["backend"] == "tcp" for o in out)
    envs = [o["env"] for o in out]
    for r, env in enumerate(envs):
        assert env["RANK"] == str(r) and env["WORLD_SIZE"] == "2" and env["LOCAL_RANK"] == str(r), env
        assert env["LOCAL_WORLD_SIZE"] == "2" and env["NODE_RANK"] == "0", env  # one Ray node
        assert env["AXONML_RESTART_COUNT"] == "0" and env["AXONML_MAX_RESTARTS"] == "0", env
        assert env["AXONML_BACKEND"] == "tcp" and env["OMP_NUM_THREADS"] == "1" and env["EXTRA_FLAG"] == "yes", env
    assert envs[0]["MASTER_ADDR"] == envs[1]["MASTER_ADDR"] and envs[0]["MASTER_PORT"] == envs[1]["MASTER_PORT"]
    assert len(envs[0]["AXONML_RUN_ID"]) == 12 and envs[0]["AXONML_RUN_ID"] == envs[1]["AXONML_RUN_ID"]


def test_training_matches_one_process_on_the_global_batch(cluster):
    steps, lr = 6, 0.1
    out = axray.run(ray_targets.train_job, num_workers=2, args=(steps, lr))
    # oracle: full-batch gradient descent on the mean squared error, NumPy float64
    x, y = ray_targets.data(2)
    xb = np.hstack([x, np.ones((len(x), 1))])
    w = np.zeros(4)
    for _ in range(steps):
        w -= lr * 2.0 * xb.T @ (xb @ w - y) / len(y)
    assert out[0] == out[1], out  # the ranks agree exactly
    np.testing.assert_allclose(out[0], w, rtol=1e-5, atol=1e-6)


def test_a_failing_rank_restarts_the_group(cluster, caplog):
    # attempt 0: rank 0's process dies (os._exit) while rank 1 waits for it; attempt 1 succeeds
    out = axray.run(ray_targets.flaky_job, num_workers=2, max_failures=2)
    assert out == [(1, [2.0, 2.0]), (1, [2.0, 2.0])]
    restarts = [r.getMessage() for r in caplog.records if "restarting every rank" in r.getMessage()]
    assert len(restarts) == 1 and "rank 0 failed (attempt 1 of 3)" in restarts[0], restarts


def test_no_restart_left_names_the_rank_and_error(cluster):
    with pytest.raises(axray.RayWorkerError, match=r"rank 1 of 2 failed on attempt 1 of 1[\s\S]*boom at rank 1") as info:
        axray.run(ray_targets.always_fails, num_workers=2)
    assert info.value.rank == 1 and info.value.attempts == 1


def test_unplaceable_job_is_a_clear_error(cluster):
    with pytest.raises(axray.RayWorkerError, match=r"could not place 3 workers .*free resources"):
        axray.run(ray_targets.always_fails, num_workers=3, placement_timeout=1.0)


def _wait_for(capfd, text, seconds=10.0):
    seen = ""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        seen += capfd.readouterr().out
        if all(t in seen for t in text):
            return seen
        time.sleep(0.2)
    return seen


def test_launch_script_runs_restarts_and_returns_the_exit_code(cluster, capfd):
    out = tempfile.mkdtemp(prefix="axonml-ray-script-")
    try:
        assert axray.launch_script(SCRIPT, [out, "-1", "0"], nproc_per_node=2) == 0
        files = sorted(os.path.basename(p) for p in glob.glob(os.path.join(out, "*.json")))
        assert files == ["rank0-attempt0.json", "rank1-attempt0.json"]
        seen = json.load(open(os.path.join(out, "rank1-attempt0.json")))
        assert seen["RANK"] == "1" and seen["LOCAL_RANK"] == "1" and seen["WORLD_SIZE"] == "2" and seen["NODE_RANK"] == "0"
        assert seen["argv0"] == SCRIPT and seen["backend"] == "tcp"
        # the output reaches the driver, prefixed with the rank by Ray
        lines = ("script says hello from rank 0 attempt 0", "script says hello from rank 1 attempt 0")
        text = _wait_for(capfd, lines)
        assert all(t in text for t in lines) and "(rank1 pid=" in text, text[-3000:]
        for p in glob.glob(os.path.join(out, "*.json")):
            os.remove(p)
        # rank 1 exits with 7 every time: one restart, then its code
        assert axray.launch_script(SCRIPT, [out, "1", "7"], nproc_per_node=2, max_restarts=1) == 7
        files = sorted(os.path.basename(p) for p in glob.glob(os.path.join(out, "*.json")))
        assert files == ["rank0-attempt0.json", "rank0-attempt1.json", "rank1-attempt0.json", "rank1-attempt1.json"]
    finally:
        shutil.rmtree(out, ignore_errors=True)


def test_job_submission_example_runs_as_a_driver(cluster):
    # what `ray job submit -- python launch/ray_job.py ...` runs, against this cluster
    address = cluster.get_runtime_context().gcs_address
    env = dict(os.environ, PYTHONPATH=REPO, RAY_ADDRESS=address)
    done = subprocess.run([sys.executable, os.path.join(REPO, "launch", "ray_job.py"), "--num-workers", "2", "--steps", "3"],
                          capture_output=True, text=True, timeout=90, env=env, cwd=REPO)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "rank 0: loss" in done.stdout and "rank 1: loss" in done.stdout, done.stdout
    assert "ranks agree: True" in done.stdout, done.stdout


# -- without a cluster ------------------------------------------------------------------------------


def test_missing_ray_names_the_install(monkeypatch):
    def no_ray(name, *args):
        raise ImportError("No module named 'ray'")

    monkeypatch.setattr(axray, "_RAY", None)
    monkeypatch.setattr(axray.importlib, "import_module", no_ray)
    with pytest.raises(ImportError, match=r"pip install ray"):
        axray.run(ray_targets.always_fails, num_workers=1)


@pytest.mark.parametrize("kwargs, match", [
    ({"num_workers": 0}, "num_workers must be an int >= 1"),
    ({"num_workers": 2, "max_failures": -1}, "max_failures must be an int >= 0"),
    ({"num_workers": 2, "resources_per_worker": {"CPU": -1}}, "resources_per_worker"),
    ({"num_workers": 2, "env": {"A": 1}}, "env must map str to str"),
    ({"num_workers": 2, "backend": ""}, "backend must be"),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        axray.run(ray_targets.always_fails, **kwargs)


def test_launch_script_needs_an_existing_script():
    with pytest.raises(FileNotFoundError, match="no_such_script.py"):
        axray.launch_script("no_such_script.py")
