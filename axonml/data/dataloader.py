"""``DataLoader``: batches from a dataset, in this process or in worker processes.

Arguments, defaults and validation follow ``torch.utils.data.DataLoader``.

Note on workers: ``num_workers > 0`` starts real processes with the ``spawn`` start
method (never ``fork``: forking after NumPy, CuPy or a communication thread is up is
unsafe). The dataset, ``collate_fn`` and ``worker_init_fn`` are pickled into each worker,
so define them at module level in an importable module (the worker gets the parent's
``sys.path``), and guard the script's entry point with ``if __name__ == "__main__":``.
The parent hands out index batches round-robin, keeps ``prefetch_factor * num_workers``
batches in flight, and returns them in order (``in_order=False``: as they arrive).
Batches cross the pipe as NumPy arrays and become tensors again in the parent (see
``_worker.py`` for the protocol). The parent waits on the result pipes and the workers'
process sentinels together, so a worker that dies is reported at once as a
:class:`~axonml.errors.DataLoaderError` naming its id, pid and exit code; an exception in
a worker is re-raised in the parent with the worker's traceback in the message. Workers
stop when the epoch ends, when the iterator is garbage-collected or the loop breaks
early, and at interpreter exit; ``persistent_workers=True`` keeps them across epochs.

Note on seeds: each iterator draws a base seed from ``generator`` (or the default
generator); worker ``i`` seeds Python's ``random``, AxonML's default generator and
NumPy's legacy global generator from ``base_seed + i`` (``get_worker_info().seed``).
The draw happens with and without workers, and at every epoch of persistent workers, so
shuffling with a seeded generator gives the same batches whatever ``num_workers`` is.
"""

from __future__ import annotations

import itertools
import multiprocessing
import multiprocessing.connection
import pickle
import time
import weakref
from typing import Any, Callable, Iterator

from ..errors import DataLoaderError
from ..tensor.random import Generator, get_generator
from ._worker import (
    ExceptionWrapper,
    IterationEnd,
    WorkerInfo,
    WorkerPool,
    describe_exit,
    from_wire,
    get_worker_info,
    make_fetcher,
)
from .collate import default_collate, default_convert
from .dataset import Dataset, IterableDataset
from .sampler import BatchSampler, RandomSampler, Sampler, SequentialSampler

__all__ = ["DataLoader", "WorkerInfo", "get_worker_info"]

class _InfiniteConstantSampler(Sampler):
    """For iterable datasets: an endless stream of placeholders (the worker ignores them)."""

    def __iter__(self) -> Iterator[None]:
        while True:
            yield None


def _draw_seed(generator: Generator | None) -> int:
    # leave room for base_seed + worker_id within int64
    return int(get_generator(generator).integers(0, 2**63 - 2**20))


def _mp_context(spec: Any) -> Any:
    if spec is None or spec == "spawn":
        return multiprocessing.get_context("spawn")
    if isinstance(spec, str):
        if spec == "fork":
            raise ValueError(
                "DataLoader: multiprocessing_context='fork' is not supported: forking after NumPy/CuPy or "
                "communication threads started is unsafe; use 'spawn' (the default) or 'forkserver'"
            )
        if spec not in multiprocessing.get_all_start_methods():
            raise ValueError(
                f"DataLoader: multiprocessing_context should be one of {multiprocessing.get_all_start_methods()!r}, "
                f"got {spec!r}"
            )
        return multiprocessing.get_context(spec)
    if not hasattr(spec, "get_start_method"):
        raise TypeError(
            f"DataLoader: multiprocessing_context should be a start method name or a context, got {spec!r}"
        )
    if spec.get_start_method() == "fork":
        raise ValueError("DataLoader: a 'fork' multiprocessing context is not supported; use 'spawn'")
    return spec


class DataLoader:
    """Iterate over a dataset in batches.

    Args:
        dataset: a map-style :class:`Dataset` (``__getitem__``/``__len__``) or an
            :class:`IterableDataset`.
        batch_size: samples per batch; ``None`` disables batching (samples come one by
            one, converted by ``collate_fn``, default :func:`default_convert`).
        shuffle: visit a new random order every epoch (map-style only).
        sampler: the order of indices (exclusive with ``shuffle``).
        batch_sampler: yields lists of indices (exclusive with ``batch_size``,
            ``shuffle``, ``sampler`` and ``drop_last``).
        num_workers: worker processes (0: load in this process).
        collate_fn: turns a list of samples into a batch (default :func:`default_collate`).
        pin_memory: accepted for compatibility; a no-op on CPU.
        drop_last: drop the last incomplete batch.
        timeout: with workers, seconds to wait for each batch before raising
            :class:`~axonml.errors.DataLoaderError` (0: no limit).
        worker_init_fn: called as ``worker_init_fn(worker_id)`` in each worker after seeding.
        multiprocessing_context: ``'spawn'`` (default) or ``'forkserver'`` or such a context.
        generator: the random stream for shuffling and the workers' base seed.
        prefetch_factor: batches in flight per worker (default 2 with workers; must stay
            ``None`` without workers, as in PyTorch).
        persistent_workers: keep the workers alive across epochs.
        pin_memory_device: accepted for compatibility; ignored.
        in_order: return batches in sampler order (``False``: as soon as they are ready).

    Example::

        loader = DataLoader(TensorDataset(x, y), batch_size=32, shuffle=True, num_workers=2)
        for xb, yb in loader: ...
    """

    _FROZEN = ("batch_size", "batch_sampler", "sampler", "drop_last", "dataset", "persistent_workers")
    __initialized = False

    def __init__(
        self,
        dataset: Dataset,
        batch_size: int | None = 1,
        shuffle: bool | None = None,
        sampler: Sampler | Any = None,
        batch_sampler: Sampler | Any = None,
        num_workers: int = 0,
        collate_fn: Callable[[list], Any] | None = None,
        pin_memory: bool = False,
        drop_last: bool = False,
        timeout: float = 0,
        worker_init_fn: Callable[[int], None] | None = None,
        multiprocessing_context: Any = None,
        generator: Generator | None = None,
        *,
        prefetch_factor: int | None = None,
        persistent_workers: bool = False,
        pin_memory_device: str = "",
        in_order: bool = True,
    ) -> None:
        if not isinstance(num_workers, int) or isinstance(num_workers, bool) or num_workers < 0:
            raise ValueError(
                f"DataLoader: num_workers option should be a non-negative integer, got {num_workers!r}; "
                "use num_workers=0 to disable multiprocessing"
            )
        if timeout < 0:
            raise ValueError(f"DataLoader: timeout option should be non-negative, got timeout={timeout}")
        if num_workers == 0 and prefetch_factor is not None:
            raise ValueError(
                f"DataLoader: prefetch_factor={prefetch_factor} can only be given with multiprocessing; "
                "set num_workers > 0 to enable it, otherwise leave prefetch_factor as None"
            )
        if prefetch_factor is not None and prefetch_factor < 1:
            raise ValueError(f"DataLoader: prefetch_factor should be at least 1, got prefetch_factor={prefetch_factor}")
        if persistent_workers and num_workers == 0:
            raise ValueError("DataLoader: persistent_workers option needs num_workers > 0")
        if multiprocessing_context is not None and num_workers == 0:
            raise ValueError(
                "DataLoader: multiprocessing_context can only be used with multi-process loading "
                f"(num_workers > 0), but got num_workers={num_workers}"
            )

        is_iterable = isinstance(dataset, IterableDataset)
        if is_iterable:
            for name, value, unset in (("shuffle", shuffle, (None, False)), ("sampler", sampler, (None,)),
                                       ("batch_sampler", batch_sampler, (None,))):
                if value not in unset:
                    raise ValueError(
                        f"DataLoader with IterableDataset: expected unspecified {name} option, but got {name}={value!r}; "
                        "an IterableDataset defines its own order"
                    )
        shuffle = bool(shuffle)
        if sampler is not None and shuffle:
            raise ValueError("DataLoader: sampler option is mutually exclusive with shuffle")
        if batch_sampler is not None:
            if batch_size != 1 or shuffle or sampler is not None or drop_last:
                raise ValueError(
                    "DataLoader: batch_sampler option is mutually exclusive with batch_size, shuffle, sampler, and drop_last"
                )
            batch_size = None
            drop_last = False
        elif batch_size is None and drop_last:
            raise ValueError("DataLoader: batch_size=None option disables auto-batching and is mutually exclusive with drop_last")

        if sampler is None:
            if is_iterable:
                sampler = _InfiniteConstantSampler()
            elif shuffle:
                sampler = RandomSampler(dataset, generator=generator)
            else:
                sampler = SequentialSampler(dataset)
        if batch_size is not None and batch_sampler is None:
            batch_sampler = BatchSampler(sampler, batch_size, drop_last)

        self.dataset = dataset
        self.batch_size = batch_size
        self.drop_last = drop_last
        self.sampler = sampler
        self.batch_sampler = batch_sampler
        self.num_workers = num_workers
        self.prefetch_factor = (2 if prefetch_factor is None else int(prefetch_factor)) if num_workers > 0 else None
        self.pin_memory = pin_memory
        self.pin_memory_device = pin_memory_device
        self.timeout = timeout
        self.worker_init_fn = worker_init_fn
        self.generator = generator
        self.persistent_workers = persistent_workers
        self.in_order = in_order
        self.multiprocessing_context = _mp_context(multiprocessing_context) if num_workers > 0 else None
        if collate_fn is None:
            collate_fn = default_collate if self._auto_collation else default_convert
        self.collate_fn = collate_fn
        self._is_iterable = is_iterable
        self._iterator: _MultiProcessIter | None = None
        self.__initialized = True

    def __setattr__(self, name: str, value: Any) -> None:
        if self.__initialized and name in self._FROZEN:
            raise ValueError(f"DataLoader: {name} attribute should not be set after DataLoader is initialized")
        super().__setattr__(name, value)

    @property
    def _auto_collation(self) -> bool:
        return self.batch_sampler is not None

    @property
    def _index_sampler(self) -> Any:
        return self.batch_sampler if self._auto_collation else self.sampler

    def __iter__(self) -> Iterator:
        if self.num_workers == 0:
            return _SingleProcessIter(self)
        if not self.persistent_workers:
            return _MultiProcessIter(self)
        if self._iterator is None or self._iterator._pool.closed:
            self._iterator = _MultiProcessIter(self)
        else:
            self._iterator._reset(self, first=False)
        return self._iterator

    def __len__(self) -> int:
        if self._is_iterable:
            n = len(self.dataset)  # type: ignore[arg-type]  (TypeError when the stream has no length)
            if self.batch_size is not None:
                n = n // self.batch_size if self.drop_last else -(-n // self.batch_size)
            return n
        return len(self._index_sampler)


class _BaseIter:
    """State shared by both iterators (copied from the loader: no reference cycle)."""

    def __init__(self, loader: DataLoader) -> None:
        self._dataset = loader.dataset
        self._is_iterable = loader._is_iterable
        self._auto_collation = loader._auto_collation
        self._index_sampler = loader._index_sampler
        self._drop_last = loader.drop_last
        self._collate_fn = loader.collate_fn
        self._generator = loader.generator
        self._sampler_iter = iter(self._index_sampler)
        self._base_seed = _draw_seed(loader.generator)
        self._num_yielded = 0

    def __iter__(self) -> "_BaseIter":
        return self

    def __next__(self) -> Any:
        data = self._next_data()
        self._num_yielded += 1
        return data

    def _next_data(self) -> Any:
        raise NotImplementedError


class _SingleProcessIter(_BaseIter):
    def __init__(self, loader: DataLoader) -> None:
        super().__init__(loader)
        self._fetcher = make_fetcher(self._is_iterable, self._dataset, self._auto_collation, self._collate_fn, self._drop_last)

    def _next_data(self) -> Any:
        index = next(self._sampler_iter)  # StopIteration ends the epoch
        return self._fetcher.fetch(index)


class _MultiProcessIter(_BaseIter):
    def __init__(self, loader: DataLoader) -> None:
        super().__init__(loader)
        self._num_workers = loader.num_workers
        self._prefetch = loader.prefetch_factor * loader.num_workers
        self._timeout = loader.timeout
        self._persistent = loader.persistent_workers
        self._in_order = loader.in_order
        self._pool = WorkerPool(loader, self._base_seed)
        self._finalizer = weakref.finalize(self, self._pool.shutdown)
        self._gen = 0
        self._reset(loader, first=True)

    def _reset(self, loader: DataLoader, first: bool) -> None:
        if not first:
            self._sampler_iter = iter(self._index_sampler)
            _draw_seed(loader.generator)  # keep the generator's stream as without workers
            self._num_yielded = 0
            self._gen += 1
            self._pool.generation.value = self._gen
            for w in range(self._num_workers):
                self._send(w, ("resume", self._gen))
        self._send_idx = 0
        self._rcvd_idx = 0
        self._task_worker: dict[int, int] = {}  # batch index -> worker, while in flight
        self._results: dict[int, Any] = {}  # batch index -> payload, arrived but not yet returned
        self._active = [True] * self._num_workers
        self._next_worker = itertools.cycle(range(self._num_workers))
        for _ in range(self._prefetch):
            self._try_put_index()

    # -- sending ------------------------------------------------------------------------
    def _send(self, w: int, msg: Any) -> None:
        try:
            self._pool.task_writers[w].send(msg)
        except (OSError, ValueError):
            self._raise_dead(w)

    def _try_put_index(self) -> None:
        if not any(self._active):
            return
        for _ in range(self._num_workers):
            w = next(self._next_worker)
            if self._active[w]:
                break
        try:
            index = next(self._sampler_iter)
        except StopIteration:
            return
        self._send(w, ("fetch", self._gen, self._send_idx, index))
        self._task_worker[self._send_idx] = w
        self._send_idx += 1

    # -- receiving ------------------------------------------------------------------------
    def _next_data(self) -> Any:
        if self._pool.closed:
            raise StopIteration
        deadline = None if self._timeout <= 0 else time.monotonic() + self._timeout
        while True:
            while self._rcvd_idx < self._send_idx and self._rcvd_idx not in self._task_worker:
                self._rcvd_idx += 1  # delivered out of order, or cancelled (stream ended)
            if self._in_order:
                ready = self._rcvd_idx if self._rcvd_idx in self._results else None
            else:
                ready = min(self._results) if self._results else None
            if ready is not None:
                payload = self._results.pop(ready)
                del self._task_worker[ready]
                self._try_put_index()
                if isinstance(payload, ExceptionWrapper):
                    payload.reraise()
                return from_wire(payload)
            if not self._task_worker:  # nothing in flight: the epoch is over
                if not self._persistent:
                    self._shutdown()
                raise StopIteration
            self._receive(deadline)

    def _receive(self, deadline: float | None) -> None:
        """Block until a result arrives (or a worker dies, or the deadline passes)."""
        readers = self._pool.result_readers
        sentinels = {p.sentinel: w for w, p in enumerate(self._pool.processes)}
        wait_s = None if deadline is None else max(0.0, deadline - time.monotonic())
        ready = multiprocessing.connection.wait([*readers, *sentinels], timeout=wait_s)
        if not ready:
            waiting = self._task_worker.get(self._rcvd_idx, "?")
            self._shutdown(graceful=False)
            raise DataLoaderError(
                f"DataLoader timed out after {self._timeout} seconds waiting for batch {self._num_yielded} "
                f"(worker {waiting}); raise timeout= or make the dataset faster"
            )
        for obj in ready:
            if obj in sentinels:
                continue
            w = readers.index(obj)
            try:
                while obj.poll():
                    self._handle(pickle.loads(obj.recv_bytes()))
            except (EOFError, OSError):
                self._raise_dead(w)
        for obj in ready:
            if obj in sentinels:
                w = sentinels[obj]
                if not readers[w].poll():  # nothing left to read from a dead worker
                    self._raise_dead(w)

    def _handle(self, msg: tuple) -> None:
        gen, idx, payload = msg
        if gen != self._gen:
            return  # a result of an abandoned epoch
        if isinstance(payload, IterationEnd):
            w = payload.worker_id
            self._active[w] = False
            # the worker answers nothing more this epoch: cancel its remaining tasks and
            # hand their slots in the prefetch window to the workers still streaming
            cancelled = [i for i, ww in self._task_worker.items() if ww == w and i >= idx and i not in self._results]
            for i in cancelled:
                del self._task_worker[i]
            for _ in cancelled:
                self._try_put_index()
            return
        self._results[idx] = payload

    def _raise_dead(self, w: int) -> None:
        proc = self._pool.processes[w]
        proc.join(1.0)  # the exit code is set once the process is reaped
        pid, code = proc.pid, proc.exitcode
        self._shutdown(graceful=False)
        raise DataLoaderError(
            f"DataLoader worker {w} (pid {pid}) exited unexpectedly with {describe_exit(code)}; "
            "look at its output above for the cause"
        )

    def _shutdown(self, graceful: bool = True) -> None:
        if not graceful:
            self._pool.shutdown(graceful=False)
        self._finalizer()  # also runs when the iterator is garbage-collected, and at exit
