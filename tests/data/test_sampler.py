"""Samplers and DistributedSampler: against PyTorch's (where the numbers can match) and
against their definitions (where the random streams differ)."""

from __future__ import annotations

import collections

import numpy as np
import pytest

import axonml as ax
from axonml.data import (
    BatchSampler,
    DistributedSampler,
    RandomSampler,
    SequentialSampler,
    SubsetRandomSampler,
    WeightedRandomSampler,
    register_world_provider,
)

torch = pytest.importorskip("torch")
tud = torch.utils.data


def gen(seed: int) -> ax.Generator:
    return ax.Generator().manual_seed(seed)


def test_sequential_sampler():
    s = SequentialSampler(range(5))
    assert list(s) == [0, 1, 2, 3, 4] and len(s) == 5
    assert list(SequentialSampler([])) == []


@pytest.mark.parametrize("n", [1, 2, 7])
def test_random_sampler_is_a_permutation_and_reproducible(n):
    s = RandomSampler(range(n), generator=gen(3))
    first = list(s)
    assert sorted(first) == list(range(n)) and len(s) == n
    assert all(type(i) is int for i in first)
    assert list(RandomSampler(range(n), generator=gen(3))) == first
    if n == 7:  # the next pass draws a new order from the same stream
        assert list(s) != first


def test_random_sampler_num_samples_without_replacement_repeats_permutations():
    out = list(RandomSampler(range(4), num_samples=10, generator=gen(0)))
    assert len(out) == 10
    assert sorted(out[:4]) == sorted(out[4:8]) == [0, 1, 2, 3]
    assert len(set(out[8:])) == 2


def test_random_sampler_replacement():
    s = RandomSampler(range(3), replacement=True, num_samples=50, generator=gen(1))
    out = list(s)
    assert len(out) == len(s) == 50 and set(out) == {0, 1, 2}


def test_random_sampler_default_generator_follows_manual_seed():
    ax.manual_seed(11)
    a = list(RandomSampler(range(20)))
    ax.manual_seed(11)
    assert list(RandomSampler(range(20))) == a


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        (dict(data_source=range(3), replacement=1), TypeError, "replacement"),
        (dict(data_source=range(3), num_samples=0), ValueError, "num_samples=0"),
        (dict(data_source=range(0)), ValueError, "num_samples=0"),
        (dict(data_source=range(3), num_samples=2.5), ValueError, "num_samples=2.5"),
    ],
)
def test_random_sampler_validation(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        RandomSampler(**kwargs)
    with pytest.raises((TypeError, ValueError)):  # PyTorch refuses the same arguments
        tud.RandomSampler(**kwargs)


def test_subset_random_sampler():
    idx = [10, 20, 30, 40, 50]
    s = SubsetRandomSampler(idx, generator=gen(2))
    out = list(s)
    assert sorted(out) == idx and len(s) == 5
    assert list(SubsetRandomSampler(idx, generator=gen(2))) == out


def test_weighted_random_sampler_with_replacement_follows_weights():
    s = WeightedRandomSampler([0.0, 1.0, 3.0, 0.0], 4000, generator=gen(4))
    counts = collections.Counter(s)
    assert set(counts) == {1, 2} and len(s) == 4000
    assert abs(counts[2] / 4000 - 0.75) < 0.04


def test_weighted_random_sampler_accepts_tensors_and_arrays():
    for w in (ax.tensor([1.0, 2.0]), np.array([1.0, 2.0])):
        assert set(WeightedRandomSampler(w, 50, generator=gen(0))) <= {0, 1}


def test_weighted_random_sampler_without_replacement():
    out = list(WeightedRandomSampler([0.0, 1.0, 3.0, 2.0], 3, replacement=False, generator=gen(5)))
    assert sorted(out) == [1, 2, 3]


@pytest.mark.parametrize(
    "weights, num_samples, replacement, match",
    [
        ([[1.0, 2.0]], 2, True, r"1d sequence.*\(1, 2\)"),
        ([1.0, -1.0], 2, True, "non-negative"),
        ([0.0, 0.0], 2, True, "positive sum"),
        ([1.0, 2.0], 0, True, "num_samples=0"),
        ([1.0, 2.0], 2, 1, "replacement=1"),
        ([1.0, 0.0, 2.0], 3, False, "num_samples=3 without replacement from 2 non-zero weights"),
    ],
)
def test_weighted_random_sampler_validation(weights, num_samples, replacement, match):
    with pytest.raises(ValueError, match=match):
        WeightedRandomSampler(weights, num_samples, replacement=replacement)


@pytest.mark.parametrize("n", [0, 1, 5, 6])
@pytest.mark.parametrize("batch_size", [1, 2, 4])
@pytest.mark.parametrize("drop_last", [False, True])
def test_batch_sampler_matches_torch(n, batch_size, drop_last):
    ours = BatchSampler(SequentialSampler(range(n)), batch_size, drop_last)
    ref = tud.BatchSampler(tud.SequentialSampler(range(n)), batch_size, drop_last)
    assert list(ours) == list(ref)
    assert len(ours) == len(ref)


@pytest.mark.parametrize(
    "batch_size, drop_last, match",
    [(0, False, "batch_size=0"), (True, False, "batch_size=True"), (2.0, False, "batch_size=2.0"), (2, "no", "drop_last='no'")],
)
def test_batch_sampler_validation(batch_size, drop_last, match):
    with pytest.raises(ValueError, match=match):
        BatchSampler(range(4), batch_size, drop_last)
    with pytest.raises(ValueError):
        tud.BatchSampler(range(4), batch_size, drop_last)


# -- DistributedSampler ----------------------------------------------------------------------
@pytest.mark.parametrize("drop_last", [False, True])
@pytest.mark.parametrize("replicas", [1, 2, 3, 4])
def test_distributed_sampler_without_shuffle_equals_torch(drop_last, replicas):
    for n in range(14):
        data = list(range(n))
        for rank in range(replicas):
            ours = DistributedSampler(data, num_replicas=replicas, rank=rank, shuffle=False, drop_last=drop_last)
            ref = tud.DistributedSampler(data, num_replicas=replicas, rank=rank, shuffle=False, drop_last=drop_last)
            assert list(ours) == list(ref), (n, replicas, rank, drop_last)
            assert len(ours) == len(ref) and ours.total_size == ref.total_size


def _all_ranks(n: int, replicas: int, **kw) -> list[list[int]]:
    return [list(DistributedSampler(range(n), num_replicas=replicas, rank=r, **kw)) for r in range(replicas)]


@pytest.mark.parametrize("n, replicas", [(10, 3), (2, 4), (12, 4), (1, 1), (7, 2)])
def test_distributed_sampler_shuffle_partitions_one_permutation(n, replicas):
    per_rank = _all_ranks(n, replicas, seed=7)
    total = len(per_rank[0]) * replicas
    merged = [None] * total
    for r, idx in enumerate(per_rank):
        assert len(idx) == len(per_rank[0])
        merged[r::replicas] = idx
    assert sorted(merged[:n]) == list(range(n))  # one permutation...
    assert merged[n:] == (merged[:n] * replicas)[: total - n]  # ...padded from its start


@pytest.mark.parametrize("n, replicas", [(10, 3), (2, 4), (13, 4)])
def test_distributed_sampler_shuffle_drop_last_has_no_repeats(n, replicas):
    per_rank = _all_ranks(n, replicas, drop_last=True)
    flat = [i for idx in per_rank for i in idx]
    assert len(flat) == len(set(flat)) == (n // replicas) * replicas
    assert {len(idx) for idx in per_rank} == {n // replicas}


def test_distributed_sampler_epochs_and_seeds():
    s = DistributedSampler(range(50), num_replicas=2, rank=1, seed=3)
    e0 = list(s)
    assert list(s) == e0  # same epoch: same order
    s.set_epoch(1)
    e1 = list(s)
    assert e1 != e0 and sorted(e1) != e1
    other = DistributedSampler(range(50), num_replicas=2, rank=1, seed=3)
    other.set_epoch(1)
    assert list(other) == e1  # same seed and epoch on another process: same order
    assert list(DistributedSampler(range(50), num_replicas=2, rank=1, seed=4)) != e0


def test_distributed_sampler_defaults_from_environment(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.delenv("RANK", raising=False)
    s = DistributedSampler(range(5))
    assert (s.num_replicas, s.rank) == (1, 0)
    monkeypatch.setenv("WORLD_SIZE", "3")
    monkeypatch.setenv("RANK", "2")
    s = DistributedSampler(range(5), shuffle=False)
    assert (s.num_replicas, s.rank) == (3, 2) and list(s) == [2, 0]
    monkeypatch.setenv("RANK", "5")
    with pytest.raises(ValueError, match=r"rank 5 for num_replicas=3"):
        DistributedSampler(range(5))
    monkeypatch.setenv("RANK", "x")
    with pytest.raises(ValueError, match="RANK='x'"):
        DistributedSampler(range(5))


def test_distributed_sampler_prefers_registered_process_group(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "3")
    monkeypatch.setenv("RANK", "1")
    previous = register_world_provider(lambda: (4, 3))
    try:
        s = DistributedSampler(range(5))
        assert (s.num_replicas, s.rank) == (4, 3)
        register_world_provider(lambda: None)  # no group initialized: the environment
        s = DistributedSampler(range(5))
        assert (s.num_replicas, s.rank) == (3, 1)
    finally:
        register_world_provider(previous)


@pytest.mark.parametrize("replicas, rank", [(2, 2), (2, -1), (1, 5)])
def test_distributed_sampler_rejects_bad_rank(replicas, rank):
    with pytest.raises(ValueError, match=rf"rank {rank} for num_replicas={replicas}"):
        DistributedSampler(range(4), num_replicas=replicas, rank=rank)


def test_distributed_sampler_rejects_bad_world():
    with pytest.raises(ValueError, match="num_replicas=0"):
        DistributedSampler(range(4), num_replicas=0, rank=0)
