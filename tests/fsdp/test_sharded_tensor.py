"""The sharded tensor (axonml.collectives.sharded_tensor): layouts in closed form, padding of
uneven sizes, local shards and the all-gather back to the whole tensor (threaded ranks)."""

import numpy as np
import pytest

import axonml as ax
from axonml.collectives.sharded_tensor import (
    FlatShard,
    Replicate,
    Shard,
    ShardedTensor,
    chunk_size,
    distribute_tensor,
    padded_size,
    shard_range,
)
from axonml.collectives.testing import run_threaded
from axonml.errors import ShapeError

pytestmark = pytest.mark.timeout(60)


@pytest.mark.parametrize("n", [0, 1, 2, 3, 7, 10, 12, 13])
@pytest.mark.parametrize("world", [1, 2, 3, 4])
def test_ranges_partition_in_order_with_chunk_semantics(n, world):
    c = chunk_size(n, world)
    assert c == -(-n // world)
    assert padded_size(n, world) == c * world >= n
    ranges = [shard_range(n, world, r) for r in range(world)]
    assert ranges[0][0] == 0 and ranges[-1][1] == n
    for (a, b), (c2, _) in zip(ranges, ranges[1:]):
        assert b == c2  # contiguous, in rank order
    assert all(0 <= b - a <= c for a, b in ranges)
    assert np.array_equal(np.concatenate([np.arange(n)[a:b] for a, b in ranges]), np.arange(n))


def test_shard_range_examples_and_errors():
    assert shard_range(10, 4, 3) == (9, 10)
    assert shard_range(2, 4, 3) == (2, 2)  # an empty shard
    with pytest.raises(ValueError, match="rank 4 is outside"):
        shard_range(10, 4, 4)
    with pytest.raises(ValueError, match="world_size must be >= 1"):
        chunk_size(3, 0)


@pytest.mark.parametrize("world", [1, 2, 3, 4])
@pytest.mark.parametrize("placement", [FlatShard(), Shard(0), Shard(1), Shard(-1), Replicate()], ids=repr)
def test_from_full_then_full_tensor_round_trips(world, placement):
    full = np.arange(7 * 5, dtype=np.float32).reshape(7, 5) * 0.5 - 3

    def body(rank):
        st = ShardedTensor.from_full(ax.tensor(full), placement)
        local = st.to_local().numpy()
        assert tuple(local.shape) == st.local_shape()
        if isinstance(placement, (FlatShard,)) or (isinstance(placement, Shard) and placement.dim == 0):
            a, b = st.local_range()
            assert np.array_equal(local.reshape(-1), full.reshape(-1)[a:b])
        else:
            assert np.array_equal(local, full[st.local_slices()])
        return st.full_tensor().numpy(), st.metadata()

    for got, meta in run_threaded(world, body):
        np.testing.assert_array_equal(got, full)
        assert meta["global_shape"] == [7, 5] and meta["world_size"] == world


def test_bfloat16_and_padding_of_empty_shards():
    full = np.arange(3, dtype=np.float32)

    def body(rank):
        st = ShardedTensor.from_full(ax.tensor(full).bfloat16(), FlatShard())
        assert st.padded_local().shape == (1,)
        return st.to_local().shape, st.full_tensor().float().numpy()

    res = run_threaded(4, body)
    assert [r[0] for r in res] == [(1,), (1,), (1,), (0,)]  # rank 3 holds nothing
    for _, got in res:
        np.testing.assert_array_equal(got, full)


def test_without_a_process_group_it_is_a_world_of_one():
    st = distribute_tensor(ax.ones(4, 3), Shard(0))
    assert (st.rank, st.world_size) == (0, 1)
    np.testing.assert_array_equal(st.full_tensor().numpy(), np.ones((4, 3)))


def test_explicit_layout_without_group_and_shapes():
    st = ShardedTensor(ax.zeros(1), (7,), FlatShard(), rank=3, world_size=4)
    assert st.local_range() == (6, 7) and st.local_range(0) == (0, 2)
    assert st.local_shape(0) == (2,) and st.numel() == 7 and st.shape == (7,)
    assert "FlatShard" in repr(st)


def test_bad_inputs_raise_with_the_offending_values():
    with pytest.raises(ShapeError, match=r"must hold a local shard of shape \(2,\).*got shape \(3,\)"):
        ShardedTensor(ax.zeros(3), (7,), FlatShard(), rank=0, world_size=4)
    with pytest.raises(TypeError, match="placement must be"):
        ShardedTensor(ax.zeros(3), (3,), "shard")
    with pytest.raises(ValueError, match="pass both rank and world_size"):
        ShardedTensor(ax.zeros(3), (3,), Replicate(), rank=0)
    with pytest.raises(ShapeError, match="Shard\\(dim=2\\) needs a tensor with more than 2 dimensions"):
        ShardedTensor.from_full(ax.zeros(3, 3), Shard(2))
    with pytest.raises(TypeError, match="must be an axonml Tensor"):
        ShardedTensor.from_full(np.zeros(3), FlatShard())
    with pytest.raises(ValueError, match="not one flat range"):
        ShardedTensor.from_full(ax.zeros(3, 4), Shard(1)).local_range()
