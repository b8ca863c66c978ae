"""``MpiWorkerGroup``: the workers of one node as one ``mpiexec -n K`` job (``--backend mpi``).

Design note: :class:`MpiWorkerGroup` starts the node's workers as one
``mpiexec -n K`` job, so MPI's own bootstrap gives them rank and size. Each rank runs
through a shim (below) that keeps what the design of :mod:`.workers` needs: per-rank output (FIFOs, not
hydra's ``-prepend-rank``, which labels write chunks rather than lines), the exit status
of each rank (hydra waits forever for the others when a rank dies before ``MPI_Init``),
and death with the agent (``setpriv``).
"""

from __future__ import annotations

import collections
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from typing import IO

from .workers import _SETPRIV, _TAIL_LINES, WorkerExit, WorkerGroup, WorkerSpec

__all__ = ["MpiWorkerGroup", "find_mpiexec"]

logger = logging.getLogger(__name__)


#: Run by ``mpiexec`` as each rank: take RANK/LOCAL_RANK (and the metrics port) from MPI's
#: PMI_RANK, start the worker with its stdout/stderr on the agent's FIFOs, forward signals,
#: and leave the worker's exit status in ``rank<N>.exit`` before exiting the same way.
_MPI_RANK_SHIM = r"""
import os, signal, subprocess, sys
d, base, setpriv, *cmd = sys.argv[1:]
r = next(os.environ[v] for v in ("PMI_RANK", "OMPI_COMM_WORLD_RANK", "PMIX_RANK") if os.environ.get(v, "").strip())
os.environ["RANK"] = os.environ["LOCAL_RANK"] = r
if base:
    os.environ["AXONML_METRICS_PORT"] = str(int(base) + int(r))
out, err = open(f"{d}/rank{r}.stdout", "wb", 0), open(f"{d}/rank{r}.stderr", "wb", 0)
pre = [setpriv, "--pdeathsig", "KILL", "--"] if setpriv else []
p = subprocess.Popen(pre + cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=err, close_fds=False, process_group=0)
out.close(); err.close()
for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2):
    signal.signal(s, lambda n, f: p.send_signal(n))
with open(f"{d}/rank{r}.pid.tmp", "w") as f:
    f.write(str(p.pid))
os.replace(f"{d}/rank{r}.pid.tmp", f"{d}/rank{r}.pid")
rc = p.wait()
with open(f"{d}/rank{r}.exit.tmp", "w") as f:
    f.write(str(rc))
os.replace(f"{d}/rank{r}.exit.tmp", f"{d}/rank{r}.exit")
if rc < 0:  # end the way the worker did
    if -rc not in (signal.SIGKILL, signal.SIGSTOP):
        signal.signal(-rc, signal.SIG_DFL)
    os.kill(os.getpid(), -rc)
sys.exit(rc)
"""


def find_mpiexec() -> str:
    """The ``mpiexec`` to start ``--backend mpi`` workers with: the one in the virtual
    environment of ``sys.executable`` (the MPI that mpi4py was built with), else the first
    on ``PATH``.

    Raises:
        FileNotFoundError: there is none; the message names the remedy.
    """
    own = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    if os.path.isfile(own) and os.access(own, os.X_OK):
        return own
    found = shutil.which("mpiexec")
    if found:
        return found
    raise FileNotFoundError(f"--backend mpi starts the workers with mpiexec, but there is none next to {sys.executable} "
                            "nor on PATH; run `pip install mpi4py mpich` in this environment (it installs mpi4py and "
                            "its mpiexec), or use --backend tcp")


class MpiWorkerGroup(WorkerGroup):
    """The workers of one node started as ONE ``mpiexec -n K`` job (``--backend mpi``).

    Same interface as :class:`WorkerGroup`. MPI gives each rank its place (``PMI_RANK``):
    a small shim run by ``mpiexec`` as each rank sets ``RANK``/``LOCAL_RANK`` (and the
    metrics port) from it, starts the worker with its output on per-rank FIFOs that this
    group reads (so lines are prefixed ``[rankN]:`` and logged exactly as for
    :class:`WorkerGroup`), forwards signals, and records the worker's exit status, so the
    first failing rank and its exit code are known exactly, even when it dies before
    ``MPI_Init`` (where hydra would wait forever for it). Signals go to ``mpiexec``
    alone, which forwards them once to every rank; SIGKILL goes to all.

    Args:
        specs: one per rank, ranks and local ranks ``0 .. K-1``, the same command; the
            environment of rank 0 minus its per-rank values is the job's.
        mpiexec: the launcher (default :func:`find_mpiexec`).
        log_dir, tee, stdout, stderr: as :class:`WorkerGroup`.
    """

    _PER_RANK = ("RANK", "LOCAL_RANK", "AXONML_METRICS_PORT")

    def __init__(self, specs: list[WorkerSpec], log_dir: str | None = None, tee: bool = False,
                 stdout: IO[bytes] | None = None, stderr: IO[bytes] | None = None, mpiexec: str | None = None) -> None:
        super().__init__(specs, log_dir, tee, stdout, stderr)
        k = len(self.specs)
        if k == 0 or [(s.rank, s.local_rank) for s in self.specs] != [(i, i) for i in range(k)]:
            raise ValueError(f"one mpiexec job runs ranks 0..{k - 1} of one node; got ranks "
                             f"{[(s.rank, s.local_rank) for s in self.specs]} (--backend mpi runs a single node)")
        if any(s.cmd != self.specs[0].cmd for s in self.specs):
            raise ValueError("one mpiexec job runs one command: every worker spec must have the same cmd")
        self._mpiexec = mpiexec or find_mpiexec()
        self._dir: str | None = None
        self._mpi_tail: collections.deque[str] = collections.deque(maxlen=_TAIL_LINES)
        self._rank_pids: dict[int, int] = {}
        self.stopping = False
        self._unreported: set[int] = set()  # ranks whose shim left no exit status

    def start(self) -> None:
        """Start ``mpiexec -n K`` (raises OSError, naming the command, when it cannot start)."""
        if self._log_dir:
            os.makedirs(self._log_dir, exist_ok=True)
        self._dir = tempfile.mkdtemp(prefix="axonml-mpi-")
        for spec in self.specs:
            for name in ("stdout", "stderr"):
                path = os.path.join(self._dir, f"rank{spec.rank}.{name}")
                os.mkfifo(path, 0o600)
                log = None
                if self._log_dir:
                    log = open(os.path.join(self._log_dir, f"rank{spec.rank}.{name}.log"), "wb")  # noqa: SIM115
                    self._files.append(log)
                console = (self._stdout if name == "stdout" else self._stderr) if self._console else None
                tail = self._tails[spec.local_rank] if name == "stderr" else None
                t = threading.Thread(target=self._pump_fifo, args=(path, f"[rank{spec.rank}]: ".encode(), console, log, tail),
                                     name=f"axonml-worker{spec.rank}-{name}", daemon=True)
                t.start()
                self._threads.append(t)
        first = self.specs[0]
        base = first.env.get("AXONML_METRICS_PORT", "")  # the shim adds the local rank
        env = {k: v for k, v in {**os.environ, **first.env}.items() if k not in self._PER_RANK}
        if "AXONML_METRICS_PORT" in first.env:
            env["AXONML_METRICS_PORT"] = ""  # never inherit the agent's; set per rank when base is
        pdeath = [_SETPRIV, "--pdeathsig", "KILL", "--"] if _SETPRIV else []
        cmd = [*pdeath, self._mpiexec, "-n", str(len(self.specs)), *pdeath, sys.executable, "-c", _MPI_RANK_SHIM,
               self._dir, base, _SETPRIV or "", *first.cmd]
        try:
            proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    process_group=0)
        except OSError as e:
            self.stop(0.0)
            raise OSError(f"could not start {self._mpiexec} -n {len(self.specs)} {' '.join(first.cmd)}: {e}") from e
        self._procs.append(proc)
        for pipe, console in ((proc.stdout, self._stdout), (proc.stderr, self._stderr)):
            t = threading.Thread(target=self._pump, args=(pipe, b"[mpiexec]: ", _Gate(console, self), None, self._mpi_tail),
                                 name="axonml-mpiexec-output", daemon=True)
            t.start()
            self._threads.append(t)
        w = threading.Thread(target=self._watch, args=(proc,), name="axonml-mpiexec-wait", daemon=True)
        w.start()
        self._threads.append(w)
        logger.info("started %s -n %d for ranks 0..%d", self._mpiexec, len(self.specs), len(self.specs) - 1)

    def _pump_fifo(self, path: str, prefix: bytes, console: IO[bytes] | None, log: IO[bytes] | None,
                   tail: collections.deque[str] | None) -> None:
        try:
            pipe = open(path, "rb")  # noqa: SIM115  (blocks until the rank's shim opens it; stop() unblocks it)
        except OSError:
            return
        self._pump(pipe, prefix, console, log, tail)

    def _collect(self, seen: set[int]) -> None:
        """Queue the exits the ranks' shims recorded since the last call."""
        assert self._dir is not None
        for spec in self.specs:
            if spec.rank in seen:
                continue
            if spec.rank not in self._rank_pids:
                try:
                    with open(os.path.join(self._dir, f"rank{spec.rank}.pid")) as f:
                        self._rank_pids[spec.rank] = int(f.read())
                except (OSError, ValueError):
                    pass
            try:
                with open(os.path.join(self._dir, f"rank{spec.rank}.exit")) as f:
                    rc = int(f.read())
            except (OSError, ValueError):
                continue
            seen.add(spec.rank)
            self._exits.put(WorkerExit(spec.rank, spec.local_rank, 128 - rc if rc < 0 else rc, rc, time.monotonic()))

    def _watch(self, proc: subprocess.Popen) -> None:
        seen: set[int] = set()
        while proc.poll() is None:
            self._collect(seen)
            time.sleep(0.02)
        self._collect(seen)
        missing = [s for s in self.specs if s.rank not in seen]
        if not missing:
            return
        # a rank that left no exit status (its shim was killed, or could not start the worker): take its
        # status from hydra's "Exit codes: [host] s0,s1,..." line (wait statuses in rank order), else mpiexec's
        for t in self._threads:
            if t.name == "axonml-mpiexec-output":
                t.join(2.0)
        statuses = self._hydra_exit_codes()
        events = []
        for spec in missing:
            self._unreported.add(spec.local_rank)
            code = statuses.get(spec.rank, proc.returncode)
            events.append(WorkerExit(spec.rank, spec.local_rank, 128 - code if code < 0 else code, code, time.monotonic()))
        for event in sorted(events, key=lambda e: e.exit_code == 0):  # a failure first
            self._exits.put(event)

    def _hydra_exit_codes(self) -> dict[int, int]:
        for line in reversed(self._mpi_tail):
            _, sep, rest = line.partition("Exit codes: ")
            if not sep:
                continue
            try:
                raw = [int(x) for x in rest.split("]", 1)[1].strip().split(",")]
                return {rank: os.waitstatus_to_exitcode(status) for rank, status in enumerate(raw)}
            except (IndexError, ValueError):
                return {}
        return {}

    def alive(self) -> int:
        """How many ranks are still running (as far as their recorded exits tell)."""
        if not self._procs or self._procs[0].poll() is not None:
            return 0
        return len(self.specs) - len(self._exited) - self._exits.qsize()

    def tail(self, local_rank: int) -> list[str]:
        """The last lines the rank wrote to stderr; for a rank whose shim left no exit status
        (it could not start the worker, or was killed), what mpiexec itself said too."""
        lines = super().tail(local_rank)
        return lines + list(self._mpi_tail) if local_rank in self._unreported else lines

    def pids(self) -> list[int]:
        """The pids of the workers (not of mpiexec), as far as their shims have recorded them."""
        if self._dir is not None and self._procs:
            self._collect(set(range(len(self.specs))))  # reads the pid files only
        return [self._rank_pids[s.rank] for s in self.specs if s.rank in self._rank_pids]

    def send_signal(self, sig: int) -> None:
        """Send ``sig`` to mpiexec, which forwards it once to every rank (SIGKILL: to every process).
        From then on mpiexec's own lines (hydra's "BAD TERMINATION" banner for the ranks it was
        told to stop) are kept for the summary and logged, not printed."""
        self.stopping = True
        if not self._procs or self._procs[0].poll() is not None:
            return
        proc = self._procs[0]
        try:
            if sig == signal.SIGKILL:
                os.killpg(proc.pid, sig)
            else:
                os.kill(proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass
        if sig == signal.SIGKILL:
            for pid in self.pids():
                try:
                    os.kill(pid, sig)
                except (ProcessLookupError, PermissionError):
                    pass

    def stop(self, grace: float = 5.0, sig: int = signal.SIGTERM) -> None:
        """As :meth:`WorkerGroup.stop`; also unblocks the FIFO readers and removes the FIFOs."""
        if self._procs and self._procs[0].poll() is None:
            self.pids()  # learn the ranks' pids while their shims live
        super().stop(grace, sig)
        if self._dir is not None:
            for name in os.listdir(self._dir):
                if name.endswith((".stdout", ".stderr")):
                    try:  # a reader still waiting for its writer (the rank never started) gets EOF
                        os.close(os.open(os.path.join(self._dir, name), os.O_WRONLY | os.O_NONBLOCK))
                    except OSError:
                        pass
            for t in self._threads:
                t.join(1.0)
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None


class _Gate:
    """mpiexec's console output: printed until the agent stops the job, then only logged."""

    def __init__(self, out: IO[bytes], group: MpiWorkerGroup) -> None:
        self._out, self._group = out, group

    def write(self, data: bytes) -> None:
        if self._group.stopping:
            logger.info("%s", data.decode("utf-8", "replace").rstrip("\n"))
        else:
            self._out.write(data)

    def flush(self) -> None:
        self._out.flush()
