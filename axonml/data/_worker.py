"""Both ends of the data loader's worker processes: fetchers, the worker loop, what
crosses the pipes, and the parent's :class:`WorkerPool`.

Note on the protocol: each worker owns two one-way pipes. The parent writes tasks to the
first: ``("fetch", generation, batch_index, indices)``, ``("resume", generation)`` (a new
epoch of persistent workers: iterable datasets restart) or ``None`` (exit). The worker
writes ``pickle((generation, batch_index, payload))`` to the second, where the payload is
a batch (tensors replaced by :class:`WireTensor`, i.e. NumPy arrays), an
:class:`ExceptionWrapper`, or :class:`IterationEnd` when an iterable dataset's copy in
this worker is exhausted. Results are pickled in the worker's main thread, so an
unpicklable batch becomes an error report instead of a lost message; a sender thread
writes them, so the worker computes the next batch while the parent is busy.

A shared generation number lets the parent cancel work: tasks of an older generation
(an abandoned epoch) are skipped, and generation -1 means shut down. A worker exits on
``None``, when the parent's end of the task pipe closes (the parent died), or when its
result pipe breaks.
"""

from __future__ import annotations

import os
import pickle
import queue
import random
import signal
import sys
import threading
import time
import traceback
from typing import Any, Callable

import numpy as np

from ..autograd.variable import TensorBase
from ..errors import DataLoaderError
from ..tensor.creation import from_numpy, tensor
from ..tensor.random import manual_seed
from .collate import default_collate

__all__ = ["WorkerInfo", "get_worker_info"]


class WorkerInfo:
    """What a worker knows about itself: ``id``, ``num_workers``, ``seed``, ``dataset``
    (this worker's copy). Read-only."""

    __initialized = False

    def __init__(self, **kwargs: Any) -> None:
        for k, v in kwargs.items():
            setattr(self, k, v)
        self.__keys = tuple(kwargs)
        self.__initialized = True

    def __setattr__(self, key: str, value: Any) -> None:
        if self.__initialized:
            raise RuntimeError(f"cannot assign attribute {key!r} of WorkerInfo: it is read-only")
        super().__setattr__(key, value)

    def __repr__(self) -> str:
        items = ", ".join(f"{k}={getattr(self, k)!r}" for k in self.__keys if k != "dataset")
        return f"WorkerInfo({items})"


_worker_info: WorkerInfo | None = None


def get_worker_info() -> WorkerInfo | None:
    """Inside a data loader worker: its :class:`WorkerInfo`; in the main process: None.

    Use it in an :class:`~axonml.data.IterableDataset`'s ``__iter__`` to shard the stream::

        info = get_worker_info()
        start, step = (0, 1) if info is None else (info.id, info.num_workers)
    """
    return _worker_info


# -- what crosses the pipe -----------------------------------------------------------------
class WireTensor:
    """A tensor in transit: its host array; rebuilt as a tensor in the parent."""

    __slots__ = ("array", "device", "requires_grad")

    def __init__(self, array: np.ndarray, device: str, requires_grad: bool) -> None:
        self.array, self.device, self.requires_grad = array, device, requires_grad


class IterationEnd:
    """An iterable dataset's copy in worker ``worker_id`` is exhausted."""

    def __init__(self, worker_id: int) -> None:
        self.worker_id = worker_id


class _KeyErrorMessage(str):
    """KeyError shows the repr of its argument; keep a multi-line message readable."""

    def __repr__(self) -> str:
        return str(self)


class ExceptionWrapper:
    """An exception raised in a worker, with its traceback as text."""

    def __init__(self, exc: BaseException, where: str) -> None:
        self.type_name = type(exc).__qualname__
        try:  # the class travels only if the parent can import it
            pickle.dumps(type(exc))
            self.exc_type: type | None = type(exc)
        except Exception:
            self.exc_type = None
        self.where = where
        self.text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))

    def reraise(self) -> None:
        msg = f"Caught {self.type_name} in {self.where}.\nOriginal traceback in the worker:\n{self.text}"
        err: BaseException = DataLoaderError(msg)
        rebuilt = None
        if self.exc_type is KeyError:
            err = KeyError(_KeyErrorMessage(msg))
        elif self.exc_type is not None:
            try:
                rebuilt = self.exc_type(msg)
            except Exception:  # a constructor that needs other arguments: keep DataLoaderError
                rebuilt = None
            if isinstance(rebuilt, BaseException):
                err = rebuilt
        try:
            raise err
        finally:
            # no frame -> exception -> traceback -> frame cycle: the iterator in the
            # caller's frame is freed (and its workers stopped) without a gc pass
            del err, rebuilt


def _is_namedtuple(x: Any) -> bool:
    return isinstance(x, tuple) and hasattr(x, "_fields")


def _map_structure(obj: Any, leaf: Callable[[Any], Any]) -> Any:
    """Apply ``leaf`` to every non-container in dicts, lists, tuples and namedtuples."""
    if isinstance(obj, dict):
        out = {k: _map_structure(v, leaf) for k, v in obj.items()}
        if type(obj) is dict:
            return out
        clone = obj.copy()
        clone.update(out)
        return clone
    if _is_namedtuple(obj):
        return type(obj)(*(_map_structure(v, leaf) for v in obj))
    if type(obj) in (list, tuple):
        return type(obj)(_map_structure(v, leaf) for v in obj)
    return leaf(obj)


def _tensor_to_wire(x: Any) -> Any:
    if isinstance(x, TensorBase):
        return WireTensor(np.asarray(x), str(x.device), bool(x.requires_grad and x.is_leaf))
    return x


def _wire_to_tensor(x: Any) -> Any:
    if isinstance(x, WireTensor):
        t = from_numpy(x.array) if x.device == "cpu" else tensor(x.array, device=x.device)
        return t.requires_grad_(True) if x.requires_grad else t
    return x


def to_wire(batch: Any) -> Any:
    """Replace tensors with :class:`WireTensor` (NumPy arrays) for the pipe."""
    return _map_structure(batch, _tensor_to_wire)


def from_wire(batch: Any) -> Any:
    """Rebuild the tensors of a batch that came through the pipe."""
    return _map_structure(batch, _wire_to_tensor)


# -- fetchers: one batch from indices (map-style) or from the stream (iterable) -------------
class MapFetcher:
    def __init__(self, dataset: Any, auto_collation: bool, collate_fn: Callable, drop_last: bool) -> None:
        self.dataset, self.auto_collation, self.collate_fn = dataset, auto_collation, collate_fn
        getitems = getattr(dataset, "__getitems__", None)
        self._getitems = getitems if callable(getitems) else None
        # TensorDataset (and Subsets of it) can gather a default-collated batch at once
        fast = getattr(dataset, "_fetch_collated", None) if collate_fn is default_collate else None
        self._fetch_collated = fast if callable(fast) else None

    def fetch(self, index: Any) -> Any:
        if self.auto_collation:
            if self._fetch_collated is not None:
                batch = self._fetch_collated(index)
                if batch is not None:
                    return batch
            if self._getitems is not None:
                data = self._getitems(index)
            else:
                data = [self.dataset[i] for i in index]
        else:
            data = self.dataset[index]
        return self.collate_fn(data)


class IterFetcher:
    """Batches from ``iter(dataset)``; raises StopIteration when the stream ends."""

    def __init__(self, dataset: Any, auto_collation: bool, collate_fn: Callable, drop_last: bool) -> None:
        self.auto_collation, self.collate_fn, self.drop_last = auto_collation, collate_fn, drop_last
        self.iterator = iter(dataset)
        self.ended = False

    def fetch(self, index: Any) -> Any:
        if self.ended:
            raise StopIteration
        if not self.auto_collation:
            try:
                data = next(self.iterator)
            except StopIteration:
                self.ended = True
                raise
            return self.collate_fn(data)
        data = []
        for _ in index:  # index is a list of placeholders, one per sample
            try:
                data.append(next(self.iterator))
            except StopIteration:
                self.ended = True
                break
        if not data or (self.drop_last and len(data) < len(index)):
            raise StopIteration
        return self.collate_fn(data)


def make_fetcher(is_iterable: bool, dataset: Any, auto_collation: bool, collate_fn: Callable, drop_last: bool) -> Any:
    cls = IterFetcher if is_iterable else MapFetcher
    return cls(dataset, auto_collation, collate_fn, drop_last)


# -- the worker process ----------------------------------------------------------------
def _seed_worker(seed: int, base_seed: int, worker_id: int) -> None:
    random.seed(seed)
    manual_seed(seed)
    np.random.seed(np.random.SeedSequence([base_seed, worker_id]).generate_state(4))


def _sender(out: queue.Queue, conn: Any) -> None:
    while True:
        item = out.get()
        if item is None:
            return
        try:
            conn.send_bytes(item)
        except (OSError, EOFError):  # the parent closed its end: nothing more to deliver
            return


def worker_loop(
    worker_id: int,
    num_workers: int,
    dataset: Any,
    is_iterable: bool,
    auto_collation: bool,
    collate_fn: Callable,
    drop_last: bool,
    base_seed: int,
    init_fn: Callable[[int], None] | None,
    tasks: Any,
    results: Any,
    generation: Any,
) -> None:
    """Entry point of a worker process (see the module note for the protocol)."""
    global _worker_info
    seed = base_seed + worker_id
    where = f"DataLoader worker {worker_id} (pid {os.getpid()})"
    _seed_worker(seed, base_seed, worker_id)
    _worker_info = WorkerInfo(id=worker_id, num_workers=num_workers, seed=seed, dataset=dataset)

    out: queue.Queue = queue.Queue()
    sender = threading.Thread(target=_sender, args=(out, results), daemon=True, name="axonml-dataloader-sender")
    sender.start()

    def post(gen: int, idx: int, payload: Any) -> None:
        try:
            blob = pickle.dumps((gen, idx, payload), protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:  # an unpicklable batch: report it instead of losing it
            blob = pickle.dumps((gen, idx, ExceptionWrapper(exc, where + " while sending a batch")))
        out.put(blob)

    init_error: ExceptionWrapper | None = None
    fetcher = None
    try:
        if init_fn is not None:
            init_fn(worker_id)
        fetcher = make_fetcher(is_iterable, dataset, auto_collation, collate_fn, drop_last)
    except Exception as exc:
        init_error = ExceptionWrapper(exc, where + " during worker_init_fn / dataset setup")

    iteration_ended = False
    try:
        while True:
            try:
                task = tasks.recv()
            except (EOFError, OSError):  # the parent is gone
                break
            if task is None:
                break
            if task[0] == "resume":
                iteration_ended = False
                if is_iterable and init_error is None:
                    try:
                        fetcher = make_fetcher(is_iterable, dataset, auto_collation, collate_fn, drop_last)
                    except Exception as exc:
                        init_error = ExceptionWrapper(exc, where + " while restarting the dataset iterator")
                continue
            _, gen, idx, index = task
            if gen != generation.value or iteration_ended:
                continue  # cancelled (old epoch or shutdown), or this worker's stream is over
            if init_error is not None:
                post(gen, idx, init_error)
                continue
            try:
                payload = to_wire(fetcher.fetch(index))
            except StopIteration:
                if not is_iterable:
                    payload = ExceptionWrapper(RuntimeError("the dataset raised StopIteration"), where)
                else:
                    iteration_ended = True
                    payload = IterationEnd(worker_id)
            except Exception as exc:
                payload = ExceptionWrapper(exc, where)
            post(gen, idx, payload)
    except KeyboardInterrupt:  # Ctrl-C reaches the whole process group; the parent handles it
        pass
    out.put(None)
    sys.stdout.flush()


# -- the parent's side ------------------------------------------------------------------
_SHUTDOWN_GRACE_S = 2.0  # how long exiting workers get before they are terminated


class WorkerPool:
    """The parent's side: the worker processes of one data loader iterator and their
    pipes. ``shutdown`` is idempotent and holds no reference to the iterator (it is the
    iterator's finalizer)."""

    def __init__(self, loader: Any, base_seed: int) -> None:
        ctx = loader.multiprocessing_context
        self.closed = False
        self.generation = ctx.RawValue("q", 0)
        self.processes: list = []
        self.task_writers: list = []
        self.result_readers: list = []
        n = loader.num_workers
        try:
            for wid in range(n):
                task_r, task_w = ctx.Pipe(duplex=False)
                res_r, res_w = ctx.Pipe(duplex=False)
                args = (
                    wid, n, loader.dataset, loader._is_iterable, loader._auto_collation, loader.collate_fn,
                    loader.drop_last, base_seed, loader.worker_init_fn, task_r, res_w, self.generation,
                )
                proc = ctx.Process(target=worker_loop, args=args, daemon=True, name=f"axonml-dataloader-{wid}")
                self.task_writers.append(task_w)
                self.result_readers.append(res_r)
                try:
                    proc.start()
                finally:
                    task_r.close()  # the worker holds the only copies of these ends now
                    res_w.close()
                self.processes.append(proc)
        except (pickle.PicklingError, AttributeError, TypeError) as exc:
            self.shutdown()
            raise DataLoaderError(
                f"DataLoader: could not start worker {len(self.processes)}: {exc}. Workers are spawned, so the dataset, "
                "collate_fn and worker_init_fn must be picklable: define them at module level in an importable module"
            ) from exc
        except BaseException:
            self.shutdown()
            raise

    def shutdown(self, graceful: bool = True) -> None:
        """Stop the workers: ask them to exit, and terminate those still running after
        a grace period (at once when not ``graceful``: after a timeout or a death)."""
        if self.closed:
            return
        self.closed = True
        self.generation.value = -1  # workers skip whatever is still queued
        for conn in self.task_writers:
            try:
                conn.send(None)
            except (OSError, ValueError):
                pass
        for conn in self.result_readers:  # a worker blocked on a full pipe gets EPIPE and exits
            conn.close()
        deadline = time.monotonic() + (_SHUTDOWN_GRACE_S if graceful else 0.0)
        for proc in self.processes:
            proc.join(max(0.0, deadline - time.monotonic()))
        for proc in self.processes:
            if proc.is_alive():
                proc.terminate()
                proc.join(1.0)
            if proc.is_alive():
                proc.kill()
                proc.join()
        for conn in self.task_writers:
            conn.close()
        for proc in self.processes:
            proc.close()


def describe_exit(code: int | None) -> str:
    if code is None:
        return "an unknown exit code"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        hint = " (killed: out of memory?)" if -code == signal.SIGKILL else ""
        return f"exit code {code}, {name}{hint}"
    return f"exit code {code}"
