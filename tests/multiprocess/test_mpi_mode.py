"""MPI mode: an unchanged training script under ``mpiexec -n N`` (N = 2 and 4), with the ``tcp``
backend (the store address broadcast over MPI, or MASTER_ADDR/MASTER_PORT when set) and
the ``mpi`` backend (bootstrapped by MPI itself); the same script run plainly is a world
of one; an MPI launcher's promise that MPI contradicts (mixed MPIs) is an error.

Each job runs tests/multiprocess/mpi_mode_worker.py, which checks rank and size against
the launcher's environment, collectives against closed-form values and data-parallel SGD
against the single-process run of the global batch, and prints one ``OK`` line per rank
and backend. Skips when mpi4py or mpiexec is missing (``pip install mpi4py mpich``).
"""

import importlib.util
import os
import re
import shutil
import signal
import subprocess
import sys

import pytest
from harness import free_port

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
WORKER = os.path.join(HERE, "mpi_mode_worker.py")
HAS_MPI4PY = importlib.util.find_spec("mpi4py") is not None
_VENV_MPIEXEC = os.path.join(os.path.dirname(sys.executable), "mpiexec")
MPIEXEC = _VENV_MPIEXEC if os.path.exists(_VENV_MPIEXEC) else shutil.which("mpiexec")
_LAUNCH_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.skipif(not HAS_MPI4PY or MPIEXEC is None, reason="mpi4py or mpiexec is missing (pip install mpi4py mpich)"),
]
# no anchors: mpiexec may join two ranks' lines into one
OK = re.compile(r"OK rank (\d+) backend (\w+) size (\d+) store (\w+) mpi4py (True|False) master ([0-9a-fA-F.:]+|-)")


def _run(cmd, timeout=60, **extra):
    env = {k: v for k, v in os.environ.items()
           if k not in _LAUNCH_VARS and not k.startswith(("PMI_", "PMIX_", "OMPI_", "MPI_LOCAL", "MV2_", "HYDI_", "AXONML_"))}
    env.update(PYTHONPATH=REPO, OMP_NUM_THREADS="1", MPI_WORKER_HANG_S=str(timeout - 5), **extra)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=REPO,
                            start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        pytest.fail(f"{' '.join(cmd)} did not finish within {timeout} s; output:\n{out}")
    return proc.returncode, out


def _reports(rc, out):
    assert rc == 0 and "FAIL" not in out, f"exit code {rc}; output:\n{out}"
    return sorted((int(r), b, int(n), store, m == "True", master) for r, b, n, store, m, master in OK.findall(out))


@pytest.mark.parametrize("n", [2, 4])
def test_tcp_and_mpi_backends_under_mpiexec(n):
    rc, out = _run([MPIEXEC, "-n", str(n), sys.executable, WORKER, "tcp,mpi,auto"])
    got = _reports(rc, out)
    # tcp: rank 0's store address came over MPI (one host: loopback, MASTER_ADDR untouched)
    want = sorted([(r, "tcp", n, "GrpcStore", True, "-") for r in range(n)] +
                  [(r, "mpi", n, "NoneType", True, "-") for r in range(n)] * 2)  # auto picks mpi under mpiexec
    assert got == want, out


def test_master_address_from_the_environment_needs_no_mpi4py():
    rc, out = _run([MPIEXEC, "-n", "3", sys.executable, WORKER, "tcp"], MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()))
    assert _reports(rc, out) == [(r, "tcp", 3, "GrpcStore", False, "127.0.0.1") for r in range(3)], out


def test_ranks_on_different_hosts_serve_the_store_on_every_interface():
    # MPMD: each rank presents another host name, so rank 0 serves the store for other hosts,
    # advertises a routable address and the tcp backend connects by sockets, not shared memory
    cmd = [MPIEXEC]
    for r in range(2):
        cmd += ["-n", "1", "-env", "AXONML_HOSTNAME", f"node{r}", sys.executable, WORKER, "tcp"] + ([":"] if r == 0 else [])
    rc, out = _run(cmd)
    got = _reports(rc, out)
    assert [g[:5] for g in got] == [(r, "tcp", 2, "GrpcStore", True) for r in range(2)], out
    assert got[0][5] != "-" and got[0][5] == got[1][5], f"MASTER_ADDR was not set from rank 0's address:\n{out}"


def test_plain_python_is_a_world_of_one():
    rc, out = _run([sys.executable, WORKER, "auto,tcp"])
    assert _reports(rc, out) == [(0, "tcp", 1, "MemoryStore", False, "-")] * 2, out


@pytest.mark.parametrize("backend", ["tcp", "mpi"])
def test_mixed_mpi_launcher_is_an_error(backend):
    # an Open MPI mpiexec with MPICH's library: MPI says a world of 1, the launcher promised 3
    rc, out = _run([sys.executable, WORKER, backend, "expect-error"], OMPI_COMM_WORLD_RANK="1", OMPI_COMM_WORLD_SIZE="3")
    assert rc == 0 and "ERROR CollectiveError" in out, out
    assert "MPI_COMM_WORLD has 1 process" in out and "OMPI_COMM_WORLD_SIZE=3" in out, out


def test_launcher_rank_outside_its_world_is_an_error():
    rc, out = _run([sys.executable, WORKER, "tcp", "expect-error"], OMPI_COMM_WORLD_RANK="5", OMPI_COMM_WORLD_SIZE="3")
    assert rc == 0 and "ERROR ValueError" in out and "OMPI_COMM_WORLD_RANK=5, outside the world of 3" in out, out


@pytest.mark.parametrize("forced, want", [("tcp", "tcp"), ("auto", "mpi")])
def test_hostfile_example(tmp_path, forced, want):
    # launch/mpi_run.sh with a hostfile of this machine; AXONML_BACKEND steers backend="auto"
    hostfile = tmp_path / "hosts"
    hostfile.write_text("localhost:2\n")
    rc, out = _run([os.path.join(REPO, "launch", "mpi_run.sh"), WORKER, "auto"], HOSTFILE=str(hostfile), NP="2",
                   PYTHON=sys.executable, MPIEXEC=MPIEXEC, AXONML_BACKEND=forced)
    assert [g[:3] for g in _reports(rc, out)] == [(r, want, 2) for r in range(2)], out
