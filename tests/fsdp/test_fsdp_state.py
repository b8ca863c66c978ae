"""FSDP state: full and sharded state dicts (model and optimizer), sharded checkpoints that
load at another world size (threaded ranks; the 4 -> 2/3 process version is in
tests/multiprocess/test_fsdp_processes.py), and their errors."""

import json
import os
import shutil
import tempfile

import numpy as np
import pytest
from fsdp_models import full_params, local_batch, make_model, make_opt, shard_model

import axonml as ax
from axonml.collectives.sharded_tensor import ShardedTensor
from axonml.collectives.testing import run_threaded
from axonml.errors import CheckpointError, StateDictError
from axonml.fsdp import (
    FullyShardedDataParallel,
    ModuleWrapPolicy,
    ShardingStrategy,
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    load_sharded_checkpoint,
    read_metadata,
    save_sharded_checkpoint,
    set_model_state_dict,
    set_optimizer_state_dict,
)

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def tmpdir_path():
    d = tempfile.mkdtemp(prefix="axonml-fsdp-test-")
    yield d
    shutil.rmtree(d, ignore_errors=True)


def _train(model, opt, rank, world, steps):
    out = []
    for s in steps:
        opt.zero_grad()
        model(*local_batch(s, rank, world)).backward()
        opt.step()
        out.append(full_params(model))
    return out


def _err(a: list, b: list) -> float:
    return max(float(np.max(np.abs(x[k] - y[k]))) for x, y in zip(a, b) for k in y)


def _build(strategy: str, seed: int = 0):
    if strategy == "full":
        return shard_model(make_model(seed))
    from fsdp_models import Block

    return FullyShardedDataParallel(make_model(seed), sharding_strategy=getattr(ShardingStrategy, strategy),
                                    auto_wrap_policy=ModuleWrapPolicy({Block}), hybrid_shard_size=2)


def test_sharded_checkpoint_reloads_at_any_world_size_and_strategy(tmpdir_path):
    def save(rank):
        model = _build("full")
        opt = make_opt(model, "adamw", 0.05)
        _train(model, opt, rank, 4, range(2))
        save_sharded_checkpoint(tmpdir_path, model, opt, extra={"step": 2, "note": "x"})
        return _train(model, opt, rank, 4, range(2, 4))

    ref = run_threaded(4, save)[0]
    meta = read_metadata(tmpdir_path)
    assert meta["world_size"] == 4 and meta["extra"] == {"step": 2, "note": "x"}
    entry = meta["tensors"]["model/blocks.0.fc.weight"]
    assert entry["shape"] == [13, 7] and entry["dtype"] == "float32"
    assert [(p["start"], p["stop"]) for p in entry["pieces"]] == [(0, 23), (23, 46), (46, 69), (69, 91)]
    assert sorted(os.listdir(tmpdir_path)) == ["metadata.json"] + [f"shard-0000{r}-of-00004.safetensors" for r in range(4)]
    for world, strategy in ((1, "full"), (2, "full"), (3, "full"), (2, "NO_SHARD"), (4, "HYBRID_SHARD"), (2, "SHARD_GRAD_OP")):
        def load(rank):
            model = _build(strategy, seed=9)
            opt = make_opt(model, "adamw", 0.05)
            assert load_sharded_checkpoint(tmpdir_path, model, opt)["step"] == 2
            return _train(model, opt, rank, world, range(2, 4))

        for got in run_threaded(world, load):
            assert _err(got, ref) < 1e-6, (world, strategy)


def test_replicated_strategies_write_each_element_once(tmpdir_path):
    def save(rank):
        model = _build("HYBRID_SHARD")
        save_sharded_checkpoint(tmpdir_path, model)
        return True

    run_threaded(4, save)
    meta = read_metadata(tmpdir_path)
    pieces = meta["tensors"]["model/head.weight"]["pieces"]
    assert sorted((p["start"], p["stop"]) for p in pieces) == [(0, 11), (11, 21)]  # shard group 0 only
    assert {p["file"] for p in pieces} <= {"shard-00000-of-00004.safetensors", "shard-00001-of-00004.safetensors"}


def test_full_and_sharded_model_state_dicts(tmpdir_path):
    def body(rank):
        model = _build("full")
        opt = make_opt(model, "adamw", 0.05)
        _train(model, opt, rank, 3, range(2))
        full_all = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True))
        full0 = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        sharded = get_model_state_dict(model)
        assert all(isinstance(v, ShardedTensor) for v in sharded.values())
        # load the full dict broadcast from rank 0 into a fresh model
        fresh = _build("full", seed=11)
        set_model_state_dict(fresh, full0 if rank == 0 else {}, options=StateDictOptions(broadcast_from_rank0=True))
        fresh2 = _build("full", seed=12)
        set_model_state_dict(fresh2, sharded)
        return ({k: v.numpy() for k, v in full_all.items()}, len(full0), full_params(fresh), full_params(fresh2))

    res = run_threaded(3, body)
    full = res[0][0]
    assert [r[1] for r in res] == [len(full), 0, 0]
    for _, _, fresh, fresh2 in res:
        assert all(np.array_equal(fresh[k], full[k]) and np.array_equal(fresh2[k], full[k]) for k in full)
    plain = make_model(seed=1)
    plain.load_state_dict(full)  # the full state dict loads into a plain model
    assert np.array_equal(plain.head.weight.detach().numpy(), full["head.weight"])


def test_optimizer_state_dicts_full_and_sharded_round_trip():
    def body(rank):
        model = _build("full")
        opt = make_opt(model, "adamw", 0.05)
        _train(model, opt, rank, 2, range(2))
        msd = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True))
        osd_full = get_optimizer_state_dict(model, opt, options=StateDictOptions(full_state_dict=True))
        osd_sharded = get_optimizer_state_dict(model, opt)
        assert osd_full["param_groups"][0]["params"][0] == "inp.weight"
        assert osd_full["state"]["blocks.0.fc.weight"]["exp_avg"].shape == (13, 7)
        assert isinstance(osd_sharded["state"]["blocks.0.fc.weight"]["exp_avg"], ShardedTensor)
        copies = []
        for osd in (osd_full, osd_sharded):  # loading copies the state, so the original may train on
            m2 = _build("full", seed=5)
            set_model_state_dict(m2, msd)
            o2 = make_opt(m2, "adamw", 0.05)
            set_optimizer_state_dict(m2, o2, osd)
            copies.append((m2, o2))
        ref = _train(model, opt, rank, 2, range(2, 4))
        return [_err(_train(m2, o2, rank, 2, range(2, 4)), ref) for m2, o2 in copies]

    for errs in run_threaded(2, body):
        assert errs == [0.0, 0.0]


def test_checkpoint_errors(tmpdir_path):
    with pytest.raises(CheckpointError, match="not a complete sharded checkpoint"):
        load_sharded_checkpoint(tmpdir_path, _build("full"))
    model = _build("full")
    save_sharded_checkpoint(tmpdir_path, model)
    other = make_model()
    other.head = ax.nn.Linear(7, 4)
    from axonml.fsdp import fully_shard

    fully_shard(other)
    with pytest.raises(StateDictError, match=r"'model/head.weight' has shape \(3, 7\) in the checkpoint but \(4, 7\)"):
        load_sharded_checkpoint(tmpdir_path, other)
    with pytest.raises(StateDictError, match="no optimizer state"):
        load_sharded_checkpoint(tmpdir_path, _build("full"), make_opt(_build("full"), "sgd", 0.1))
    meta = json.load(open(os.path.join(tmpdir_path, "metadata.json")))
    meta["tensors"]["model/head.bias"]["pieces"] = []
    json.dump(meta, open(os.path.join(tmpdir_path, "metadata.json"), "w"))
    with pytest.raises(CheckpointError, match="cover 0 of the elements"):
        load_sharded_checkpoint(tmpdir_path, _build("full"))
    with pytest.raises(StateDictError, match="size mismatch for head.weight"):
        _build("full").load_state_dict({**make_model().state_dict(), "head.weight": ax.zeros(4, 7)})
    with pytest.raises(StateDictError, match="missing keys"):
        _build("full").load_state_dict({})
