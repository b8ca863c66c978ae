"""``Future``: a small chainable future for communication hooks (``torch.futures.Future``).

Note on laziness (why ``then`` callbacks run in the waiting thread): a collective's
:class:`~axonml.collectives.types.Work` completes on the group's communication thread.
If a ``then`` callback ran there (or inline, when its parent happened to be finished
already), a callback that launches another collective (PowerSGD does) would submit it
at a moment that depends on timing, so two ranks could submit their collectives in
different orders and pair the wrong ones. Here a callback runs when somebody waits for
the chained future (or asks ``done()``), in that caller's thread. DDP waits for its
buckets in bucket order at the end of backward, on every rank, so collectives launched
from callbacks are submitted in the same order everywhere.

Note on chaining: a callback that returns a :class:`Future` is flattened (as a
JavaScript promise is): the chained future's value is that future's value. This lets a
hook chain "reduce P, then compute and reduce Q, then decompress" without blocking
inside a callback.
"""

from __future__ import annotations

import threading
from typing import Any, Callable

from ..collectives.types import Work

__all__ = ["Future"]

_PENDING = object()


class Future:
    """A value that becomes available later: set by hand, by a collective's ``Work``,
    or computed from another future with :meth:`then`.

    Example::

        work = dist.all_reduce(t, async_op=True)
        fut = Future.from_work(work, t).then(lambda f: f.value() / 2)
        half_sum = fut.wait()
    """

    def __init__(self) -> None:
        self._lock = threading.RLock()  # held while a chained future resolves (once)
        self._event = threading.Event()
        self._value: Any = _PENDING
        self._exc: BaseException | None = None
        self._work: Work | None = None
        self._parent: Future | None = None
        self._callback: Callable[["Future"], Any] | None = None
        self._done_callbacks: list[Callable[["Future"], None]] = []

    # -- construction ------------------------------------------------------------------------
    @classmethod
    def completed(cls, value: Any) -> "Future":
        """A future that already holds ``value``."""
        fut = cls()
        fut.set_result(value)
        return fut

    @classmethod
    def from_work(cls, work: Work, value: Any) -> "Future":
        """A future that holds ``value`` (typically the tensor the collective writes)
        once ``work`` finished, or the collective's error."""
        if not isinstance(work, Work):
            raise TypeError(f"Future.from_work expects a collectives Work, got {type(work).__name__}")
        fut = cls()
        fut._work = work
        fut._value = value  # returned only after the work completed
        return fut

    # -- settable side -------------------------------------------------------------------------
    def set_result(self, value: Any) -> None:
        """Complete the future with ``value`` (once)."""
        self._settle(value, None)

    def set_exception(self, exc: BaseException) -> None:
        """Complete the future with an error; ``wait()`` re-raises it."""
        if not isinstance(exc, BaseException):
            raise TypeError(f"set_exception expects an exception, got {type(exc).__name__}")
        self._settle(None, exc)

    def _settle(self, value: Any, exc: BaseException | None) -> None:
        with self._lock:
            if self._event.is_set():
                raise RuntimeError("this Future is already completed; a Future is set exactly once")
            if self._work is not None or self._parent is not None:
                raise RuntimeError("this Future is completed by its collective or parent, not by hand")
            self._value, self._exc = value, exc
            self._event.set()
            callbacks, self._done_callbacks = self._done_callbacks, []
        for cb in callbacks:
            cb(self)

    # -- waiting side --------------------------------------------------------------------------
    def done(self) -> bool:
        """True when :meth:`wait` returns without waiting for communication (a pending
        ``then`` callback runs now, in this thread, when its parent is done)."""
        if self._event.is_set():
            return True
        if self._work is not None:
            return self._work.is_completed()
        if self._parent is not None and self._parent.done():
            self._resolve(None)
            return True
        return False

    def wait(self, timeout: float | None = None) -> Any:
        """Block until the value is there and return it (re-raise the error if it failed).

        Args:
            timeout: seconds to wait for an underlying collective (None: the group's
                timeout bounds it). A hand-set future waits at most ``timeout``.

        Raises:
            CollectiveTimeout: a collective did not finish in ``timeout``.
            TimeoutError: a hand-set future was not set in ``timeout``.
        """
        if self._work is not None:
            self._work.wait(timeout)
            return self._value
        if self._parent is not None:
            self._resolve(timeout)
        elif not self._event.wait(timeout):
            raise TimeoutError(f"Future.wait: not completed within {timeout} s")
        if self._exc is not None:
            raise self._exc
        return self._value

    def value(self) -> Any:
        """The value (waits if needed, like :meth:`wait`)."""
        return self.wait()

    def then(self, callback: Callable[["Future"], Any]) -> "Future":
        """A new future holding ``callback(self)``; the callback runs when the new future is
        waited for (see the module note). A returned Future is flattened."""
        if not callable(callback):
            raise TypeError(f"then() expects a callable, got {type(callback).__name__}")
        fut = Future()
        fut._parent = self
        fut._callback = callback
        return fut

    def add_done_callback(self, callback: Callable[["Future"], None]) -> None:
        """Run ``callback(self)`` once the future is complete: at once when it is, else in the
        thread that completes it (for a collective: the communication thread, so the
        callback must not launch collectives)."""
        if self._work is not None:
            self._work.get_future().add_done_callback(lambda _f: callback(self))
            return
        with self._lock:
            if not self._event.is_set() and self._parent is None:
                self._done_callbacks.append(callback)
                return
        if self._parent is not None:
            self._resolve(None)
        callback(self)

    def _resolve(self, timeout: float | None) -> None:
        with self._lock:
            if self._event.is_set():
                return
            parent, callback = self._parent, self._callback
            try:
                parent.wait(timeout)
                out = callback(parent)
                if isinstance(out, Future):
                    out = out.wait(timeout)
                self._value = out
            except BaseException as exc:  # noqa: BLE001  (delivered to the waiter)
                self._exc = exc
            self._event.set()
            self._callback = None

    def __repr__(self) -> str:
        if self._event.is_set() or (self._work is not None and self._work.is_completed()):
            state = "failed" if (self._exc is not None or (self._work is not None and self._work.exception())) else "done"
        else:
            state = "pending"
        return f"Future({state})"
