"""The pieces around the rendezvous, in-process and fast: the worker environment contract,
the worker group (tiny ``python -c`` workers), the node agent in standalone mode, the
``axonml-launch`` argument handling, and what the launcher imports."""

import io
import os
import pathlib
import signal
import subprocess
import sys
import time

import pytest

from axonml.cluster.agent import AgentConfig, NodeAgent, is_local_host
from axonml.cluster.env import WorkerEnv, default_omp_threads
from axonml.cluster.workers import WorkerGroup, WorkerSpec, describe_exit, traceback_tail
from axonml.launch.cli import build_parser, config_from_args

REPO = pathlib.Path(__file__).resolve().parents[2]
PY = sys.executable


def _env(**kw):
    base = dict(rank=1, local_rank=1, world_size=4, local_world_size=2, node_rank=0, nnodes=2, master_addr="10.0.0.1",
                master_port=29400, restart_count=2, max_restarts=3, run_id="job", store_token="tok")
    base.update(kw)
    return WorkerEnv(**base)


def test_worker_env_round_trips_and_sets_omp_threads_only_when_unset():
    env = _env(metrics_port=9101, backend="tcp")
    out = env.to_environ(inherited={})
    assert out["RANK"] == "1" and out["LOCAL_WORLD_SIZE"] == "2" and out["GROUP_RANK"] == "0" and out["NNODES"] == "2"
    assert out["AXONML_RESTART_COUNT"] == "2" and out["AXONML_USE_AGENT_STORE"] == "1" and out["AXONML_BACKEND"] == "tcp"
    assert out["AXONML_METRICS_PORT"] == "9101" and int(out["OMP_NUM_THREADS"]) >= 1
    assert "OMP_NUM_THREADS" not in env.to_environ(inherited={"OMP_NUM_THREADS": "3"})
    assert "AXONML_BACKEND" not in _env(backend="auto").to_environ(inherited={})
    back = WorkerEnv.from_environ(out)
    assert back == WorkerEnv(**{**env.__dict__, "omp_num_threads": int(out["OMP_NUM_THREADS"])})
    assert WorkerEnv.from_environ({}) is None
    assert default_omp_threads(3, cpus=8) == 2 and default_omp_threads(16, cpus=8) == 1


@pytest.mark.parametrize("kw, match", [
    (dict(rank=4), r"rank 4 is outside \[0, world_size=4\)"),
    (dict(local_rank=2), r"local_rank 2 is outside \[0, local_world_size=2\)"),
    (dict(node_rank=2), r"node_rank 2 is outside \[0, nnodes=2\)"),
    (dict(master_port=0), r"master_port must be in \[1, 65535\], got 0"),
])
def test_worker_env_rejects_inconsistent_values(kw, match):
    with pytest.raises(ValueError, match=match):
        _env(**kw)


def test_from_environ_names_a_bad_variable():
    with pytest.raises(ValueError, match="environment variable WORLD_SIZE='two' is not an integer"):
        WorkerEnv.from_environ({"RANK": "0", "WORLD_SIZE": "two"})


def test_describe_exit_and_traceback_tail():
    assert describe_exit(3) == "exit code 3" and describe_exit(-9) == "killed by SIGKILL"
    lines = ["noise", "Traceback (most recent call last):", '  File "a.py", line 1', "    x()", "old: error",
             "more noise", "Traceback (most recent call last):", '  File "b.py", line 2', "ValueError: boom"]
    assert traceback_tail(lines) == 'Traceback (most recent call last):\n  File "b.py", line 2\nValueError: boom'
    assert traceback_tail(["a", "b"]) == "a\nb"
    long = ["Traceback (most recent call last):"] + [f"  frame {i}" for i in range(100)] + ["E: x"]
    cut = traceback_tail(long, limit=6).splitlines()
    assert cut[0].startswith("Traceback") and cut[1] == "  ..." and cut[-1] == "E: x" and len(cut) == 6


def _spec(code, rank, local=None, env=None):
    return WorkerSpec((PY, "-c", code), rank, rank if local is None else local, env or {})


def test_worker_group_prefixes_output_keeps_logs_and_reports_exits_in_order(tmp_path):
    out, err = io.BytesIO(), io.BytesIO()
    code = "import os, sys, time; print('hello', os.environ['X']); print('oops', file=sys.stderr); time.sleep({}); sys.exit({})"
    group = WorkerGroup([_spec(code.format(0.5, 3), 0, env={"X": "a"}), _spec(code.format(0.0, 0), 1, env={"X": "b"})],
                        log_dir=str(tmp_path), tee=True, stdout=out, stderr=err)
    group.start()
    first = group.next_exit(10)
    second = group.next_exit(10)
    assert (first.rank, first.exit_code) == (1, 0) and (second.rank, second.exit_code) == (0, 3)
    assert second.when >= first.when and not group.all_succeeded() and group.alive() == 0
    group.stop(1.0)
    assert b"[rank0]: hello a\n" in out.getvalue() and b"[rank1]: hello b\n" in out.getvalue()
    assert b"[rank0]: oops\n" in err.getvalue()
    assert (tmp_path / "rank0.stdout.log").read_text() == "hello a\n"
    assert (tmp_path / "rank1.stderr.log").read_text() == "oops\n"
    assert group.tail(0) == ["oops"]


def test_worker_group_stop_escalates_to_sigkill():
    out = io.BytesIO()
    stubborn = ("import signal, time; signal.signal(signal.SIGTERM, lambda *a: print('ignored', flush=True)); "
                "print('up', flush=True); time.sleep(30)")
    group = WorkerGroup([_spec(stubborn, 0)], stdout=out, stderr=io.BytesIO())
    group.start()
    deadline = time.monotonic() + 10
    while b"up" not in out.getvalue() and time.monotonic() < deadline:
        time.sleep(0.02)
    t0 = time.monotonic()
    group.stop(0.5)
    assert time.monotonic() - t0 < 5 and group.alive() == 0
    ended = group.next_exit(1)
    assert ended.returncode == -signal.SIGKILL and ended.exit_code == 137
    assert b"ignored" in out.getvalue()


def _agent(code, **kw):
    cfg = AgentConfig(cmd=(PY, "-c", code), standalone=True, token="agent-test", job_id="unit", stop_timeout=2.0, **kw)
    out, err = io.BytesIO(), io.BytesIO()
    return NodeAgent(cfg, stdout=out, stderr=err), out, err


def test_standalone_agent_runs_its_workers_with_the_contract():
    code = "import os; e = os.environ; print(e['RANK'], e['WORLD_SIZE'], e['MASTER_PORT'], e['AXONML_RUN_ID'])"
    agent, out, err = _agent(code, nproc_per_node=3)
    assert agent.run() == 0, err.getvalue()
    lines = sorted(out.getvalue().decode().splitlines())
    assert [line.split()[:3] for line in lines] == [[f"[rank{r}]:", str(r), "3"] for r in range(3)]
    assert all(line.endswith(" unit") for line in lines)
    assert not agent.server.running  # the agent stopped its rendezvous


def test_standalone_agent_restarts_then_exits_with_the_failing_code_and_a_summary():
    code = ("import os, sys\nif os.environ['RANK'] == '1':\n    raise SystemExit(int(os.environ['AXONML_RESTART_COUNT']) + 5)")
    agent, out, err = _agent(code, nproc_per_node=2, max_restarts=2)
    assert agent.run() == 7  # generation 2 fails with 2 + 5, no restarts left
    text = err.getvalue().decode()
    assert text.count("restarting the job") == 2 and "restart 2 of 2" in text
    assert "job 'unit' failed: rank 1 (local rank 1) on node 0" in text and "no restarts left (max_restarts=2)" in text
    assert "ended with exit code 7" in text and agent.restarts == 2


def _parse(*argv):
    return config_from_args(build_parser().parse_args(list(argv)))


def test_cli_builds_the_agent_config(tmp_path):
    script = tmp_path / "train.py"
    script.write_text("pass\n")
    token = tmp_path / "tok"
    token.write_text("  secret-token \n")
    cfg = _parse("--nnodes", "2:4", "--nproc_per_node", "3", "--rdzv-endpoint", "node0:1234", "--rdzv-id", "j1",
                 "--rdzv-token-file", str(token), "--max-restarts", "2", "--rdzv-conf", "join_timeout=5,last_call_timeout=0.5",
                 "--metrics-port", "9100", "--backend", "tcp", str(script), "--lr", "0.1")
    assert (cfg.min_nodes, cfg.max_nodes, cfg.nproc_per_node, cfg.rdzv_host, cfg.rdzv_port) == (2, 4, 3, "node0", 1234)
    assert cfg.token == "secret-token" and cfg.job_id == "j1" and cfg.max_restarts == 2 and not cfg.standalone
    assert cfg.join_timeout == 5 and cfg.last_call_timeout == 0.5 and cfg.metrics_port == 9100 and cfg.backend == "tcp"
    assert cfg.cmd == (PY, "-u", str(script), "--lr", "0.1")
    # one node and no endpoint: standalone, with a fresh token and run id
    solo = _parse(str(script))
    assert solo.standalone and solo.token and solo.job_id and solo.max_nodes == 1
    assert _parse("-m", "pkg.train").cmd == (PY, "-u", "-m", "pkg.train")


@pytest.mark.parametrize("argv, match", [
    (["--nodes", "2", "S"], "--nodes 2:2 needs --rdzv-endpoint HOST:PORT"),
    (["--standalone", "--rdzv-endpoint", "h:1", "S"], "--standalone serves a private rendezvous"),
    (["--nodes", "2", "--rdzv-endpoint", "h:1", "--backend", "mpi", "S"],
     r"--backend mpi runs one node \(got --nodes 2:2\).*mpiexec -f hostfile"),
    (["--nodes", "2", "--rdzv-endpoint", "h:1", "S"], "the job needs a token: pass --rdzv-token-file FILE"),
    (["--nodes", "2", "--rdzv-endpoint", "h:1", "--rdzv-token-file", "/nonexistent/tok", "S"], "cannot be read"),
    (["no_such_script.py"], "the script 'no_such_script.py' does not exist"),
    (["--nproc-per-node", "0", "S"], "--nproc-per-node must be >= 1, got 0"),
    (["--nodes", "2", "--node-rank", "2", "--rdzv-endpoint", "h:1", "S"], r"--node-rank 2 is outside \[0, 2\)"),
    (["--rdzv-endpoint", "h:http", "S"], "port 'http' is not an integer"),
])
def test_cli_rejects_bad_arguments_with_the_option_named(tmp_path, monkeypatch, argv, match):
    monkeypatch.delenv("AXONML_STORE_TOKEN", raising=False)
    script = tmp_path / "s.py"
    script.write_text("pass\n")
    argv = [str(script) if a == "S" else a for a in argv]
    with pytest.raises(ValueError, match=match):
        _parse(*argv)


@pytest.mark.parametrize("argv, match", [
    (["--nodes", "3:2", "x.py"], "--nodes needs 1 <= MIN <= MAX"),
    (["--nodes", "two", "x.py"], "--nodes must be N or MIN:MAX"),
    (["--rdzv-conf", "bogus=1", "x.py"], "use KEY=SECONDS with KEY one of"),
])
def test_cli_parser_errors(argv, match, capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(argv)
    assert match in capsys.readouterr().err


def test_is_local_host():
    assert is_local_host("127.0.0.1") and is_local_host("localhost")
    assert not is_local_host("203.0.113.7")  # TEST-NET-3: never an address of this machine


# The launcher must not pull NumPy or the tensor stack in: load axonml.launch.cli under a
# stub parent package, so that axonml/__init__.py (which imports everything) does not run.
STUB_IMPORT = f"""
import sys, types
pkg = types.ModuleType("axonml")
pkg.__path__ = [{str(REPO / "axonml")!r}]
sys.modules["axonml"] = pkg
import axonml.launch.cli
heavy = sorted(m for m in ("numpy", "cupy", "torch", "ml_dtypes", "numba", "ray", "prometheus_client") if m in sys.modules)
assert not heavy, f"importing axonml.launch.cli imported {{heavy}}"
outside = sorted(m for m in sys.modules if m.startswith("axonml.")
                 and not m.startswith(("axonml.cluster", "axonml.launch", "axonml.errors", "axonml._env")))
assert not outside, f"axonml.launch.cli imported {{outside}}"
print("ok")
"""


def test_the_launcher_imports_no_numpy_and_no_tensor_stack():
    done = subprocess.run([PY, "-c", STUB_IMPORT], capture_output=True, text=True, timeout=60, cwd=REPO,
                          env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr
