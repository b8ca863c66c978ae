"""Fused recurrent kernels: one ``Function`` per (layer, direction) over a whole sequence.

Note on the split of work: the input projection ``x @ W_ih^T + b`` does not depend on the
hidden state, so the modules in :mod:`axonml.nn.rnn` compute it for every time step in
one matmul with ordinary ops and hand the result (``xg``, shaped (T, N, gates*H)) to a
kernel here. The kernel loops over time only for the hidden projection ``h @ W_hh^T``
and the gate nonlinearities, on raw arrays, and records a single graph node; its backward
is backpropagation through time, walking the steps in reverse and forming the gradient
of ``W_hh`` in one matmul at the end. Gate order and formulas are PyTorch's:

    LSTM  i, f, g, o:  c' = f*c + i*g,   h' = o * tanh(c')
    GRU   r, z, n:     n = tanh(xn + r * (W_hn h + b_hn)),   h' = (1 - z) * n + z * h
    RNN               h' = tanh(xg + W_hh h)   (or relu)

``reverse=True`` runs the sequence backwards (the second direction of a bidirectional
layer) and returns outputs in the original time order. Kernels compute in the input
dtype; sigmoid is written as ``0.5 * (1 + tanh(x / 2))``, exact and free of overflow.
"""

from __future__ import annotations

from ..autograd.function import Function


def _sigmoid_(xp, a):  # noqa: ANN001, ANN202 - in place on a raw array
    xp.tanh(a * 0.5, out=a)
    a += 1
    a *= 0.5
    return a


def _flip(a, reverse):  # noqa: ANN001, ANN202
    return a[::-1] if reverse else a


class LSTMSeq(Function):
    """(xg (T,N,4H), h0 (N,H), c0 (N,H), w_hh (4H,H), reverse) -> (out (T,N,H), h_T, c_T)."""

    @staticmethod
    def forward(ctx, xg, h0, c0, w_hh, reverse):
        xp = ctx.xp
        T, N, G = xg.shape
        H = G // 4
        xg = _flip(xg, reverse)
        gates = xp.empty((T, N, G), dtype=xg.dtype)  # activated i, f, g, o
        hs = xp.empty((T + 1, N, H), dtype=xg.dtype)  # hs[t] is the state before step t
        cs = xp.empty((T + 1, N, H), dtype=xg.dtype)
        hs[0], cs[0] = h0, c0
        wt = w_hh.T
        for t in range(T):
            a = gates[t]
            xp.matmul(hs[t], wt, out=a)
            a += xg[t]
            _sigmoid_(xp, a[:, : 2 * H])
            xp.tanh(a[:, 2 * H : 3 * H], out=a[:, 2 * H : 3 * H])
            _sigmoid_(xp, a[:, 3 * H :])
            c = cs[t + 1]
            xp.multiply(a[:, H : 2 * H], cs[t], out=c)
            c += a[:, :H] * a[:, 2 * H : 3 * H]
            xp.multiply(a[:, 3 * H :], xp.tanh(c), out=hs[t + 1])
        ctx.save_for_backward(w_hh)
        ctx.gates, ctx.hs, ctx.cs, ctx.reverse = gates, hs, cs, reverse
        out = xp.ascontiguousarray(_flip(hs[1:], reverse))
        return out, hs[T].copy(), cs[T].copy()

    @staticmethod
    def backward(ctx, g_out, g_h, g_c):
        xp = ctx.xp
        (w_hh,) = ctx.saved_tensors
        gates, hs, cs = ctx.gates, ctx.hs, ctx.cs
        T, N, G = gates.shape
        H = G // 4
        g_out = _flip(g_out, ctx.reverse)
        tanh_c = xp.tanh(cs[1:])
        d_gates = xp.empty_like(gates)  # gradient w.r.t. the gate pre-activations
        dh = g_h.astype(gates.dtype, copy=True)
        dc = g_c.astype(gates.dtype, copy=True)
        for t in range(T - 1, -1, -1):
            dh += g_out[t]
            a, d = gates[t], d_gates[t]
            i, f, g, o = a[:, :H], a[:, H : 2 * H], a[:, 2 * H : 3 * H], a[:, 3 * H :]
            tc = tanh_c[t]
            dc += dh * o * (1 - tc * tc)
            d[:, :H] = dc * g * i * (1 - i)
            d[:, H : 2 * H] = dc * cs[t] * f * (1 - f)
            d[:, 2 * H : 3 * H] = dc * i * (1 - g * g)
            d[:, 3 * H :] = dh * tc * o * (1 - o)
            dc *= f
            dh = d @ w_hh
        need = ctx.needs_input_grad
        g_xg = xp.ascontiguousarray(_flip(d_gates, ctx.reverse)) if need[0] else None
        g_w = d_gates.reshape(T * N, G).T @ hs[:-1].reshape(T * N, H) if need[3] else None
        return g_xg, (dh if need[1] else None), (dc if need[2] else None), g_w, None


class GRUSeq(Function):
    """(xg (T,N,3H), h0 (N,H), w_hh (3H,H), b_hh (3H,) or None, reverse) -> (out (T,N,H), h_T).

    ``xg`` holds ``x @ W_ih^T + b_ih`` only: ``b_hh``'s n part sits inside ``r * (...)``.
    """

    @staticmethod
    def forward(ctx, xg, h0, w_hh, b_hh, reverse):
        xp = ctx.xp
        T, N, G = xg.shape
        H = G // 3
        xg = _flip(xg, reverse)
        acts = xp.empty((T, N, G), dtype=xg.dtype)  # r, z, n
        hn = xp.empty((T, N, H), dtype=xg.dtype)  # W_hn h + b_hn, needed for dr
        hs = xp.empty((T + 1, N, H), dtype=xg.dtype)
        hs[0] = h0
        wt = w_hh.T
        for t in range(T):
            hg = hs[t] @ wt
            if b_hh is not None:
                hg += b_hh
            a = acts[t]
            xp.add(xg[t, :, : 2 * H], hg[:, : 2 * H], out=a[:, : 2 * H])
            _sigmoid_(xp, a[:, : 2 * H])
            hn[t] = hg[:, 2 * H :]
            n = a[:, 2 * H :]
            xp.multiply(a[:, :H], hn[t], out=n)
            n += xg[t, :, 2 * H :]
            xp.tanh(n, out=n)
            z = a[:, H : 2 * H]
            xp.subtract(hs[t], n, out=hs[t + 1])
            hs[t + 1] *= z
            hs[t + 1] += n
        ctx.save_for_backward(w_hh)
        ctx.acts, ctx.hn, ctx.hs, ctx.reverse, ctx.has_bias = acts, hn, hs, reverse, b_hh is not None
        out = xp.ascontiguousarray(_flip(hs[1:], reverse))
        return out, hs[T].copy()

    @staticmethod
    def backward(ctx, g_out, g_h):
        xp = ctx.xp
        (w_hh,) = ctx.saved_tensors
        acts, hn, hs = ctx.acts, ctx.hn, ctx.hs
        T, N, G = acts.shape
        H = G // 3
        g_out = _flip(g_out, ctx.reverse)
        d_x = xp.empty_like(acts)  # gradient w.r.t. xg
        d_hg = xp.empty_like(acts)  # gradient w.r.t. h @ W_hh^T + b_hh
        dh = g_h.astype(acts.dtype, copy=True)
        for t in range(T - 1, -1, -1):
            dh += g_out[t]
            a = acts[t]
            r, z, n = a[:, :H], a[:, H : 2 * H], a[:, 2 * H :]
            dn = dh * (1 - z) * (1 - n * n)  # through tanh
            d_x[t, :, 2 * H :] = dn
            d_x[t, :, :H] = dn * hn[t] * r * (1 - r)
            d_x[t, :, H : 2 * H] = dh * (hs[t] - n) * z * (1 - z)
            d_hg[t, :, : 2 * H] = d_x[t, :, : 2 * H]
            d_hg[t, :, 2 * H :] = dn * r
            dh = dh * z + d_hg[t] @ w_hh
        need = ctx.needs_input_grad
        g_xg = xp.ascontiguousarray(_flip(d_x, ctx.reverse)) if need[0] else None
        flat = d_hg.reshape(T * N, G)
        g_w = flat.T @ hs[:-1].reshape(T * N, H) if need[2] else None
        g_b = flat.sum(axis=0) if ctx.has_bias and need[3] else None
        return g_xg, (dh if need[1] else None), g_w, g_b, None


class RNNSeq(Function):
    """(xg (T,N,H), h0 (N,H), w_hh (H,H), reverse, relu) -> (out (T,N,H), h_T)."""

    @staticmethod
    def forward(ctx, xg, h0, w_hh, reverse, relu):
        xp = ctx.xp
        T, N, H = xg.shape
        xg = _flip(xg, reverse)
        hs = xp.empty((T + 1, N, H), dtype=xg.dtype)
        hs[0] = h0
        wt = w_hh.T
        for t in range(T):
            h = hs[t + 1]
            xp.matmul(hs[t], wt, out=h)
            h += xg[t]
            if relu:
                xp.maximum(h, 0, out=h)
            else:
                xp.tanh(h, out=h)
        ctx.save_for_backward(w_hh)
        ctx.hs, ctx.reverse, ctx.relu = hs, reverse, relu
        return xp.ascontiguousarray(_flip(hs[1:], reverse)), hs[T].copy()

    @staticmethod
    def backward(ctx, g_out, g_h):
        xp = ctx.xp
        (w_hh,) = ctx.saved_tensors
        hs = ctx.hs
        T, N, H = hs.shape[0] - 1, hs.shape[1], hs.shape[2]
        g_out = _flip(g_out, ctx.reverse)
        d_pre = xp.empty((T, N, H), dtype=hs.dtype)
        dh = g_h.astype(hs.dtype, copy=True)
        for t in range(T - 1, -1, -1):
            dh += g_out[t]
            h = hs[t + 1]
            d_pre[t] = dh * (h > 0) if ctx.relu else dh * (1 - h * h)
            dh = d_pre[t] @ w_hh
        need = ctx.needs_input_grad
        g_xg = xp.ascontiguousarray(_flip(d_pre, ctx.reverse)) if need[0] else None
        g_w = d_pre.reshape(T * N, H).T @ hs[:-1].reshape(T * N, H) if need[2] else None
        return g_xg, (dh if need[1] else None), g_w, None, None
