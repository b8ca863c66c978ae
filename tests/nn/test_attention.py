"""scaled_dot_product_attention and MultiheadAttention against PyTorch."""

import numpy as np
import pytest
from helpers import check_vs_torch, gradcheck
from seq_oracle import compare_modules, rng_array

import axonml as ax
from axonml.errors import DTypeError, ShapeError
from axonml.nn.attention import MultiheadAttention, _masked_softmax, scaled_dot_product_attention

torch = pytest.importorskip("torch")
F = torch.nn.functional

L, S, E = 4, 5, 6


def _bool_mask(shape, seed=1, p=0.6):
    m = np.random.default_rng(seed).random(shape) < p
    m[..., 0] = True  # every query keeps one key unless a test wants otherwise
    return m


# -- scaled_dot_product_attention ------------------------------------------------------------
SDPA_CASES = {
    "plain": {},
    "bool_mask": {"attn_mask": _bool_mask((L, S))},
    "bool_mask_batched": {"attn_mask": _bool_mask((2, 1, L, S), seed=3)},
    "float_mask": {"attn_mask": rng_array(L, S, seed=4)},
    "float_mask_neg_inf": {"attn_mask": np.where(_bool_mask((L, S)), 0.0, -np.inf)},
    "causal": {"is_causal": True},
    "fully_masked_row": {"attn_mask": np.vstack([np.zeros((1, S), bool), _bool_mask((L - 1, S))])},
    "scale": {"scale": 0.3},
}


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("case", list(SDPA_CASES))
def test_sdpa_vs_torch(case, dtype):
    kw = SDPA_CASES[case]

    def call(lib, q, k, v):
        kk = dict(kw)
        if "attn_mask" in kk:
            m = kk["attn_mask"]
            kk["attn_mask"] = (
                (ax.tensor(m) if lib is ax else torch.tensor(m))
                if m.dtype == bool
                else (ax.tensor(m.astype(dtype)) if lib is ax else torch.tensor(m.astype(dtype)))
            )
        fn = scaled_dot_product_attention if lib is ax else F.scaled_dot_product_attention
        return fn(q, k, v, **kk)

    tol = {"atol": 1e-9, "rtol": 1e-7} if dtype == np.float64 else {"atol": 2e-5, "rtol": 1e-4}
    arrays = [
        rng_array(2, 3, L, E, seed=0, dtype=dtype),
        rng_array(2, 3, S, E, seed=1, dtype=dtype),
        rng_array(2, 3, S, 7, seed=2, dtype=dtype),
    ]
    check_vs_torch(lambda q, k, v: call(ax, q, k, v), lambda q, k, v: call(torch, q, k, v), arrays, **tol)


def test_sdpa_float_mask_gradient_and_transposed_inputs():
    mask = rng_array(L, S, seed=7)
    arrays = [rng_array(2, E, L, seed=0), rng_array(2, S, E, seed=1), rng_array(2, S, E, seed=2), mask]
    check_vs_torch(
        lambda q, k, v, m: scaled_dot_product_attention(q.transpose(-2, -1), k, v, attn_mask=m),
        lambda q, k, v, m: F.scaled_dot_product_attention(q.transpose(-2, -1), k, v, attn_mask=m),
        arrays,
        atol=1e-9,
        rtol=1e-7,
    )


def test_sdpa_gqa_and_3d_and_size_one():
    q, k, v = rng_array(2, 4, L, E, seed=0), rng_array(2, 2, S, E, seed=1), rng_array(2, 2, S, E, seed=2)
    check_vs_torch(
        lambda q, k, v: scaled_dot_product_attention(q, k, v, enable_gqa=True, is_causal=True),
        lambda q, k, v: F.scaled_dot_product_attention(q, k, v, enable_gqa=True, is_causal=True),
        [q, k, v],
        atol=1e-9,
        rtol=1e-7,
    )
    arrays = [rng_array(3, 1, E, seed=0), rng_array(3, 1, E, seed=1), rng_array(3, 1, 2, seed=2)]
    check_vs_torch(scaled_dot_product_attention, F.scaled_dot_product_attention, arrays, atol=1e-9, rtol=1e-7)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_sdpa_half_precision(dtype):
    q = rng_array(2, 3, L, E, seed=0)
    qa = ax.tensor(q).to(getattr(ax, dtype)).requires_grad_()
    qt = torch.tensor(q).to(getattr(torch, dtype)).requires_grad_()
    oa = scaled_dot_product_attention(qa, qa, qa, is_causal=True)
    ot = F.scaled_dot_product_attention(qt, qt, qt, is_causal=True)
    assert oa.dtype == getattr(ax, dtype)
    tol = 2e-2 if dtype == "bfloat16" else 4e-3
    np.testing.assert_allclose(oa.float().detach().numpy(), ot.float().detach().numpy(), atol=tol, rtol=tol)
    oa.float().sum().backward()
    ot.float().sum().backward()
    assert qa.grad.dtype == qa.dtype
    np.testing.assert_allclose(qa.grad.float().numpy(), qt.grad.float().numpy(), atol=4 * tol, rtol=4 * tol)


@pytest.mark.parametrize("safe", [True, False])
@pytest.mark.parametrize("causal", [True, False])
def test_masked_softmax_gradcheck(safe, causal):
    scores = rng_array(2, 3, 4, seed=0)
    mask = rng_array(3, 4, seed=1)
    gradcheck(lambda s, m: _masked_softmax(s, m, causal, safe, 0.7), [scores, mask])
    gradcheck(lambda s: _masked_softmax(s, None, causal, safe), [scores])


def test_sdpa_dropout_is_random_and_seeded():
    q = ax.tensor(rng_array(2, L, E, seed=0))
    ax.manual_seed(3)
    a = scaled_dot_product_attention(q, q, q, dropout_p=0.5)
    ax.manual_seed(3)
    b = scaled_dot_product_attention(q, q, q, dropout_p=0.5)
    c = scaled_dot_product_attention(q, q, q)
    np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert not np.allclose(a.numpy(), c.numpy())


def test_sdpa_errors():
    q, k = ax.randn(2, L, E), ax.randn(2, S, E)
    with pytest.raises(ShapeError, match="share E"):
        scaled_dot_product_attention(q, ax.randn(2, S, E + 1), k)
    with pytest.raises(ShapeError, match="cannot be broadcast"):
        scaled_dot_product_attention(q, k, k, attn_mask=ax.zeros(L, S + 1, dtype=ax.bool))
    with pytest.raises(DTypeError, match="only bool and floating"):
        scaled_dot_product_attention(q, k, k, attn_mask=ax.zeros(L, S, dtype=ax.int64))
    with pytest.raises(DTypeError, match="query's dtype"):
        scaled_dot_product_attention(q, k, k, attn_mask=ax.zeros(L, S, dtype=ax.float64))
    with pytest.raises(ShapeError, match="multiple"):
        scaled_dot_product_attention(ax.randn(1, 3, L, E), ax.randn(1, 2, S, E), ax.randn(1, 2, S, E), enable_gqa=True)
    with pytest.raises(ValueError, match="should not be set when is_causal"):
        scaled_dot_product_attention(q, k, k, attn_mask=ax.ones(L, S, dtype=ax.bool), is_causal=True)


# -- MultiheadAttention ------------------------------------------------------------------------
def _pair(embed=8, heads=2, **kw):
    tm = torch.nn.MultiheadAttention(embed, heads, dtype=torch.float64, **kw)
    am = MultiheadAttention(embed, heads, dtype=ax.float64, **kw)
    return am, tm


def _mha_call(self_attn, batch_first, kpm=None, attn_mask=None, **kw):
    def fn(m, T, q, k, v):
        if self_attn:
            k = v = q
        return m(
            q, k, v, key_padding_mask=None if kpm is None else T(kpm), attn_mask=None if attn_mask is None else T(attn_mask), **kw
        )

    return fn


def _inputs(batch_first, L=4, S=5, N=3, E=8, kdim=None, vdim=None):
    def shp(n, e):
        return (N, n, e) if batch_first else (n, N, e)

    return [rng_array(*shp(L, E), seed=0), rng_array(*shp(S, kdim or E), seed=1), rng_array(*shp(S, vdim or E), seed=2)]


KPM = np.array([[False] * 5, [False, False, False, True, True], [False, True, False, False, True]])
MHA_MASKS = {
    "none": {},
    "bool_attn_2d": {"attn_mask": ~_bool_mask((4, 5), seed=2)},
    "float_attn_3d": {"attn_mask": rng_array(3 * 2, 4, 5, seed=3)},
    "kpm_bool": {"kpm": KPM},
    "kpm_float": {"kpm": np.where(KPM, -np.inf, 0.0)},
    "both": {"kpm": KPM, "attn_mask": ~_bool_mask((4, 5), seed=4)},
}


@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("masks", list(MHA_MASKS))
@pytest.mark.parametrize("need_weights,average", [(True, True), (True, False), (False, True)])
def test_mha_cross_attention_vs_torch(batch_first, masks, need_weights, average):
    am, tm = _pair(batch_first=batch_first)
    fn = _mha_call(False, batch_first, need_weights=need_weights, average_attn_weights=average, **MHA_MASKS[masks])
    compare_modules(am, tm, fn, _inputs(batch_first))


@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("need_weights", [True, False])
def test_mha_self_attention_causal_vs_torch(batch_first, need_weights):
    am, tm = _pair(batch_first=batch_first)
    causal = np.triu(np.ones((4, 4), bool), 1)
    fn = _mha_call(True, batch_first, attn_mask=causal, is_causal=True, need_weights=need_weights)
    compare_modules(am, tm, fn, _inputs(batch_first)[:1] * 3)


@pytest.mark.parametrize(
    "kw",
    [
        {"bias": False},
        {"add_bias_kv": True},
        {"add_zero_attn": True},
        {"add_bias_kv": True, "add_zero_attn": True, "kdim": 3, "vdim": 5},
        {"kdim": 3, "vdim": 5},
    ],
)
def test_mha_options_vs_torch(kw):
    am, tm = _pair(**kw)
    fn = _mha_call(False, False, kpm=np.where(KPM, -np.inf, 0.0), attn_mask=rng_array(4, 5, seed=5))
    compare_modules(am, tm, fn, _inputs(False, kdim=kw.get("kdim"), vdim=kw.get("vdim")))


def test_mha_unbatched_and_train_mode_and_float32():
    am, tm = _pair()
    fn = _mha_call(False, False, kpm=KPM[1], attn_mask=~_bool_mask((4, 5), seed=6))
    compare_modules(am, tm, fn, [a[:, 0] for a in _inputs(False)])
    tm32 = torch.nn.MultiheadAttention(8, 4, batch_first=True)
    am32 = MultiheadAttention(8, 4, batch_first=True)
    am32.eval(), tm32.eval()
    compare_modules(am32, tm32, _mha_call(True, True), [rng_array(2, 3, 8, dtype=np.float32)] * 3, atol=1e-5, rtol=1e-4)


def test_mha_fully_masked_rows_match_torch():
    """need_weights=True: NaN rows (plain softmax); need_weights=False: zeros (SDPA's)."""
    kpm = KPM.copy()
    kpm[2] = True
    for need in (True, False):
        am, tm = _pair()
        oa, _ = compare_modules(am, tm, _mha_call(False, False, kpm=kpm, need_weights=need), _inputs(False))
        assert np.isnan(oa[0].detach().numpy()[:, 2]).all() == need


def test_mha_parameters_and_init():
    am, tm = _pair(add_bias_kv=True)
    assert list(am.state_dict()) == list(tm.state_dict())
    assert np.all(am.in_proj_bias.detach().numpy() == 0) and np.all(am.out_proj.bias.detach().numpy() == 0)
    bound = np.sqrt(6 / (8 + 24))  # xavier_uniform_ on (3E, E)
    w = am.in_proj_weight.detach().numpy()
    assert np.abs(w).max() <= bound and w.std() > bound / 4
    am2, tm2 = _pair(kdim=3, vdim=5, bias=False)
    assert sorted(am2.state_dict()) == sorted(tm2.state_dict())
    assert am2.in_proj_weight is None and am2.in_proj_bias is None


def test_mha_dropout_only_in_training():
    am = MultiheadAttention(8, 2, dropout=0.5)
    x = ax.randn(4, 2, 8)
    am.eval()
    a, _ = am(x, x, x)
    b, _ = am(x, x, x)
    np.testing.assert_array_equal(a.detach().numpy(), b.detach().numpy())
    am.train()
    c, w = am(x, x, x)
    assert not np.allclose(a.detach().numpy(), c.detach().numpy())


def test_mha_errors():
    with pytest.raises(ValueError, match="divisible"):
        MultiheadAttention(10, 3)
    am = MultiheadAttention(8, 2)
    x = ax.randn(4, 2, 8)
    with pytest.raises(ValueError, match="is_causal=True needs attn_mask"):
        am(x, x, x, is_causal=True)
    with pytest.raises(ShapeError, match=r"2-D attn_mask must have shape \(L, S\)"):
        am(x, x, x, attn_mask=ax.zeros(3, 4, dtype=ax.bool))
    with pytest.raises(ShapeError, match="3-D attn_mask"):
        am(x, x, x, attn_mask=ax.zeros(2, 4, 4))
    with pytest.raises(ShapeError, match="key_padding_mask must have shape"):
        am(x, x, x, key_padding_mask=ax.zeros(4, 2, dtype=ax.bool))
    with pytest.raises(ShapeError, match="expected embed_dim=8"):
        am(ax.randn(4, 2, 6), x, x)
    with pytest.raises(DTypeError, match="only bool and floating"):
        am(x, x, x, key_padding_mask=ax.zeros(2, 4, dtype=ax.int64))
