"""``Adagrad``: per-coordinate learning rates from the running sum of squared gradients.

The update is PyTorch's (``torch.optim.Adagrad``)::

    step += 1
    g = -grad if maximize else grad
    g = g + weight_decay * p
    clr = lr / (1 + (step - 1) * lr_decay)
    sum = sum + g * g
    p = p - clr * g / (sqrt(sum) + eps)
"""

from __future__ import annotations

from typing import Any, Callable

from .optimizer import Optimizer, _check_hparam, _check_lr, _grad_for_update, _incr_step, _state_from, _step_tensor

__all__ = ["Adagrad"]


class Adagrad(Optimizer):
    """Adagrad (Duchi et al., 2011).

    Args:
        params: parameters or parameter groups (see :class:`Optimizer`).
        lr: learning rate. lr_decay: learning rate decay per step. weight_decay: L2
        penalty added to the gradient. initial_accumulator_value: starting value of the
        sum of squares. eps: added to the denominator. maximize: maximize the objective.
        foreach: accepted for PyTorch compatibility (updates run per parameter).

    State per parameter (created at construction, as in PyTorch): ``step`` and ``sum``.

    Example::

        opt = ax.optim.Adagrad(model.parameters(), lr=0.01)
    """

    def __init__(
        self,
        params: Any,
        lr: float = 1e-2,
        lr_decay: float = 0,
        weight_decay: float = 0,
        initial_accumulator_value: float = 0,
        eps: float = 1e-10,
        foreach: bool | None = None,
        *,
        maximize: bool = False,
    ) -> None:
        _check_lr(lr, "Adagrad")
        _check_hparam(lr_decay >= 0.0, "lr_decay value", lr_decay, "lr_decay >= 0", "Adagrad")
        _check_hparam(weight_decay >= 0.0, "weight_decay value", weight_decay, "weight_decay >= 0", "Adagrad")
        _check_hparam(
            initial_accumulator_value >= 0.0,
            "initial_accumulator_value value",
            initial_accumulator_value,
            "initial_accumulator_value >= 0",
            "Adagrad",
        )
        _check_hparam(eps >= 0.0, "epsilon value", eps, "eps >= 0", "Adagrad")
        defaults = {
            "lr": lr,
            "lr_decay": lr_decay,
            "eps": eps,
            "weight_decay": weight_decay,
            "initial_accumulator_value": initial_accumulator_value,
            "foreach": foreach,
            "maximize": maximize,
        }
        super().__init__(params, defaults)
        for group in self.param_groups:
            for p in group["params"]:
                self._init_state(p, group)

    def _init_state(self, p: Any, group: dict) -> dict:
        state = self.state[p]
        if len(state) == 0:
            xp = p.device.xp
            state["step"] = _step_tensor()
            state["sum"] = _state_from(p, xp.full(p._data.shape, group["initial_accumulator_value"], dtype=p._data.dtype))
        return state

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Update every parameter that has a gradient; returns ``closure()``'s loss if given."""
        loss = self._eval_closure(closure)
        for group in self.param_groups:
            lr = float(group["lr"])
            for p in self._params_with_grad(group):
                state = self._init_state(p, group)
                xp = p.device.xp
                d = p._data
                step = _incr_step(state)
                scratch = xp.empty_like(d)
                g = _grad_for_update(xp, p, group["maximize"], group["weight_decay"], scratch)
                work = scratch if g is not scratch else xp.empty_like(d)
                clr = lr / (1 + (step - 1) * group["lr_decay"])
                acc = state["sum"]._data
                xp.multiply(g, g, out=work)
                acc += work
                std = xp.sqrt(acc, out=work)
                std += group["eps"]
                xp.divide(g, std, out=work)
                work *= -clr
                d += work
                p._vc[0] += 1
                state["sum"]._vc[0] += 1
        return loss
