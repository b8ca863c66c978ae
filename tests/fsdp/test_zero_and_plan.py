"""ZeRO-1 (ZeroRedundancyOptimizer) parity and state placement on threaded ranks, and the
analytic memory plan (ZeRO formulas) in closed form."""

import numpy as np
import pytest
from fsdp_models import Block, local_batch, make_model, reference_run

import axonml as ax
import axonml.collectives as dist
from axonml.collectives.testing import run_threaded
from axonml.fsdp import MixedPrecisionPolicy, ShardingStrategy, ZeroRedundancyOptimizer, fully_shard, memory_plan
from axonml.fsdp.zero import partition_parameters

pytestmark = pytest.mark.timeout(120)


def test_partition_is_greedy_largest_first():
    assert partition_parameters([10, 3, 7, 7, 1], 2) == [0, 0, 1, 1, 0]
    assert partition_parameters([5, 5, 5], 4) == [0, 1, 2]
    assert partition_parameters([], 3) == []


def _zero_run(rank: int, world: int, steps: int, reload: bool = False) -> list:
    model = make_model()
    opt = ZeroRedundancyOptimizer(model.parameters(), ax.optim.AdamW, lr=0.05, weight_decay=0.1)
    out = []
    for step in range(steps):
        opt.zero_grad()
        model(*local_batch(step, rank, world)).backward()
        for p in model.parameters():
            dist.all_reduce(p.grad, op=dist.ReduceOp.AVG)
        opt.step()
        out.append({k: v.numpy().astype(np.float64) for k, v in model.state_dict().items()})
        if reload and step == 0:
            opt.consolidate_state_dict(to=0)
            sd = opt.state_dict() if rank == 0 else None
            box = [sd]
            dist.broadcast_object_list(box, src=0)
            fresh = ZeroRedundancyOptimizer(model.parameters(), ax.optim.AdamW, lr=0.05, weight_decay=0.1)
            fresh.load_state_dict(box[0])
            opt = fresh
    owned = sum(p.numel() for p in (opt.optim.state if opt.optim is not None else {}))
    return out, owned


@pytest.mark.parametrize("world", [2, 3])
def test_zero1_matches_one_process_and_shards_the_state(world):
    ref = reference_run(3)
    for reload in (False, True):
        res = run_threaded(world, lambda r: _zero_run(r, world, 3, reload))
        for out, _ in res:
            err = max(float(np.max(np.abs(out[s][k] - ref[s][k]))) for s in range(3) for k in ref[s])
            assert err < 1e-6, (world, reload, err)
        owned = [o for _, o in res]
        assert sum(owned) == make_model().num_parameters()
        assert max(owned) < make_model().num_parameters()  # nobody holds the whole state


def test_zero1_errors():
    params = list(make_model().parameters())
    with pytest.raises(TypeError, match="optimizer_class must be an Optimizer subclass"):
        ZeroRedundancyOptimizer(params, object, lr=0.1)
    with pytest.raises(NotImplementedError, match="parameters_as_bucket_view"):
        ZeroRedundancyOptimizer(params, ax.optim.SGD, parameters_as_bucket_view=True, lr=0.1)
    with pytest.raises(RuntimeError, match="consolidate_state_dict"):
        ZeroRedundancyOptimizer(params, ax.optim.SGD, lr=0.1).state_dict()


# -- memory_plan ----------------------------------------------------------------------------------------


def test_zero_formulas_in_closed_form():
    P = 1_000_000  # divisible by 4: no padding
    ddp = memory_plan(P, ShardingStrategy.NO_SHARD, 4, optimizer="adamw")
    z1 = memory_plan(P, "zero1", 4)
    z2 = memory_plan(P, ShardingStrategy.SHARD_GRAD_OP, 4)
    z3 = memory_plan(P, ShardingStrategy.FULL_SHARD, 4)
    hy = memory_plan(P, ShardingStrategy.HYBRID_SHARD, 4, shard_size=2)
    assert (ddp.params_bytes, ddp.grads_bytes, ddp.optimizer_bytes) == (4 * P, 4 * P, 8 * P + 4)
    assert (z1.params_bytes, z1.grads_bytes) == (4 * P, 4 * P)  # one tensor: owned by one rank
    for plan, n in ((z2, 4), (z3, 4), (hy, 2)):
        assert (plan.params_bytes, plan.grads_bytes, plan.optimizer_bytes) == (4 * P // n, 4 * P // n, 8 * P // n + 4)
    assert z3.model_state_bytes == 16 * P // 4 + 4
    sgd = memory_plan(P, ShardingStrategy.FULL_SHARD, 4, optimizer="sgd")
    assert sgd.optimizer_bytes == 0 and memory_plan(P, "ddp", 4, optimizer=12).optimizer_bytes == 12 * P
    assert "FULL_SHARD on 4 ranks" in str(z3)


def test_plan_pads_uneven_sizes_and_shrinks_with_world_size():
    model = make_model()
    sizes = [p.numel() for p in model.parameters()]
    for world in (2, 3, 4):
        plan = memory_plan(model, ShardingStrategy.FULL_SHARD, world, units=model.blocks)
        assert plan.params_bytes == 4 * sum(-(-n // world) for n in sizes)
    plans = [memory_plan(model, ShardingStrategy.FULL_SHARD, w, units=model.blocks) for w in (1, 2, 4, 8)]
    assert all(a.model_state_bytes > b.model_state_bytes for a, b in zip(plans, plans[1:]))
    ddp = memory_plan(model, ShardingStrategy.NO_SHARD, 2)
    assert plans[1].model_state_bytes <= 0.6 * ddp.model_state_bytes


def test_plan_reads_the_units_of_a_sharded_model_and_mixed_precision():
    model = make_model()
    for b in model.blocks:
        fully_shard(b)
    fully_shard(model)
    by_units = memory_plan(model, ShardingStrategy.FULL_SHARD, 1)
    plain = make_model()
    assert by_units == memory_plan(plain, ShardingStrategy.FULL_SHARD, 1, units=plain.blocks)
    assert all(isinstance(b, Block) for b in plain.blocks)
    mp = memory_plan(plain, ShardingStrategy.FULL_SHARD, 2, units=plain.blocks,
                     mp_policy=MixedPrecisionPolicy(param_dtype=ax.bfloat16))
    fp = memory_plan(plain, ShardingStrategy.FULL_SHARD, 2, units=plain.blocks)
    assert mp.model_state_bytes == fp.model_state_bytes and mp.transient_bytes < fp.transient_bytes


def test_plan_errors():
    with pytest.raises(ValueError, match="unknown strategy 'zero4'"):
        memory_plan(10, "zero4", 2)
    with pytest.raises(ValueError, match="world_size must be a positive int"):
        memory_plan(10, "ddp", 0)
    with pytest.raises(ValueError, match="shard_size 3 does not divide world_size 4"):
        memory_plan(10, ShardingStrategy.HYBRID_SHARD, 4, shard_size=3)
    with pytest.raises(ValueError, match="unknown optimizer 'adafactor'"):
        memory_plan(10, "ddp", 2, optimizer="adafactor")
    with pytest.raises(TypeError, match="must be an axonml Module or a number of parameters"):
        memory_plan("model", "ddp", 2)
