"""``Join``: training with uneven inputs (``torch.distributed.algorithms.join``).

Note on the protocol (PyTorch's): inside ``with Join([ddp_model, ...]):`` every rank runs
its own number of iterations. Each iteration, an active rank's first joinable calls
:meth:`Join.notify_join_context`, which all-reduces a one. A rank that ran out of data
leaves the ``with`` block and loops: it all-reduces a zero (the same collective as the
others' one) to count the ranks still active; while that count is positive it runs every
joinable's :meth:`JoinHook.main_hook`, which issues the collectives one iteration of an
active rank issues (DDP: buffer broadcast, bucket all-reduces with zero gradients), so the
active ranks never wait for it. When the count is zero every rank has joined and each
runs :meth:`JoinHook.post_hook` (DDP: copy the final model from the last rank that
joined). With ``throw_on_early_termination`` the first rank to join instead makes every
rank raise.
"""

from __future__ import annotations

import abc
import logging
from typing import Any, NamedTuple

import numpy as np

from ..autograd.variable import make_tensor
from ..collectives.functional import all_reduce
from ..collectives.types import ReduceOp

__all__ = ["Join", "JoinHook", "Joinable"]

logger = logging.getLogger(__name__)

_WARN_ITERATIONS = 1000


class JoinHook:
    """What a joined rank runs for one joinable: :meth:`main_hook` once per iteration of the
    still-active ranks, :meth:`post_hook` once when all ranks have joined."""

    def main_hook(self) -> None:  # noqa: B027  (a no-op default, as in PyTorch)
        """Shadow the collectives of one training iteration."""

    def post_hook(self, is_last_joiner: bool) -> None:  # noqa: B027
        """Clean up after every rank joined; ``is_last_joiner`` is True on the ranks that
        joined last."""


class _JoinConfig(NamedTuple):
    enable: bool
    throw_on_early_termination: bool
    is_first_joinable: bool

    @staticmethod
    def disabled() -> "_JoinConfig":
        return _JoinConfig(False, False, False)


class Joinable(abc.ABC):
    """A class that takes part in :class:`Join` (e.g. DistributedDataParallel): it
    provides a :class:`JoinHook`, a device and a process group, and calls
    :meth:`Join.notify_join_context` once per iteration."""

    def __init__(self) -> None:
        self._join_config = _JoinConfig.disabled()

    @abc.abstractmethod
    def join_hook(self, **kwargs: Any) -> JoinHook:
        """The hook a joined rank runs for this joinable (``kwargs`` come from :class:`Join`)."""

    @property
    @abc.abstractmethod
    def join_device(self) -> Any:
        """The device of the join collectives."""

    @property
    @abc.abstractmethod
    def join_process_group(self) -> Any:
        """The process group of the join collectives."""


class Join:
    """Context manager for uneven inputs across ranks.

    Args:
        joinables: the :class:`Joinable` objects (same process group) of the training loop.
        enable: False turns the context into a no-op.
        throw_on_early_termination: raise on every rank as soon as one rank runs out of data.
        **kwargs: passed to every joinable's ``join_hook`` (DDP: ``divide_by_initial_world_size``).

    Example::

        with Join([ddp_model]):
            for x, y in my_uneven_shard:
                loss_fn(ddp_model(x), y).backward(); opt.step(); opt.zero_grad()
    """

    def __init__(self, joinables: list, enable: bool = True, throw_on_early_termination: bool = False,
                 **kwargs: Any) -> None:
        joinables = list(joinables)
        if not joinables:
            raise ValueError("Join needs at least one joinable")
        for j in joinables:
            if not isinstance(j, Joinable):
                raise TypeError(f"Join: {type(j).__name__} is not a Joinable")
        groups = {id(j.join_process_group) for j in joinables}
        if len(groups) > 1:
            raise ValueError("Join: all joinables must use the same process group")
        self._joinables = joinables
        self._join_hooks = [j.join_hook(**kwargs) for j in joinables]
        self._enable = bool(enable)
        self._throw = bool(throw_on_early_termination)
        self._group = joinables[0].join_process_group
        self._device = joinables[0].join_device
        self._rank = self._group.rank()
        self._set_configs(enabled=True)

    def _set_configs(self, enabled: bool) -> None:
        for i, j in enumerate(self._joinables):
            j._join_config = (_JoinConfig(self._enable, self._throw, i == 0) if enabled
                              else _JoinConfig.disabled())

    def __enter__(self) -> "Join":
        self._set_configs(enabled=True)
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        try:
            if not self._enable or exc_type is not None:
                return  # an error inside the block propagates as it is
            self._join()
        finally:
            self._set_configs(enabled=False)

    def _count_active(self) -> int:
        t = make_tensor(self._device.xp.zeros(1, dtype=np.int64), self._device)
        all_reduce(t, ReduceOp.SUM, group=self._group)
        return int(self._device.to_host(t._data)[0])

    def _notify_to_terminate(self) -> None:
        t = make_tensor(self._device.xp.ones(1, dtype=np.int64), self._device)
        all_reduce(t, ReduceOp.SUM, group=self._group)
        raise RuntimeError(f"Rank {self._rank} exhausted all inputs.")

    def _join(self) -> None:
        is_last_joiner = True
        i = 0
        while True:
            if self._count_active() == 0:
                break
            if self._throw:
                self._notify_to_terminate()
            for hook in self._join_hooks:
                hook.main_hook()
            is_last_joiner = False
            i += 1
            if i == _WARN_ITERATIONS:
                logger.warning("rank=%d has shadowed %d iterations of the other ranks in Join; the inputs are very "
                               "uneven", self._rank, i)
        for hook in self._join_hooks:
            hook.post_hook(is_last_joiner)

    @staticmethod
    def notify_join_context(joinable: Joinable) -> None:
        """Tell the joined ranks (if any) that this rank runs another iteration; a joinable
        calls it once per iteration before its own collectives. Only the first joinable
        of a context communicates. Raises on every rank when a rank ran out of data under
        ``throw_on_early_termination``."""
        config = getattr(joinable, "_join_config", None)
        if config is None or not config.enable or not config.is_first_joinable:
            return
        device, group = joinable.join_device, joinable.join_process_group
        ones = make_tensor(device.xp.ones(1, dtype=np.int64), device)
        all_reduce(ones, ReduceOp.SUM, group=group)
        if config.throw_on_early_termination:
            flag = make_tensor(device.xp.zeros(1, dtype=np.int64), device)
            all_reduce(flag, ReduceOp.SUM, group=group)
            if int(device.to_host(flag._data)[0]):
                raise RuntimeError("Detected at least one rank that exhausted inputs. Throwing across all ranks.")

