"""The ``nccl`` backend's :class:`NcclWork` (CUDA stream semantics) and :class:`Watchdog`
(the collectives between launch and GPU completion, their timeouts and failures).

Note on completion: a collective completes twice. On the host, when it is *enqueued*
on the group's stream (the communication thread then moves on); on the GPU, when the
completion event recorded after it fires. :class:`NcclWork` exposes both the way
PyTorch's NCCL backend does; the :class:`Watchdog` retires launched collectives as their
events fire (releasing their buffers and settling futures) and reports the ones that
fail or outlive the group timeout.
"""

from __future__ import annotations

import collections
import contextlib
import threading
import time
from concurrent.futures import Future, InvalidStateError
from typing import Any, Callable, Iterator

from ...errors import CollectiveTimeout
from ..types import Work, to_seconds

__all__ = ["NcclWork", "Watchdog"]

_POLL_S = 0.005  # how often the watchdog looks at pending events


def _set_future(fut: Future, result: Any = None, exc: BaseException | None = None) -> None:
    """Settle ``fut`` unless another thread (the watchdog, the worker) already did."""
    try:
        if exc is not None:
            fut.set_exception(exc)
        else:
            fut.set_result(result)
    except InvalidStateError:
        pass


# -- Work with CUDA stream semantics ----------------------------------------------------------------------------


class NcclWork(Work):
    """A :class:`Work` whose collective runs on the group's CUDA stream.

    The host side completes when the collective is *enqueued*; the GPU side when its
    completion event fires. ``wait()`` makes the caller's current stream wait for that
    event (it does not block the host, as in PyTorch's NCCL backend); ``wait(timeout)``
    blocks the host, polling the event, and raises :class:`CollectiveTimeout` after
    ``timeout``; ``is_completed()`` queries the event. A failure found later by the
    group's watchdog (an NCCL async error, the group timeout) is raised by ``wait`` and
    returned by ``exception()``. ``get_future()`` settles when the GPU work is done.
    """

    def __init__(self, desc: Any, timeout: float | None, rt: Any, device: int, stream: Any) -> None:
        super().__init__(desc, timeout)
        self._rt, self._device, self._stream = rt, device, stream
        self._ready: Any = None  # event on the submitter's current stream
        self._event: Any = None  # completion event on the group's stream
        self._keep: Any = None  # arrays in use by the GPU until the event fires
        self._async_exc: BaseException | None = None

    # -- backend side ----------------------------------------------------------------------------
    def _complete(self, result: Any = None, exc: BaseException | None = None) -> None:
        if not self._callbacks:
            super()._complete(result, exc)
            return
        with self._rt.activate(self._device, self._stream):  # callbacks' GPU work follows the collective
            super()._complete(result, exc)

    def _attach(self, event: Any, keep: Any) -> None:
        self._event, self._keep = event, keep

    def _gpu_done(self) -> None:
        """Called by the watchdog once the event fired: release buffers, settle the future."""
        with self._lock:
            self._keep = None
            fut = self._future
        if fut is not None and self._done.is_set():
            self._settle(fut)

    def _fail_async(self, exc: BaseException) -> None:
        with self._lock:
            if self._async_exc is None:
                self._async_exc = exc
            fut = self._future
        if fut is not None:
            _set_future(fut, exc=exc)

    def _settle(self, fut: Future) -> None:
        exc = self._exc or self._async_exc
        if exc is not None:
            _set_future(fut, exc=exc)
        elif self._event is None or self._rt.event_done(self._event):
            _set_future(fut, self._result)
        # else: the watchdog settles it when the event fires (_gpu_done)

    # -- user side --------------------------------------------------------------------------------
    def _gpu_finished(self) -> bool:
        return self._event is None or self._rt.event_done(self._event)

    def is_completed(self) -> bool:
        """True once the collective finished on the GPU (or failed)."""
        if not self._done.is_set():
            return False
        return self._exc is not None or self._async_exc is not None or self._gpu_finished()

    def is_success(self) -> bool:
        """True once the collective finished on the GPU without an error."""
        return self.is_completed() and self._exc is None and self._async_exc is None

    def exception(self) -> BaseException | None:
        """The error of the collective (also one found after launch), or None."""
        if self._async_exc is not None:
            return self._async_exc
        return super().exception()

    def wait(self, timeout: Any = None) -> bool:
        """Order the caller's current stream after the collective (``timeout=None``), or block
        the host until the collective finished on the GPU (``timeout`` in seconds).

        Raises:
            CollectiveTimeout: not finished within ``timeout`` (it keeps running; the group's
                watchdog aborts it after the group timeout).
            CollectiveError: the collective failed.
        """
        t0 = time.monotonic()
        super().wait(timeout)  # the launch (raises its error)
        self._raise_async()
        event = self._event
        if event is None:
            return True
        if timeout is None:
            if not self._rt.event_done(event):
                self._rt.current_wait(self._device, event)
            return True
        limit = to_seconds(timeout)
        pause = 1e-4
        while not self._rt.event_done(event):
            self._raise_async()
            if time.monotonic() - t0 >= limit:
                raise CollectiveTimeout(f"Work.wait: {self._desc or 'collective'} did not finish on the GPU within "
                                        f"{limit:.1f} s; a peer may be slow, hung or issuing different collectives")
            time.sleep(pause)
            pause = min(2 * pause, 0.01)
        self._raise_async()
        return True

    def synchronize(self) -> None:
        """Block the host until the collective finished on the GPU (bounded by the group timeout)."""
        self.wait(self._timeout if self._timeout is not None else 600.0)

    def _raise_async(self) -> None:
        if self._async_exc is not None:
            raise self._async_exc


class Watchdog:
    """The launched-but-unfinished collectives of one group, watched by a daemon thread.

    Args:
        rt: the CUDA runtime seam (``event_done``).
        timeout: the group timeout: GPU work (or a launch) older than this fails.
        where: the group, for messages.
        check: called on every poll while work is pending; returns a problem (an NCCL async
            error, a peer's abort note) or None.
        on_failure: called once per problem found (the group breaks and aborts).
    """

    def __init__(self, rt: Any, timeout: float, where: str, check: Callable[[], BaseException | None],
                 on_failure: Callable[[BaseException], None]) -> None:
        self._rt, self._timeout, self._where = rt, timeout, where
        self._check, self._on_failure = check, on_failure
        self._cv = threading.Condition(threading.Lock())
        self._pending: collections.deque[tuple] = collections.deque()  # (event, works, t0, what, keep)
        self._launching: tuple[float, Any] | None = None
        self._stopping = False
        self._failed: BaseException | None = None
        self.graveyard: list = []  # buffers of failed collectives (kernels may still touch them)
        self._thread = threading.Thread(target=self._run, name=f"axonml-nccl-watchdog {where}", daemon=True)
        self._thread.start()

    @contextlib.contextmanager
    def launching(self, what: Any) -> Iterator[None]:
        """Mark a launch in progress (NCCL may block the host while connecting to peers)."""
        with self._cv:
            self._launching = (time.monotonic(), what)
            self._cv.notify_all()
        try:
            yield
        finally:
            with self._cv:
                self._launching = None

    def add(self, event: Any, works: list, what: Any, keep: list) -> None:
        """Track a launched collective until ``event`` fires (one launched after a failure fails at once)."""
        with self._cv:
            self._pending.append((event, works, time.monotonic(), what, keep))
            self._cv.notify_all()
            failed = self._failed
        if failed is not None:
            self.fail_pending(failed)

    def reap(self) -> bool:
        """Retire the collectives whose event fired (in stream order); True when none is left."""
        done = []
        with self._cv:
            while self._pending and self._rt.event_done(self._pending[0][0]):
                done.append(self._pending.popleft())
            empty = not self._pending
        for entry in done:
            for w in entry[1]:
                w._gpu_done()
        return empty

    def stale(self) -> BaseException | None:
        """A timeout error when the oldest pending collective, or a launch, is older than the timeout."""
        now = time.monotonic()
        with self._cv:
            head = self._pending[0] if self._pending else None
            launching = self._launching
        if head is not None and now - head[2] > self._timeout:
            return CollectiveTimeout(f"{head[3]} in {self._where} did not finish on the GPU within {self._timeout:g} s "
                                     "(a peer is hung, dead or issued other collectives); the communicator was aborted, "
                                     "destroy the group")
        if launching is not None and now - launching[0] > self._timeout:
            return CollectiveTimeout(f"{launching[1]} in {self._where} was still being launched after {self._timeout:g} s "
                                     "(NCCL blocked connecting to a peer); the communicator was aborted, destroy the group")
        return None

    def fail_pending(self, exc: BaseException) -> None:
        """Fail every pending collective's Works, now and later, with the first such ``exc``
        (their buffers stay alive: the aborted kernels may still touch them)."""
        with self._cv:
            if self._failed is None:
                self._failed = exc
            exc = self._failed
            entries = list(self._pending)
            self._pending.clear()
        for entry in entries:
            self.graveyard.append(entry[4])
            for w in entry[1]:
                w._fail_async(exc)

    def drain(self, seconds: float) -> bool:
        """Wait up to ``seconds`` for the pending collectives; True when all finished."""
        deadline = time.monotonic() + seconds
        while not self.reap():
            if time.monotonic() >= deadline:
                return False
            time.sleep(_POLL_S)
        return True

    def stop(self) -> None:
        with self._cv:
            self._stopping = True
            self._cv.notify_all()
        if threading.current_thread() is not self._thread:
            self._thread.join(2.0)

    def _run(self) -> None:
        while True:
            with self._cv:
                while not (self._stopping or self._pending or self._launching):
                    self._cv.wait()
                if self._stopping:
                    return
            self.reap()
            problem = self.stale() or self._check()
            if problem is not None:
                self._on_failure(problem)
                self.fail_pending(problem)
            time.sleep(_POLL_S)
