"""LR schedulers against PyTorch: the learning rates (and cycled momentum) step by step
for 30+ steps, with a state-dict round trip (scheduler and optimizer) in the middle."""

from __future__ import annotations

import copy
import math
import pickle
import warnings

import numpy as np
import pytest
from helpers import torch

import axonml as ax
from axonml import nn, optim
from axonml.optim import lr_scheduler as S

TS = torch.optim.lr_scheduler
STEPS = 40


def make_opt(lib: str, kind: str = "sgd", n_groups: int = 2):
    if lib == "ax":
        params = [nn.Parameter(ax.zeros(2)) for _ in range(n_groups)]
        mod = optim
    else:
        params = [torch.zeros(2, requires_grad=True) for _ in range(n_groups)]
        mod = torch.optim
    groups = [{"params": [p], "lr": 0.1 * (i + 1)} for i, p in enumerate(params)]
    if kind == "sgd":
        return mod.SGD(groups, lr=0.1, momentum=0.9)
    return mod.Adam(groups, lr=0.1, betas=(0.9, 0.999))


# each builder takes (scheduler module, optimizer) and returns the scheduler
CASES = {
    "StepLR": lambda m, o: m.StepLR(o, step_size=3, gamma=0.5),
    "MultiStepLR": lambda m, o: m.MultiStepLR(o, milestones=[2, 5, 5, 9, 20], gamma=0.3),
    "ExponentialLR": lambda m, o: m.ExponentialLR(o, gamma=0.93),
    "CosineAnnealingLR": lambda m, o: m.CosineAnnealingLR(o, T_max=10, eta_min=0.001),
    "CosineAnnealingLR-long": lambda m, o: m.CosineAnnealingLR(o, T_max=33),
    "CosineAnnealingWarmRestarts": lambda m, o: m.CosineAnnealingWarmRestarts(o, T_0=5, T_mult=2, eta_min=0.01),
    "CosineAnnealingWarmRestarts-mult1": lambda m, o: m.CosineAnnealingWarmRestarts(o, T_0=7),
    "LinearLR": lambda m, o: m.LinearLR(o, start_factor=0.1, end_factor=0.9, total_iters=12),
    "ConstantLR": lambda m, o: m.ConstantLR(o, factor=0.25, total_iters=6),
    "PolynomialLR": lambda m, o: m.PolynomialLR(o, total_iters=15, power=2.0),
    "LambdaLR": lambda m, o: m.LambdaLR(o, lr_lambda=lambda e: 0.97**e + 0.01 * (e % 4)),
    "LambdaLR-per-group": lambda m, o: m.LambdaLR(o, lr_lambda=[lambda e: 1 / (e + 1), lambda e: 0.9**e]),
    "MultiplicativeLR": lambda m, o: m.MultiplicativeLR(o, lr_lambda=lambda e: 0.95),
    "OneCycleLR-cos": lambda m, o: m.OneCycleLR(o, max_lr=[0.5, 1.0], total_steps=STEPS + 1),
    "OneCycleLR-linear-3phase": lambda m, o: m.OneCycleLR(
        o, max_lr=0.3, epochs=6, steps_per_epoch=7, anneal_strategy="linear", three_phase=True, pct_start=0.25
    ),
    "OneCycleLR-no-momentum": lambda m, o: m.OneCycleLR(o, max_lr=0.2, total_steps=50, cycle_momentum=False),
    "SequentialLR": lambda m, o: m.SequentialLR(
        o, [m.LinearLR(o, start_factor=0.01, total_iters=5), m.CosineAnnealingLR(o, T_max=20)], milestones=[5]
    ),
    "SequentialLR-3": lambda m, o: m.SequentialLR(
        o,
        [m.ConstantLR(o, factor=0.5, total_iters=3), m.ExponentialLR(o, gamma=0.9), m.StepLR(o, step_size=4, gamma=0.5)],
        milestones=[4, 15],
    ),
    "ChainedScheduler": lambda m, o: m.ChainedScheduler(
        [m.ConstantLR(o, factor=0.1, total_iters=4), m.ExponentialLR(o, gamma=0.9)]
    ),
}


def momenta(opt) -> list:
    return [g["betas"][0] if "betas" in g else g.get("momentum") for g in opt.param_groups]


def run(lib: str, build, kind: str, steps: int, resume_at: int | None = None) -> tuple:
    m = S if lib == "ax" else TS
    opt = make_opt(lib, kind)
    sched = build(m, opt)
    lrs, moms = [list(sched.get_last_lr())], [momenta(opt)]
    for step in range(steps):
        opt.step()
        sched.step()
        if resume_at is not None and step == resume_at:
            # checkpoint, then restore into a fresh optimizer and scheduler
            saved = pickle.dumps({"opt": opt.state_dict(), "sched": sched.state_dict()})
            opt = make_opt(lib, kind)
            sched = build(m, opt)
            ckpt = pickle.loads(saved)
            sched.load_state_dict(ckpt["sched"])
            opt.load_state_dict(ckpt["opt"])
        lrs.append(list(sched.get_last_lr()))
        assert lrs[-1] == [g["lr"] for g in opt.param_groups]
        moms.append(momenta(opt))
    return lrs, moms


PICKLABLE = {"LambdaLR", "LambdaLR-per-group", "MultiplicativeLR"}  # lambdas do not pickle


@pytest.mark.parametrize("kind", ["sgd", "adam"])
@pytest.mark.parametrize("name", list(CASES))
def test_matches_torch(name, kind):
    build = CASES[name]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = run("torch", build, kind, STEPS)
    got = run("ax", build, kind, STEPS)
    np.testing.assert_allclose(np.array(got[0]), np.array(expected[0]), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(np.array(got[1], dtype=float), np.array(expected[1], dtype=float), rtol=1e-12)


@pytest.mark.parametrize("name", [n for n in CASES if n not in PICKLABLE])
def test_state_dict_round_trip_mid_run(name):
    build = CASES[name]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = run("torch", build, "adam", STEPS)
    got = run("ax", build, "adam", STEPS, resume_at=17)
    np.testing.assert_allclose(np.array(got[0]), np.array(expected[0]), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(np.array(got[1], dtype=float), np.array(expected[1], dtype=float), rtol=1e-12)


def test_lambda_state_dict_keeps_callable_objects():
    class Decay:
        def __init__(self, rate):
            self.rate = rate

        def __call__(self, epoch):
            return self.rate**epoch

    opt = make_opt("ax")
    sched = S.LambdaLR(opt, [Decay(0.5), lambda e: 1.0])
    sd = sched.state_dict()
    assert sd["lr_lambdas"] == [{"rate": 0.5}, None]
    sched2 = S.LambdaLR(make_opt("ax"), [Decay(0.9), lambda e: 1.0])
    sched2.load_state_dict(copy.deepcopy(sd))
    assert sched2.lr_lambdas[0].rate == 0.5 and "lr_lambdas" in sd


def test_warm_restarts_fractional_epochs():
    lrs = {}
    for lib, m in (("ax", S), ("torch", TS)):
        opt = make_opt(lib)
        sched = m.CosineAnnealingWarmRestarts(opt, T_0=3, T_mult=2, eta_min=0.001)
        seq = []
        for epoch in range(12):
            for i in range(4):
                opt.step()
                sched.step(epoch + i / 4)
                seq.append(sched.get_last_lr())
        lrs[lib] = seq
    np.testing.assert_allclose(lrs["ax"], lrs["torch"], rtol=1e-12)


def test_step_with_epoch_uses_closed_form_and_warns():
    for lib, m in (("ax", S), ("torch", TS)):
        opt = make_opt(lib)
        sched = m.CosineAnnealingLR(opt, T_max=10)
        opt.step()
        with pytest.warns(UserWarning, match="epoch parameter"):
            sched.step(7)
        if lib == "ax":
            got = sched.get_last_lr()
        else:
            want = sched.get_last_lr()
    assert got == pytest.approx(want, rel=1e-14)
    assert got[0] == pytest.approx(0.05 * (1 + math.cos(math.pi * 0.7)), rel=1e-14)


METRICS = [1.0, 0.9, 0.95, 0.95, 0.96, 0.97, 0.89, 0.9, 0.9, 0.91, 0.92, 0.93, 0.94, 0.88, 0.88, 0.88, 0.88,
           0.88, 0.88, 0.88, 0.88, 0.88, 0.88, 0.87999, 0.88, 0.88, 0.88, 0.88, 0.88, 0.88, 0.88, 0.88, 0.88,
           0.88, 0.88, 0.88, 0.88, 0.88, 0.88, 0.88]  # fmt: skip


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(),
        dict(patience=2),
        dict(mode="max", patience=1, factor=0.5),
        dict(patience=1, threshold=0.05, threshold_mode="abs", cooldown=2),
        dict(patience=0, factor=0.5, min_lr=[0.02, 0.05]),
        dict(patience=1, factor=0.3, min_lr=0.01, eps=1e-3),
    ],
)
def test_reduce_on_plateau_matches_torch(kwargs):
    seqs = {}
    for lib, m in (("ax", S), ("torch", TS)):
        opt = make_opt(lib)
        sched = m.ReduceLROnPlateau(opt, **kwargs)
        seq = []
        for i, metric in enumerate(METRICS):
            if i == 20 and lib == "ax":  # round trip mid-run
                saved = pickle.loads(pickle.dumps((opt.state_dict(), sched.state_dict())))
                opt = make_opt(lib)
                sched = m.ReduceLROnPlateau(opt, **kwargs)
                opt.load_state_dict(saved[0])
                sched.load_state_dict(saved[1])
            sched.step(metric if lib == "torch" or i % 2 else ax.tensor(metric, dtype=ax.float64))
            seq.append((sched.get_last_lr(), sched.num_bad_epochs, sched.cooldown_counter, sched.best))
        seqs[lib] = seq
    assert seqs["ax"] == seqs["torch"]


def test_scheduler_before_optimizer_step_warns():
    opt = make_opt("ax")
    sched = S.StepLR(opt, step_size=2)
    with pytest.warns(UserWarning, match="before `optimizer.step\\(\\)`"):
        sched.step()
    opt2 = make_opt("ax")
    sched2 = S.StepLR(opt2, step_size=2)
    opt2.step()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sched2.step()


def test_get_lr_outside_step_warns():
    sched = S.ExponentialLR(make_opt("ax"), gamma=0.5)
    with pytest.warns(UserWarning, match="get_last_lr"):
        sched.get_lr()


def test_errors():
    opt = make_opt("ax")
    with pytest.raises(TypeError, match="is not an Optimizer"):
        S.StepLR(object(), step_size=1)
    with pytest.raises(KeyError, match="initial_lr"):
        S.StepLR(make_opt("ax"), step_size=2, last_epoch=3)
    with pytest.raises(ValueError, match="Expected 2 lr_lambdas, but got 1"):
        S.LambdaLR(opt, [lambda e: 1.0])
    with pytest.raises(ValueError, match="Factor should be < 1.0, got 1.5"):
        S.ReduceLROnPlateau(opt, factor=1.5)
    with pytest.raises(ValueError, match="mode 'middle' is unknown"):
        S.ReduceLROnPlateau(opt, mode="middle")
    with pytest.raises(ValueError, match="expected 2 min_lrs, got 3"):
        S.ReduceLROnPlateau(opt, min_lr=[0, 0, 0])
    with pytest.raises(ValueError, match="total_steps OR"):
        S.OneCycleLR(opt, max_lr=0.1)
    with pytest.raises(ValueError, match="max_lr must have the same length"):
        S.OneCycleLR(opt, max_lr=[0.1, 0.2, 0.3], total_steps=10)
    with pytest.raises(ValueError, match="momentum or beta1"):
        S.OneCycleLR(optim.Adagrad([nn.Parameter(ax.zeros(1))]), max_lr=0.1, total_steps=10)
    with pytest.raises(ValueError, match="Expected positive integer T_0, but got 0"):
        S.CosineAnnealingWarmRestarts(opt, T_0=0)
    with pytest.raises(ValueError, match="one more than the number of milestone"):
        S.SequentialLR(opt, [S.ConstantLR(opt)], milestones=[3])
    with pytest.raises(ValueError, match="does not support `ReduceLROnPlateau`"):
        S.SequentialLR(opt, [S.ConstantLR(opt), S.ReduceLROnPlateau(opt)], milestones=[3])
    other = make_opt("ax")
    with pytest.raises(ValueError, match="same optimizer"):
        S.ChainedScheduler([S.ConstantLR(opt), S.ExponentialLR(other, 0.9)])
    opt3 = make_opt("ax")
    one = S.OneCycleLR(opt3, max_lr=0.1, total_steps=3)
    opt3.step()
    for _ in range(3):
        one.step()
    with pytest.raises(ValueError, match="Tried to step 4 times"):
        one.step()


def test_tensor_lr_is_filled_in_place():
    p = nn.Parameter(ax.zeros(1))
    lr = ax.tensor(0.1)
    opt = optim.SGD([p], lr=lr)
    sched = S.ExponentialLR(opt, gamma=0.5)
    opt.step()
    sched.step()
    assert opt.param_groups[0]["lr"] is lr
    assert float(lr) == pytest.approx(0.05)
    assert float(sched.get_last_lr()[0]) == pytest.approx(0.05)
