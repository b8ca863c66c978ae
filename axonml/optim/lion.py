"""``Lion``: sign-of-momentum updates (Chen et al., "Symbolic Discovery of Optimization
Algorithms", 2023, Program 1)::

    g = -grad if maximize else grad
    p = p * (1 - lr * weight_decay)
    c = beta1 * m + (1 - beta1) * g
    p = p - lr * sign(c)
    m = beta2 * m + (1 - beta2) * g

Lion's steps all have size ``lr`` per coordinate, so it wants a learning rate 3-10x
smaller than AdamW's and a weight decay 3-10x larger.
"""

from __future__ import annotations

from typing import Any, Callable

from .optimizer import Optimizer, _check_betas, _check_hparam, _check_lr, _grad_for_update, _state_zeros

__all__ = ["Lion"]


class Lion(Optimizer):
    """Lion (EvoLved Sign Momentum).

    Args:
        params: parameters or parameter groups (see :class:`Optimizer`).
        lr: learning rate. betas: interpolation factor of the update (beta1) and decay
        of the momentum (beta2). weight_decay: decoupled decay coefficient.
        maximize: maximize the objective.

    State per parameter: ``exp_avg``.

    Example::

        opt = ax.optim.Lion(model.parameters(), lr=1e-4, weight_decay=1.0)
    """

    def __init__(
        self,
        params: Any,
        lr: float = 1e-4,
        betas: tuple[float, float] = (0.9, 0.99),
        weight_decay: float = 0.0,
        *,
        maximize: bool = False,
    ) -> None:
        _check_lr(lr, "Lion")
        _check_betas(betas, "Lion")
        _check_hparam(weight_decay >= 0.0, "weight_decay value", weight_decay, "weight_decay >= 0", "Lion")
        defaults = {"lr": lr, "betas": tuple(betas), "weight_decay": weight_decay, "maximize": maximize}
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
                    state["exp_avg"] = _state_zeros(p)
                xp = p.device.xp
                d = p._data
                scratch = xp.empty_like(d)
                g = _grad_for_update(xp, p, group["maximize"], 0, scratch)
                work = scratch if g is not scratch else xp.empty_like(d)
                m = state["exp_avg"]._data
                if wd != 0:
                    d *= 1 - lr * wd
                # c = m + (1 - beta1) * (g - m) = beta1 * m + (1 - beta1) * g
                xp.subtract(g, m, out=work)
                work *= 1 - beta1
                work += m
                sgn = xp.sign(work, out=xp.empty_like(d))  # NumPy's sign is ~10x slower in place
                sgn *= -lr
                d += sgn
                p._vc[0] += 1
                # m = m + (1 - beta2) * (g - m)
                xp.subtract(g, m, out=work)
                work *= 1 - beta2
                m += work
                state["exp_avg"]._vc[0] += 1
        return loss
