"""Recurrent layers: ``RNN``, ``LSTM``, ``GRU`` and their one-step cells, as in PyTorch
(same parameter names ``weight_ih_l0``, ``weight_hh_l0``, ``bias_ih_l0``, ``bias_hh_l0``
and ``..._reverse``, same gate order, same shapes of inputs, states and outputs).

Note on speed: each (layer, direction) computes its input projection for all time steps
in one matmul here, then runs one fused kernel from :mod:`axonml.nn._rnn_ops` that loops
over time for the hidden projection only and records a single graph node (see the note
there). The cells reuse the same kernels with a sequence of length one.

Not supported: ``PackedSequence`` inputs and LSTM ``proj_size > 0``.
"""

from __future__ import annotations

import math
from typing import Any

from ..errors import DTypeError, ShapeError
from ..tensor import Tensor, cat, dropout, linear, squeeze, stack, unsqueeze, zeros
from . import init
from ._rnn_ops import GRUSeq, LSTMSeq, RNNSeq
from .module import Module
from .parameter import Parameter

_GATES = {"LSTM": 4, "GRU": 3, "RNN_TANH": 1, "RNN_RELU": 1}


class RNNBase(Module):
    """Shared construction and driving of multi-layer, optionally bidirectional RNNs."""

    def __init__(
        self,
        mode: str,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        proj_size: int = 0,
        device: Any = None,
        dtype: Any = None,
    ) -> None:
        super().__init__()
        name = type(self).__name__
        if mode not in _GATES:
            raise ValueError(f"{name}: unknown mode {mode!r}; expected one of {sorted(_GATES)}")
        if not isinstance(hidden_size, int) or hidden_size <= 0:
            raise ValueError(f"{name}: hidden_size must be a positive int, got {hidden_size!r}")
        if not isinstance(input_size, int) or input_size <= 0:
            raise ValueError(f"{name}: input_size must be a positive int, got {input_size!r}")
        if not isinstance(num_layers, int) or num_layers <= 0:
            raise ValueError(f"{name}: num_layers must be a positive int, got {num_layers!r}")
        if isinstance(dropout, bool) or not 0.0 <= float(dropout) <= 1.0:
            raise ValueError(f"{name}: dropout must be a number in [0, 1], got {dropout!r}")
        if proj_size:
            raise NotImplementedError(f"{name}: proj_size > 0 is not supported; build the projection with a Linear layer")
        self.mode = mode
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.bias = bias
        self.batch_first = batch_first
        self.dropout = float(dropout)
        self.bidirectional = bidirectional
        self.proj_size = 0
        dirs = 2 if bidirectional else 1
        gate = _GATES[mode] * hidden_size
        fk = {"device": device, "dtype": dtype}
        self._flat_weights_names: list[str] = []
        for layer in range(num_layers):
            layer_in = input_size if layer == 0 else hidden_size * dirs
            for d in range(dirs):
                sfx = f"_l{layer}" + ("_reverse" if d else "")
                params = [("weight_ih" + sfx, (gate, layer_in)), ("weight_hh" + sfx, (gate, hidden_size))]
                if bias:
                    params += [("bias_ih" + sfx, (gate,)), ("bias_hh" + sfx, (gate,))]
                for pname, shape in params:
                    setattr(self, pname, Parameter(zeros(*shape, **fk)))
                    self._flat_weights_names.append(pname)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Every weight and bias ~ U(-1/sqrt(hidden_size), 1/sqrt(hidden_size)), as in PyTorch."""
        k = 1.0 / math.sqrt(self.hidden_size)
        for p in self.parameters():
            init.uniform_(p, -k, k)

    @property
    def all_weights(self) -> list[list[Parameter]]:
        """Per (layer, direction): [weight_ih, weight_hh, (bias_ih, bias_hh)]."""
        per = 4 if self.bias else 2
        names = self._flat_weights_names
        return [[getattr(self, n) for n in names[i : i + per]] for i in range(0, len(names), per)]

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}"
        if self.num_layers != 1:
            s += f", num_layers={self.num_layers}"
        if not self.bias:
            s += ", bias=False"
        if self.batch_first:
            s += ", batch_first=True"
        if self.dropout:
            s += f", dropout={self.dropout}"
        if self.bidirectional:
            s += ", bidirectional=True"
        return s

    # -- driving -------------------------------------------------------------------------
    def _prepare_input(self, input: Tensor) -> tuple[Tensor, bool]:
        """Return the input as (T, N, input_size) and whether it was batched."""
        name = type(self).__name__
        if input.ndim not in (2, 3):
            raise ShapeError(f"{name}: expected a 2-D (unbatched) or 3-D (batched) input, got shape {tuple(input.shape)}")
        if input.shape[-1] != self.input_size:
            raise ShapeError(
                f"{name}: input.size(-1) must be equal to input_size. Expected {self.input_size}, got {input.shape[-1]}"
            )
        w = self.weight_ih_l0
        if input.dtype is not w.dtype:
            raise DTypeError(
                f"{name}: input must have the parameters' dtype {w.dtype}, got {input.dtype}; convert with .to({w.dtype})"
            )
        batched = input.ndim == 3
        x = input if batched else unsqueeze(input, 1)
        if batched and self.batch_first:
            x = x.transpose(0, 1)
        if x.shape[0] == 0:
            raise ShapeError(f"{name}: expected a sequence length larger than 0, got input shape {tuple(input.shape)}")
        return x, batched

    def _prepare_state(self, h: Tensor | None, x: Tensor, batched: bool, what: str) -> Tensor:
        """Return a (layers*dirs, N, H) state (zeros when ``h`` is None)."""
        dirs = 2 if self.bidirectional else 1
        want = (self.num_layers * dirs, x.shape[1], self.hidden_size)
        if h is None:
            return zeros(*want, dtype=x.dtype, device=x.device)
        name = type(self).__name__
        if h.ndim != (3 if batched else 2):
            raise ShapeError(
                f"{name}: for {'batched 3-D' if batched else 'unbatched 2-D'} input, {what} should also be "
                f"{3 if batched else 2}-D but got shape {tuple(h.shape)}"
            )
        if not batched:
            h = unsqueeze(h, 1)
        if tuple(h.shape) != want:
            got = tuple(h.shape) if batched else (h.shape[0], h.shape[2])
            exp = want if batched else (want[0], want[2])
            raise ShapeError(f"{name}: expected {what} size {exp}, got {got}")
        if h.dtype is not x.dtype:
            raise DTypeError(f"{name}: {what} must have the input's dtype {x.dtype}, got {h.dtype}")
        return h

    def _run(self, x: Tensor, states: list[Tensor]) -> tuple[Tensor, list[list[Tensor]]]:
        """Run all layers on x (T, N, F); ``states`` are (layers*dirs, N, H) initial states.
        Returns the last layer's output and, per state kind, the final states per (layer, dir)."""
        dirs = 2 if self.bidirectional else 1
        finals: list[list[Tensor]] = [[] for _ in states]
        for layer in range(self.num_layers):
            outs = []
            for d in range(dirs):
                idx = layer * dirs + d
                out, *last = self._cell_seq(x, [s[idx] for s in states], idx, d == 1)
                outs.append(out)
                for lst, s in zip(finals, last):
                    lst.append(s)
            x = outs[0] if dirs == 1 else cat(outs, -1)  # (T, N, dirs*H)
            if self.training and self.dropout > 0.0 and layer < self.num_layers - 1:
                x = dropout(x, self.dropout, True)
        return x, finals

    def _cell_seq(self, x: Tensor, state: list[Tensor], idx: int, reverse: bool) -> tuple:
        w_ih, w_hh, *b = self.all_weights[idx]
        b_ih, b_hh = b if b else (None, None)
        if self.mode == "GRU":
            xg = linear(x, w_ih, b_ih)  # (T, N, 3H); b_hh goes inside the r * (...) term
            return GRUSeq.apply(xg, state[0], w_hh, b_hh, reverse)
        xg = linear(x, w_ih, None if b_ih is None else b_ih + b_hh)  # (T, N, gates*H)
        if self.mode == "LSTM":
            return LSTMSeq.apply(xg, state[0], state[1], w_hh, reverse)
        return RNNSeq.apply(xg, state[0], w_hh, reverse, self.mode == "RNN_RELU")

    def _finish_output(self, out: Tensor, batched: bool) -> Tensor:
        if not batched:
            return squeeze(out, 1)
        return out.transpose(0, 1) if self.batch_first else out

    def _finish_state(self, states: list[Tensor], batched: bool) -> Tensor:
        h = stack(states, 0)  # (layers*dirs, N, H)
        return h if batched else squeeze(h, 1)


class RNN(RNNBase):
    """Elman RNN: h_t = tanh(x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh) (or relu).

    Args as ``torch.nn.RNN``: input_size, hidden_size, num_layers=1, nonlinearity='tanh',
    bias=True, batch_first=False, dropout=0.0, bidirectional=False.
    Call: ``rnn(input, h0=None) -> (output, h_n)``.

    Example::

        rnn = RNN(8, 16, num_layers=2)
        out, h_n = rnn(ax.randn(5, 3, 8))     # (5, 3, 16), (2, 3, 16)
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        nonlinearity: str = "tanh",
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        device: Any = None,
        dtype: Any = None,
    ) -> None:
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"RNN: unknown nonlinearity {nonlinearity!r}; choose 'tanh' or 'relu'")
        self.nonlinearity = nonlinearity
        mode = "RNN_TANH" if nonlinearity == "tanh" else "RNN_RELU"
        super().__init__(mode, input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional, 0, device, dtype)

    def forward(self, input: Tensor, hx: Tensor | None = None) -> tuple[Tensor, Tensor]:
        x, batched = self._prepare_input(input)
        h0 = self._prepare_state(hx, x, batched, "hidden")
        out, (hs,) = self._run(x, [h0])
        return self._finish_output(out, batched), self._finish_state(hs, batched)


class LSTM(RNNBase):
    """Long short-term memory, as ``torch.nn.LSTM`` (gates i, f, g, o).

    Args: input_size, hidden_size, num_layers=1, bias=True, batch_first=False,
    dropout=0.0 (between layers, in training), bidirectional=False.
    Call: ``lstm(input, (h0, c0)=None) -> (output, (h_n, c_n))`` with input (T, N, F)
    (or (N, T, F) with ``batch_first``, or unbatched (T, F)), states (layers*dirs, N, H),
    output (T, N, dirs*H).

    Example::

        lstm = LSTM(8, 16, batch_first=True, bidirectional=True)
        out, (h, c) = lstm(ax.randn(3, 5, 8))   # (3, 5, 32), (2, 3, 16), (2, 3, 16)
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__("LSTM", *args, **kwargs)

    def forward(self, input: Tensor, hx: tuple[Tensor, Tensor] | None = None) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        x, batched = self._prepare_input(input)
        if hx is None:
            h0 = c0 = self._prepare_state(None, x, batched, "hidden")
        else:
            if not isinstance(hx, (tuple, list)) or len(hx) != 2:
                raise TypeError("LSTM: hx must be a tuple (h_0, c_0)")
            h0 = self._prepare_state(hx[0], x, batched, "hidden")
            c0 = self._prepare_state(hx[1], x, batched, "cell")
        out, (hs, cs) = self._run(x, [h0, c0])
        return self._finish_output(out, batched), (self._finish_state(hs, batched), self._finish_state(cs, batched))


class GRU(RNNBase):
    """Gated recurrent unit, as ``torch.nn.GRU`` (gates r, z, n with
    n = tanh(W_in x + b_in + r * (W_hn h + b_hn))).

    Args and call as :class:`RNN` (without ``nonlinearity``): ``gru(input, h0=None) -> (output, h_n)``.

    Example::

        gru = GRU(8, 16, num_layers=2, dropout=0.1)
        out, h_n = gru(ax.randn(5, 3, 8))      # (5, 3, 16), (2, 3, 16)
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__("GRU", *args, **kwargs)

    def forward(self, input: Tensor, hx: Tensor | None = None) -> tuple[Tensor, Tensor]:
        x, batched = self._prepare_input(input)
        h0 = self._prepare_state(hx, x, batched, "hidden")
        out, (hs,) = self._run(x, [h0])
        return self._finish_output(out, batched), self._finish_state(hs, batched)


# -- cells ---------------------------------------------------------------------------------
class RNNCellBase(Module):
    def __init__(
        self, input_size: int, hidden_size: int, bias: bool, num_chunks: int, device: Any = None, dtype: Any = None
    ) -> None:
        super().__init__()
        name = type(self).__name__
        if input_size <= 0 or hidden_size <= 0:
            raise ValueError(f"{name}: input_size and hidden_size must be > 0, got {input_size} and {hidden_size}")
        fk = {"device": device, "dtype": dtype}
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.bias = bias
        self.weight_ih = Parameter(zeros(num_chunks * hidden_size, input_size, **fk))
        self.weight_hh = Parameter(zeros(num_chunks * hidden_size, hidden_size, **fk))
        if bias:
            self.bias_ih = Parameter(zeros(num_chunks * hidden_size, **fk))
            self.bias_hh = Parameter(zeros(num_chunks * hidden_size, **fk))
        else:
            self.register_parameter("bias_ih", None)
            self.register_parameter("bias_hh", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        k = 1.0 / math.sqrt(self.hidden_size)
        for p in self.parameters():
            init.uniform_(p, -k, k)

    def extra_repr(self) -> str:
        return f"{self.input_size}, {self.hidden_size}" + ("" if self.bias else ", bias=False")

    def _prepare(self, input: Tensor, hx: Tensor | None, what: str = "hidden") -> tuple[Tensor, Tensor | None, bool]:
        """(1, N, F) sequence of one step, the state as (N, H) or None, and batched."""
        name = type(self).__name__
        if input.ndim not in (1, 2):
            raise ShapeError(f"{name}: expected input to be 1-D or 2-D, got shape {tuple(input.shape)}")
        if input.shape[-1] != self.input_size:
            raise ShapeError(f"{name}: input has {input.shape[-1]} features, expected input_size={self.input_size}")
        if input.dtype is not self.weight_ih.dtype:
            raise DTypeError(f"{name}: input must have the parameters' dtype {self.weight_ih.dtype}, got {input.dtype}")
        batched = input.ndim == 2
        x = input if batched else unsqueeze(input, 0)
        if hx is not None:
            if hx.ndim != input.ndim:
                raise ShapeError(f"{name}: {what} state must be {input.ndim}-D like the input, got shape {tuple(hx.shape)}")
            hx = hx if batched else unsqueeze(hx, 0)
            if tuple(hx.shape) != (x.shape[0], self.hidden_size):
                raise ShapeError(f"{name}: {what} state has shape {tuple(hx.shape)}, expected {(x.shape[0], self.hidden_size)}")
        return unsqueeze(x, 0), hx, batched

    def _zeros(self, x: Tensor) -> Tensor:
        return zeros(x.shape[1], self.hidden_size, dtype=x.dtype, device=x.device)

    @staticmethod
    def _out(h: Tensor, batched: bool) -> Tensor:
        return h if batched else squeeze(h, 0)


class RNNCell(RNNCellBase):
    """One step of :class:`RNN`: ``cell(input (N, F), h (N, H) = None) -> h'``.

    Example::

        cell = RNNCell(8, 16)
        h = cell(ax.randn(3, 8))
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        nonlinearity: str = "tanh",
        device: Any = None,
        dtype: Any = None,
    ) -> None:
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"RNNCell: unknown nonlinearity {nonlinearity!r}; choose 'tanh' or 'relu'")
        super().__init__(input_size, hidden_size, bias, 1, device, dtype)
        self.nonlinearity = nonlinearity

    def forward(self, input: Tensor, hx: Tensor | None = None) -> Tensor:
        x, h, batched = self._prepare(input, hx)
        b = None if self.bias_ih is None else self.bias_ih + self.bias_hh
        xg = linear(x, self.weight_ih, b)
        _, h1 = RNNSeq.apply(xg, self._zeros(x) if h is None else h, self.weight_hh, False, self.nonlinearity == "relu")
        return self._out(h1, batched)


class LSTMCell(RNNCellBase):
    """One step of :class:`LSTM`: ``cell(input (N, F), (h, c) = None) -> (h', c')``.

    Example::

        cell = LSTMCell(8, 16)
        h, c = cell(ax.randn(3, 8))
    """

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, device: Any = None, dtype: Any = None) -> None:
        super().__init__(input_size, hidden_size, bias, 4, device, dtype)

    def forward(self, input: Tensor, hx: tuple[Tensor, Tensor] | None = None) -> tuple[Tensor, Tensor]:
        if hx is not None and (not isinstance(hx, (tuple, list)) or len(hx) != 2):
            raise TypeError("LSTMCell: hx must be a tuple (h, c)")
        x, h, batched = self._prepare(input, None if hx is None else hx[0])
        _, c, _ = self._prepare(input, None if hx is None else hx[1], "cell")
        b = None if self.bias_ih is None else self.bias_ih + self.bias_hh
        xg = linear(x, self.weight_ih, b)
        zero = None if h is not None and c is not None else self._zeros(x)
        _, h1, c1 = LSTMSeq.apply(xg, zero if h is None else h, zero if c is None else c, self.weight_hh, False)
        return self._out(h1, batched), self._out(c1, batched)


class GRUCell(RNNCellBase):
    """One step of :class:`GRU`: ``cell(input (N, F), h (N, H) = None) -> h'``.

    Example::

        cell = GRUCell(8, 16)
        h = cell(ax.randn(3, 8))
    """

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, device: Any = None, dtype: Any = None) -> None:
        super().__init__(input_size, hidden_size, bias, 3, device, dtype)

    def forward(self, input: Tensor, hx: Tensor | None = None) -> Tensor:
        x, h, batched = self._prepare(input, hx)
        xg = linear(x, self.weight_ih, self.bias_ih)
        _, h1 = GRUSeq.apply(xg, self._zeros(x) if h is None else h, self.weight_hh, self.bias_hh, False)
        return self._out(h1, batched)


__all__ = ["GRU", "GRUCell", "LSTM", "LSTMCell", "RNN", "RNNBase", "RNNCell", "RNNCellBase"]
