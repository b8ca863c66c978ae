"""``CommWorker``: the communication thread of a process group.

Note on order: one thread per group runs the queued jobs (collectives) in submission
order and completes their ``Work``; a synchronous collective submitted while nothing is
queued or running runs in the caller's thread instead (:meth:`CommWorker.run_inline`),
in the same order, without a thread hand-off. The shared-memory fast paths of the tcp
backend claim the idle worker the same way (they read ``_lock``, ``_jobs``, ``_busy``, ``_cv``).
"""

from __future__ import annotations

import collections
import threading
from typing import Any, Callable

from .types import Work

__all__ = ["CommWorker"]


class _Job:
    __slots__ = ("fn", "work", "payload")

    def __init__(self, fn: Callable[["_Job"], Any], work: Work, payload: Any) -> None:
        self.fn, self.work, self.payload = fn, work, payload


class CommWorker:
    """One thread per group that runs queued jobs in order and completes their ``Work``.

    Jobs run outside the GIL most of the time (socket I/O, NumPy reductions), so an
    ``async_op=True`` collective overlaps with compute in the caller's thread. A
    synchronous collective submitted while nothing is queued or running runs inline in
    the caller's thread instead (:meth:`run_inline`): same order, no thread hand-off.
    """

    def __init__(self, name: str, on_error: Callable[[BaseException], None]) -> None:
        self._jobs: collections.deque[_Job | None] = collections.deque()
        self._lock = threading.Lock()  # taken directly on the synchronous path (a Condition's with is slower)
        self._cv = threading.Condition(self._lock)
        self._busy = False
        self._on_error = on_error
        self._thread = threading.Thread(target=self._loop, name=f"axonml-comm-{name}", daemon=True)
        self._thread.start()

    def submit(self, fn: Callable[[_Job], Any], work: Work, payload: Any = None) -> Work:
        with self._cv:
            self._jobs.append(_Job(fn, work, payload))
            self._cv.notify()
        return work

    def run_inline(self, fn: Callable[[_Job], Any], work: Work, payload: Any = None) -> Work:
        """Run the job in the calling thread when the queue is idle, else queue it."""
        with self._lock:
            if self._jobs or self._busy:
                self._jobs.append(_Job(fn, work, payload))
                self._cv.notify()
                return work
            self._busy = True
        try:
            self._execute(_Job(fn, work, payload))
        finally:
            with self._lock:
                self._busy = False
                if self._jobs:  # queued meanwhile (async_op from another thread): wake the worker
                    self._cv.notify_all()
        return work

    def take_next_if(self, pred: Callable[[_Job], bool]) -> _Job | None:
        """Pop the next queued job when ``pred(job)`` holds (lets a backend batch p2p jobs)."""
        with self._cv:
            if self._jobs and self._jobs[0] is not None and pred(self._jobs[0]):
                return self._jobs.popleft()
        return None

    def _execute(self, job: _Job) -> None:
        job.work._started()
        try:
            result = job.fn(job)
        except BaseException as exc:  # noqa: BLE001  (delivered to the waiter)
            self._on_error(exc)
            job.work._complete(exc=exc)
        else:
            job.work._complete(result)

    def _loop(self) -> None:
        while True:
            with self._cv:
                self._cv.wait_for(lambda: bool(self._jobs) and not self._busy)
                job = self._jobs.popleft()
                self._busy = job is not None
            if job is None:
                return
            try:
                self._execute(job)
            finally:
                job = None  # do not keep the finished job's arrays (shared buffers) alive until the next one
                with self._cv:
                    self._busy = False
                    self._cv.notify_all()

    def stop(self, timeout: float = 5.0) -> None:
        """Finish queued jobs, then end the thread (waits up to ``timeout`` seconds)."""
        with self._cv:
            self._jobs.append(None)
            self._cv.notify()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout)
