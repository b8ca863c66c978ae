"""CPU offload (``CPUOffloadPolicy``): host shards, gradients and optimizer state; compute on the device.

On CPU the policy is a no-op, so the threaded tests force the offload path with the private
switch ``axonml.fsdp._offload.FORCE_ON_CPU`` (the "device" copies are then host copies)
and compare with the same training without offload, step by step: the no-offload run is
the oracle. The GPU tests (skipped without CuPy, NCCL and a GPU) run a world of one over
NCCL and compare the offloaded GPU run with the plain GPU run and the CPU run.
"""

import gc

import numpy as np
import pytest
from fsdp_models import Block, full_params, local_batch, make_model, make_opt

import axonml as ax
import axonml.collectives as dist
from axonml.collectives import sharded_tensor as _sharded_tensor
from axonml.collectives.api import resolve_group
from axonml.collectives.backends import nccl_support
from axonml.collectives.testing import run_threaded
from axonml.fsdp import (
    CPUOffload,
    CPUOffloadPolicy,
    FullyShardedDataParallel,
    MixedPrecisionPolicy,
    ModuleWrapPolicy,
    OffloadPolicy,
    ShardedParameter,
    ShardingStrategy,
    StateDictOptions,
    _offload,
    _unit,
    fully_shard,
    get_model_state_dict,
    get_optimizer_state_dict,
    load_sharded_checkpoint,
    save_sharded_checkpoint,
    set_model_state_dict,
    set_optimizer_state_dict,
)

pytestmark = pytest.mark.timeout(120)
STEPS = 3
TOL = 1e-6  # float32: the offload path copies values exactly, so the runs agree to rounding (in practice exactly)


@pytest.fixture
def forced(monkeypatch):
    """Run the offload path on CPU parameters (the test-only switch)."""
    monkeypatch.setattr(_offload, "FORCE_ON_CPU", True)


def _err(a: list, b: list) -> float:
    return max(float(np.max(np.abs(x[k] - y[k]))) for x, y in zip(a, b, strict=True) for k in y)


def _shard(model, offload: bool, strategy: str, mp_dtype=None):
    """Shard ``model`` with or without CPUOffloadPolicy (fully_shard, or the FSDP1 wrapper)."""
    mp = MixedPrecisionPolicy() if mp_dtype is None else MixedPrecisionPolicy(param_dtype=mp_dtype, reduce_dtype=ax.float32)
    if strategy in ("full", "grad_op"):
        policy = CPUOffloadPolicy() if offload else OffloadPolicy()
        for b in model.blocks:
            fully_shard(b, reshard_after_forward=strategy == "full", mp_policy=mp, offload_policy=policy)
        return fully_shard(model, reshard_after_forward=strategy == "full", mp_policy=mp, offload_policy=policy)
    world = dist.get_world_size() if dist.is_initialized() else 1
    return FullyShardedDataParallel(model, sharding_strategy=getattr(ShardingStrategy, strategy),
                                    cpu_offload=CPUOffload(offload_params=offload), auto_wrap_policy=ModuleWrapPolicy({Block}),
                                    mixed_precision=mp, hybrid_shard_size=2 if world % 2 == 0 else 1)


def _check_placement(model, opt, device) -> None:
    """Offloaded: the optimizer-facing parameters, their gradients and the optimizer state are host
    tensors, and nothing the device side uses views the host shards."""
    for u in model._fsdp_units(True):
        assert u.offload_active and u.shard_device.type == "cpu" and u.device == ax.runtime.as_device(device)
        assert u.shard.device.type == "cpu"
        if u.S:
            assert not u.direct and u.ubuf is not None and u.ubuf.tensor.device == u.device
            if u.device.type == "cpu":
                assert not np.shares_memory(u.ubuf.array, u.shard._data)
    for p in model.parameters():
        assert isinstance(p, ShardedParameter) and p.device.type == "cpu", p
        if p.grad is not None:
            assert p.grad.device.type == "cpu"
    for st in opt.state.values():
        assert all(v.device.type == "cpu" for v in st.values() if isinstance(v, ax.Tensor))


def _train(rank: int, world: int, steps: int = STEPS, *, offload: bool, strategy: str = "full", mp_dtype=None,
           clip: float | None = None, micro: int = 1, sync_each: bool = False, opt_name: str = "adamw",
           device: str = "cpu") -> dict:
    """Train on this rank's slices; full parameters (and clip norms, forward records) after each step.

    ``micro`` micro-batches per step: accumulated without gradient sync (the last one syncs),
    or with ``sync_each`` reduced every time and added into the sharded ``.grad``."""
    model = make_model()
    if dist.is_initialized():
        dist.barrier()  # threaded ranks share the global generator: all models are built first
    if device != "cpu":
        model.to(device)
    model = _shard(model, offload, strategy, mp_dtype)
    inner = model.module if isinstance(model, FullyShardedDataParallel) else model
    seen = []

    def probe(m, args, out):
        w = m.weight
        unit = inner.blocks[0]._fsdp_unit
        shares = w.device.type == "cpu" and np.shares_memory(w._data, unit.shard._data)
        seen.append((type(w).__name__, str(w.device), w.dtype.name, bool(shares)))

    inner.blocks[0].fc.register_forward_hook(probe)
    opt = make_opt(model, opt_name, 0.05)
    out = {"params": [], "norms": [], "seen": seen}
    for step in range(steps):
        opt.zero_grad()
        for m in range(micro):
            model.set_requires_gradient_sync(sync_each or m == micro - 1)
            x, y = local_batch(step * micro + m, rank, world)
            model(x.to(device), y.to(device)).backward()
            if micro > 1 and not sync_each and m < micro - 1:
                assert all(p.grad is None for p in model.parameters())  # kept unsharded on the compute device
        if clip is not None:
            out["norms"].append(model.clip_grad_norm_(clip).item())
        opt.step()
        if offload:
            _check_placement(model, opt, device)
        out["params"].append(full_params(model))
    if dist.is_initialized():
        dist.barrier()
    return out


def _both(world: int, **kw) -> tuple[list, list]:
    on = run_threaded(world, lambda r: _train(r, world, offload=True, **kw))
    off = run_threaded(world, lambda r: _train(r, world, offload=False, **kw))
    return on, off


# -- parity with the same training without offload (forced on CPU) --------------------------------------------


@pytest.mark.parametrize("world", [2, 3, 4])
@pytest.mark.parametrize("strategy", ["full", "grad_op", "NO_SHARD", "HYBRID_SHARD"])
def test_forced_offload_trains_like_no_offload_step_by_step(forced, world, strategy):
    on, off = _both(world, strategy=strategy)
    for a, b in zip(on, off):
        assert _err(a["params"], b["params"]) < TOL, (world, strategy)
        # forward computes on gathered (device-side) parameters, never on the host shard
        assert a["seen"] and all(s == ("Parameter", "cpu", "float32", False) for s in a["seen"]), a["seen"]


@pytest.mark.parametrize("world", [2, 3])
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_forced_offload_with_mixed_precision(forced, world, dtype):
    dt = getattr(ax, dtype)
    for strategy in ("full", "grad_op"):
        on, off = _both(world, strategy=strategy, mp_dtype=dt)
        for a, b in zip(on, off):
            assert _err(a["params"], b["params"]) < TOL, (world, strategy)
            assert all(s == ("Parameter", "cpu", dtype, False) for s in a["seen"]), a["seen"]
    # the policy really computes in low precision: the float32 run differs
    full32 = run_threaded(world, lambda r: _train(r, world, offload=True))
    assert _err(on[0]["params"], full32[0]["params"]) > 1e-5


@pytest.mark.parametrize("world", [2, 3])
def test_forced_offload_gradient_accumulation(forced, world):
    for sync_each in (False, True):
        on, off = _both(world, steps=2, micro=3, sync_each=sync_each, opt_name="sgd")
        for a, b in zip(on, off):
            assert _err(a["params"], b["params"]) < TOL, (world, sync_each)


@pytest.mark.parametrize("world", [2, 3])
def test_forced_offload_clip_grad_norm(forced, world):
    for strategy in ("full", "grad_op"):
        on, off = _both(world, strategy=strategy, clip=0.05)
        for a, b in zip(on, off):
            assert _err(a["params"], b["params"]) < TOL, (world, strategy)
            np.testing.assert_allclose(a["norms"], b["norms"], rtol=1e-6)
            assert max(a["norms"]) > 0.05  # the clip really scaled the gradients


def test_one_host_to_device_copy_per_all_gather_and_one_device_to_host_copy_per_reduction(forced, monkeypatch):
    calls = {"h2d": [], "d2h": []}
    host_shards: list = []  # every collective must run on device-side buffers, never on a host shard
    on_host = []

    def counting(name, fn):
        def wrapped(array, device):
            calls[name].append(array.size)
            return fn(array, device)
        return wrapped

    def checked(fn):
        def wrapped(out, inp, *args, **kwargs):
            on_host.extend(np.shares_memory(t._data, s) for t in (out, inp) for s in host_shards)
            return fn(out, inp, *args, **kwargs)
        return wrapped

    monkeypatch.setattr(_unit, "to_compute", counting("h2d", _offload.to_compute))
    monkeypatch.setattr(_unit, "to_host", counting("d2h", _offload.to_host))
    for name in ("all_gather_into_tensor", "reduce_scatter_tensor"):
        monkeypatch.setattr(_unit, name, checked(getattr(_unit, name)))
    monkeypatch.setattr(_sharded_tensor, "all_gather_into_tensor", checked(_sharded_tensor.all_gather_into_tensor))

    def body(rank):
        model = _shard(make_model(), True, "full")
        host_shards.extend(m._fsdp_unit.shard._data for m in model.modules() if isinstance(m, ax.fsdp.FSDPModule))
        for step in range(2):
            model(*local_batch(step, rank, 2)).backward()
        stats = model.comm_stats()
        units = {name: m._fsdp_unit for name, m in model.named_modules() if name in stats}
        # per unit: (elements of the shard, all-gathers, reductions, elements of its parameters' shards)
        rows = [(u.S, stats[n]["all_gather_forward"] + stats[n]["all_gather_backward"], stats[n]["reduce_scatter"],
                 sum(i.valid for i in u.infos)) for n, u in units.items()]
        dist.barrier()  # every rank has counted its training copies
        full = model.head.weight.full_tensor()  # a gather through a device copy too
        return rows, full.device.type, full_params(model)

    res = run_threaded(2, body)
    assert host_shards and on_host and not any(on_host)
    assert all(device == "cpu" for _, device, _ in res)
    per_unit = [row for rows, _, _ in res for row in rows]
    gathers = sum(g for _, g, _, _ in per_unit)
    reductions = sum(r for _, _, r, _ in per_unit)
    n_params = 2 * len(list(make_model().parameters()))  # each rank copied its shard of each parameter once, when sharding
    assert gathers > 0 and reductions == 2 * len(per_unit)
    train_h2d = calls["h2d"][:gathers]
    assert sum(train_h2d) == sum(S * g for S, g, _, _ in per_unit)
    assert len(calls["h2d"]) == gathers + 2 * (1 + len(per_unit) // 2)  # then full_tensor and one per unit in full_params
    assert len(calls["d2h"]) == n_params + reductions + 2 * (1 + len(per_unit) // 2)
    assert sum(calls["d2h"][:n_params + reductions]) == sum(v + S * r for S, _, r, v in per_unit)


# -- state dicts and checkpoints ---------------------------------------------------------------------------------


def _state_body(rank: int, world: int, ckpt: str) -> dict:
    """Train offloaded and plain models 2 steps; round-trip full and sharded state dicts (model and
    optimizer) and a sharded checkpoint into fresh offloaded models; one more step must agree."""
    out = {}
    models, opts = {}, {}
    for offload in (True, False):
        m = make_model()
        dist.barrier()
        m = _shard(m, offload, "full")
        o = make_opt(m, "adamw", 0.05)
        for step in range(2):
            o.zero_grad()
            m(*local_batch(step, rank, world)).backward()
            o.step()
        models[offload], opts[offload] = m, o
    full_opts = StateDictOptions(full_state_dict=True)
    sd_full = get_model_state_dict(models[True], options=full_opts)
    out["full_is_host"] = all(v.device.type == "cpu" for v in sd_full.values())
    out["full_equal"] = _err([{k: v.numpy() for k, v in sd_full.items()}], [full_params(models[False])]) == 0.0
    osd_full = get_optimizer_state_dict(models[True], opts[True], options=full_opts)
    osd_ref = get_optimizer_state_dict(models[False], opts[False], options=full_opts)
    out["optim_full_equal"] = all(
        np.array_equal(v.numpy(), osd_ref["state"][k][s].numpy()) for k, st in osd_full["state"].items()
        for s, v in st.items() if isinstance(v, ax.Tensor))
    sd_sharded = models[True].state_dict()
    osd_sharded = get_optimizer_state_dict(models[True], opts[True])
    save_sharded_checkpoint(ckpt, models[True], opts[True], extra={"step": 2})

    def fresh(seed):
        m = make_model(seed=seed)
        dist.barrier()
        m = _shard(m, True, "full")
        return m, make_opt(m, "adamw", 0.05)

    loaded = {}
    m, o = fresh(3)  # sharded model and optimizer state dicts
    m.load_state_dict(sd_sharded)
    set_optimizer_state_dict(m, o, osd_sharded)
    loaded["sharded"] = (m, o)
    m, o = fresh(4)  # full state dicts, rank 0 only, broadcast
    set_model_state_dict(m, sd_full if rank == 0 else {},
                         options=StateDictOptions(full_state_dict=True, broadcast_from_rank0=True))
    set_optimizer_state_dict(m, o, osd_full, options=full_opts)
    loaded["full"] = (m, o)
    m, o = fresh(5)
    out["extra"] = load_sharded_checkpoint(ckpt, m, o)
    loaded["checkpoint"] = (m, o)
    for name, (m, o) in loaded.items():
        for u in m._fsdp_units(True):
            # loading writes into the host shard in place: the parameters still view it
            assert all(np.shares_memory(i.sharded._data, u.shard._data) for i in u.infos if i.valid)
        _check_placement(m, o, "cpu")
    ref_step = None
    for name, (m, o) in [("original", (models[True], opts[True]))] + list(loaded.items()):
        o.zero_grad()
        m(*local_batch(2, rank, world)).backward()
        o.step()
        got = full_params(m)
        ref_step = got if ref_step is None else ref_step
        out[f"continue_{name}"] = _err([got], [ref_step])
    return out


@pytest.mark.parametrize("world", [2, 3])
def test_forced_offload_state_dicts_and_checkpoints_round_trip(forced, world, tmp_path):
    ckpt = str(tmp_path / "ckpt")
    for res in run_threaded(world, lambda r: _state_body(r, world, ckpt)):
        assert res["full_is_host"] and res["full_equal"] and res["optim_full_equal"], res
        assert res["extra"] == {"step": 2}
        for name in ("sharded", "full", "checkpoint"):
            assert res[f"continue_{name}"] < TOL, (name, res)


def test_forced_offload_checkpoint_loads_at_another_world_size_and_without_offload(forced, tmp_path):
    ckpt = str(tmp_path / "ckpt")

    def save(rank):
        m = _shard(make_model(), True, "full")
        dist.barrier()
        o = make_opt(m, "adamw", 0.05)
        m(*local_batch(0, rank, 2)).backward()
        o.step()
        save_sharded_checkpoint(ckpt, m, o)
        return full_params(m)

    saved = run_threaded(2, save)[0]

    def load(rank, offload):
        m = make_model(seed=9)
        dist.barrier()
        m = _shard(m, offload, "full")
        load_sharded_checkpoint(ckpt, m, make_opt(m, "adamw", 0.05))
        return full_params(m)

    for offload in (True, False):
        for got in run_threaded(3, lambda r: load(r, offload)):
            assert _err([got], [saved]) == 0.0, offload


# -- the switch, the flags, errors ------------------------------------------------------------------------------------


def test_offload_is_a_no_op_on_cpu_unless_forced(monkeypatch):
    model = _shard(make_model(), True, "full")
    assert not any(u.offload_active for u in model._fsdp_units(True))
    assert all(u.shard_device.type == "cpu" for u in model._fsdp_units(True))
    assert model._fsdp_unit.direct  # a world of one without a cast: the unsharded parameters view the shard
    monkeypatch.setattr(_offload, "FORCE_ON_CPU", True)
    forced_model = _shard(make_model(), True, "full")
    assert all(u.offload_active for u in forced_model._fsdp_units(True))
    assert not forced_model._fsdp_unit.direct
    wrapped = _shard(make_model(), True, "FULL_SHARD")  # FSDP1's CPUOffload(offload_params=True)
    assert all(u.offload_active for u in wrapped._fsdp_units(True))
    assert not any(u.offload_active for u in _shard(make_model(), False, "full")._fsdp_units(True))


def test_forced_offload_world_of_one_without_process_group(forced):
    assert not dist.is_initialized()
    on = _train(0, 1, offload=True, clip=0.05)
    off = _train(0, 1, offload=False, clip=0.05)
    assert _err(on["params"], off["params"]) < TOL
    np.testing.assert_allclose(on["norms"], off["norms"], rtol=1e-6)
    assert all(s[3] is False for s in on["seen"]) and all(s[3] is True for s in off["seen"])  # direct views without


def test_bad_offload_arguments_raise_clear_errors():
    with pytest.raises(TypeError, match=r"pin_memory must be a bool, got 'yes'"):
        CPUOffloadPolicy(pin_memory="yes")
    with pytest.raises(TypeError, match="offload_policy must be an OffloadPolicy, got CPUOffload"):
        fully_shard(make_model(), offload_policy=CPUOffload(offload_params=True))


# -- on a real GPU (world of one over NCCL) -------------------------------------------------------------------------

HAS_GPU = ax.runtime.cuda_available() and nccl_support.nccl_available()
needs_gpu = pytest.mark.skipif(not HAS_GPU, reason="needs CuPy, NCCL (cupy-cuda12x, nvidia-nccl-cu12) and a CUDA GPU")


@pytest.fixture
def nccl_world_of_one():
    from axonml.cluster import MemoryStore
    from axonml.collectives.backends import nccl as _nccl  # noqa: F401  (registers "nccl")

    dist.init_process_group("nccl", store=MemoryStore(timeout=60), rank=0, world_size=1, timeout=60)
    try:
        yield f"cuda:{resolve_group(None, 'test').device_index}"  # the GPU the group runs on
    finally:
        dist.destroy_process_group()


def _cuda_bytes(device: str) -> int:
    gc.collect()
    return ax.runtime.memory_stats(device)["current_bytes"]


def _gpu_run(device: str, offload: bool, mp_dtype=None, steps: int = STEPS, clip: float | None = 0.05) -> dict:
    """Train on the whole batch (a world of one) on ``device``: full parameters after each step,
    clip norms, forward records; the placement checks run after every step when offloaded."""
    return _train(0, 1, steps, offload=offload, mp_dtype=mp_dtype, clip=clip, device=device)


@needs_gpu
def test_gpu_offload_keeps_sharded_state_on_the_host_and_matches_gpu_and_cpu(nccl_world_of_one):
    dev = nccl_world_of_one
    on = _gpu_run(dev, True)
    off = _gpu_run(dev, False)
    cpu = _gpu_run("cpu", False)
    assert on["seen"] and all(s == ("Parameter", dev, "float32", False) for s in on["seen"]), on["seen"]
    assert _err(on["params"], off["params"]) < 1e-5
    assert _err(on["params"], cpu["params"]) < 1e-4
    np.testing.assert_allclose(on["norms"], off["norms"], rtol=1e-5)
    np.testing.assert_allclose(on["norms"], cpu["norms"], rtol=1e-4)


@needs_gpu
def test_gpu_offload_with_mixed_precision(nccl_world_of_one):
    dev = nccl_world_of_one  # CuPy has no bfloat16: float16 on the GPU
    on = _gpu_run(dev, True, mp_dtype=ax.float16)
    off = _gpu_run(dev, False, mp_dtype=ax.float16)
    assert all(s == ("Parameter", dev, "float16", False) for s in on["seen"]), on["seen"]
    # the optimizer steps on the host vs on the GPU: last-bit differences may move a float16 rounding
    assert _err(on["params"], off["params"]) < 1e-3


@needs_gpu
def test_gpu_memory_after_step_holds_no_sharded_state(nccl_world_of_one):
    dev = nccl_world_of_one
    held = {}
    for offload in (True, False):
        base = _cuda_bytes(dev)
        model = _shard(make_model().to(dev), offload, "full")
        opt = make_opt(model, "adamw", 0.05)
        for step in range(2):
            opt.zero_grad()
            x, y = local_batch(step, 0, 1)
            loss = model(x.to(dev), y.to(dev))
            loss.backward()
            opt.step()
            del x, y, loss
        units = model._fsdp_units(True)
        sharded_bytes = sum(u.S for u in units) * 4  # float32 elements of the shards
        unsharded_buffers = sum(u.ubuf.nbytes for u in units if u.ubuf is not None)
        held[offload] = (_cuda_bytes(dev) - base, sharded_bytes, unsharded_buffers)
        if offload:
            _check_placement(model, opt, dev)
        del model, opt, units
    got, _, buffers = held[True]
    # offloaded: no shard, gradient or optimizer state, and FULL_SHARD released every unsharded
    # parameter buffer after the backward (the root's too, at the end of backward)
    assert buffers > 0 and got < buffers / 4, held
    # without offload the GPU holds parameters, gradients and two AdamW states of the shards
    assert held[False][0] >= 4 * held[False][1], held


@needs_gpu
def test_gpu_offload_state_dicts_and_checkpoint(nccl_world_of_one, tmp_path):
    dev = nccl_world_of_one
    model = _shard(make_model().to(dev), True, "full")
    opt = make_opt(model, "adamw", 0.05)
    model(*(t.to(dev) for t in local_batch(0, 0, 1))).backward()
    model.clip_grad_norm_(0.05)
    opt.step()
    sd = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True))
    assert all(v.device.type == "cpu" for v in sd.values())
    save_sharded_checkpoint(str(tmp_path / "ckpt"), model, opt)
    other = _shard(make_model(seed=3).to(dev), True, "full")
    other_opt = make_opt(other, "adamw", 0.05)
    load_sharded_checkpoint(str(tmp_path / "ckpt"), other, other_opt)
    _check_placement(other, other_opt, dev)
    third = _shard(make_model(seed=4).to(dev), True, "full")
    set_model_state_dict(third, sd, options=StateDictOptions(full_state_dict=True, broadcast_from_rank0=True))
    ref = {k: v.numpy() for k, v in sd.items()}
    assert _err([full_params(other)], [ref]) == 0.0 and _err([full_params(third)], [ref]) == 0.0
