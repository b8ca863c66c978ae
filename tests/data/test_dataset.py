"""Datasets, random_split and collation, against PyTorch's ``torch.utils.data``."""

from __future__ import annotations

import collections
import warnings

import numpy as np
import pytest

import axonml as ax
from axonml.data import (
    ChainDataset,
    ConcatDataset,
    Dataset,
    IterableDataset,
    StackDataset,
    Subset,
    TensorDataset,
    default_collate,
    default_convert,
    random_split,
)
from axonml.errors import ShapeError

torch = pytest.importorskip("torch")
tud = torch.utils.data


class Squares(Dataset):
    def __init__(self, n):
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return i * i


class Count(IterableDataset):
    def __init__(self, n):
        self.n = n

    def __iter__(self):
        return iter(range(self.n))


# -- TensorDataset -------------------------------------------------------------------------------
def test_tensor_dataset_rows():
    x = ax.arange(12).reshape(4, 3)
    y = ax.tensor([10, 11, 12, 13])
    ds = TensorDataset(x, y)
    assert len(ds) == 4
    xi, yi = ds[2]
    assert xi.tolist() == [6, 7, 8] and yi.item() == 12


def test_tensor_dataset_numpy_arrays():
    ds = TensorDataset(np.arange(6).reshape(3, 2), np.array([1.0, 2.0, 3.0]))
    assert len(ds) == 3 and ds[1][0].tolist() == [2, 3] and ds[1][1] == 2.0


def test_tensor_dataset_errors():
    with pytest.raises(ShapeError, match=r"first dimensions are \[4, 3\]"):
        TensorDataset(ax.zeros(4, 2), ax.zeros(3))
    with pytest.raises(ShapeError, match="0-d"):
        TensorDataset(ax.zeros(4), ax.tensor(1.0))
    with pytest.raises(ValueError, match="at least one tensor"):
        TensorDataset()


# -- Subset, ConcatDataset, StackDataset, ChainDataset ---------------------------------------------
def test_subset():
    sub = Subset(Squares(10), [3, 0, 7])
    assert len(sub) == 3 and [sub[i] for i in range(3)] == [9, 0, 49]
    assert sub.__getitems__([2, 0]) == [49, 9]
    nested = Subset(sub, [2, 1])
    assert [nested[0], nested[1]] == [49, 0] and nested.__getitems__([0, 1]) == [49, 0]


def test_concat_dataset_matches_torch():
    parts = [Squares(3), Squares(0), Squares(2)]
    ours = ConcatDataset(parts)
    ref = tud.ConcatDataset([[i * i for i in range(3)], [], [0, 1]])
    assert len(ours) == len(ref) == 5 and ours.cumulative_sizes == ref.cumulative_sizes
    for i in range(-5, 5):
        assert ours[i] == ref[i]
    with pytest.raises(IndexError, match="index 5 is out of range for a dataset of length 5"):
        ours[5]
    with pytest.raises(IndexError, match="index -6"):
        ours[-6]
    added = Squares(2) + Squares(1)
    assert isinstance(added, ConcatDataset) and [added[i] for i in range(len(added))] == [0, 1, 0]


def test_concat_dataset_errors():
    with pytest.raises(ValueError, match="empty"):
        ConcatDataset([])
    with pytest.raises(TypeError, match="does not support IterableDataset.*ChainDataset"):
        ConcatDataset([Squares(2), Count(3)])


def test_chain_and_iterable_add():
    chained = Count(2) + Count(3)
    assert isinstance(chained, ChainDataset) and list(chained) == [0, 1, 0, 1, 2]
    with pytest.raises(TypeError, match="only supports IterableDataset"):
        list(ChainDataset([Squares(2)]))


def test_stack_dataset():
    assert StackDataset(Squares(3), Squares(3))[2] == (4, 4)
    assert StackDataset(a=Squares(2), b=Squares(2))[1] == {"a": 1, "b": 1}
    with pytest.raises(ValueError, match=r"lengths \[2, 3\]"):
        StackDataset(Squares(2), Squares(3))


# -- random_split ------------------------------------------------------------------------------------
def test_random_split_integer_lengths():
    parts = random_split(Squares(10), [3, 7], generator=ax.Generator().manual_seed(0))
    assert [len(p) for p in parts] == [3, 7]
    got = sorted(parts[0].indices + parts[1].indices)
    assert got == list(range(10))
    again = random_split(Squares(10), [3, 7], generator=ax.Generator().manual_seed(0))
    assert again[0].indices == parts[0].indices
    other = random_split(Squares(10), [3, 7], generator=ax.Generator().manual_seed(1))
    assert other[0].indices + other[1].indices != parts[0].indices + parts[1].indices


@pytest.mark.parametrize("n", [0, 1, 7, 10, 31])
@pytest.mark.parametrize("fractions", [[0.5, 0.5], [0.3, 0.3, 0.4], [0.1, 0.2, 0.7], [1.0], [0.25] * 4])
def test_random_split_fraction_lengths_match_torch(n, fractions):
    with pytest.warns(UserWarning) if _torch_warns(n, fractions) else _nothing():
        ours = random_split(Squares(n), fractions, generator=ax.Generator().manual_seed(0))
    ref = _torch_split(n, fractions)
    assert [len(p) for p in ours] == [len(p) for p in ref]
    assert sorted(i for p in ours for i in p.indices) == list(range(n))


def _torch_split(n, fractions):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return tud.random_split(range(n), fractions, generator=torch.Generator().manual_seed(0))


def _torch_warns(n, fractions):
    return any(len(p) == 0 for p in _torch_split(n, fractions))


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_random_split_errors():
    with pytest.raises(ValueError, match=r"sum of input lengths \(9\) does not equal the length of the input dataset \(10\)"):
        random_split(Squares(10), [4, 5])
    with pytest.raises(ValueError, match="fraction at index 0 is 1.5, not between 0 and 1"):
        random_split(Squares(10), [1.5, -0.5])
    with pytest.raises(ValueError, match="integers or fractions"):
        random_split(Squares(10), [2.5, 7.5])


def test_random_split_default_generator_follows_manual_seed():
    ax.manual_seed(5)
    a = random_split(Squares(8), [4, 4])
    ax.manual_seed(5)
    b = random_split(Squares(8), [4, 4])
    assert a[0].indices == b[0].indices


# -- collation -----------------------------------------------------------------------------------------
Point = collections.namedtuple("Point", ["x", "y"])


def norm(obj):
    """A comparable form of a collated batch, from AxonML or PyTorch."""
    if isinstance(obj, ax.Tensor):
        return ("T", obj.dtype.name, tuple(obj.shape), obj.tolist())
    if isinstance(obj, torch.Tensor):
        return ("T", str(obj.dtype).replace("torch.", ""), tuple(obj.shape), obj.tolist())
    if isinstance(obj, dict):
        return {k: norm(v) for k, v in obj.items()}
    if isinstance(obj, tuple) and hasattr(obj, "_fields"):
        return (type(obj).__name__, *[norm(v) for v in obj])
    if isinstance(obj, (list, tuple)):
        return (type(obj).__name__, [norm(v) for v in obj])
    return obj


def to_torch_sample(obj):
    if isinstance(obj, ax.Tensor):
        return torch.tensor(obj.numpy())
    if isinstance(obj, dict):
        return {k: to_torch_sample(v) for k, v in obj.items()}
    if isinstance(obj, tuple) and hasattr(obj, "_fields"):
        return type(obj)(*[to_torch_sample(v) for v in obj])
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_torch_sample(v) for v in obj)
    return obj


SAMPLES = {
    "tensors": [ax.tensor([1.0, 2.0]), ax.tensor([3.0, 4.0]), ax.tensor([5.0, 6.0])],
    "int_tensors": [ax.tensor([[1, 2]]), ax.tensor([[3, 4]])],
    "numpy": [np.array([1, 2], dtype=np.int32), np.array([3, 4], dtype=np.int32)],
    "numpy_0d": [np.array(1.5), np.array(2.5)],
    "numpy_scalars": [np.float32(1.0), np.float32(2.0)],
    "numpy_bool": [np.bool_(True), np.bool_(False)],
    "floats": [1.5, 2.5],
    "ints": [1, 2, 3],
    "bools": [True, False],
    "strings": ["a", "b"],
    "tuple": [(np.ones(2, dtype=np.float32), 1, "a"), (np.zeros(2, dtype=np.float32), 2, "b")],
    "list": [[1, 2.0], [3, 4.0]],
    "dict": [
        {"x": np.ones((2, 2)), "meta": {"id": 1, "tags": ["a", "b"]}, "t": ax.tensor([1])},
        {"x": np.zeros((2, 2)), "meta": {"id": 2, "tags": ["c", "d"]}, "t": ax.tensor([2])},
    ],
    "namedtuple": [Point(np.float64(1.0), 3), Point(np.float64(2.0), 4)],
    "nested": [({"a": (1, 2.0)}, [Point(1, [True])]), ({"a": (3, 4.0)}, [Point(2, [False])])],
}


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_default_collate_matches_torch(name):
    batch = SAMPLES[name]
    ours = default_collate(batch)
    ref = tud.default_collate([to_torch_sample(s) for s in batch])
    assert norm(ours) == norm(ref)


@pytest.mark.parametrize("name", ["numpy", "numpy_0d", "numpy_scalars", "dict", "tuple", "strings"])
def test_default_convert_matches_torch(name):
    for sample in SAMPLES[name]:
        ours = default_convert(sample)
        ref = tud.default_convert(to_torch_sample(sample))
        assert norm(ours) == norm(ref)


def test_default_collate_stacked_batch_is_a_plain_tensor():
    batch = [ax.ones(3, requires_grad=True), ax.zeros(3)]
    out = default_collate(batch)
    assert isinstance(out, ax.Tensor) and out.shape == (2, 3) and not out.requires_grad


def test_default_collate_errors():
    with pytest.raises(ShapeError, match=r"equal shapes.*\(2,\), \(3,\)"):
        default_collate([ax.zeros(2), ax.zeros(3)])
    with pytest.raises(ShapeError, match=r"equal shapes.*\(1,\), \(2,\)"):
        default_collate([np.zeros(1), np.zeros(2)])
    with pytest.raises(ShapeError, match=r"equal size, got sizes \[2, 1\]"):
        default_collate([[1, 2], [3]])
    with pytest.raises(TypeError, match="found <U1"):
        default_collate([np.array(["a"]), np.array(["b"])])
    with pytest.raises(TypeError, match="found <class 'object'>"):
        default_collate([object(), object()])
