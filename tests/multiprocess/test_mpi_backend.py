"""The ``mpi`` backend under real ``mpiexec -n N`` jobs (N = 1 to 4, and 8), and its launcher checks.

Each job runs tests/multiprocess/mpi_worker.py, which checks every collective, reduce op,
dtype and size against closed-form values and prints ``OK rank r`` per rank or a
traceback. A job that hangs is killed after a timeout (its ranks dump their stacks
first). Skips when mpi4py or mpiexec is missing (``pip install mpi4py mpich``).
"""

import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from axonml.collectives.backends import mpi as mpi_backend
from axonml.collectives.backends import mpi_support
from axonml.collectives.process_group import registered_backends
from axonml.errors import CollectiveError

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
WORKER = os.path.join(HERE, "mpi_worker.py")
HAS_MPI4PY = importlib.util.find_spec("mpi4py") is not None
_VENV_MPIEXEC = os.path.join(os.path.dirname(sys.executable), "mpiexec")
MPIEXEC = _VENV_MPIEXEC if os.path.exists(_VENV_MPIEXEC) else shutil.which("mpiexec")
_LAUNCH_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")

needs_mpi4py = pytest.mark.skipif(not HAS_MPI4PY, reason="mpi4py is not installed (pip install mpi4py mpich)")
needs_mpiexec = pytest.mark.skipif(not HAS_MPI4PY or MPIEXEC is None,
                                   reason="mpi4py or mpiexec is missing (pip install mpi4py mpich)")


def _clean_env(**extra):
    env = {k: v for k, v in os.environ.items()
           if k not in _LAUNCH_VARS and not k.startswith(("PMI_", "OMPI_", "MPI_LOCAL", "MV2_", "HYDI_", "AXONML_"))}
    env.update(PYTHONPATH=REPO, OMP_NUM_THREADS="1", **extra)
    return env


def _run(cmd, timeout, **extra_env):
    """Run ``cmd``; return (exit code, output). A job past ``timeout`` is killed with its ranks."""
    env = _clean_env(MPI_WORKER_HANG_S=str(max(5, timeout - 8)), **extra_env)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=REPO,
                            start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        pytest.fail(f"{' '.join(cmd)} did not finish within {timeout} s; output (hung ranks dump their stacks):\n{out}")
    return proc.returncode, out


def _assert_ok(rc, out, n):
    assert rc == 0, f"exit code {rc}; output:\n{out}"
    for r in range(n):
        assert f"OK rank {r}" in out, f"rank {r} did not report OK; output:\n{out}"
    assert "FAIL" not in out, out


# -- real jobs ------------------------------------------------------------------------------------------


@needs_mpiexec
@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_every_collective_under_mpiexec(n):
    rc, out = _run([MPIEXEC, "-n", str(n), sys.executable, WORKER, "full"], timeout=60)
    _assert_ok(rc, out, n)
    if n >= 2:  # the worker also checked these messages; they reach the log too
        assert "collective mismatch" in out and "did not arrive" in out


@needs_mpiexec
def test_eight_ranks_oversubscribed():
    # 8 ranks on a 2-core machine: the pollers must yield the CPU to make progress
    rc, out = _run([MPIEXEC, "-n", "8", sys.executable, WORKER, "quick"], timeout=60)
    _assert_ok(rc, out, 8)


@needs_mpiexec
def test_thread_serialized_and_check_off():
    # below MPI_THREAD_MULTIPLE a lock serializes the MPI calls; with the check off, a data-phase timeout
    rc, out = _run([MPIEXEC, "-n", "3", sys.executable, WORKER, "quick"], timeout=60,
                   MPI4PY_RC_THREAD_LEVEL="serialized", AXONML_CHECK_COLLECTIVES="0")
    _assert_ok(rc, out, 3)
    assert "thread_level=2" in out  # MPI_THREAD_SERIALIZED
    assert "MPI cannot tell which ranks" in out


@needs_mpiexec
def test_a_killed_rank_ends_the_job():
    t0 = time.monotonic()
    rc, out = _run([MPIEXEC, "-n", "3", sys.executable, WORKER, "kill"], timeout=40)
    assert rc != 0 and "OK rank" not in out, f"exit code {rc}; output:\n{out}"
    assert time.monotonic() - t0 < 20, f"mpiexec took {time.monotonic() - t0:.1f} s to end the job"


@needs_mpiexec
def test_init_names_the_ranks_that_never_call_it():
    rc, out = _run([MPIEXEC, "-n", "2", sys.executable, WORKER, "noinit"], timeout=40)
    _assert_ok(rc, out, 2)
    assert "world ranks [1] did not call init_process_group within 1 s" in out, out


@needs_mpi4py
def test_world_of_one_without_mpiexec():
    rc, out = _run([sys.executable, WORKER, "full"], timeout=60)
    _assert_ok(rc, out, 1)


@needs_mpi4py
def test_launcher_mismatch_is_an_error():
    # an Open MPI mpiexec with MPICH's library: every process is a singleton; the worker also
    # checks that rank/world_size arguments contradicting MPI are refused
    rc, out = _run([sys.executable, WORKER, "launch"], timeout=40, OMPI_COMM_WORLD_SIZE="3")
    _assert_ok(rc, out, 1)
    assert "launcher promised OMPI_COMM_WORLD_SIZE=3" in out and "MPI_COMM_WORLD has 1 process" in out


def test_import_does_not_start_mpi():
    code = ("import sys, axonml.collectives.backends.mpi as m; "
            "assert 'mpi4py.MPI' not in sys.modules, 'importing the backend initialized MPI'; print('fine')")
    rc, out = _run([sys.executable, "-c", code], timeout=30)
    assert rc == 0 and "fine" in out, out


# -- in-process: registration and the launcher checks (no MPI) ------------------------------------------


def test_registered_without_a_store():
    assert "mpi" in registered_backends()
    assert getattr(mpi_backend._factory, "needs_store", True) is False


def test_missing_mpi4py_is_a_clear_error(monkeypatch):
    def no_mpi(name, *args):
        raise ImportError("No module named 'mpi4py'")

    monkeypatch.setattr(mpi_support, "_MPI", None)
    monkeypatch.setattr(mpi_support.importlib, "import_module", no_mpi)
    with pytest.raises(CollectiveError, match=r"needs mpi4py.*pip install mpi4py mpich"):
        mpi_backend.mpi_module()


@pytest.mark.parametrize("env", [
    {},
    {"PMI_SIZE": "4", "MPI_LOCALNRANKS": "4"},
    {"OMPI_COMM_WORLD_SIZE": "4", "OMPI_COMM_WORLD_LOCAL_SIZE": "2", "WORLD_SIZE": "4"},
    {"PMI_SIZE": "not a number"},
])
def test_check_launch_accepts_a_matching_world(env):
    mpi_backend.check_launch(4, env)


@pytest.mark.parametrize("env, shown", [
    ({"PMI_SIZE": "4"}, "PMI_SIZE=4"),
    ({"OMPI_COMM_WORLD_SIZE": "3"}, "OMPI_COMM_WORLD_SIZE=3"),
    ({"MV2_COMM_WORLD_SIZE": "2"}, "MV2_COMM_WORLD_SIZE=2"),
    ({"MPI_LOCALNRANKS": "2"}, "MPI_LOCALNRANKS=2 (ranks on this host)"),
    ({"WORLD_SIZE": "8"}, "WORLD_SIZE=8"),
])
def test_check_launch_names_the_broken_promise(env, shown):
    with pytest.raises(CollectiveError, match=r"MPI_COMM_WORLD has 1 process") as info:
        mpi_backend.check_launch(1, env, library="Open MPI v5.0.0\nmore")
    msg = str(info.value)
    assert shown in msg and "Open MPI v5.0.0" in msg and "mpiexec of the same MPI" in msg


def test_launcher_world_size_reads_only_the_environment():
    assert mpi_backend.launcher_world_size({}) is None
    assert mpi_backend.launcher_world_size({"WORLD_SIZE": "2"}) is None  # not an MPI launcher
    assert mpi_backend.launcher_world_size({"PMI_SIZE": "3"}) == ("PMI_SIZE", 3)
    assert mpi_backend.launcher_world_size({"OMPI_COMM_WORLD_SIZE": "5"}) == ("OMPI_COMM_WORLD_SIZE", 5)
