"""Helpers for tests of code that uses collectives.

:func:`run_threaded` runs a function on N ranks that are threads of this process, on the
``threaded`` backend: a fast way to test collective semantics, DDP-style logic and error
paths without starting processes.
"""

from __future__ import annotations

import threading
import time
import traceback
from typing import Any, Callable

from ..cluster import MemoryStore
from ..errors import CollectiveError
from .api import destroy_process_group, init_process_group, use_private_state
from .backends.threaded import ThreadedRun

__all__ = ["run_threaded"]


def run_threaded(world_size: int, fn: Callable[[int], Any], timeout: float = 30.0) -> list[Any]:
    """Run ``fn(rank)`` on ``world_size`` threads, each the rank of a ``threaded`` default group.

    Inside ``fn``, ``axonml.collectives`` works as in a real job (``get_rank()``,
    ``all_reduce(...)``, ``new_group(...)``). The first rank that raises aborts the
    others' pending collectives; its exception is re-raised here.

    Args:
        world_size: the number of ranks (threads).
        fn: called as ``fn(rank)`` in each thread.
        timeout: the group timeout in seconds (collectives fail after it), and the bound
            on the whole run (plus a few seconds).

    Returns:
        ``[fn(0), fn(1), ...]``.

    Example::

        def body(rank):
            t = ax.tensor([float(rank + 1)])
            all_reduce(t)
            return t.item()
        assert run_threaded(3, body) == [6.0, 6.0, 6.0]
    """
    if world_size < 1:
        raise ValueError(f"run_threaded: world_size must be >= 1, got {world_size}")
    store = MemoryStore(timeout=timeout)
    run = ThreadedRun()
    results: list[Any] = [None] * world_size
    errors: list[tuple[int, BaseException, str]] = []

    def body(rank: int) -> None:
        use_private_state()
        run.bind()
        try:
            init_process_group("threaded", rank=rank, world_size=world_size, store=store, timeout=timeout)
            results[rank] = fn(rank)
        except BaseException as exc:  # noqa: BLE001  (re-raised in the caller)
            errors.append((rank, exc, traceback.format_exc()))
            run.abort(f"rank {rank} raised {type(exc).__name__}: {exc}")
        finally:
            try:
                destroy_process_group()
            except BaseException as exc:  # noqa: BLE001
                errors.append((rank, exc, traceback.format_exc()))

    threads = [threading.Thread(target=body, args=(r,), name=f"axonml-rank{r}", daemon=True) for r in range(world_size)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + timeout + 10.0
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    hung = [r for r, t in enumerate(threads) if t.is_alive()]
    if hung:
        run.abort("run_threaded gave up on hung ranks")
        raise CollectiveError(f"run_threaded: ranks {hung} did not finish within {timeout + 10.0:g} s")
    if errors:
        # the first failure is the cause; the others are usually the abort it triggered
        _rank, exc, _tb = min(errors, key=lambda e: isinstance(e[1], CollectiveError) and "aborted" in str(e[1]))
        raise exc
    return results
