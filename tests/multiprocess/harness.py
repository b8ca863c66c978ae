"""Start N real rank processes and collect what each returns (the harness of DESIGN.md section 5).

* Ranks are started with ``spawn`` (never ``fork`` after NumPy is up) and rendezvous
  through a :class:`FileStore` file in a fresh temporary directory (``init_method=file://``),
  or find the environment of ``env://`` (``MASTER_ADDR``/``MASTER_PORT`` on a port the
  parent picked) when ``init="env"``.
* Each rank runs ``target(rank, world_size, *args)`` (a module-level function importable
  from ``tests/``) and sends back its return value or its traceback.
* The first failure kills every rank; a rank still running at the deadline gets
  ``SIGUSR1`` first, which makes ``faulthandler`` dump all its threads' stacks into its
  log, and the dump is shown in the error. The whole run is bounded by ``timeout``.
* ``expect_killed`` names ranks that are meant to die (SIGKILL tests).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue
import shutil
import signal
import socket
import sys
import tempfile
import time
import traceback
from typing import Any, Callable

TESTS_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def hosts(n: int) -> dict:
    """``rank_env`` in which each rank presents its own host name, so that a tcp group uses
    sockets between them instead of shared memory (real clusters use that path)."""
    return {r: {"AXONML_HOSTNAME": f"node{r}"} for r in range(n)}


def free_port() -> int:
    """A TCP port that was free a moment ago (bound to port 0, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _child(rank: int, world: int, target: tuple[str, str], args: tuple, results: Any, log_path: str, env: dict,
           init: str | None, backend: str, store_path: str, pg_timeout: float) -> None:
    import faulthandler

    log = open(log_path, "w", buffering=1)  # noqa: SIM115  (kept open for faulthandler)
    faulthandler.register(signal.SIGUSR1, file=log, all_threads=True)
    os.environ.update(env)
    for sub in ("", "multiprocess", "collectives"):
        sys.path.insert(0, os.path.join(TESTS_DIR, sub))
    try:
        import importlib

        fn: Callable[..., Any] = getattr(importlib.import_module(target[0]), target[1])
        import axonml.collectives as dist

        if init == "file":
            dist.init_process_group(backend, init_method=f"file://{store_path}", rank=rank, world_size=world,
                                    timeout=pg_timeout)
        elif init == "env":
            dist.init_process_group(backend, timeout=pg_timeout)
        value = fn(rank, world, *args)
        if init is not None:
            dist.destroy_process_group()
        results.put((rank, "ok", value))
    except BaseException:  # noqa: BLE001  (reported to the parent)
        results.put((rank, "error", traceback.format_exc()))
        results.close()
        results.join_thread()  # flush the report before the hard exit
        log.flush()
        os._exit(1)


class RankFailure(AssertionError):
    """One or more ranks failed or hung; the message holds their tracebacks / stacks."""


def run_ranks(world_size: int, target: Callable[..., Any], *args: Any, timeout: float = 60.0, backend: str = "tcp",
              init: str | None = "file", env: dict | None = None, rank_env: dict | None = None,
              expect_killed: tuple = (), pg_timeout: float = 30.0) -> list[Any]:
    """Run ``target(rank, world_size, *args)`` on ``world_size`` spawned ranks; return their values.

    Args:
        init: ``"file"`` (FileStore rendezvous), ``"env"`` (RANK, WORLD_SIZE, MASTER_ADDR,
            MASTER_PORT set), or None (the target starts its own group).
        env: extra environment for every rank; ``rank_env[rank]`` for one rank.
        expect_killed: ranks that are meant to die; their value is None.
        pg_timeout: the process group's timeout.

    Raises:
        RankFailure: a rank raised, died unexpectedly, or the run passed ``timeout``.
    """
    ctx = mp.get_context("spawn")
    tmp = tempfile.mkdtemp(prefix="axonml-mp-")
    results = ctx.Queue()
    port = free_port()
    procs = []
    try:
        for rank in range(world_size):
            e = dict(env or {})
            e.update((rank_env or {}).get(rank, {}))
            if init == "env":
                e.update(RANK=str(rank), WORLD_SIZE=str(world_size), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
            p = ctx.Process(
                target=_child,
                args=(rank, world_size, (target.__module__, target.__name__), args, results,
                      os.path.join(tmp, f"rank{rank}.log"), e, init, backend, os.path.join(tmp, "store"), pg_timeout),
                daemon=True,
            )
            p.start()
            procs.append(p)
        return _collect(procs, results, world_size, tmp, timeout, set(expect_killed))
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
        for p in procs:
            p.join(5)
        results.close()
        shutil.rmtree(tmp, ignore_errors=True)


def _collect(procs: list, results: Any, n: int, tmp: str, timeout: float, expect_killed: set) -> list[Any]:
    deadline = time.monotonic() + timeout
    values: dict[int, Any] = {}
    errors: dict[int, str] = {}
    while len(values) + len(errors) < n:
        try:
            rank, status, value = results.get(timeout=0.1)
            (values if status == "ok" else errors)[rank] = value
            if errors:
                break
            continue
        except queue.Empty:
            pass
        for rank, p in enumerate(procs):
            if rank in values or rank in errors or p.is_alive():
                continue
            try:  # it may have reported just before exiting
                r, status, value = results.get(timeout=0.5)
                (values if status == "ok" else errors)[r] = value
                break
            except queue.Empty:
                if rank in expect_killed:
                    values[rank] = None
                else:
                    errors[rank] = f"rank {rank} died with exit code {p.exitcode} without reporting"
        if errors:
            break
        if time.monotonic() > deadline:
            hung = [r for r, p in enumerate(procs) if p.is_alive() and r not in values]
            for r in hung:
                os.kill(procs[r].pid, signal.SIGUSR1)
            time.sleep(1.0)
            for r in hung:
                errors[r] = f"rank {r} hung past {timeout:g} s; its stacks:\n" + _read(os.path.join(tmp, f"rank{r}.log"))
            break
    if errors:
        for p in procs:
            if p.is_alive():
                p.kill()
        report = "\n".join(f"--- rank {r} ---\n{msg}" for r, msg in sorted(errors.items()))
        raise RankFailure(f"{len(errors)} of {n} ranks failed:\n{report}")
    return [values[r] for r in range(n)]


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()[-20000:]
    except OSError:
        return "(no log)"
