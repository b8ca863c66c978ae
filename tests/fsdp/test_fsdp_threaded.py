"""FSDP on threaded ranks (fast): parity with one process on the whole batch for every
strategy, prefetch on and off, mixed precision, clipping, gradient accumulation,
activation checkpointing; collective counts; the FSDPModule methods; errors."""

import numpy as np
import pytest
from fsdp_models import (
    BATCH,
    Block,
    data,
    fsdp_run,
    full_params,
    local_batch,
    make_model,
    make_opt,
    reference_run,
    shard_model,
)

import axonml as ax
import axonml.collectives as dist
from axonml.collectives.sharded_tensor import ShardedTensor
from axonml.collectives.testing import run_threaded
from axonml.errors import CheckpointError, DTypeError
from axonml.fsdp import (
    CPUOffloadPolicy,
    FSDPModule,
    FullyShardedDataParallel,
    MixedPrecisionPolicy,
    ModuleWrapPolicy,
    ShardedParameter,
    ShardingStrategy,
    fully_shard,
    hybrid_groups,
)

pytestmark = pytest.mark.timeout(120)
STEPS = 3


def _err(results: list, ref: list) -> float:
    return max(float(np.max(np.abs(res[s][k] - ref[s][k]))) for res in results for s in range(len(ref)) for k in ref[s])


@pytest.mark.parametrize("world", [2, 3, 4])
@pytest.mark.parametrize("strategy", ["full", "grad_op", "NO_SHARD", "HYBRID_SHARD", "FULL_SHARD", "SHARD_GRAD_OP"])
def test_parity_with_one_process_on_the_whole_batch(world, strategy):
    ref = reference_run(STEPS)
    for prefetch in (True, False):
        res = run_threaded(world, lambda r: fsdp_run(r, world, STEPS, strategy=strategy, prefetch=prefetch))
        assert _err(res, ref) < 1e-6, (world, strategy, prefetch)


@pytest.mark.parametrize("world", [2, 4])
@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_mixed_precision_matches_the_low_precision_reference(world, dtype):
    dt = getattr(ax, dtype)
    ref = reference_run(STEPS, world=world, mp_dtype=dt)
    assert _err([ref], reference_run(STEPS)) > 1e-4  # the policy really computes in low precision
    for strategy in ("full", "grad_op", "NO_SHARD", "HYBRID_SHARD"):
        res = run_threaded(world, lambda r: fsdp_run(r, world, STEPS, strategy=strategy, mp_dtype=dt))
        assert _err(res, ref) < 1e-5, strategy


def test_master_shards_stay_float32_and_compute_runs_in_param_dtype():
    def body(rank):
        model = shard_model(make_model(), mp=MixedPrecisionPolicy(param_dtype=ax.bfloat16, output_dtype=ax.float32))
        seen = []
        model.blocks[0].fc.register_forward_hook(lambda m, a, o: seen.append((m.weight.dtype.name, o.dtype.name)))
        x, y = local_batch(0, rank, 2)
        loss = model(x, y)
        loss.backward()
        return [p.dtype.name for p in model.parameters()], [p.grad.dtype.name for p in model.parameters()], seen, loss.dtype.name

    dtypes, grads, seen, loss_dtype = run_threaded(2, body)[0]
    assert set(dtypes) == {"float32"} and set(grads) == {"float32"}
    assert seen == [("bfloat16", "bfloat16")]
    assert loss_dtype == "float32"  # output_dtype of the root


@pytest.mark.parametrize("world", [2, 4])
def test_clip_grad_norm_and_activation_checkpointing(world):
    ref = reference_run(STEPS, clip=0.05)
    for strategy in ("full", "grad_op", "NO_SHARD", "HYBRID_SHARD"):
        for ck in (False, True):
            res = run_threaded(world, lambda r: fsdp_run(r, world, STEPS, strategy=strategy, clip=0.05, checkpoint=ck))
            assert _err(res, ref) < 1e-6, (strategy, ck)


def test_clip_grad_norm_returns_the_global_norm():
    model = make_model()
    x, y = data(0)
    model(ax.tensor(x), ax.tensor(y)).backward()
    want = ax.nn.utils.clip_grad_norm_(model.parameters(), 1e9).item()
    want_inf = ax.nn.utils.get_total_norm([p.grad for p in model.parameters()], float("inf")).item()

    def body(rank):
        m = shard_model(make_model())
        xb, yb = local_batch(0, rank, 3)
        m(xb, yb).backward()
        return m.clip_grad_norm_(1e9).item(), ax.fsdp.clip_grad_norm_(m.parameters(), 1e9, norm_type=float("inf")).item()

    for got, got_inf in run_threaded(3, body):
        assert got == pytest.approx(want, rel=1e-5) and got_inf == pytest.approx(want_inf, rel=1e-5)
    with pytest.raises(ValueError, match="norm_type must be positive"):
        ax.fsdp.clip_grad_norm_(model.parameters(), 1.0, norm_type=-1)


def test_gradient_accumulation_without_sync_equals_the_summed_gradient():
    micro = 3

    def reference():
        model = make_model()
        opt = make_opt(model, "sgd", 0.05)
        for m in range(micro):
            x, y = data(m)
            model(ax.tensor(x), ax.tensor(y)).backward()
        opt.step()
        return {k: v.numpy() for k, v in model.state_dict().items()}

    ref = reference()

    def body(rank):
        model = shard_model(make_model())
        opt = make_opt(model, "sgd", 0.05)
        model.set_requires_gradient_sync(False)
        for m in range(micro - 1):
            model(*_slice(m, rank, 2)).backward()
        counts = dict(model.comm_stats()["blocks.0"])
        assert all(p.grad is None for p in model.parameters())  # nothing reduced yet
        model.set_requires_gradient_sync(True)
        model(*_slice(micro - 1, rank, 2)).backward()
        opt.step()
        return counts, full_params(model)

    for counts, got in run_threaded(2, body):
        assert counts["reduce_scatter"] == 0
        assert max(float(np.max(np.abs(got[k] - ref[k]))) for k in ref) < 1e-6


def _slice(step, rank, world):
    return local_batch(step, rank, world)


def test_no_sync_context_manager_restores_sync():
    def body(rank):
        model = shard_model(make_model())
        with model.no_sync():
            model(*local_batch(0, rank, 2)).backward()
            inside = [u.requires_gradient_sync for u in model._fsdp_units(True)]
        return inside, [u.requires_gradient_sync for u in model._fsdp_units(True)]

    inside, after = run_threaded(2, body)[0]
    assert not any(inside) and all(after)


def test_one_all_gather_per_unit_per_pass_and_one_reduce_scatter():
    def body(rank):
        out = {}
        for reshard in (True, False):
            for ck in (False, True):
                model = shard_model(make_model(), reshard_after_forward=reshard)
                for step in range(2):
                    model(*local_batch(step, rank, 2), ck).backward()
                out[(reshard, ck)] = model.comm_stats()
        return out

    for (reshard, ck), stats in run_threaded(2, body)[0].items():
        for unit, c in stats.items():
            bwd = 2 if (reshard and unit != "") else 0  # the root keeps its parameters until backward
            assert c == {"all_gather_forward": 2, "all_gather_backward": bwd, "reduce_scatter": 2, "all_reduce": 0}, (
                reshard, ck, unit, c)


def test_eval_forward_reshards_everything_and_backward_leaves_units_sharded():
    def body(rank):
        model = shard_model(make_model(), reshard_after_forward=False)
        with ax.no_grad():
            model(*local_batch(0, rank, 2))
        after_eval = [u.state.value for u in model._fsdp_units(True)]
        model(*local_batch(0, rank, 2)).backward()
        after_bwd = [u.state.value for u in model._fsdp_units(True)]
        kinds = {type(p).__name__ for p in model.parameters()}
        return after_eval, after_bwd, kinds

    after_eval, after_bwd, kinds = run_threaded(2, body)[0]
    assert set(after_eval) == {"sharded"} and set(after_bwd) == {"sharded"}
    assert kinds == {"ShardedParameter"}


def test_sharded_parameters_describe_themselves_and_unshard_on_demand():
    def body(rank):
        model = shard_model(make_model())
        w = model.blocks[0].fc.weight
        assert isinstance(model, FSDPModule) and isinstance(model, type(make_model()))
        assert type(model).__name__ == "FSDPNet"
        assert isinstance(w, ShardedParameter) and w.global_shape == (13, 7) and w.shape == (w.local_range[1] - w.local_range[0],)
        full = w.full_tensor().numpy()
        handle = model.blocks[0].unshard(async_op=True)
        handle.wait()
        unsharded = model.blocks[0].fc.weight.detach().numpy().copy()
        model.blocks[0].reshard()
        return full, unsharded, model.blocks[0].fc.weight is w, repr(w)

    ref = make_model().blocks[0].fc.weight.detach().numpy()
    for full, unsharded, back, text in run_threaded(3, body):
        np.testing.assert_array_equal(full, ref)
        np.testing.assert_array_equal(unsharded, ref)
        assert back and "global_shape=(13, 7)" in text


def test_explicit_prefetch_lists_and_cpu_offload_policy_on_cpu():
    ref = reference_run(2)

    def body(rank):
        model = make_model()
        for b in model.blocks:
            fully_shard(b, offload_policy=CPUOffloadPolicy())
        fully_shard(model, offload_policy=CPUOffloadPolicy())
        blocks = list(model.blocks)
        for a, b in zip(blocks, blocks[1:]):
            a.set_modules_to_forward_prefetch([b])
            b.set_modules_to_backward_prefetch([a])
        assert not model._fsdp_unit.offload_active  # a no-op on CPU
        opt = make_opt(model, "adamw", 0.05)
        out = []
        for step in range(2):
            opt.zero_grad()
            model(*local_batch(step, rank, 2)).backward()
            opt.step()
            out.append(full_params(model))
        return out, model.comm_stats()

    res = run_threaded(2, body)
    assert _err([r[0] for r in res], ref) < 1e-6
    for unit, c in res[0][1].items():
        assert c["all_gather_forward"] == 2 and c["reduce_scatter"] == 2, (unit, c)


@pytest.mark.skipif(not hasattr(ax, "ddp") and not __import__("importlib").util.find_spec("axonml.ddp"),
                    reason="axonml.ddp is not available")
def test_parity_with_ddp_every_step():
    from axonml.ddp import DistributedDataParallel

    def body(rank):
        ddp = DistributedDataParallel(make_model())
        fsdp = shard_model(make_model())
        opts = make_opt(ddp, "adamw", 0.05), make_opt(fsdp, "adamw", 0.05)
        errs = []
        for step in range(STEPS):
            for m, o in zip((ddp, fsdp), opts):
                o.zero_grad()
                m(*local_batch(step, rank, 2)).backward()
                o.step()
            a = {k.removeprefix("module."): v.numpy() for k, v in ddp.state_dict().items()}
            b = full_params(fsdp)
            errs.append(max(float(np.max(np.abs(a[k] - b[k]))) for k in b))
        return errs

    for errs in run_threaded(2, body):
        assert max(errs) < 1e-6


def test_state_dict_of_an_fsdp_module_holds_sharded_tensors():
    def body(rank):
        model = shard_model(make_model())
        sd = model.state_dict()
        assert isinstance(sd["blocks.1.fc.weight"], ShardedTensor) and sd["blocks.1.fc.weight"].shape == (13, 7)
        with pytest.raises(CheckpointError, match="not a tensor"):
            ax.save(sd, "/nonexistent/never-written.safetensors")
        other = shard_model(make_model(seed=3))
        other.load_state_dict(sd)  # same layout: local copies
        plain = make_model(seed=4)
        other2 = shard_model(make_model(seed=5))
        other2.load_state_dict(plain.state_dict())  # full tensors: each rank keeps its shard
        return full_params(other), full_params(other2)

    got, got2 = run_threaded(3, body)[0]
    ref = {k: v.numpy() for k, v in make_model().state_dict().items()}
    ref2 = {k: v.numpy() for k, v in make_model(seed=4).state_dict().items()}
    assert all(np.array_equal(got[k], ref[k]) for k in ref) and all(np.array_equal(got2[k], ref2[k]) for k in ref2)


def test_wrapper_with_auto_wrap_policy_keeps_plain_names():
    def body(rank):
        model = FullyShardedDataParallel(make_model(), auto_wrap_policy=ModuleWrapPolicy({Block}))
        names = [n for n, _ in model.named_parameters()]
        units = sorted(model.comm_stats())
        return names[0], units, model.sharding_strategy, model.head.weight.global_shape, sorted(full_params(model))

    first, units, strategy, head_shape, keys = run_threaded(2, body)[0]
    assert first == "_fsdp_wrapped_module.inp.weight"
    assert units == ["", "_fsdp_wrapped_module.blocks.0", "_fsdp_wrapped_module.blocks.1", "_fsdp_wrapped_module.blocks.2"]
    assert strategy is ShardingStrategy.FULL_SHARD and head_shape == (3, 7)
    assert keys == sorted(make_model().state_dict())


def test_errors_name_the_problem():
    with pytest.raises(TypeError, match="expects an axonml.nn.Module"):
        fully_shard(object())
    m = fully_shard(make_model())
    with pytest.raises(ValueError, match="already sharded"):
        fully_shard(m)
    mixed = make_model()
    mixed.head.to(ax.float64)
    with pytest.raises(DTypeError, match="several dtypes"):
        fully_shard(mixed)
    with pytest.raises(TypeError, match="mp_policy must be a MixedPrecisionPolicy"):
        fully_shard(make_model(), mp_policy="bf16")
    with pytest.raises(DTypeError, match="must be a floating dtype"):
        MixedPrecisionPolicy(param_dtype=ax.int32)
    with pytest.raises(TypeError, match="reshard_after_forward must be a bool"):
        fully_shard(make_model(), reshard_after_forward=2)
    with pytest.raises(NotImplementedError, match="ignored_modules"):
        FullyShardedDataParallel(make_model(), ignored_modules=[])
    with pytest.raises(TypeError, match="sharding_strategy must be a ShardingStrategy"):
        FullyShardedDataParallel(make_model(), sharding_strategy="FULL_SHARD")

    def body(rank):
        with pytest.raises(ValueError, match="positive divisor of the world size 3"):
            hybrid_groups(2)
        with pytest.raises(ValueError, match="needs HYBRID_SHARD"):
            FullyShardedDataParallel(make_model(), process_group=(None, None))
        return True

    assert run_threaded(3, body) == [True] * 3


def test_world_of_one_without_process_group_trains_like_a_plain_model():
    assert not dist.is_initialized()
    ref = reference_run(2)
    model = shard_model(make_model())
    opt = make_opt(model, "adamw", 0.05)
    out = []
    for step in range(2):
        x, y = data(step, BATCH)
        opt.zero_grad()
        model(ax.tensor(x), ax.tensor(y)).backward()
        opt.step()
        out.append(full_params(model))
    assert _err([out], ref) == 0.0


def test_prefetch_gathers_the_next_unit_ahead_in_forward_and_backward():
    def body(rank):
        out = {}
        for prefetch in (True, False):
            model = shard_model(make_model())
            model.set_prefetch(forward=prefetch, backward=prefetch)
            b = list(model.blocks)
            seen = {"fwd": [], "bwd": []}
            # hooks registered after FSDP's run after them: the prefetch was launched by then
            b[0].register_forward_pre_hook(lambda m, a: seen["fwd"].append(b[1]._fsdp_unit.state.value))

            def watch(m, a, o):
                o.register_hook(lambda g: seen["bwd"].append(b[1]._fsdp_unit.state.value))

            b[2].register_forward_hook(watch)
            for step in range(2):
                model(*local_batch(step, rank, 2)).backward()
            out[prefetch] = seen
        return out

    res = run_threaded(2, body)[0]
    # forward: nothing recorded in the first iteration; the order of iteration 1 drives iteration 2
    assert res[True]["fwd"] == ["sharded", "gathering"] and res[False]["fwd"] == ["sharded", "sharded"]
    assert res[True]["bwd"] == ["gathering", "gathering"] and res[False]["bwd"] == ["sharded", "sharded"]


def test_a_root_without_parameters_and_checkpointed_units():
    class Outer(ax.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = make_model()

        def forward(self, x, y):
            return self.net(x, y, True)

    ref = reference_run(STEPS)

    def body(rank):
        m = Outer()
        for b in m.net.blocks:
            fully_shard(b)
        fully_shard(m.net.inp)
        fully_shard(m.net.head)
        fully_shard(m)  # the root manages nothing itself
        opt = make_opt(m, "adamw", 0.05)
        out = []
        for step in range(STEPS):
            opt.zero_grad()
            m(*local_batch(step, rank, 2)).backward()
            opt.step()
            out.append({k.removeprefix("net."): v for k, v in full_params(m).items()})
        return out

    assert _err(run_threaded(2, body), ref) < 1e-6


def test_a_unit_output_outside_the_loss_does_not_hold_back_the_gradients():
    class WithMetric(ax.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = make_model()
            self.probe = Block()  # used with grad enabled, but its output is not part of the loss

        def forward(self, x, y):
            h = self.net.inp(x)
            self.metric = self.probe(h).sum()
            for b in self.net.blocks:
                h = b(h)
            return ax.nn.functional.cross_entropy(self.net.head(h), y)

    ref = reference_run(STEPS)

    def body(rank):
        with __import__("fsdp_models")._INIT_LOCK:
            ax.manual_seed(0)
            m = WithMetric()
        for b in m.net.blocks:
            fully_shard(b)
        fully_shard(m.probe)
        fully_shard(m)
        opt = make_opt(m, "adamw", 0.05)
        out = []
        for step in range(STEPS):
            opt.zero_grad()
            m(*local_batch(step, rank, 2)).backward()
            assert all(p.grad is not None for n, p in m.named_parameters() if not n.startswith("probe"))
            assert all(p.grad is None for n, p in m.named_parameters() if n.startswith("probe"))
            opt.step()
            out.append({k.removeprefix("net."): v for k, v in full_params(m).items() if not k.startswith("probe")})
        return out

    assert _err(run_threaded(2, body), ref) < 1e-6
