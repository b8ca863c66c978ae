"""``axonml-launch --backend mpi``: a node's workers run as one ``mpiexec -n K`` job.

Real launches (the installed console script, the venv's MPICH ``mpiexec``):

* 2 ranks (``--standalone``) and 3 ranks (``--nodes 1 --rdzv-endpoint``) all-reduce with
  the ``mpi`` backend; the sums are closed forms, every line is prefixed ``[rankN]:`` with
  the rank the worker itself reports, and the environment contract holds (RANK and
  LOCAL_RANK from MPI's rank);
* a worker exiting 3: the launcher exits 3 with a summary naming rank 1 and its output;
* a worker exiting before ``MPI_Init`` (where hydra alone would wait forever): bounded;
* a worker failing only on the first attempt with ``--max-restarts 1``: the job succeeds;
* SIGTERM to the launcher reaches each rank once; the launcher exits 143;
* refusals: ``--nodes 2`` (points to ``mpiexec -f hostfile``), no ``mpiexec`` at all.
"""

import json
import os
import re
import signal
import sys
import time

import pytest
from launch_util import Launch, free_port

from axonml.cluster.agent import AgentConfig
from axonml.cluster.mpi_workers import find_mpiexec
from axonml.launch.cli import main

pytestmark = pytest.mark.skipif(not os.path.exists(os.path.join(os.path.dirname(sys.executable), "mpiexec")),
                                reason="needs `pip install mpi4py mpich` in this environment")

_WORKER = r'''
import json, os, signal, sys, time, traceback
mode = sys.argv[1]
got = []
signal.signal(signal.SIGTERM, lambda s, f: got.append(s))
restart = int(os.environ["AXONML_RESTART_COUNT"])
if mode == "early" and os.environ["RANK"] == "1":
    print("rank 1 gives up before MPI_Init", file=sys.stderr, flush=True)
    sys.exit(4)
import numpy as np
import axonml as ax
import axonml.collectives as dist
dist.init_process_group()
r, n = dist.get_rank(), dist.get_world_size()
t = ax.tensor(np.array([r + 1.0, 2.0 ** r, 1.0]))
dist.all_reduce(t)
env = {k: os.environ.get(k) for k in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "NODE_RANK", "MASTER_ADDR",
                                      "MASTER_PORT", "AXONML_RESTART_COUNT", "AXONML_MAX_RESTARTS", "AXONML_RUN_ID",
                                      "AXONML_BACKEND", "OMP_NUM_THREADS", "PMI_RANK")}
print("RESULT " + json.dumps(dict(env, rank=r, size=n, backend=dist.get_backend(), sum=t.numpy().tolist())), flush=True)
if (mode == "fail" or (mode == "flaky" and restart == 0)) and r == 1:
    try:
        raise ValueError(f"boom on rank {r} in generation {restart}")
    except ValueError:
        traceback.print_exc()
    sys.exit(3)
if mode == "wait":
    print(f"rank {r} ready", flush=True)
    deadline = time.monotonic() + 30
    while not got and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.2)  # a second delivery would land here
    print(f"rank {r} got {[signal.Signals(s).name for s in got]}", flush=True)
    sys.exit(0)
dist.destroy_process_group()
'''


@pytest.fixture
def worker(tmp_path):
    path = tmp_path / "mpi_worker.py"
    path.write_text(_WORKER)
    return str(path)


def _results(output: str) -> dict[int, dict]:
    """rank -> the RESULT the worker printed, checking that its line prefix names that rank."""
    out = {}
    for line in output.splitlines():
        if "RESULT " not in line:
            continue
        m = re.match(r"^\[rank(\d+)\]: RESULT (\{.*\})$", line)
        assert m, f"an unprefixed or mangled worker line: {line!r}"
        res = json.loads(m[2])
        assert int(m[1]) == res["rank"], line
        out[res["rank"]] = res
    return out


def _check_world(results: dict[int, dict], n: int, restart: int = 0, max_restarts: int = 0) -> None:
    assert sorted(results) == list(range(n))
    for r, res in results.items():
        assert res["backend"] == "mpi" and res["size"] == n
        # closed forms: sum of r + 1 is n(n+1)/2, sum of 2**r is 2**n - 1, sum of 1 is n
        assert res["sum"] == [n * (n + 1) / 2, 2.0 ** n - 1, float(n)]
        assert (res["RANK"], res["LOCAL_RANK"], res["PMI_RANK"]) == (str(r), str(r), str(r))
        assert (res["WORLD_SIZE"], res["LOCAL_WORLD_SIZE"], res["NODE_RANK"]) == (str(n), str(n), "0")
        assert res["AXONML_BACKEND"] == "mpi" and res["OMP_NUM_THREADS"] == "1" and res["MASTER_ADDR"] == "127.0.0.1"
        assert int(res["MASTER_PORT"]) > 0 and res["AXONML_RUN_ID"]
        assert (res["AXONML_RESTART_COUNT"], res["AXONML_MAX_RESTARTS"]) == (str(restart), str(max_restarts))


@pytest.mark.timeout(90)
def test_mpi_jobs_all_reduce_with_prefixed_lines_and_the_contract(worker, tmp_path):
    two = Launch(["--standalone", "--nproc-per-node", "2", "--backend", "mpi", worker, "ok"])
    assert two.wait(60) == 0, two.output
    _check_world(_results(two.output), 2)
    assert "[mpiexec]" not in two.output  # a clean job: mpiexec says nothing

    token = tmp_path / "token"
    token.write_text("s3cret-mpi-token\n")
    three = Launch(["--nodes", "1", "--rdzv-endpoint", f"127.0.0.1:{free_port()}", "--rdzv-id", "mpi-job",
                    "--rdzv-token-file", str(token), "--nproc-per-node", "3", "--backend", "mpi", worker, "ok"])
    assert three.wait(60) == 0, three.output
    results = _results(three.output)
    _check_world(results, 3)
    assert results[0]["AXONML_RUN_ID"] == "mpi-job"


@pytest.mark.timeout(90)
def test_mpi_failures_summaries_and_restarts(worker):
    failed = Launch(["--standalone", "--nproc-per-node", "2", "--backend", "mpi", "--max-restarts", "0", worker, "fail"])
    assert failed.wait(60) == 3, failed.output
    out = failed.output
    assert re.search(r"axonml-launch: job '\w+' failed", out), out
    assert "rank 1 (local rank 1 on node 0" in out and "ended with exit code 3" in out
    assert "ValueError: boom on rank 1 in generation 0" in out.split("last lines of its output:")[1]
    assert "[rank1]: ValueError: boom on rank 1 in generation 0" in out

    # rank 1 dies before MPI_Init while rank 0 waits inside it: hydra would wait forever, the agent does not
    t0 = time.monotonic()
    early = Launch(["--standalone", "--nproc-per-node", "2", "--backend", "mpi", "--rdzv-conf", "stop_timeout=2", worker,
                    "early"])
    assert early.wait(60) == 4, early.output
    assert time.monotonic() - t0 < 30
    assert "rank 1 (local rank 1 on node 0" in early.output and "ended with exit code 4" in early.output
    assert "rank 1 gives up before MPI_Init" in early.output.split("last lines of its output:")[1]

    flaky = Launch(["--standalone", "--nproc-per-node", "2", "--backend", "mpi", "--max-restarts", "1", worker, "flaky"])
    assert flaky.wait(60) == 0, flaky.output
    assert "worker rank 1 exit code 3; restarting the job (restart 1 of 1)" in flaky.output
    second = flaky.output.split("restarting the job")[1]
    _check_world(_results(second), 2, restart=1, max_restarts=1)


@pytest.mark.timeout(60)
def test_sigterm_reaches_each_mpi_rank_once(worker):
    job = Launch(["--standalone", "--nproc-per-node", "2", "--backend", "mpi", worker, "wait"])
    job.wait_for("[rank0]: rank 0 ready")
    job.wait_for("[rank1]: rank 1 ready")
    job.proc.send_signal(signal.SIGTERM)
    assert job.wait(30) == 128 + signal.SIGTERM, job.output
    for r in (0, 1):
        assert f"[rank{r}]: rank {r} got ['SIGTERM']" in job.output, job.output
    assert "axonml-launch: stopped by SIGTERM" in job.output


def test_mpi_refusals(worker, tmp_path, monkeypatch, capsys):
    job = Launch(["--nodes", "2", "--rdzv-endpoint", "127.0.0.1:29400", "--backend", "mpi", worker, "ok"])
    assert job.wait(30) == 2
    assert "--backend mpi runs one node (got --nodes 2:2)" in job.output and "mpiexec -f hostfile" in job.output
    with pytest.raises(ValueError, match=r"--backend mpi runs one node \(got --nodes 1:3\).*launch/mpi_run.sh"):
        AgentConfig(cmd=("true",), max_nodes=3, token="t", backend="mpi")

    # no mpiexec beside the interpreter nor on PATH: the remedy is named, at parse time (exit 2)
    monkeypatch.setattr(sys, "executable", str(tmp_path / "bin" / "python"))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(FileNotFoundError, match=r"pip install mpi4py mpich"):
        find_mpiexec()
    assert main(["--standalone", "--backend", "mpi", worker, "ok"]) == 2
    assert "pip install mpi4py mpich" in capsys.readouterr().err
