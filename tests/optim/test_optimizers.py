"""Optimizers against PyTorch (SGD, Adam, AdamW, Adagrad, RMSprop) and against NumPy
references (LAMB, Lion): the same small model, the same data, 25 steps, parameters
compared after every step; state dicts round-tripped mid-run; the Optimizer base."""

from __future__ import annotations

import copy
import pickle

import numpy as np
import pytest
from helpers import torch

import axonml as ax
from axonml import nn, optim
from axonml.errors import AutogradError, StateDictError

SHAPES = {"w1": (4, 6), "b1": (6,), "w2": (6, 3), "b2": (3,)}
STEPS = 25


def init_params(seed: int = 0, dtype=np.float32) -> dict:
    rng = np.random.default_rng(seed)
    return {k: (rng.standard_normal(s) * 0.5).astype(dtype) for k, s in SHAPES.items()}


def batch(step: int, dtype=np.float32) -> tuple:
    rng = np.random.default_rng(1000 + step)
    return rng.standard_normal((8, 4)).astype(dtype), rng.standard_normal((8, 3)).astype(dtype)


def loss_fn(P: dict, x, y):
    h = x @ P["w1"] + P["b1"]
    out = (h * h) @ P["w2"] + P["b2"]
    return ((out - y) ** 2).mean()


def groups_of(P: dict, split: bool, lr: float):
    if not split:
        return list(P.values())
    return [{"params": [P["w1"], P["b1"]]}, {"params": [P["w2"], P["b2"]], "lr": lr * 0.5}]


def run_ax(cls, kwargs, init, steps, split=False, start=0, opt_state=None, dtype=np.float32, closure=False):
    P = {k: nn.Parameter(ax.tensor(v)) for k, v in init.items()}
    opt = cls(groups_of(P, split, kwargs.get("lr", 1e-3)), **kwargs)
    if opt_state is not None:
        opt.load_state_dict(opt_state)
    traj, losses = [], []
    for s in range(start, start + steps):
        x, y = (ax.tensor(a) for a in batch(s, dtype))
        if closure:

            def clo():
                opt.zero_grad()
                loss = loss_fn(P, x, y)
                loss.backward()
                return loss

            losses.append(float(opt.step(clo)))
        else:
            opt.zero_grad()
            loss_fn(P, x, y).backward()
            opt.step()
        traj.append({k: p.detach().numpy().copy() for k, p in P.items()})
    return traj, opt, losses


def run_torch(cls, kwargs, init, steps, split=False, dtype=np.float32):
    P = {k: torch.tensor(v, requires_grad=True) for k, v in init.items()}
    opt = cls(groups_of(P, split, kwargs.get("lr", 1e-3)), **kwargs)
    traj = []
    for s in range(steps):
        x, y = (torch.tensor(a) for a in batch(s, dtype))
        opt.zero_grad()
        loss_fn(P, x, y).backward()
        opt.step()
        traj.append({k: p.detach().numpy().copy() for k, p in P.items()})
    return traj, opt


def assert_traj_close(a, b, rtol=2e-5, atol=2e-6):
    for step, (pa, pb) in enumerate(zip(a, b)):
        for k in pa:
            np.testing.assert_allclose(pa[k], pb[k], rtol=rtol, atol=atol, err_msg=f"step {step}, param {k}")


TORCH_CASES = [
    ("SGD", dict(lr=0.05)),
    ("SGD", dict(lr=0.01, momentum=0.9)),
    ("SGD", dict(lr=0.02, momentum=0.9, dampening=0.5, weight_decay=0.01)),
    ("SGD", dict(lr=0.01, momentum=0.8, nesterov=True, weight_decay=0.01)),
    ("SGD", dict(lr=0.0003, momentum=0.5, maximize=True)),
    ("Adam", dict(lr=0.01)),
    ("Adam", dict(lr=0.01, weight_decay=0.1)),
    ("Adam", dict(lr=0.01, amsgrad=True)),
    ("Adam", dict(lr=0.01, maximize=True, weight_decay=0.05)),
    ("Adam", dict(lr=0.02, betas=(0.8, 0.99), eps=1e-6, amsgrad=True, weight_decay=0.01)),
    ("AdamW", dict(lr=0.01)),
    ("AdamW", dict(lr=0.01, weight_decay=0.1, amsgrad=True)),
    ("AdamW", dict(lr=0.01, maximize=True)),
    ("Adagrad", dict(lr=0.1)),
    ("Adagrad", dict(lr=0.1, lr_decay=0.01, weight_decay=0.01, initial_accumulator_value=0.1)),
    ("Adagrad", dict(lr=0.05, maximize=True, eps=1e-6)),
    ("RMSprop", dict(lr=0.01)),
    ("RMSprop", dict(lr=0.01, centered=True)),
    ("RMSprop", dict(lr=0.01, momentum=0.9)),
    ("RMSprop", dict(lr=0.01, alpha=0.9, centered=True, momentum=0.5, weight_decay=0.01)),
    ("RMSprop", dict(lr=0.005, maximize=True)),
]


def _case_id(case):
    name, kw = case
    return name + "-" + "-".join(f"{k}={v}" for k, v in kw.items())


@pytest.mark.parametrize("split", [False, True], ids=["one-group", "two-groups"])
@pytest.mark.parametrize("case", TORCH_CASES, ids=[_case_id(c) for c in TORCH_CASES])
def test_trajectory_matches_torch(case, split):
    name, kwargs = case
    init = init_params()
    ta, _, _ = run_ax(getattr(optim, name), kwargs, init, STEPS, split)
    tt, _ = run_torch(getattr(torch.optim, name), kwargs, init, STEPS, split)
    assert_traj_close(ta, tt)


@pytest.mark.parametrize("name", ["SGD", "Adam", "AdamW", "Adagrad", "RMSprop"])
def test_trajectory_float64_tight(name):
    kwargs = {"SGD": dict(lr=0.01, momentum=0.8, nesterov=True, weight_decay=0.01),
              "Adam": dict(lr=0.01, amsgrad=True, weight_decay=0.01),
              "AdamW": dict(lr=0.01, weight_decay=0.1),
              "Adagrad": dict(lr=0.1, lr_decay=0.01),
              "RMSprop": dict(lr=0.01, centered=True, momentum=0.9)}[name]  # fmt: skip
    init = init_params(1, np.float64)
    ta, _, _ = run_ax(getattr(optim, name), kwargs, init, STEPS, dtype=np.float64)
    tt, _ = run_torch(getattr(torch.optim, name), kwargs, init, STEPS, dtype=np.float64)
    assert_traj_close(ta, tt, rtol=1e-11, atol=1e-13)
    assert ta[-1]["w1"].dtype == np.float64


STATE_CASES = [
    ("SGD", dict(lr=0.01, momentum=0.9, weight_decay=0.01)),
    ("Adam", dict(lr=0.01, amsgrad=True)),
    ("AdamW", dict(lr=0.01, weight_decay=0.1)),
    ("Adagrad", dict(lr=0.1, lr_decay=0.01)),
    ("RMSprop", dict(lr=0.01, centered=True, momentum=0.9)),
    ("LAMB", dict(lr=0.01, weight_decay=0.01)),
    ("Lion", dict(lr=0.001, weight_decay=0.1)),
]


@pytest.mark.parametrize("case", STATE_CASES, ids=[c[0] for c in STATE_CASES])
def test_state_dict_round_trip_resumes_exactly(case):
    name, kwargs = case
    cls = getattr(optim, name)
    init = init_params(2)
    full, _, _ = run_ax(cls, kwargs, init, STEPS, split=True)
    first, opt, _ = run_ax(cls, kwargs, init, 10, split=True)
    saved = pickle.loads(pickle.dumps(opt.state_dict()))  # a checkpoint on disk
    # the fresh optimizer gets other hyperparameters: the loaded groups must win
    other = dict(kwargs, lr=kwargs["lr"] * 7)
    rest, opt2, _ = run_ax(cls, other, first[-1], STEPS - 10, split=True, start=10, opt_state=saved)
    for step, (a, b) in enumerate(zip(full[10:], rest)):
        for k in a:
            np.testing.assert_array_equal(a[k], b[k], err_msg=f"step {step + 10}, param {k}")
    assert opt2.param_groups[0]["lr"] == kwargs["lr"]
    assert opt2.param_groups[1]["lr"] == kwargs["lr"] * 0.5


@pytest.mark.parametrize("case", STATE_CASES[:5], ids=[c[0] for c in STATE_CASES[:5]])
def test_state_dict_format_and_values_match_torch(case):
    name, kwargs = case
    init = init_params(3)
    _, opt, _ = run_ax(getattr(optim, name), kwargs, init, 10, split=True)
    _, topt = run_torch(getattr(torch.optim, name), kwargs, init, 10, split=True)
    sd, tsd = opt.state_dict(), topt.state_dict()
    assert sorted(sd["state"]) == sorted(tsd["state"])
    for i, tstate in tsd["state"].items():
        assert set(sd["state"][i]) == set(tstate)
        for key, tv in tstate.items():
            v = sd["state"][i][key]
            assert isinstance(v, ax.Tensor)
            assert v.dtype.name == str(tv.dtype).replace("torch.", "")
            np.testing.assert_allclose(v.numpy(), tv.numpy(), rtol=2e-5, atol=1e-7, err_msg=f"{i}/{key}")
    for g, tg in zip(sd["param_groups"], tsd["param_groups"]):
        assert g["params"] == tg["params"]
        for key in g:
            assert key in tg, key
            if key != "params":
                assert g[key] == tg[key], key


def test_load_state_dict_saved_by_torch():
    """A PyTorch Adam state dict, tensors converted through NumPy, resumes in AxonML."""
    kwargs = dict(lr=0.01, amsgrad=True, weight_decay=0.01)
    init = init_params(4)
    tfull, _ = run_torch(torch.optim.Adam, kwargs, init, 20)
    tfirst, topt = run_torch(torch.optim.Adam, kwargs, init, 10)
    tsd = topt.state_dict()
    sd = {
        "state": {i: {k: ax.tensor(v.numpy()) for k, v in st.items()} for i, st in tsd["state"].items()},
        "param_groups": copy.deepcopy(tsd["param_groups"]),
    }
    rest, _, _ = run_ax(optim.Adam, kwargs, tfirst[-1], 10, start=10, opt_state=sd)
    assert_traj_close(rest, tfull[10:])


def test_closure_returns_loss_and_matches_torch():
    init = init_params(5)
    ta, _, losses = run_ax(optim.Adam, dict(lr=0.01), init, 5, closure=True)
    tt, _ = run_torch(torch.optim.Adam, dict(lr=0.01), init, 5)
    assert_traj_close(ta, tt)
    x, y = batch(0)
    P = {k: torch.tensor(v) for k, v in init.items()}
    assert losses[0] == pytest.approx(float(loss_fn(P, torch.tensor(x), torch.tensor(y))), rel=1e-5)


def test_adam_decoupled_equals_adamw():
    init = init_params(6)
    a, _, _ = run_ax(optim.Adam, dict(lr=0.01, weight_decay=0.1, decoupled_weight_decay=True), init, 10)
    b, _, _ = run_ax(optim.AdamW, dict(lr=0.01, weight_decay=0.1), init, 10)
    assert_traj_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize("dtype, eps", [("float16", 2.0**-10), ("bfloat16", 2.0**-7)])
@pytest.mark.parametrize("case", STATE_CASES[:5], ids=[c[0] for c in STATE_CASES[:5]])
def test_low_precision_params(case, dtype, eps):
    """Updates run in the parameters' dtype and stay within a few ulps of PyTorch's
    (which rounds once per op where we round per ufunc)."""
    name, kwargs = case
    rng = np.random.default_rng(9)
    w = rng.standard_normal((5, 3)).astype(np.float32)
    pa = nn.Parameter(ax.tensor(w).to(dtype))
    pt = torch.tensor(w).to(getattr(torch, dtype)).requires_grad_()
    oa, ot = getattr(optim, name)([pa], **kwargs), getattr(torch.optim, name)([pt], **kwargs)
    for _ in range(10):
        g = rng.standard_normal((5, 3)).astype(np.float32)
        pa.grad, pt.grad = ax.tensor(g).to(dtype), torch.tensor(g).to(getattr(torch, dtype))
        oa.step()
        ot.step()
    assert pa.dtype.name == dtype and all(v.dtype.name == dtype for k, v in oa.state[pa].items() if k != "step")
    a, t = pa.detach().float().numpy(), pt.detach().float().numpy()
    np.testing.assert_allclose(a, t, rtol=0, atol=4 * eps * np.abs(t).max())


# -- LAMB and Lion against NumPy references (float64) -------------------------------------
def lamb_ref(p, g, st, lr, b1, b2, eps, wd, bias_correction=True):
    st["t"] = st.get("t", 0) + 1
    st["m"] = b1 * st.get("m", 0) + (1 - b1) * g
    st["v"] = b2 * st.get("v", 0) + (1 - b2) * g * g
    m_hat = st["m"] / (1 - b1 ** st["t"]) if bias_correction else st["m"]
    v_hat = st["v"] / (1 - b2 ** st["t"]) if bias_correction else st["v"]
    u = m_hat / (np.sqrt(v_hat) + eps) + wd * p
    wn, un = np.linalg.norm(p), np.linalg.norm(u)
    trust = wn / un if wn > 0 and un > 0 else 1.0
    return p - lr * trust * u


def lion_ref(p, g, st, lr, b1, b2, wd):
    m = st.get("m", np.zeros_like(p))
    c = b1 * m + (1 - b1) * g
    p = p * (1 - lr * wd) - lr * np.sign(c)
    st["m"] = b2 * m + (1 - b2) * g
    return p


def run_ref(update, kwargs, init, steps, maximize=False):
    P = {k: torch.tensor(v, requires_grad=True) for k, v in init.items()}
    states = {k: {} for k in P}
    traj = []
    for s in range(steps):
        x, y = (torch.tensor(a) for a in batch(s, np.float64))
        for p in P.values():
            p.grad = None
        loss_fn(P, x, y).backward()
        with torch.no_grad():
            for k, p in P.items():
                g = p.grad.numpy() * (-1 if maximize else 1)
                p.copy_(torch.from_numpy(update(p.numpy().copy(), g, states[k], **kwargs)))
        traj.append({k: p.detach().numpy().copy() for k, p in P.items()})
    return traj


LAMB_CASES = [
    dict(lr=0.01, b1=0.9, b2=0.999, eps=1e-6, wd=0.0),
    dict(lr=0.01, b1=0.9, b2=0.999, eps=1e-6, wd=0.05),
    dict(lr=0.02, b1=0.8, b2=0.99, eps=1e-8, wd=0.01, bias_correction=False),
]


@pytest.mark.parametrize("maximize", [False, True])
@pytest.mark.parametrize("ref_kw", LAMB_CASES)
def test_lamb_matches_reference(ref_kw, maximize):
    init = init_params(7, np.float64)
    kw = dict(lr=ref_kw["lr"], betas=(ref_kw["b1"], ref_kw["b2"]), eps=ref_kw["eps"], weight_decay=ref_kw["wd"],
              bias_correction=ref_kw.get("bias_correction", True), maximize=maximize)  # fmt: skip
    ta, _, _ = run_ax(optim.LAMB, kw, init, STEPS, dtype=np.float64)
    tr = run_ref(lamb_ref, ref_kw, init, STEPS, maximize)
    assert_traj_close(ta, tr, rtol=1e-10, atol=1e-12)


def test_lamb_trust_ratio_is_one_for_zero_params():
    p = nn.Parameter(ax.zeros(3))
    p.grad = ax.tensor([1.0, -2.0, 0.5])
    opt = optim.LAMB([p], lr=0.1)
    opt.step()
    # first step: m_hat = g, v_hat = g^2 -> u = g / (|g| + eps) ~ sign(g); trust 1 (||p|| = 0)
    np.testing.assert_allclose(p.detach().numpy(), -0.1 * np.sign([1.0, -2.0, 0.5]), rtol=1e-5)


@pytest.mark.parametrize("maximize", [False, True])
@pytest.mark.parametrize("ref_kw", [dict(lr=1e-3, b1=0.9, b2=0.99, wd=0.0), dict(lr=3e-3, b1=0.95, b2=0.98, wd=0.5)])
def test_lion_matches_reference(ref_kw, maximize):
    init = init_params(8, np.float64)
    kw = dict(lr=ref_kw["lr"], betas=(ref_kw["b1"], ref_kw["b2"]), weight_decay=ref_kw["wd"], maximize=maximize)
    ta, _, _ = run_ax(optim.Lion, kw, init, STEPS, dtype=np.float64)
    tr = run_ref(lion_ref, ref_kw, init, STEPS, maximize)
    assert_traj_close(ta, tr, rtol=1e-10, atol=1e-12)


# -- validation --------------------------------------------------------------------------------
def _p():
    return [nn.Parameter(ax.zeros(2))]


@pytest.mark.parametrize(
    "cls, kwargs, match",
    [
        (optim.SGD, dict(lr=-1), "Invalid learning rate: -1"),
        (optim.SGD, dict(lr=0.1, momentum=-0.5), "Invalid momentum value: -0.5"),
        (optim.SGD, dict(lr=0.1, weight_decay=-1e-3), "Invalid weight_decay value: -0.001"),
        (optim.SGD, dict(lr=0.1, nesterov=True), "Nesterov momentum requires a momentum and zero dampening"),
        (optim.SGD, dict(lr=0.1, momentum=0.9, dampening=0.1, nesterov=True), "dampening=0.1"),
        (optim.Adam, dict(lr=-0.01), "Invalid learning rate: -0.01"),
        (optim.Adam, dict(eps=-1.0), "Invalid epsilon value: -1.0"),
        (optim.Adam, dict(betas=(1.0, 0.999)), "Invalid beta parameter at index 0: 1.0"),
        (optim.AdamW, dict(betas=(0.9, -0.1)), "Invalid beta parameter at index 1: -0.1"),
        (optim.AdamW, dict(weight_decay=-1), "Invalid weight_decay value: -1"),
        (optim.Adam, dict(betas=(0.9,)), "betas must be a pair"),
        (optim.Adagrad, dict(lr_decay=-1), "Invalid lr_decay value: -1"),
        (optim.Adagrad, dict(initial_accumulator_value=-2), "Invalid initial_accumulator_value value: -2"),
        (optim.RMSprop, dict(alpha=-0.1), "Invalid alpha value: -0.1"),
        (optim.RMSprop, dict(momentum=-1), "Invalid momentum value: -1"),
        (optim.LAMB, dict(lr=-3), "Invalid learning rate: -3"),
        (optim.Lion, dict(betas=(0.9, 1.5)), "Invalid beta parameter at index 1: 1.5"),
    ],
)
def test_invalid_hyperparameters(cls, kwargs, match):
    with pytest.raises(ValueError, match=match):
        cls(_p(), **kwargs)


# -- the Optimizer base -----------------------------------------------------------------------------
def test_param_groups_defaults_and_add_param_group():
    a, b, c = (nn.Parameter(ax.zeros(2)) for _ in range(3))
    opt = optim.SGD([{"params": [a]}, {"params": b, "lr": 0.5, "momentum": 0.9}], lr=0.1)
    assert opt.param_groups[0]["lr"] == 0.1 and opt.param_groups[0]["momentum"] == 0
    assert opt.param_groups[1]["lr"] == 0.5 and opt.param_groups[1]["momentum"] == 0.9
    assert opt.param_groups[1]["params"][0] is b
    opt.add_param_group({"params": [c], "weight_decay": 0.1})
    assert opt.param_groups[2]["lr"] == 0.1 and opt.param_groups[2]["weight_decay"] == 0.1
    with pytest.raises(ValueError, match="more than one parameter group.*already in group 0"):
        opt.add_param_group({"params": [a]})
    with pytest.raises(ValueError, match="more than one parameter group"):
        optim.SGD([{"params": [a, b]}, {"params": [b]}], lr=0.1)


def test_bad_params():
    p = nn.Parameter(ax.zeros(2))
    with pytest.raises(ValueError, match="empty parameter list"):
        optim.SGD([], lr=0.1)
    with pytest.raises(TypeError, match="wrap it in a list"):
        optim.SGD(p, lr=0.1)
    with pytest.raises(TypeError, match="ordered collections"):
        optim.SGD([{"params": {p}}], lr=0.1)
    with pytest.raises(TypeError, match="can only optimize Tensors.*int"):
        optim.SGD([p, 3], lr=0.1)
    with pytest.raises(ValueError, match="non-leaf"):
        optim.SGD([p * 2], lr=0.1)
    with pytest.raises(ValueError, match="required optimization parameter lr"):
        optim.SGD([p], lr=optim.required)


def test_named_parameters_are_recorded():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(ax.ones(2, 2))
            self.b = nn.Parameter(ax.zeros(2))

    opt = optim.Adam(Net().named_parameters(), lr=0.1)
    sd = opt.state_dict()
    assert sd["param_groups"][0]["param_names"] == ["w", "b"]
    assert sd["param_groups"][0]["params"] == [0, 1]


def test_zero_grad():
    p = nn.Parameter(ax.ones(3))
    (p * p).sum().backward()
    opt = optim.SGD([p], lr=0.1)
    g = p.grad
    v = g._version
    opt.zero_grad(set_to_none=False)
    assert p.grad is g and np.all(g.numpy() == 0) and g._version == v + 1
    opt.zero_grad()
    assert p.grad is None


def test_step_skips_params_without_grad_and_bumps_version():
    a, b = nn.Parameter(ax.ones(2)), nn.Parameter(ax.ones(2))
    opt = optim.Adam([a, b], lr=0.1)
    (a * a).sum().backward()
    va, vb = a._version, b._version
    opt.step()
    assert a._version == va + 1 and b._version == vb
    assert b not in opt.state and b.detach().numpy().tolist() == [1.0, 1.0]
    assert float(opt.state[a]["step"]) == 1.0


def test_in_place_update_invalidates_saved_graph():
    p = nn.Parameter(ax.tensor([1.0, 2.0]))
    y = (p * p).sum()
    p.grad = ax.ones(2)
    optim.SGD([p], lr=0.1).step()
    with pytest.raises(AutogradError, match="modified by an inplace operation"):
        y.backward()


def test_grad_shape_mismatch_is_an_error():
    p = nn.Parameter(ax.zeros(2, 2))
    p.grad = ax.zeros(4)
    with pytest.raises(ValueError, match=r"gradient of a parameter has shape \(4,\).*\(2, 2\)"):
        optim.SGD([p], lr=0.1).step()


def test_load_state_dict_validation():
    a, b = nn.Parameter(ax.zeros(2)), nn.Parameter(ax.zeros(3))
    opt = optim.Adam([a, b], lr=0.1)
    a.grad, b.grad = ax.ones(2), ax.ones(3)
    opt.step()
    sd = opt.state_dict()
    with pytest.raises(ValueError, match="different number of parameter groups: 1, but Adam has 2"):
        optim.Adam([{"params": [a]}, {"params": [b]}], lr=0.1).load_state_dict(sd)
    with pytest.raises(ValueError, match="saved group 0 has 2 parameters, the optimizer's has 1"):
        optim.Adam([a], lr=0.1).load_state_dict(sd)
    with pytest.raises(StateDictError, match=r"'exp_avg' of parameter 0 .* shape \(2,\), but the parameter has shape \(3,\)"):
        optim.Adam([b, a], lr=0.1).load_state_dict(sd)
    with pytest.raises(StateDictError, match="expects a dict with 'state' and 'param_groups'"):
        opt.load_state_dict({"state": {}})


def test_load_state_dict_copies_and_casts():
    a = nn.Parameter(ax.zeros(2))
    a.grad = ax.ones(2)
    opt = optim.Adam([a], lr=0.1)
    opt.step()
    sd = opt.state_dict()
    a64 = nn.Parameter(ax.zeros(2, dtype=ax.float64))
    opt2 = optim.Adam([a64], lr=0.1)
    opt2.load_state_dict(sd)
    st = opt2.state[a64]
    assert st["exp_avg"].dtype == ax.float64 and st["step"].dtype == ax.float32
    assert st["exp_avg"]._data is not sd["state"][0]["exp_avg"]._data
    st["exp_avg"]._data[...] = 5
    assert sd["state"][0]["exp_avg"].numpy().tolist() != [5.0, 5.0]


def test_step_hooks():
    p = nn.Parameter(ax.ones(2))
    p.grad = ax.ones(2)
    opt = optim.SGD([p], lr=0.1)
    calls = []
    h1 = opt.register_step_pre_hook(lambda o, args, kw: calls.append(("pre", float(p.detach().numpy()[0]))))
    opt.register_step_post_hook(lambda o, args, kw: calls.append(("post", round(float(p.detach().numpy()[0]), 6))))
    opt.step()
    assert calls == [("pre", 1.0), ("post", 0.9)]
    h1.remove()
    opt.step()
    assert calls[-1] == ("post", 0.8) and len(calls) == 3


def test_repr_lists_groups():
    opt = optim.SGD([nn.Parameter(ax.zeros(1))], lr=0.1, momentum=0.9)
    text = repr(opt)
    assert text.startswith("SGD (") and "Parameter Group 0" in text and "    momentum: 0.9" in text
