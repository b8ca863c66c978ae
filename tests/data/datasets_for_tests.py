"""Datasets for the data loader tests, at module level so spawned workers can unpickle them.

The worker processes import this module by name (``datasets_for_tests``): the tests put
this folder on ``sys.path`` and spawned children inherit the parent's ``sys.path``.
"""

from __future__ import annotations

import os
import time

import numpy as np

from axonml.data import Dataset, IterableDataset, get_worker_info


class PairDataset(Dataset):
    """Sample i: (float32 array [i, -i], {"label": i, "name": "s<i>"})."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        return np.array([i, -i], dtype=np.float32), {"label": i, "name": f"s{i}"}


class WhoDataset(Dataset):
    """Sample i: (i, worker id, worker seed, pid, value set by worker_init_fn)."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        info = get_worker_info()
        wid = -1 if info is None else info.id
        seed = -1 if info is None else info.seed
        return i, wid, seed, os.getpid(), int(os.environ.get("AXONML_TEST_INIT", "0"))


def init_fn(worker_id: int) -> None:
    os.environ["AXONML_TEST_INIT"] = str(100 + worker_id)


class ExitingDataset(Dataset):
    """Kills its worker process (exit code 3) when asked for sample ``die_at``."""

    def __init__(self, n: int, die_at: int) -> None:
        self.n, self.die_at = n, die_at

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        if i == self.die_at:
            os._exit(3)
        return i


def _check_sample(i: int, bad: int) -> None:
    if i == bad:
        raise ValueError(f"sample {i} is corrupt")


class RaisingDataset(Dataset):
    def __init__(self, n: int, bad: int) -> None:
        self.n, self.bad = n, bad

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        _check_sample(i, self.bad)
        return i


class SlowDataset(Dataset):
    def __init__(self, n: int, delay: float) -> None:
        self.n, self.delay = n, delay

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        time.sleep(self.delay)
        return i


class ShardedStream(IterableDataset):
    """0..n-1, each worker taking every num_workers-th value from its id."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __iter__(self):
        info = get_worker_info()
        start, step = (0, 1) if info is None else (info.id, info.num_workers)
        return iter(range(start, self.n, step))

    def __len__(self) -> int:
        return self.n


def identity_collate(batch: list) -> list:
    """A collate_fn that keeps the samples as they are (NumPy arrays stay arrays)."""
    return batch


class UnevenStream(IterableDataset):
    """Worker k yields k * 100 + (0 .. lengths[k] - 1): shards of different lengths."""

    def __init__(self, lengths: tuple) -> None:
        self.lengths = lengths

    def __iter__(self):
        info = get_worker_info()
        k = 0 if info is None else info.id
        return iter(range(k * 100, k * 100 + self.lengths[k]))
