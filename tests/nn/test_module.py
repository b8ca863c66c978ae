"""Module behaviour with the standard layers: state-dict names and loading against PyTorch,
containers, modes, dtype moves, apply, zero_grad, hooks, requires_grad_, num_parameters."""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import pytest

import axonml as ax
from axonml import nn
from axonml.errors import StateDictError

torch = pytest.importorskip("torch")
tnn = torch.nn


def build(lib):
    """The same nested model in axonml (lib=nn) or torch (lib=tnn)."""
    m = lib.Sequential(
        lib.Linear(4, 6),
        lib.LayerNorm(6),
        lib.BatchNorm1d(6),
        lib.Sequential(OrderedDict([("fc", lib.Linear(6, 3, bias=False)), ("act", lib.ReLU())])),
    )
    m.blocks = lib.ModuleList([lib.Linear(3, 3), lib.Embedding(5, 3, padding_idx=0)])
    m.heads = lib.ModuleDict({"cls": lib.Linear(3, 2), "norm": lib.GroupNorm(1, 3)})
    return m


def torch_sd_as_numpy(tm) -> dict:
    return {k: v.detach().numpy().copy() for k, v in tm.state_dict().items()}


def test_state_dict_keys_and_shapes_equal_torch():
    am, tm = build(nn), build(tnn)
    asd, tsd = am.state_dict(), tm.state_dict()
    assert list(asd) == list(tsd)
    for k in tsd:
        assert tuple(asd[k].shape) == tuple(tsd[k].shape), k
        assert asd[k].dtype.name == str(tsd[k].dtype).split(".")[-1], k
    assert [n for n, _ in am.named_parameters()] == [n for n, _ in tm.named_parameters()]
    assert [n for n, _ in am.named_buffers()] == [n for n, _ in tm.named_buffers()]
    assert [n for n, _ in am.named_modules()] == [n for n, _ in tm.named_modules()]


def test_load_state_dict_from_torch_numpy_and_back():
    am, tm = build(nn), build(tnn)
    with torch.no_grad():
        for p in tm.parameters():
            p.normal_()
        tm[2].running_mean.normal_()
        tm[2].num_batches_tracked += 7
    res = am.load_state_dict(torch_sd_as_numpy(tm))
    assert res.missing_keys == [] and res.unexpected_keys == []
    for k, v in tm.state_dict().items():
        np.testing.assert_array_equal(am.state_dict()[k].numpy(), v.numpy(), err_msg=k)
    # the parameters are still the same leaf objects, requiring grad
    assert all(isinstance(p, nn.Parameter) and p.requires_grad for p in am.parameters())
    # reverse direction: axonml -> torch
    tm2 = build(tnn)
    tm2.load_state_dict({k: torch.tensor(v.numpy()) for k, v in am.state_dict().items()})
    for k, v in tm.state_dict().items():
        np.testing.assert_array_equal(tm2.state_dict()[k].numpy(), v.numpy(), err_msg=k)


def test_load_state_dict_strict_reports_and_modifies_nothing():
    am = build(nn)
    before = {k: v.numpy().copy() for k, v in am.state_dict().items()}
    sd = {k: np.ones(v.shape, v.numpy().dtype) for k, v in am.state_dict().items()}
    del sd["0.weight"]
    sd["extra.weight"] = np.zeros(2, np.float32)
    with pytest.raises(StateDictError, match=r"missing keys: \['0.weight'\].*unexpected keys: \['extra.weight'\]"):
        am.load_state_dict(sd)
    for k, v in am.state_dict().items():
        np.testing.assert_array_equal(v.numpy(), before[k], err_msg=k)
    # non-strict: reports and loads what matches
    res = am.load_state_dict(sd, strict=False)
    assert res.missing_keys == ["0.weight"] and res.unexpected_keys == ["extra.weight"]
    np.testing.assert_array_equal(am[1].weight.detach().numpy(), np.ones(6, np.float32))
    np.testing.assert_array_equal(am[0].weight.detach().numpy(), before["0.weight"])


def test_load_state_dict_shape_mismatch_is_always_an_error():
    am = build(nn)
    before = am[0].bias.detach().numpy().copy()
    sd = {k: v.numpy().copy() for k, v in am.state_dict().items()}
    sd["0.weight"] = np.zeros((6, 5), np.float32)
    sd["0.bias"] = np.full(6, 9.0, np.float32)
    for strict in (True, False):
        with pytest.raises(StateDictError, match=r"size mismatch for 0.weight: checkpoint shape \(6, 5\), model shape \(6, 4\)"):
            am.load_state_dict(sd, strict=strict)
    np.testing.assert_array_equal(am[0].bias.detach().numpy(), before)


def test_train_eval_propagate():
    am = build(nn)
    assert all(m.training for m in am.modules())
    am.eval()
    assert not any(m.training for m in am.modules())
    am[3].train()
    assert am[3].fc.training and not am[0].training
    am.train()
    assert all(m.training for m in am.modules())


def test_to_dtype_keeps_identity_and_integer_buffers():
    am = build(nn)
    params = list(am.parameters())
    am.to(ax.float64)
    assert [id(p) for p in am.parameters()] == [id(p) for p in params]
    assert all(p.dtype is ax.float64 and p.requires_grad for p in am.parameters())
    assert am[2].running_mean.dtype is ax.float64
    assert am[2].num_batches_tracked.dtype is ax.int64
    am.float()
    assert all(p.dtype is ax.float32 for p in am.parameters())
    am.to(dtype=ax.bfloat16)
    assert am[0].weight.dtype is ax.bfloat16


def test_apply_visits_children_first():
    am = build(nn)
    order = []
    am.apply(lambda m: order.append(type(m).__name__))
    tm = build(tnn)
    torder = []
    tm.apply(lambda m: torder.append(type(m).__name__))
    assert order == torder

    def fill(m):
        if isinstance(m, nn.Linear):
            nn.init.constant_(m.weight, 0.5)

    am.apply(fill)
    assert all(np.all(m.weight.detach().numpy() == 0.5) for m in am.modules() if isinstance(m, nn.Linear))


def _loss(am):
    x = ax.randn(3, 4)
    out = am[0](x)
    return (out * out).sum() + (am.heads["cls"].weight * 2).sum()


def test_zero_grad():
    am = build(nn)
    (am[0].weight * 3).sum().backward()
    assert am[0].weight.grad is not None
    am.zero_grad(set_to_none=False)
    np.testing.assert_array_equal(am[0].weight.grad.numpy(), np.zeros((6, 4), np.float32))
    am.zero_grad()
    assert am[0].weight.grad is None


class Double(nn.Module):
    def forward(self, x):
        return x * 2


def test_forward_hooks():
    m = Double()
    calls = []

    def pre(mod, args):
        calls.append("pre")
        return (args[0] + 1,)

    def post(mod, args, out):
        calls.append("post")
        return out * 10

    h1 = m.register_forward_pre_hook(pre)
    h2 = m.register_forward_hook(post)
    out = m(ax.tensor([1.0, 2.0]))
    np.testing.assert_allclose(out.numpy(), [40.0, 60.0])
    assert calls == ["pre", "post"]
    h1.remove()
    h2.remove()
    np.testing.assert_allclose(m(ax.tensor([1.0])).numpy(), [2.0])


def test_requires_grad_and_num_parameters():
    am, tm = build(nn), build(tnn)
    assert am.num_parameters() == sum(p.numel() for p in tm.parameters())
    am.requires_grad_(False)
    assert not any(p.requires_grad for p in am.parameters())
    assert am.num_parameters(trainable_only=True) == 0
    am[0].requires_grad_()
    assert am.num_parameters(trainable_only=True) == 4 * 6 + 6
    # a shared parameter counts once, and appears once in parameters()/state_dict keys twice
    shared = nn.Linear(3, 3)
    seq = nn.Sequential(shared, shared)
    assert seq.num_parameters() == 12
    assert len(list(seq.parameters())) == 2
    tshared = tnn.Linear(3, 3)
    assert list(seq.state_dict()) == list(tnn.Sequential(tshared, tshared).state_dict())


def test_repr_matches_torch():
    am, tm = build(nn), build(tnn)
    assert repr(am) == repr(tm)
    for a, t in [
        (nn.Conv2d(3, 4, 3, padding="same", padding_mode="reflect"), tnn.Conv2d(3, 4, 3, padding="same", padding_mode="reflect")),
        (nn.Conv1d(3, 4, 3, padding=1, bias=False, dilation=2, groups=1), tnn.Conv1d(3, 4, 3, padding=1, bias=False, dilation=2)),
        (nn.MaxPool2d(2), tnn.MaxPool2d(2)), (nn.AvgPool1d(2), tnn.AvgPool1d(2)), (nn.AvgPool2d(3, 1), tnn.AvgPool2d(3, 1)),
        (nn.AdaptiveAvgPool2d((2, 3)), tnn.AdaptiveAvgPool2d((2, 3))), (nn.Dropout(0.2), tnn.Dropout(0.2)),
        (nn.GELU("tanh"), tnn.GELU("tanh")), (nn.LeakyReLU(0.2, True), tnn.LeakyReLU(0.2, True)), (nn.ReLU(True), tnn.ReLU(True)),
        (nn.Softmax(-1), tnn.Softmax(-1)), (nn.Hardtanh(-2.0, 2.0), tnn.Hardtanh(-2.0, 2.0)), (nn.ReLU6(), tnn.ReLU6()),
        (nn.ELU(0.5), tnn.ELU(0.5)), (nn.Softplus(2.0), tnn.Softplus(2.0)), (nn.PReLU(3), tnn.PReLU(3)),
        (nn.Flatten(0), tnn.Flatten(0)), (nn.Unflatten(1, (2, 3)), tnn.Unflatten(1, (2, 3))), (nn.Identity(), tnn.Identity()),
        (nn.Bilinear(2, 3, 4), tnn.Bilinear(2, 3, 4)), (nn.RMSNorm(4), tnn.RMSNorm(4)),
        (nn.LayerNorm(4, bias=False), tnn.LayerNorm(4, bias=False)),
        (nn.BatchNorm2d(3, momentum=None), tnn.BatchNorm2d(3, momentum=None)),
        (nn.GroupNorm(2, 4, affine=False), tnn.GroupNorm(2, 4, affine=False)),
        (nn.Embedding(10, 3, max_norm=1.0), tnn.Embedding(10, 3, max_norm=1.0)), (nn.CrossEntropyLoss(), tnn.CrossEntropyLoss()),
        (nn.Threshold(0.1, 2.0), tnn.Threshold(0.1, 2.0)), (nn.Softshrink(0.3), tnn.Softshrink(0.3)), (nn.GLU(), tnn.GLU()),
    ]:
        assert repr(a) == repr(t)


# -- containers ----------------------------------------------------------------------
def test_sequential_indexing_slicing_and_editing():
    layers = [nn.Linear(2, 2), nn.ReLU(), nn.Linear(2, 3), nn.Tanh()]
    s = nn.Sequential(*layers)
    assert len(s) == 4 and s[0] is layers[0] and s[-1] is layers[3]
    sub = s[1:3]
    assert isinstance(sub, nn.Sequential) and list(sub) == layers[1:3]
    assert list(sub._modules) == ["1", "2"]  # slicing keeps the keys, as torch
    s.append(nn.Identity())
    assert len(s) == 5 and list(s._modules) == ["0", "1", "2", "3", "4"]
    new = nn.Sigmoid()
    s.insert(1, new)
    assert s[1] is new and list(s._modules) == [str(i) for i in range(6)]
    del s[1]
    assert s[1] is layers[1] and list(s._modules) == [str(i) for i in range(5)]
    s[0] = nn.Linear(2, 2, bias=False)
    assert s[0].bias is None
    popped = s.pop(-1)
    assert isinstance(popped, nn.Identity) and len(s) == 4
    with pytest.raises(IndexError, match="index 9 is out of range for a container of length 4"):
        s[9]
    with pytest.raises(TypeError, match="expects a Module"):
        s.insert(0, 3)
    od = nn.Sequential(OrderedDict([("a", nn.Linear(2, 2)), ("b", nn.ReLU())]))
    assert list(od._modules) == ["a", "b"] and od.a is od[0]
    s2 = od + nn.Sequential(nn.Identity())
    assert len(s2) == 3


def test_sequential_state_dict_after_delete_matches_torch():
    tm = tnn.Sequential(tnn.Linear(2, 2), tnn.ReLU(), tnn.Linear(2, 3))
    del tm[1]
    am = nn.Sequential(nn.Linear(2, 2), nn.ReLU(), nn.Linear(2, 3))
    del am[1]
    assert list(am.state_dict()) == list(tm.state_dict())


def test_modulelist_repr_collapses_repeats_like_torch():
    def build(lib):
        inner = lib.ModuleList([lib.Linear(2, 2) for _ in range(3)] + [lib.ReLU(), lib.ReLU(), lib.Tanh()])
        return lib.ModuleList([lib.Sequential(lib.Linear(2, 2), inner) for _ in range(2)] + [lib.Identity()])

    assert repr(build(nn)) == repr(build(tnn))
    assert repr(nn.ModuleList()) == repr(tnn.ModuleList())


def test_modulelist_and_moduledict():
    ml = nn.ModuleList([nn.Linear(2, 2) for _ in range(3)])
    assert len(ml) == 3 and isinstance(ml[1:], nn.ModuleList) and len(ml[1:]) == 2
    ml.append(nn.ReLU())
    ml.insert(0, nn.Tanh())
    assert isinstance(ml[0], nn.Tanh) and list(ml._modules) == [str(i) for i in range(5)]
    ml += [nn.Identity()]
    assert len(ml) == 6
    del ml[0]
    assert isinstance(ml[0], nn.Linear) and list(ml._modules) == [str(i) for i in range(5)]
    assert len(list(ml.parameters())) == 6
    with pytest.raises(NotImplementedError, match="iterate over it"):
        ml(ax.zeros(1))
    md = nn.ModuleDict({"a": nn.Linear(2, 2)})
    md["b"] = nn.ReLU()
    md.update([("c", nn.Tanh())])
    assert list(md.keys()) == ["a", "b", "c"] and "b" in md and len(md) == 3
    assert isinstance(md.pop("b"), nn.ReLU) and "b" not in md
    with pytest.raises(KeyError, match="no key 'zz'"):
        md["zz"]
    with pytest.raises(ValueError, match="should be a"):
        md.update([("x",)])


def test_parameter_list_and_dict():
    pl = nn.ParameterList([nn.Parameter(ax.randn(2)), ax.randn(3)])
    assert len(pl) == 2 and isinstance(pl[1], nn.Parameter) and pl[1].requires_grad
    pl.append(ax.zeros(4))
    assert [tuple(p.shape) for p in pl] == [(2,), (3,), (4,)]
    assert list(pl.state_dict()) == ["0", "1", "2"]
    pd = nn.ParameterDict({"scale": ax.ones(3)})
    pd["shift"] = nn.Parameter(ax.zeros(3))
    assert list(pd.state_dict()) == ["scale", "shift"] and isinstance(pd["scale"], nn.Parameter)
    tpl = tnn.ParameterList([tnn.Parameter(torch.randn(2, 3)), torch.randn(3)])
    apl = nn.ParameterList([nn.Parameter(ax.randn(2, 3)), ax.randn(3)])
    assert repr(apl) == repr(tpl).replace("torch.", "axonml.")
