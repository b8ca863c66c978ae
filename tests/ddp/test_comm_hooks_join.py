"""DDP communication hooks (GradBucket, allreduce, fp16/bf16 compression, PowerSGD), the
chainable Future, and join() with uneven inputs, on the threaded backend."""

import ml_dtypes
import numpy as np
import pytest
from ddp_helpers import ParityNet, init_params, loss_of, make_data, max_diff, snapshot

import axonml as ax
import axonml.collectives as dist
from axonml import nn
from axonml.collectives.testing import run_threaded
from axonml.ddp import DistributedDataParallel, Future, GradBucket, Join, comm_hooks

pytestmark = pytest.mark.timeout(120)

SEED = 7
DATA = make_data(96)


def _grads_after_one_step(world: int, hook, state_of=lambda: None, steps: int = 1, cap_mb: float = 0.001):
    def body(rank):
        model = init_params(ParityNet(), SEED)
        ddp = DistributedDataParallel(model, bucket_cap_mb=cap_mb)
        if hook is not None:
            ddp.register_comm_hook(state_of(), hook)
        out = []
        for s in range(steps):
            idx = np.arange(12 * s, 12 * (s + 1))[rank::world]
            model.zero_grad()
            loss_of(ddp, DATA[0][idx], DATA[1][idx], DATA[2][idx]).backward()
            out.append({n: p.grad.numpy().copy() for n, p in model.named_parameters()})
        return out

    return run_threaded(world, body)


def _oracle_grads(steps: int = 1) -> list:
    model = init_params(ParityNet(), SEED)
    out = []
    for s in range(steps):
        idx = np.arange(12 * s, 12 * (s + 1))
        model.zero_grad()
        loss_of(model, DATA[0][idx], DATA[1][idx], DATA[2][idx]).backward()
        out.append({n: p.grad.numpy().copy() for n, p in model.named_parameters()})
    return out


def test_grad_bucket_api_seen_by_a_hook():
    def body(rank):
        model = init_params(ParityNet(), SEED)
        ddp = DistributedDataParallel(model, bucket_cap_mb=0.001)
        seen = []

        def hook(state, bucket):
            assert isinstance(bucket, GradBucket)
            params = bucket.parameters()
            grads = bucket.gradients()
            assert [tuple(g.shape) for g in grads] == [tuple(p.shape) for p in params]
            assert bucket.buffer().numel() == sum(p.numel() for p in params)
            np.testing.assert_array_equal(np.concatenate([g.numpy().ravel() for g in grads]), bucket.buffer().numpy())
            seen.append((bucket.index(), bucket.is_last(), [state[id(p)] for p in params]))
            return comm_hooks.allreduce_hook(None, bucket)

        ddp.register_comm_hook({id(p): n for n, p in model.named_parameters()}, hook)
        img, tok, y = make_data(4, seed=rank)
        loss_of(ddp, img, tok, y).backward()
        return seen, ddp._get_ddp_logging_data()["bucket_params"]

    seen, layout = run_threaded(2, body)[0]
    assert [s[0] for s in seen] == list(range(len(layout)))
    assert [s[1] for s in seen] == [False] * (len(layout) - 1) + [True]
    assert [s[2] for s in seen] == layout


def test_allreduce_hook_equals_default():
    got = _grads_after_one_step(2, comm_hooks.allreduce_hook)
    want = _oracle_grads()
    for g in got:
        assert max_diff(g[0], want[0]) < 1e-6


@pytest.mark.parametrize("hook, dtype", [(comm_hooks.fp16_compress_hook, np.float16),
                                         (comm_hooks.bf16_compress_hook, ml_dtypes.bfloat16)])
def test_compression_hooks_round_like_their_dtype(hook, dtype):
    world = 2
    got = _grads_after_one_step(world, hook)
    plain = _grads_after_one_step(world, None)
    shard_grads = []
    for r in range(world):  # each rank's local gradient, for the reference rounding
        model = init_params(ParityNet(), SEED)
        idx = np.arange(12)[r::world]
        loss_of(model, DATA[0][idx], DATA[1][idx], DATA[2][idx]).backward()
        shard_grads.append({n: p.grad.numpy() for n, p in model.named_parameters()})
    for name in got[0][0]:
        # divide, round to the low dtype, sum in float32, round the sum, back to float32
        parts = [(g[name] / world).astype(dtype).astype(np.float32) for g in shard_grads]
        want = np.sum(parts, axis=0).astype(dtype).astype(np.float32)
        np.testing.assert_allclose(got[0][0][name], want, rtol=0, atol=1e-7)
        scale = np.abs(plain[0][0][name]).max() + 1e-12
        assert np.abs(got[0][0][name] - plain[0][0][name]).max() / scale < (1e-2 if dtype == np.float16 else 2e-2)
    assert max_diff(got[0][0], got[1][0]) == 0.0


def test_powersgd_full_rank_is_exact_and_starts_after_vanilla_iterations():
    # with r = min(n, m) and full-rank gradients, P Q^T reproduces the averaged gradient exactly
    x = np.random.default_rng(4).standard_normal((4, 24, 8)).astype(np.float32)

    def make():
        return init_params(nn.Sequential(nn.Linear(8, 6), nn.Tanh(), nn.Linear(6, 3)), 5)

    def body(rank):
        model = make()
        ddp = DistributedDataParallel(model)
        ddp.register_comm_hook(comm_hooks.PowerSGDState(None, matrix_approximation_rank=8, start_powerSGD_iter=2,
                                                        min_compression_rate=0), comm_hooks.powerSGD_hook)
        out = []
        for step in range(4):
            model.zero_grad()
            ddp(ax.tensor(x[step][rank::2])).square().mean().backward()
            out.append({n: p.grad.numpy().copy() for n, p in model.named_parameters()})
        return out

    ref = make()
    want = []
    for step in range(4):
        ref.zero_grad()
        ref(ax.tensor(x[step])).square().mean().backward()
        want.append({n: p.grad.numpy().copy() for n, p in ref.named_parameters()})
    for got in run_threaded(2, body):
        for step in range(4):
            assert max_diff(got[step], want[step]) < 1e-5, step


def test_powersgd_rank_one_matches_numpy_reference_and_feeds_back_its_error():
    world, n, m = 2, 6, 5
    local = np.random.default_rng(1).standard_normal((world, n, m)).astype(np.float32)  # each rank's gradient

    class One(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(ax.zeros(n, m))

        def forward(self, c):
            return (self.w * c).sum()  # d/dw = c

    def body(rank):
        model = One()
        ddp = DistributedDataParallel(model)
        state = comm_hooks.PowerSGDState(None, matrix_approximation_rank=1, start_powerSGD_iter=2,
                                         min_compression_rate=1, random_seed=3)
        ddp.register_comm_hook(state, comm_hooks.powerSGD_hook)
        out = []
        for _ in range(3):
            model.zero_grad()
            ddp(ax.tensor(local[rank])).backward()
            out.append((model.w.grad.numpy().copy(), {k: v.copy() for k, v in state.error_dict.items()}))
        return out

    res = run_threaded(world, body)
    for step in (0, 1):  # before start_powerSGD_iter: plain averaging
        np.testing.assert_allclose(res[0][step][0], local.mean(0), rtol=1e-6, atol=1e-6)
    rng = np.random.RandomState(3)
    q = np.random.default_rng(rng.randint(1_000_000_000)).standard_normal((m, 1)).astype(np.float32)
    q /= np.linalg.norm(q)
    p = sum(local[r] @ q for r in range(world))
    p /= np.linalg.norm(p)
    qq = sum(local[r].T @ p for r in range(world))
    approx = p @ qq.T / world
    for r in range(world):
        np.testing.assert_allclose(res[r][2][0], approx, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(res[r][2][1][0].reshape(n, m), local[r] - approx, rtol=1e-4, atol=1e-5)
    assert np.abs(approx - local.mean(0)).max() > 1e-2  # rank 1 really compresses


def test_powersgd_state_validation():
    with pytest.raises(ValueError, match="start_powerSGD_iter must be > 1"):
        comm_hooks.PowerSGDState(None, start_powerSGD_iter=1)
    with pytest.raises(ValueError, match="matrix_approximation_rank"):
        comm_hooks.PowerSGDState(None, matrix_approximation_rank=0)


def test_future_chaining_and_errors():
    f = Future()
    chained = f.then(lambda fut: fut.value() + 1).then(lambda fut: Future.completed(fut.value() * 10))
    assert not chained.done()
    f.set_result(1)
    assert chained.wait() == 20 and chained.done()
    with pytest.raises(RuntimeError, match="already completed"):
        f.set_result(2)
    bad = Future.completed(0).then(lambda fut: 1 / fut.value())
    with pytest.raises(ZeroDivisionError):
        bad.wait()
    with pytest.raises(TimeoutError):
        Future().wait(timeout=0.05)
    seen = []
    g = Future()
    g.add_done_callback(lambda fut: seen.append(fut.value()))
    g.set_result("x")
    assert seen == ["x"]

    def body(rank):
        t = ax.tensor([float(rank + 1)])
        fut = Future.from_work(dist.all_reduce(t, async_op=True), t).then(lambda fu: fu.value().item() * 2)
        return fut.wait()

    assert run_threaded(3, body) == [12.0, 12.0, 12.0]


# -- join ---------------------------------------------------------------------------------------------


def _join_oracle(counts: list[int], world: int, divide_by_initial: bool, batch: int = 4) -> dict:
    """One process: step i averages the mean losses of the ranks that still have data."""
    model = init_params(ParityNet(), SEED)
    opt = ax.optim.SGD(model.parameters(), lr=0.1)
    for i in range(max(counts)):
        active = [r for r in range(world) if i < counts[r]]
        opt.zero_grad()
        div = world if divide_by_initial else len(active)
        total = None
        for r in active:
            idx = np.arange(batch) + batch * (i * world + r)
            term = loss_of(model, DATA[0][idx], DATA[1][idx], DATA[2][idx]) / div
            total = term if total is None else total + term
        total.backward()
        opt.step()
    return snapshot(model)


@pytest.mark.parametrize("divide_by_initial", [True, False])
def test_join_with_uneven_inputs_finishes_and_matches_oracle(divide_by_initial):
    world, counts, batch = 3, [2, 4, 3], 4

    def body(rank):
        model = init_params(ParityNet(), SEED)
        ddp = DistributedDataParallel(model, bucket_cap_mb=0.001)
        opt = ax.optim.SGD(ddp.parameters(), lr=0.1)
        with ddp.join(divide_by_initial_world_size=divide_by_initial):
            for i in range(counts[rank]):
                idx = np.arange(batch) + batch * (i * world + rank)
                opt.zero_grad()
                loss_of(ddp, DATA[0][idx], DATA[1][idx], DATA[2][idx]).backward()
                opt.step()
        return snapshot(model)

    want = _join_oracle(counts, world, divide_by_initial)
    for snap in run_threaded(world, body, timeout=60):
        assert max_diff(snap, want) < 2e-6


def test_join_with_buffers_and_no_sync_and_throw():
    def body(rank):
        model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
        ddp = DistributedDataParallel(model)
        with ddp.join():
            for i in range(1 + 2 * rank):
                with ddp.no_sync() if i % 2 else _null():
                    ddp(ax.ones(4, 3) * (i + rank)).sum().backward()
        state = snapshot(model)
        with pytest.raises(RuntimeError, match="exhausted"), ddp.join(throw_on_early_termination=True):
            for _ in range(1 + rank):
                ddp(ax.ones(4, 3)).sum().backward()
        return state

    a, b = run_threaded(2, body, timeout=60)
    assert max_diff(a, b) == 0.0  # the post hook copied the last joiner's model

    def off(rank):
        ddp = DistributedDataParallel(nn.Linear(2, 2))
        with Join([ddp], enable=False):
            ddp(ax.ones(1, 2)).sum().backward()
        return "ok"

    assert run_threaded(2, off) == ["ok", "ok"]


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False
