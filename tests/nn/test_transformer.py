"""Transformer layers, stacks and the full model against PyTorch."""

import numpy as np
import pytest
from seq_oracle import compare_modules, rng_array

import axonml as ax
from axonml.errors import ShapeError
from axonml.nn import transformer as axt
from axonml.nn.normalization import LayerNorm

torch = pytest.importorskip("torch")
# torch's deprecation notes about mixed bool/float masks and nested tensors (both fine here)
pytestmark = [
    pytest.mark.filterwarnings("ignore:.*enable_nested_tensor:UserWarning"),
    pytest.mark.filterwarnings("ignore:Support for mismatched:UserWarning"),
]

D, NH, FF = 8, 2, 12
SRC, TGT, N = 5, 4, 3
KPM_SRC = np.array([[False] * 5, [False, False, False, True, True], [False, True, False, False, False]])
KPM_TGT = np.array([[False] * 4, [False, False, False, True], [False, True, False, False]])


def _kw(**kw):
    base = {"dim_feedforward": FF, "dropout": 0.0}
    base.update(kw)
    return base


def _seq(n, batch_first, seed):
    return rng_array(*((N, n, D) if batch_first else (n, N, D)), seed=seed)


def _causal_bool(n):
    return np.triu(np.ones((n, n), bool), 1)


def _causal_float(n):
    return np.triu(np.full((n, n), -np.inf), 1)


def _opt(T, a):
    return None if a is None else T(a)


@pytest.mark.parametrize("norm_first", [False, True])
@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize(
    "masks",
    [
        {},
        {"src_mask": _causal_float(SRC), "is_causal": True},
        {"src_mask": _causal_bool(SRC), "src_key_padding_mask": KPM_SRC},
        {"src_key_padding_mask": KPM_SRC},
    ],
)
def test_encoder_layer_vs_torch(norm_first, batch_first, masks):
    kw = _kw(norm_first=norm_first, batch_first=batch_first)
    tm = torch.nn.TransformerEncoderLayer(D, NH, dtype=torch.float64, **kw)
    am = axt.TransformerEncoderLayer(D, NH, dtype=ax.float64, **kw)

    def fn(m, T, x):
        return m(
            x,
            src_mask=_opt(T, masks.get("src_mask")),
            src_key_padding_mask=_opt(T, masks.get("src_key_padding_mask")),
            is_causal=masks.get("is_causal", False),
        )

    compare_modules(am, tm, fn, [_seq(SRC, batch_first, 0)])


@pytest.mark.parametrize("activation", ["gelu", "callable"])
@pytest.mark.parametrize("bias", [True, False])
def test_encoder_layer_activation_bias_and_eval(activation, bias):
    kw = _kw(dropout=0.3, bias=bias, layer_norm_eps=1e-3)
    act = {"gelu": "gelu", "callable": None}[activation]
    tm = torch.nn.TransformerEncoderLayer(D, NH, activation=act or torch.tanh, dtype=torch.float64, **kw)
    am = axt.TransformerEncoderLayer(D, NH, activation=act or ax.tanh, dtype=ax.float64, **kw)
    am.eval(), tm.eval()
    compare_modules(am, tm, lambda m, T, x: m(x, src_key_padding_mask=T(KPM_SRC)), [_seq(SRC, False, 1)])


@pytest.mark.parametrize("norm_first", [False, True])
@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("masked", [False, True])
def test_decoder_layer_vs_torch(norm_first, batch_first, masked):
    kw = _kw(norm_first=norm_first, batch_first=batch_first)
    tm = torch.nn.TransformerDecoderLayer(D, NH, dtype=torch.float64, **kw)
    am = axt.TransformerDecoderLayer(D, NH, dtype=ax.float64, **kw)

    def fn(m, T, tgt, mem):
        if not masked:
            return m(tgt, mem)
        return m(
            tgt,
            mem,
            tgt_mask=T(_causal_float(TGT)),
            memory_mask=T(rng_array(TGT, SRC, seed=9)),
            tgt_key_padding_mask=T(KPM_TGT),
            memory_key_padding_mask=T(KPM_SRC),
            tgt_is_causal=True,
        )

    compare_modules(am, tm, fn, [_seq(TGT, batch_first, 2), _seq(SRC, batch_first, 3)])


@pytest.mark.parametrize("norm_first", [False, True])
def test_stacks_vs_torch(norm_first):
    kw = _kw(norm_first=norm_first, activation="gelu")
    t_enc = torch.nn.TransformerEncoder(
        torch.nn.TransformerEncoderLayer(D, NH, dtype=torch.float64, **kw),
        2,
        norm=torch.nn.LayerNorm(D, dtype=torch.float64),
        enable_nested_tensor=False,
    )
    a_enc = axt.TransformerEncoder(
        axt.TransformerEncoderLayer(D, NH, dtype=ax.float64, **kw), 2, norm=LayerNorm(D, dtype=ax.float64)
    )
    compare_modules(
        a_enc, t_enc, lambda m, T, x: m(x, mask=T(_causal_float(SRC)), src_key_padding_mask=T(KPM_SRC)), [_seq(SRC, False, 4)]
    )
    t_dec = torch.nn.TransformerDecoder(torch.nn.TransformerDecoderLayer(D, NH, dtype=torch.float64, **kw), 2)
    a_dec = axt.TransformerDecoder(axt.TransformerDecoderLayer(D, NH, dtype=ax.float64, **kw), 2)
    compare_modules(
        a_dec,
        t_dec,
        lambda m, T, t, s: m(t, s, tgt_mask=T(_causal_bool(TGT)), tgt_is_causal=True),
        [_seq(TGT, False, 5), _seq(SRC, False, 6)],
    )
    # the copies are independent modules
    layers = list(a_enc.layers)
    assert layers[0].linear1.weight is not layers[1].linear1.weight


@pytest.mark.parametrize("batch_first", [False, True])
def test_full_transformer_vs_torch(batch_first):
    kw = _kw(num_encoder_layers=2, num_decoder_layers=1, batch_first=batch_first)
    tm = torch.nn.Transformer(D, NH, dtype=torch.float64, **kw)
    am = axt.Transformer(D, NH, dtype=ax.float64, **kw)
    assert list(am.state_dict()) == list(tm.state_dict())

    def fn(m, T, src, tgt):
        return m(src, tgt, tgt_mask=T(_causal_float(TGT)), src_key_padding_mask=T(KPM_SRC), memory_key_padding_mask=T(KPM_SRC))

    compare_modules(am, tm, fn, [_seq(SRC, batch_first, 7), _seq(TGT, batch_first, 8)])


def test_generate_square_subsequent_mask_and_init():
    np.testing.assert_array_equal(
        axt.generate_square_subsequent_mask(4).numpy(), torch.nn.Transformer.generate_square_subsequent_mask(4).numpy()
    )
    assert axt.Transformer.generate_square_subsequent_mask(3, dtype=ax.float64).dtype == ax.float64
    model = axt.Transformer(D, NH, 1, 1, FF)
    w = model.encoder.layers[0].linear1.weight.detach().numpy()
    assert np.abs(w).max() <= np.sqrt(6 / (D + FF))  # xavier_uniform_ on every matrix


def test_transformer_errors():
    with pytest.raises(ValueError, match="activation should be"):
        axt.TransformerEncoderLayer(D, NH, activation="swish")
    with pytest.raises(ValueError, match="divisible"):
        axt.TransformerEncoderLayer(D, 3)
    model = axt.Transformer(D, NH, 1, 1, FF)
    with pytest.raises(ShapeError, match="same batch size"):
        model(ax.randn(SRC, 2, D), ax.randn(TGT, 3, D))
    with pytest.raises(ShapeError, match="d_model"):
        model(ax.randn(SRC, 2, D + 1), ax.randn(TGT, 2, D + 1))
