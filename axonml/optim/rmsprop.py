"""``RMSprop``: divide the gradient by a running root mean square of recent gradients.

The update is PyTorch's (``torch.optim.RMSprop``)::

    step += 1
    g = -grad if maximize else grad
    g = g + weight_decay * p
    v = alpha * v + (1 - alpha) * g * g
    avg = sqrt(v - g_avg ** 2) with g_avg = g_avg.lerp(g, 1 - alpha)   (centered)
    avg = sqrt(v)                                                        (otherwise)
    avg = avg + eps
    buf = momentum * buf + g / avg;  p = p - lr * buf                    (momentum > 0)
    p = p - lr * g / avg                                                 (otherwise)
"""

from __future__ import annotations

from typing import Any, Callable

from .optimizer import Optimizer, _check_hparam, _check_lr, _grad_for_update, _incr_step, _lerp_, _state_zeros, _step_tensor

__all__ = ["RMSprop"]


class RMSprop(Optimizer):
    """RMSprop (Hinton's lecture 6e), optionally centered and with momentum.

    Args:
        params: parameters or parameter groups (see :class:`Optimizer`).
        lr: learning rate. alpha: smoothing constant. eps: added to the denominator.
        weight_decay: L2 penalty added to the gradient. momentum: momentum factor.
        centered: normalize by an estimate of the gradient's variance. maximize:
        maximize the objective. foreach: accepted for PyTorch compatibility.

    State per parameter: ``step``, ``square_avg``, ``momentum_buffer`` (momentum > 0) and
    ``grad_avg`` (centered).

    Example::

        opt = ax.optim.RMSprop(model.parameters(), lr=1e-3, momentum=0.9, centered=True)
    """

    def __init__(
        self,
        params: Any,
        lr: float = 1e-2,
        alpha: float = 0.99,
        eps: float = 1e-8,
        weight_decay: float = 0,
        momentum: float = 0,
        centered: bool = False,
        foreach: bool | None = None,
        maximize: bool = False,
    ) -> None:
        _check_lr(lr, "RMSprop")
        _check_hparam(eps >= 0.0, "epsilon value", eps, "eps >= 0", "RMSprop")
        _check_hparam(momentum >= 0.0, "momentum value", momentum, "momentum >= 0", "RMSprop")
        _check_hparam(weight_decay >= 0.0, "weight_decay value", weight_decay, "weight_decay >= 0", "RMSprop")
        _check_hparam(alpha >= 0.0, "alpha value", alpha, "alpha >= 0", "RMSprop")
        defaults = {
            "lr": lr,
            "momentum": momentum,
            "alpha": alpha,
            "eps": eps,
            "centered": centered,
            "weight_decay": weight_decay,
            "foreach": foreach,
            "maximize": maximize,
        }
        super().__init__(params, defaults)

    def _init_state(self, p: Any, group: dict) -> dict:
        state = self.state[p]
        if len(state) == 0:
            state["step"] = _step_tensor()
            state["square_avg"] = _state_zeros(p)
            if group["momentum"] > 0:
                state["momentum_buffer"] = _state_zeros(p)
            if group["centered"]:
                state["grad_avg"] = _state_zeros(p)
        # a group whose momentum or centering was switched on after the first step
        if group["momentum"] > 0 and "momentum_buffer" not in state:
            state["momentum_buffer"] = _state_zeros(p)
        if group["centered"] and "grad_avg" not in state:
            state["grad_avg"] = _state_zeros(p)
        return state

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Update every parameter that has a gradient; returns ``closure()``'s loss if given."""
        loss = self._eval_closure(closure)
        for group in self.param_groups:
            lr = float(group["lr"])
            alpha = group["alpha"]
            momentum = group["momentum"]
            for p in self._params_with_grad(group):
                state = self._init_state(p, group)
                xp = p.device.xp
                d = p._data
                _incr_step(state)
                scratch = xp.empty_like(d)
                g = _grad_for_update(xp, p, group["maximize"], group["weight_decay"], scratch)
                work = scratch if g is not scratch else xp.empty_like(d)
                sq = state["square_avg"]._data
                sq *= alpha
                xp.multiply(g, 1 - alpha, out=work)
                work *= g
                sq += work
                state["square_avg"]._vc[0] += 1
                if group["centered"]:
                    ga = state["grad_avg"]._data
                    _lerp_(xp, ga, g, 1 - alpha, work)
                    state["grad_avg"]._vc[0] += 1
                    xp.multiply(ga, ga, out=work)
                    xp.subtract(sq, work, out=work)
                    avg = xp.sqrt(work, out=work)
                else:
                    avg = xp.sqrt(sq, out=work)
                avg += group["eps"]
                if momentum > 0:
                    buf = state["momentum_buffer"]._data
                    buf *= momentum
                    xp.divide(g, avg, out=avg)
                    buf += avg
                    state["momentum_buffer"]._vc[0] += 1
                    xp.multiply(buf, -lr, out=avg)
                else:
                    xp.divide(g, avg, out=avg)
                    avg *= -lr
                d += avg
                p._vc[0] += 1
        return loss
