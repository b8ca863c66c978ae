"""``WorkerGroup``: the worker processes a node agent starts, watches and stops.

Design note (processes): each worker runs in its own process group (``setpgid``), so a
Ctrl-C on the terminal reaches only the agent, which forwards it once to every worker (a
worker never gets it twice), and stopping a worker stops whatever it started. Where
util-linux's ``setpriv`` exists, a worker is started through it with ``--pdeathsig KILL``,
so that a killed agent leaves no orphans behind (no ``preexec_fn``: it is unsafe with the
agent's threads and would make gRPC's fork handlers run). Stopping sends SIGTERM, waits up
to a grace period, then sends SIGKILL.

Design note (output): a reader thread per pipe copies each line of a worker's stdout and
stderr to the agent's, prefixed with ``[rank N]:``, and/or to ``rank N``'s log files
(``--log-dir``, ``--tee``). The last lines of stderr are kept, so a failure can be reported
with the end of the worker's traceback. A waiter thread per worker records when it
exited, so the first failure is known exactly even when several workers die together.

The ``--backend mpi`` variant, one ``mpiexec`` job per node, is :mod:`.mpi_workers`.
"""

from __future__ import annotations

import collections
import logging
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from typing import IO

__all__ = ["WorkerExit", "WorkerGroup", "WorkerSpec", "describe_exit", "traceback_tail"]

logger = logging.getLogger(__name__)

_TAIL_LINES = 200  # stderr lines kept per worker
_OUTPUT_LOCK = threading.Lock()

#: ``setpriv --pdeathsig KILL -- cmd``: the worker dies with the agent (Linux, util-linux)
_SETPRIV = shutil.which("setpriv") if sys.platform == "linux" else None


@dataclass(frozen=True)
class WorkerSpec:
    """One worker: its command, global and local rank, and extra environment."""

    cmd: tuple[str, ...]
    rank: int
    local_rank: int
    env: dict[str, str]


@dataclass(frozen=True)
class WorkerExit:
    """A worker that ended: exit code as the shell reports it (128 + N for signal N)."""

    rank: int
    local_rank: int
    exit_code: int
    returncode: int  # as subprocess reports it (negative: killed by a signal)
    when: float  # time.monotonic() of the exit


def describe_exit(returncode: int) -> str:
    """``"exit code 3"`` or ``"killed by signal SIGKILL"`` for a subprocess return code."""
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"killed by {name}"
    return f"exit code {returncode}"


def traceback_tail(lines: list[str], limit: int = 25) -> str:
    """The end of the last Python traceback in ``lines`` (else the last lines), at most ``limit`` lines."""
    start = None
    for i in range(len(lines) - 1, -1, -1):
        if lines[i].startswith("Traceback (most recent call last)"):
            start = i
            break
    picked = lines[start:] if start is not None else lines[-10:]
    if len(picked) > limit:
        picked = picked[:1] + ["  ..."] + picked[-(limit - 2):]
    return "\n".join(picked)


class WorkerGroup:
    """Start, watch and stop the workers of one node in one generation.

    Args:
        specs: the workers to start.
        log_dir: when given, each worker's stdout and stderr go to
            ``log_dir/rank{N}.stdout.log`` and ``.stderr.log``.
        tee: with ``log_dir``, also copy the output to the agent's (prefixed).
        stdout, stderr: where prefixed output goes (default: the agent's own, binary).

    Example::

        group = WorkerGroup([WorkerSpec((sys.executable, "-u", "train.py"), 0, 0, env)])
        group.start()
        exit = group.next_exit(timeout=1.0)
    """

    def __init__(self, specs: list[WorkerSpec], log_dir: str | None = None, tee: bool = False,
                 stdout: IO[bytes] | None = None, stderr: IO[bytes] | None = None) -> None:
        self.specs = list(specs)
        self._log_dir = log_dir
        self._console = log_dir is None or tee
        self._stdout = stdout if stdout is not None else sys.stdout.buffer
        self._stderr = stderr if stderr is not None else sys.stderr.buffer
        self._procs: list[subprocess.Popen] = []
        self._tails: list[collections.deque[str]] = [collections.deque(maxlen=_TAIL_LINES) for _ in self.specs]
        self._exits: queue.Queue[WorkerExit] = queue.Queue()
        self._exited: dict[int, WorkerExit] = {}
        self._threads: list[threading.Thread] = []
        self._files: list[IO[bytes]] = []

    # -- start ----------------------------------------------------------------------------
    def start(self) -> None:
        """Start every worker (raises OSError, naming the command, when one cannot start)."""
        if self._log_dir:
            os.makedirs(self._log_dir, exist_ok=True)
        for i, spec in enumerate(self.specs):
            env = dict(os.environ)
            env.update(spec.env)
            try:
                cmd = [_SETPRIV, "--pdeathsig", "KILL", "--", *spec.cmd] if _SETPRIV else list(spec.cmd)
                proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, process_group=0)
            except OSError as e:
                self.stop(0.0)
                raise OSError(f"could not start worker rank {spec.rank}: {' '.join(spec.cmd)}: {e}") from e
            self._procs.append(proc)
            prefix = f"[rank{spec.rank}]: ".encode()
            for pipe, console, name in ((proc.stdout, self._stdout, "stdout"), (proc.stderr, self._stderr, "stderr")):
                log = None
                if self._log_dir:
                    log = open(os.path.join(self._log_dir, f"rank{spec.rank}.{name}.log"), "wb")  # noqa: SIM115
                    self._files.append(log)
                tail = self._tails[i] if name == "stderr" else None
                t = threading.Thread(target=self._pump, args=(pipe, prefix, console if self._console else None, log, tail),
                                     name=f"axonml-worker{spec.rank}-{name}", daemon=True)
                t.start()
                self._threads.append(t)
            w = threading.Thread(target=self._wait, args=(i, proc), name=f"axonml-worker{spec.rank}-wait", daemon=True)
            w.start()
            self._threads.append(w)
        logger.info("started %d worker(s): ranks %s", len(self.specs), [s.rank for s in self.specs])

    @staticmethod
    def _pump(pipe: IO[bytes], prefix: bytes, console: IO[bytes] | None, log: IO[bytes] | None,
              tail: collections.deque[str] | None) -> None:
        try:
            for line in iter(pipe.readline, b""):
                if not line.endswith(b"\n"):
                    line += b"\n"
                if tail is not None:
                    tail.append(line.decode("utf-8", "replace").rstrip("\n"))
                if log is not None:
                    log.write(line)
                    log.flush()
                if console is not None:
                    with _OUTPUT_LOCK:
                        try:
                            console.write(prefix + line)
                            console.flush()
                        except (OSError, ValueError):  # the agent's output was closed: keep draining
                            pass
        finally:
            pipe.close()

    def _wait(self, index: int, proc: subprocess.Popen) -> None:
        rc = proc.wait()
        spec = self.specs[index]
        code = 128 - rc if rc < 0 else rc
        self._exits.put(WorkerExit(spec.rank, spec.local_rank, code, rc, time.monotonic()))

    # -- watch ----------------------------------------------------------------------------
    def next_exit(self, timeout: float) -> WorkerExit | None:
        """The next worker to end, waiting up to ``timeout`` s; None if none ended."""
        try:
            event = self._exits.get(timeout=timeout) if timeout > 0 else self._exits.get_nowait()
        except queue.Empty:
            return None
        self._exited[event.local_rank] = event
        return event

    def alive(self) -> int:
        """How many workers are still running."""
        return sum(1 for p in self._procs if p.poll() is None)

    def all_succeeded(self) -> bool:
        """Every worker ended with exit code 0 (and its end was seen through :meth:`next_exit`)."""
        return len(self._exited) == len(self.specs) and all(e.exit_code == 0 for e in self._exited.values())

    def tail(self, local_rank: int) -> list[str]:
        """The last lines a worker wrote to stderr."""
        self._join_readers(local_rank, 1.0)
        return list(self._tails[local_rank])

    def pids(self) -> list[int]:
        return [p.pid for p in self._procs]

    def _join_readers(self, local_rank: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for t in self._threads:
            if t.name.startswith(f"axonml-worker{self.specs[local_rank].rank}-std"):
                t.join(max(0.0, deadline - time.monotonic()))

    # -- stop -----------------------------------------------------------------------------
    def send_signal(self, sig: int) -> None:
        """Send ``sig`` to every running worker's process group."""
        for p in self._procs:
            if p.poll() is None:
                try:
                    os.killpg(p.pid, sig)
                except (ProcessLookupError, PermissionError):
                    pass

    def stop(self, grace: float = 5.0, sig: int = signal.SIGTERM) -> None:
        """Send ``sig`` to the workers still running, wait up to ``grace`` s, then SIGKILL
        the rest; close the log files. Safe to call twice."""
        if any(p.poll() is None for p in self._procs):
            self.send_signal(sig)
            deadline = time.monotonic() + grace
            for p in self._procs:
                try:
                    p.wait(max(0.0, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    pass
            late = [self.specs[i].rank for i, p in enumerate(self._procs) if p.poll() is None]
            if late:
                logger.warning("worker rank(s) %s still running %.1f s after %s: sending SIGKILL", late, grace,
                               signal.Signals(sig).name)
                self.send_signal(signal.SIGKILL)
                for p in self._procs:
                    try:
                        p.wait(5.0)
                    except subprocess.TimeoutExpired:
                        logger.error("worker pid %d survived SIGKILL for 5 s", p.pid)
        for t in self._threads:
            t.join(2.0)
        for f in self._files:
            f.close()
        self._files = []
