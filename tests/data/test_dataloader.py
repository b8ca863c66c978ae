"""DataLoader: batches, lengths and argument checks against PyTorch's; worker processes
against the single-process loader (same batches), and their failure modes.

Worker tests start real spawned processes (about half a second each here): they are few
and small. Their datasets live in ``datasets_for_tests.py`` so the workers can import them.
"""

from __future__ import annotations

import gc
import multiprocessing
import os
import sys
import time

import numpy as np
import pytest

import axonml as ax
from axonml.data import (
    BatchSampler,
    DataLoader,
    IterableDataset,
    SequentialSampler,
    TensorDataset,
    WorkerInfo,
    default_collate,
    get_worker_info,
    random_split,
)
from axonml.data._worker import ExceptionWrapper
from axonml.errors import DataLoaderError

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # spawned workers inherit sys.path
import datasets_for_tests as dft  # noqa: E402

torch = pytest.importorskip("torch")
tud = torch.utils.data


def py(obj):
    """Batches as plain Python (tensors as (dtype, values)), for AxonML and PyTorch alike."""
    if isinstance(obj, ax.Tensor):
        return (obj.dtype.name, obj.tolist())
    if isinstance(obj, torch.Tensor):
        return (str(obj.dtype).replace("torch.", ""), obj.tolist())
    if isinstance(obj, dict):
        return {k: py(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [py(v) for v in obj]
    return obj


def child_pids() -> set[int]:
    return {p.pid for p in multiprocessing.active_children()}


@pytest.fixture
def no_leaks():
    """Fails the test when child processes it started are still alive 5 s after it ends
    (``multiprocessing.active_children()``, compared with before the test)."""
    before = child_pids()
    yield before
    end = time.monotonic() + 5.0
    while child_pids() - before and time.monotonic() < end:
        time.sleep(0.05)
    assert not child_pids() - before, f"leaked worker processes: {sorted(child_pids() - before)}"


def no_children(before: set[int] = frozenset(), deadline_s: float = 5.0) -> bool:
    """True once no child process outside ``before`` is alive (waits up to deadline_s)."""
    end = time.monotonic() + deadline_s
    while child_pids() - before:
        if time.monotonic() > end:
            return False
        time.sleep(0.05)
    return True


class TorchPairs(tud.Dataset):
    """dft.PairDataset for PyTorch: the same samples."""

    def __init__(self, n):
        self.inner = dft.PairDataset(n)

    def __len__(self):
        return len(self.inner)

    def __getitem__(self, i):
        return self.inner[i]


class Stream(IterableDataset):
    def __init__(self, n):
        self.n = n

    def __iter__(self):
        return iter(range(self.n))

    def __len__(self):
        return self.n


class TorchStream(tud.IterableDataset):
    def __init__(self, n):
        self.n = n

    def __iter__(self):
        return iter(range(self.n))

    def __len__(self):
        return self.n


# -- single process -------------------------------------------------------------------------------
@pytest.mark.parametrize("n", [0, 1, 7])
@pytest.mark.parametrize("batch_size, drop_last", [(1, False), (1, True), (3, False), (3, True), (None, False)])
def test_batches_match_torch(n, batch_size, drop_last):
    ours = DataLoader(dft.PairDataset(n), batch_size=batch_size, drop_last=drop_last)
    ref = tud.DataLoader(TorchPairs(n), batch_size=batch_size, drop_last=drop_last)
    assert py(list(ours)) == py(list(ref))
    assert len(ours) == len(ref)


@pytest.mark.parametrize(
    "n, batch_size, drop_last", [(7, 3, False), (7, 3, True), (6, 2, False), (0, 2, False), (5, None, False)]
)
def test_iterable_dataset_matches_torch(n, batch_size, drop_last):
    ours = DataLoader(Stream(n), batch_size=batch_size, drop_last=drop_last)
    ref = tud.DataLoader(TorchStream(n), batch_size=batch_size, drop_last=drop_last)
    assert py(list(ours)) == py(list(ref))
    assert len(ours) == len(ref)


def test_shuffle_uses_the_generator():
    def epochs(loader):
        return [py(list(loader)) for _ in range(2)]

    a = epochs(DataLoader(list(range(20)), batch_size=4, shuffle=True, generator=ax.Generator().manual_seed(1)))
    b = epochs(DataLoader(list(range(20)), batch_size=4, shuffle=True, generator=ax.Generator().manual_seed(1)))
    assert a == b and a[0] != a[1]
    assert sorted(v for batch in a[0] for v in batch[1]) == list(range(20))


def test_sampler_batch_sampler_and_collate_fn():
    loader = DataLoader(list(range(10)), sampler=[9, 8, 7], batch_size=2)
    assert py(list(loader)) == [("int64", [9, 8]), ("int64", [7])]
    loader = DataLoader(list(range(10)), batch_sampler=[[1, 2], [5]])
    assert py(list(loader)) == [("int64", [1, 2]), ("int64", [5])] and len(loader) == 2
    loader = DataLoader(list(range(5)), batch_size=2, collate_fn=lambda b: sum(b))
    assert list(loader) == [1, 5, 4]
    loader = DataLoader(list(range(4)), batch_sampler=BatchSampler(SequentialSampler(range(4)), 3, True))
    assert py(list(loader)) == [("int64", [0, 1, 2])]


def test_tensor_dataset_loader():
    x = ax.arange(10).reshape(5, 2)
    y = ax.tensor([0.0, 1.0, 2.0, 3.0, 4.0])
    batches = list(DataLoader(TensorDataset(x, y), batch_size=2, pin_memory=True))
    assert py(batches[0]) == [("int64", [[0, 1], [2, 3]]), ("float32", [0.0, 1.0])]
    assert len(batches) == 3 and batches[2][0].shape == (1, 2)


def test_tensor_dataset_fast_path_equals_per_sample_collation():
    ds = TensorDataset(ax.randn(10, 3, requires_grad=True), ax.arange(10))
    train, _ = random_split(ds, [6, 4], generator=ax.Generator().manual_seed(0))
    for d in (ds, train, TensorDataset(np.arange(10.0), np.arange(10, dtype=np.int32) % 3)):
        def load(**kw):
            return py(list(DataLoader(d, batch_size=4, shuffle=True, generator=ax.Generator().manual_seed(2), **kw)))

        assert load() == load(collate_fn=lambda b: default_collate(b))


BAD_ARGS = [
    (dict(num_workers=-1), "num_workers"),
    (dict(timeout=-1), "timeout"),
    (dict(prefetch_factor=2), "prefetch_factor"),
    (dict(persistent_workers=True), "persistent_workers"),
    (dict(sampler=[0, 1], shuffle=True), "sampler option is mutually exclusive with shuffle"),
    (dict(batch_sampler=[[0]], batch_size=2), "batch_sampler option is mutually exclusive with batch_size"),
    (dict(batch_sampler=[[0]], shuffle=True), "batch_sampler"),
    (dict(batch_sampler=[[0]], sampler=[0]), "batch_sampler"),
    (dict(batch_sampler=[[0]], drop_last=True), "batch_sampler"),
    (dict(batch_size=None, drop_last=True), "batch_size=None.*drop_last"),
    (dict(multiprocessing_context="spawn"), "multiprocessing_context"),
]


@pytest.mark.parametrize("kwargs, match", BAD_ARGS)
def test_argument_validation_matches_torch(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DataLoader(list(range(4)), **kwargs)
    with pytest.raises(ValueError):
        tud.DataLoader(list(range(4)), **kwargs)


@pytest.mark.parametrize("kwargs", [dict(shuffle=True), dict(sampler=[0]), dict(batch_sampler=[[0]])])
def test_iterable_dataset_rejects_order_options(kwargs):
    name = next(iter(kwargs))
    with pytest.raises(ValueError, match=f"IterableDataset: expected unspecified {name} option"):
        DataLoader(Stream(3), **kwargs)
    with pytest.raises(ValueError):
        tud.DataLoader(TorchStream(3), **kwargs)


def test_more_validation():
    with pytest.raises(ValueError, match="'fork' is not supported"):
        DataLoader(list(range(4)), num_workers=1, multiprocessing_context="fork")
    with pytest.raises(ValueError, match="prefetch_factor should be at least 1"):
        DataLoader(list(range(4)), num_workers=1, prefetch_factor=0)
    with pytest.raises(ValueError, match="batch_size=0"):
        DataLoader(list(range(4)), batch_size=0)
    loader = DataLoader(list(range(4)))
    for attr in ("batch_size", "sampler", "dataset", "drop_last"):
        with pytest.raises(ValueError, match=f"{attr} attribute should not be set"):
            setattr(loader, attr, None)
    with pytest.raises(TypeError):
        len(DataLoader(IterableDataset()))  # a stream without a length


def test_worker_info_is_none_in_main_process_and_read_only():
    assert get_worker_info() is None
    info = WorkerInfo(id=1, num_workers=2, seed=5, dataset=None)
    assert (info.id, info.num_workers, info.seed) == (1, 2, 5) and "id=1" in repr(info)
    with pytest.raises(RuntimeError, match="read-only"):
        info.id = 3


def _raised(exc):
    try:
        raise exc
    except BaseException as caught:
        return ExceptionWrapper(caught, "DataLoader worker 1 (pid 42)")


def test_worker_exceptions_keep_their_type_when_they_can():
    with pytest.raises(KeyError) as info:
        _raised(KeyError("missing")).reraise()
    assert "Caught KeyError in DataLoader worker 1 (pid 42).\n" in str(info.value)  # readable, not a repr
    with pytest.raises(DataLoaderError, match="Caught UnicodeDecodeError"):  # needs 5 arguments: wrapped
        _raised(UnicodeDecodeError("utf-8", b"x", 0, 1, "bad")).reraise()
    with pytest.raises(ValueError, match="(?s)Caught ValueError.*Traceback.*ValueError: boom"):
        _raised(ValueError("boom")).reraise()


# -- worker processes ---------------------------------------------------------------------------------
def test_workers_give_the_same_batches_as_one_process(no_leaks):
    def run(**kw):
        loader = DataLoader(dft.PairDataset(23), batch_size=3, shuffle=True, generator=ax.Generator().manual_seed(5), **kw)
        return [py(list(loader)) for _ in range(2)]  # two epochs: the generator's stream carries on

    single = run()
    assert single[0] != single[1]
    assert run(num_workers=2, prefetch_factor=3) == single
    assert no_children(no_leaks)
    ds = TensorDataset(ax.randn(9, 2), ax.arange(9))
    assert py(list(DataLoader(ds, batch_size=4, num_workers=1))) == py(list(DataLoader(ds, batch_size=4)))


def test_persistent_workers_seeds_and_worker_init_fn(no_leaks):
    loader = DataLoader(dft.WhoDataset(8), batch_size=2, num_workers=2, persistent_workers=True, worker_init_fn=dft.init_fn)
    epochs = []
    for _ in range(2):
        rows = [tuple(col.tolist()[0] for col in batch) for batch in loader]
        epochs.append(rows)
    first = epochs[0]
    assert [r[0] for r in first] == [0, 2, 4, 6]
    assert [r[1] for r in first] == [0, 1, 0, 1]  # round-robin, delivered in order
    seeds = {r[1]: r[2] for r in first}
    assert seeds[1] == seeds[0] + 1  # base_seed + worker_id
    assert {r[1]: r[4] for r in first} == {0: 100, 1: 101}  # worker_init_fn ran in each worker
    assert [r[3] for r in epochs[1]] == [r[3] for r in first]  # same processes in epoch 2
    assert {r[3] for r in first} <= child_pids()  # alive between epochs
    del loader
    gc.collect()
    assert no_children(no_leaks)


def test_iterable_dataset_sharded_across_workers(no_leaks):
    loader = DataLoader(dft.ShardedStream(11), batch_size=2, num_workers=2)
    batches = [b.tolist() for b in loader]
    assert batches == [[0, 2], [1, 3], [4, 6], [5, 7], [8, 10], [9]]
    assert no_children(no_leaks)


def test_iterable_dataset_workers_ending_at_different_times(no_leaks):
    loader = DataLoader(dft.UnevenStream((7, 1)), batch_size=2, num_workers=2, prefetch_factor=1)
    assert [b.tolist() for b in loader] == [[0, 1], [100], [2, 3], [4, 5], [6]]
    assert no_children(no_leaks)


def test_dead_worker_raises_within_seconds(no_leaks):
    loader = DataLoader(dft.ExitingDataset(12, die_at=5), batch_size=2, num_workers=2)
    start = time.monotonic()
    with pytest.raises(DataLoaderError, match=r"worker 0 \(pid \d+\) exited unexpectedly with exit code 3"):
        for _ in loader:
            pass
    assert time.monotonic() - start < 10
    assert no_children(no_leaks)


def test_worker_exception_carries_its_traceback(no_leaks):
    loader = DataLoader(dft.RaisingDataset(6, bad=3), batch_size=2, num_workers=1)
    got = []
    with pytest.raises(ValueError) as info:
        for batch in loader:
            got.append(batch.tolist())
    assert got == [[0, 1]]  # batches before the failing one arrive first
    msg = str(info.value)
    assert "Caught ValueError in DataLoader worker 0" in msg
    assert "sample 3 is corrupt" in msg and "_check_sample" in msg and "datasets_for_tests.py" in msg
    del info
    assert no_children(no_leaks)


def test_early_break_leaves_no_children(no_leaks):
    for batch in DataLoader(dft.PairDataset(200), batch_size=2, num_workers=2):
        assert batch[0].shape == (2, 2)
        break
    assert no_children(no_leaks), multiprocessing.active_children()


def test_timeout_bounds_each_batch(no_leaks):
    loader = DataLoader(dft.SlowDataset(4, delay=5.0), batch_size=1, num_workers=1, timeout=0.5)
    start = time.monotonic()
    with pytest.raises(DataLoaderError, match="timed out after 0.5 seconds"):
        next(iter(loader))
    assert time.monotonic() - start < 4
    assert no_children(no_leaks)


def test_unpicklable_dataset_is_a_clear_error(no_leaks):
    class Local(dft.PairDataset):
        pass

    with pytest.raises(DataLoaderError, match="picklable.*module level"):
        iter(DataLoader(Local(4), num_workers=1))
    assert no_children(no_leaks)


def test_numpy_batches_survive_the_pipe(no_leaks):
    loader = DataLoader(dft.PairDataset(4), batch_size=2, num_workers=1, collate_fn=dft.identity_collate)
    batches = list(loader)
    assert isinstance(batches[0][0][0], np.ndarray) and batches[1][1][1]["name"] == "s3"

