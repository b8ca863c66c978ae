"""RNN, LSTM, GRU and their cells against PyTorch; the fused kernels by gradcheck; and a
small LSTM that learns a sequence task."""

import time

import numpy as np
import pytest
from helpers import gradcheck
from seq_oracle import compare_modules, rng_array

import axonml as ax
from axonml.errors import DTypeError, ShapeError
from axonml.nn import _rnn_ops
from axonml.nn.linear import Linear
from axonml.nn.rnn import GRU, LSTM, RNN, GRUCell, LSTMCell, RNNCell

torch = pytest.importorskip("torch")

T_, N_, F_, H_ = 5, 3, 4, 6
AX = {"LSTM": LSTM, "GRU": GRU, "RNN": RNN}


def _pair(kind, dtype=torch.float64, **kw):
    tm = getattr(torch.nn, kind)(F_, H_, dtype=dtype, **kw)
    am = AX[kind](F_, H_, dtype=ax.float64 if dtype == torch.float64 else ax.float32, **kw)
    return am, tm


def _call(kind, with_state):
    def fn(m, T, x, *states):
        if not with_state:
            return m(x)
        return m(x, (states[0], states[1]) if kind == "LSTM" else states[0])

    return fn


def _arrays(kind, layers, bidir, batch_first, with_state, batched=True, dtype=np.float64):
    x = rng_array(*((N_, T_, F_) if batch_first else (T_, N_, F_)), seed=0, dtype=dtype)
    if not batched:
        x = x[0] if batch_first else x[:, 0]
    arrays = [x]
    if with_state:
        n = layers * (2 if bidir else 1)
        shape = (n, N_, H_) if batched else (n, H_)
        arrays += [rng_array(*shape, seed=1 + i, dtype=dtype) for i in range(2 if kind == "LSTM" else 1)]
    return arrays


CONFIGS = [
    # layers, bidirectional, batch_first, bias, initial state
    (1, False, False, True, False),
    (1, False, True, True, True),
    (2, False, False, True, True),
    (1, True, False, True, True),
    (2, True, True, True, True),
    (2, True, False, False, False),
    (3, True, True, False, True),
]


@pytest.mark.parametrize("kind", ["LSTM", "GRU", "RNN"])
@pytest.mark.parametrize("layers,bidir,batch_first,bias,state", CONFIGS)
def test_rnn_vs_torch(kind, layers, bidir, batch_first, bias, state):
    am, tm = _pair(kind, num_layers=layers, bidirectional=bidir, batch_first=batch_first, bias=bias)
    compare_modules(am, tm, _call(kind, state), _arrays(kind, layers, bidir, batch_first, state))


@pytest.mark.parametrize("kind", ["LSTM", "GRU"])
def test_rnn_eval_with_dropout_unbatched_and_float32(kind):
    am, tm = _pair(kind, num_layers=2, dropout=0.4, bidirectional=True)
    am.eval(), tm.eval()
    compare_modules(am, tm, _call(kind, True), _arrays(kind, 2, True, False, True))
    am, tm = _pair(kind, num_layers=2, batch_first=True)
    compare_modules(am, tm, _call(kind, True), _arrays(kind, 2, False, True, True, batched=False))
    am, tm = _pair(kind, dtype=torch.float32, num_layers=2, bidirectional=True)
    compare_modules(am, tm, _call(kind, False), _arrays(kind, 2, True, False, False, dtype=np.float32), atol=1e-5, rtol=1e-4)


def test_rnn_relu_and_single_step():
    am, tm = _pair("RNN", nonlinearity="relu", num_layers=2, bidirectional=True)
    compare_modules(am, tm, _call("RNN", True), _arrays("RNN", 2, True, False, True))
    am, tm = _pair("LSTM", num_layers=2)
    compare_modules(
        am, tm, _call("LSTM", True), [rng_array(1, 2, F_, seed=3), rng_array(2, 2, H_, seed=4), rng_array(2, 2, H_, seed=5)]
    )


def test_dropout_between_layers_in_training():
    lstm = LSTM(F_, H_, num_layers=2, dropout=0.5)
    x = ax.tensor(rng_array(T_, N_, F_, dtype=np.float32))
    ax.manual_seed(0)
    a, _ = lstm(x)
    ax.manual_seed(0)
    b, _ = lstm(x)
    lstm.eval()
    c, _ = lstm(x)
    np.testing.assert_array_equal(a.detach().numpy(), b.detach().numpy())
    assert not np.allclose(a.detach().numpy(), c.detach().numpy())


@pytest.mark.parametrize("kind", ["LSTMCell", "GRUCell", "RNNCell"])
@pytest.mark.parametrize("state", [False, True])
@pytest.mark.parametrize("batched", [True, False])
def test_cells_vs_torch(kind, state, batched):
    tm = getattr(torch.nn, kind)(F_, H_, dtype=torch.float64)
    am = {"LSTMCell": LSTMCell, "GRUCell": GRUCell, "RNNCell": RNNCell}[kind](F_, H_, dtype=ax.float64)
    x = rng_array(N_, F_, seed=0) if batched else rng_array(F_, seed=0)
    shape = (N_, H_) if batched else (H_,)
    arrays = [x] + ([rng_array(*shape, seed=1), rng_array(*shape, seed=2)][: 2 if kind == "LSTMCell" else 1] if state else [])

    def fn(m, T, x, *s):
        if not s:
            return m(x)
        return m(x, tuple(s) if kind == "LSTMCell" else s[0])

    compare_modules(am, tm, fn, arrays)


def test_rnn_cell_relu_no_bias():
    tm = torch.nn.RNNCell(F_, H_, bias=False, nonlinearity="relu", dtype=torch.float64)
    am = RNNCell(F_, H_, bias=False, nonlinearity="relu", dtype=ax.float64)
    compare_modules(am, tm, lambda m, T, x, h: m(x, h), [rng_array(N_, F_), rng_array(N_, H_, seed=1)])


@pytest.mark.parametrize("reverse", [False, True])
def test_kernels_gradcheck(reverse):
    T, N, H = 3, 2, 2
    gradcheck(
        lambda xg, h, c, w: _rnn_ops.LSTMSeq.apply(xg, h, c, w, reverse),
        [rng_array(T, N, 4 * H), rng_array(N, H, seed=1), rng_array(N, H, seed=2), rng_array(4 * H, H, seed=3)],
    )
    gradcheck(
        lambda xg, h, w, b: _rnn_ops.GRUSeq.apply(xg, h, w, b, reverse),
        [rng_array(T, N, 3 * H), rng_array(N, H, seed=1), rng_array(3 * H, H, seed=3), rng_array(3 * H, seed=4)],
    )
    for relu in (False, True):
        gradcheck(
            lambda xg, h, w: _rnn_ops.RNNSeq.apply(xg, h, w, reverse, relu),
            [rng_array(T, N, H) + 0.05, rng_array(N, H, seed=1), rng_array(H, H, seed=3)],
        )


def test_parameter_names_shapes_and_init():
    am, tm = _pair("LSTM", num_layers=2, bidirectional=True)
    assert [(k, tuple(v.shape)) for k, v in am.state_dict().items()] == [(k, tuple(v.shape)) for k, v in tm.state_dict().items()]
    bound = 1 / np.sqrt(H_)
    for p in am.parameters():
        a = p.detach().numpy()
        assert np.abs(a).max() <= bound and a.std() > bound / 4
    am, tm = _pair("GRU", bias=False, num_layers=2)
    assert list(am.state_dict()) == list(tm.state_dict())
    assert len(am.all_weights) == 2 and len(am.all_weights[0]) == 2


def test_rnn_errors():
    lstm = LSTM(F_, H_, num_layers=2)
    with pytest.raises(ShapeError, match="input_size. Expected 4, got 5"):
        lstm(ax.randn(T_, N_, 5))
    with pytest.raises(ShapeError, match="expected hidden size"):
        lstm(ax.randn(T_, N_, F_), (ax.randn(1, N_, H_), ax.randn(2, N_, H_)))
    with pytest.raises(ShapeError, match="should also be 3-D"):
        lstm(ax.randn(T_, N_, F_), (ax.randn(2, H_), ax.randn(2, H_)))
    with pytest.raises(TypeError, match="tuple"):
        lstm(ax.randn(T_, N_, F_), ax.randn(2, N_, H_))
    with pytest.raises(DTypeError, match="dtype"):
        lstm(ax.randn(T_, N_, F_, dtype=ax.float64))
    with pytest.raises(ShapeError, match="larger than 0"):
        GRU(F_, H_)(ax.randn(0, N_, F_))
    with pytest.raises(ShapeError, match="2-D .* or 3-D"):
        GRU(F_, H_)(ax.randn(2, T_, N_, F_))
    with pytest.raises(NotImplementedError, match="proj_size"):
        LSTM(F_, H_, proj_size=2)
    with pytest.raises(ValueError, match="hidden_size"):
        GRU(F_, 0)
    with pytest.raises(ValueError, match="nonlinearity"):
        RNN(F_, H_, nonlinearity="sigmoid")
    with pytest.raises(ShapeError, match="hidden state has shape"):
        GRUCell(F_, H_)(ax.randn(N_, F_), ax.randn(N_ + 1, H_))


def _adam_step(params, state, lr, step, b1=0.9, b2=0.999, eps=1e-8):
    with ax.no_grad():
        for p in params:
            g = p.grad._data
            m, v = state.setdefault(id(p), (np.zeros_like(g), np.zeros_like(g)))
            m *= b1
            m += (1 - b1) * g
            v *= b2
            v += (1 - b2) * g * g
            mhat, vhat = m / (1 - b1**step), v / (1 - b2**step)
            p._data -= lr * mhat / (np.sqrt(vhat) + eps)
            p.grad = None


def test_lstm_learns_sequence_sum():
    """Predict the sum of 6 random bits fed one per step: on a held-out batch the MSE falls
    below 0.05 within 300 Adam steps (a constant predictor scores 1.5, the sum's variance)."""
    ax.manual_seed(0)
    rng = np.random.default_rng(0)
    lstm, head = LSTM(1, 16, batch_first=True), Linear(16, 1)
    params = list(lstm.parameters()) + list(head.parameters())
    try:
        from axonml.optim import Adam

        opt = Adam(params, lr=0.02)
    except ImportError:  # fall back to an inline Adam on the raw arrays
        opt = None
    state: dict = {}

    def batch(n):
        bits = rng.integers(0, 2, size=(n, 6, 1)).astype(np.float32)
        return ax.tensor(bits), ax.tensor(bits.sum(axis=(1, 2))[:, None])

    def mse(x, y):
        _, (h, _) = lstm(x)
        return ((head(h[0]) - y) ** 2).mean()

    x_val, y_val = batch(256)
    start = time.perf_counter()
    for step in range(1, 301):
        loss = mse(*batch(64))
        loss.backward()
        if opt is not None:
            opt.step()
            opt.zero_grad()
        else:
            _adam_step(params, state, 0.02, step)
        if step % 25 == 0:
            with ax.no_grad():
                val = mse(x_val, y_val).item()
            if val < 0.05:
                break
    assert val < 0.05, f"LSTM did not learn the sum: held-out MSE {val:.3f} after {step} steps"
    assert time.perf_counter() - start < 20
