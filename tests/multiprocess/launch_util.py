"""Helpers of the launcher tests: run ``axonml-launch`` as a user does (a subprocess of the
installed console script), stream its output, find and kill its workers."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TRAIN = os.path.join(ROOT, "examples", "train_resume.py")
WORKER = os.path.join(ROOT, "tests", "multiprocess", "launch_worker.py")
_SCRIPT = os.path.join(os.path.dirname(sys.executable), "axonml-launch")
#: the installed console script (pyproject's [project.scripts]); python -m axonml.launch without it
LAUNCH = [_SCRIPT] if os.path.exists(_SCRIPT) else [sys.executable, "-m", "axonml.launch"]
LAUNCH_MODULE = [sys.executable, "-m", "axonml.launch"]
_CONTRACT = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "NODE_RANK", "GROUP_RANK", "NNODES", "MASTER_ADDR",
             "MASTER_PORT", "AXONML_RESTART_COUNT", "AXONML_MAX_RESTARTS", "AXONML_RUN_ID", "AXONML_STORE_TOKEN",
             "AXONML_USE_AGENT_STORE", "AXONML_METRICS_PORT", "AXONML_BACKEND")


def clean_env(**extra: str) -> dict:
    """This environment without any launcher variables, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if k not in _CONTRACT and not k.startswith(("PMI_", "OMPI_"))}
    env.update(PYTHONPATH=ROOT, OMP_NUM_THREADS="1", AXONML_LOG_LEVEL="WARNING")
    env.update(extra)
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_listening(port: int, timeout: float = 30.0) -> None:
    """Wait until something accepts connections on loopback ``port`` (the hosting agent's rendezvous)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1.0):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise AssertionError(f"nothing listens on 127.0.0.1:{port} after {timeout} s") from None
            time.sleep(0.05)


class Launch:
    """One ``axonml-launch`` process whose merged output is collected line by line."""

    def __init__(self, args: list[str], env: dict | None = None, cwd: str | None = None, module: bool = False) -> None:
        self.started = time.monotonic()
        self.proc = subprocess.Popen((LAUNCH_MODULE if module else LAUNCH) + args, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, env=env or clean_env(), cwd=cwd or ROOT, text=True)
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                self._changed.notify_all()

    def wait_for(self, text: str, timeout: float = 30.0) -> str:
        """The first output line containing ``text``, waiting up to ``timeout`` s."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for line in self.lines:
                    if text in line:
                        return line
                left = deadline - time.monotonic()
                if left <= 0 or self.proc.poll() is not None and not self._reader.is_alive():
                    raise AssertionError(f"no line with {text!r} within {timeout} s; output:\n" + self.output)
                self._changed.wait(min(left, 0.1))

    def wait(self, timeout: float = 60.0) -> int:
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"axonml-launch did not end within {timeout} s; output:\n" + self.output) from None
        self._reader.join(10)
        return rc

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    @property
    def output(self) -> str:
        return "\n".join(self.lines)


def worker_pid(agent_pid: int, rank: int) -> int:
    """The pid of the worker of ``agent_pid`` whose environment says RANK=``rank``."""
    for child in _children(agent_pid):
        try:
            with open(f"/proc/{child}/environ", "rb") as f:
                env = f.read().split(b"\0")
        except OSError:
            continue
        if f"RANK={rank}".encode() in env:
            return child
    raise AssertionError(f"no worker with RANK={rank} among the children of {agent_pid}")


def _children(pid: int) -> list[int]:
    out = []
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/children") as f:
                out += [int(x) for x in f.read().split()]
        except OSError:
            continue
    return out


def load_params(path: str) -> dict:
    from safetensors.numpy import load_file

    return load_file(path)


def assert_same_params(a: dict, b: dict, exact: bool, atol: float = 1e-6) -> None:
    assert sorted(a) == sorted(b)
    for k in a:
        if exact:
            assert np.array_equal(a[k], b[k]), f"{k}: max diff {np.abs(a[k] - b[k]).max()}"
        else:
            np.testing.assert_allclose(a[k], b[k], atol=atol, rtol=1e-5, err_msg=k)
