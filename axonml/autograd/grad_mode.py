"""Grad mode: ``no_grad``, ``enable_grad``, ``set_grad_enabled``, ``inference_mode``.

Note: the mode is thread-local, as in PyTorch, so a communication thread never sees a
training thread's ``no_grad``.
"""

from __future__ import annotations

import functools
import threading
from typing import Any, Callable


class _GradState(threading.local):
    def __init__(self) -> None:
        self.enabled = True
        self.inference = False


state = _GradState()


def is_grad_enabled() -> bool:
    """True when operations record a graph for backward."""
    return state.enabled


def is_inference_mode_enabled() -> bool:
    """True inside ``inference_mode``."""
    return state.inference


class _Mode:
    """Base of the grad-mode context managers; each is also a decorator."""

    _enable: bool = True
    _inference: bool | None = None

    def __enter__(self) -> None:
        self._prev = (state.enabled, state.inference)
        state.enabled = self._enable
        if self._inference is not None:
            state.inference = self._inference

    def __exit__(self, *exc: Any) -> None:
        state.enabled, state.inference = self._prev

    def __call__(self, fn: Callable) -> Callable:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with self.__class__(*self._args()):
                return fn(*args, **kwargs)

        return wrapper

    def _args(self) -> tuple:
        return ()


class no_grad(_Mode):
    """Disable graph recording: ``with ax.no_grad(): ...`` or ``@ax.no_grad()``."""

    _enable = False


class enable_grad(_Mode):
    """Re-enable graph recording inside ``no_grad``."""

    _enable = True


class set_grad_enabled(_Mode):
    """``with set_grad_enabled(flag):`` records a graph only when ``flag`` is true."""

    def __init__(self, mode: bool) -> None:
        self._enable = bool(mode)

    def _args(self) -> tuple:
        return (self._enable,)


class inference_mode(_Mode):
    """Like ``no_grad``; tensors made inside are marked as inference tensors."""

    def __init__(self, mode: bool = True) -> None:
        self._enable = not mode
        self._inference = bool(mode)

    def _args(self) -> tuple:
        return (self._inference,)
