"""``LAMB``: Adam-style steps rescaled per parameter by a layer-wise trust ratio.

From You et al., "Large Batch Optimization for Deep Learning: Training BERT in 76
Minutes" (ICLR 2020), Algorithm 2, with the identity as the scaling function phi::

    step += 1
    g = -grad if maximize else grad
    m = m.lerp(g, 1 - beta1);  v = beta2 * v + (1 - beta2) * g * g
    m_hat = m / (1 - beta1 ** step);  v_hat = v / (1 - beta2 ** step)      (bias_correction)
    u = m_hat / (sqrt(v_hat) + eps) + weight_decay * p
    trust = ||p|| / ||u||   if both norms are > 0, else 1
    p = p - lr * trust * u

Note on bias correction: the paper's Algorithm 2 divides the moments by
``1 - beta ** step`` as Adam does, and so do we by default (``bias_correction=True``,
as NVIDIA's apex ``FusedLAMB``); some implementations skip it, and
``bias_correction=False`` gives that variant (the trust ratio normalizes the update's
size either way, but the mix of moment and weight-decay terms differs early on). Weight
decay is decoupled (added to the update, not to the gradient) and enters the trust
ratio, as in the paper. The norms stay on the device (``trust`` is a 0-d array), so a
step never waits for the GPU.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from .optimizer import (
    Optimizer,
    _check_betas,
    _check_hparam,
    _check_lr,
    _grad_for_update,
    _incr_step,
    _lerp_,
    _state_zeros,
    _step_tensor,
)

__all__ = ["LAMB"]


def _l2(xp: Any, a: Any) -> Any:
    """The 2-norm of ``a`` as a 0-d device array (half types accumulate in float32)."""
    flat = a.reshape(-1)  # (numel,)
    if flat.dtype.itemsize < 4:
        flat = flat.astype(np.float32)
    return xp.sqrt(xp.dot(flat, flat))


class LAMB(Optimizer):
    """LAMB: layer-wise adaptive moments for large-batch training.

    Args:
        params: parameters or parameter groups (see :class:`Optimizer`).
        lr: learning rate. betas: decay rates of the moment averages. eps: added to the
        denominator. weight_decay: decoupled decay coefficient (part of the trust ratio).
        bias_correction: correct the moments as Adam does (see the module note).
        maximize: maximize the objective.

    State per parameter: ``step``, ``exp_avg``, ``exp_avg_sq``.

    Example::

        opt = ax.optim.LAMB(model.parameters(), lr=2e-3, weight_decay=0.01)
    """

    def __init__(
        self,
        params: Any,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-6,
        weight_decay: float = 0.0,
        *,
        bias_correction: bool = True,
        maximize: bool = False,
    ) -> None:
        _check_lr(lr, "LAMB")
        _check_hparam(eps >= 0.0, "epsilon value", eps, "eps >= 0", "LAMB")
        _check_betas(betas, "LAMB")
        _check_hparam(weight_decay >= 0.0, "weight_decay value", weight_decay, "weight_decay >= 0", "LAMB")
        defaults = {
            "lr": lr,
            "betas": tuple(betas),
            "eps": eps,
            "weight_decay": weight_decay,
            "bias_correction": bias_correction,
            "maximize": maximize,
        }
        super().__init__(params, defaults)

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Update every parameter that has a gradient; returns ``closure()``'s loss if given."""
        loss = self._eval_closure(closure)
        for group in self.param_groups:
            lr = float(group["lr"])
            beta1, beta2 = (float(b) for b in group["betas"])
            wd = group["weight_decay"]
            for p in self._params_with_grad(group):
                state = self.state[p]
                if len(state) == 0:
                    state["step"] = _step_tensor()
                    state["exp_avg"] = _state_zeros(p)
                    state["exp_avg_sq"] = _state_zeros(p)
                xp = p.device.xp
                d = p._data
                step = _incr_step(state)
                scratch = xp.empty_like(d)
                g = _grad_for_update(xp, p, group["maximize"], 0, scratch)
                work = scratch if g is not scratch else xp.empty_like(d)
                m = state["exp_avg"]._data
                v = state["exp_avg_sq"]._data
                _lerp_(xp, m, g, 1 - beta1, work)
                v *= beta2
                xp.multiply(g, 1 - beta2, out=work)
                work *= g
                v += work
                state["exp_avg"]._vc[0] += 1
                state["exp_avg_sq"]._vc[0] += 1
                if group["bias_correction"]:
                    bc1 = 1 - beta1**step
                    bc2_sqrt = (1 - beta2**step) ** 0.5
                else:
                    bc1 = bc2_sqrt = 1.0
                # u = (m / bc1) / (sqrt(v) / bc2_sqrt + eps) + wd * p
                u = xp.sqrt(v, out=work)
                u /= bc2_sqrt
                u += group["eps"]
                xp.divide(m, u, out=u)
                u /= bc1
                if wd != 0:
                    u += wd * d
                w_norm = _l2(xp, d)
                u_norm = _l2(xp, u)
                trust = xp.where((w_norm > 0) & (u_norm > 0), w_norm / xp.where(u_norm > 0, u_norm, 1), 1.0)
                u *= (-lr * trust).astype(d.dtype)
                d += u
                p._vc[0] += 1
        return loss
