"""``SGD``: stochastic gradient descent with momentum, dampening, Nesterov and weight decay.

The update is PyTorch's (``torch.optim.SGD``), term for term::

    g = -grad if maximize else grad
    g = g + weight_decay * p
    buf = g                                  (first step)
    buf = momentum * buf + (1 - dampening) * g
    g = g + momentum * buf if nesterov else buf
    p = p - lr * g
"""

from __future__ import annotations

from typing import Any, Callable

from .optimizer import Optimizer, _check_hparam, _check_lr, _grad_for_update, _state_from

__all__ = ["SGD"]


class SGD(Optimizer):
    """Stochastic gradient descent (optionally with momentum).

    Args:
        params: parameters or parameter groups (see :class:`Optimizer`).
        lr: learning rate. momentum: momentum factor. dampening: dampening of momentum.
        weight_decay: L2 penalty added to the gradient. nesterov: Nesterov momentum.
        maximize: maximize the objective instead of minimizing it.
        foreach: accepted for PyTorch compatibility; updates always run per parameter
            with whole-array math.

    State per parameter: ``momentum_buffer`` (only when ``momentum != 0``).

    Example::

        opt = ax.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True)
    """

    def __init__(
        self,
        params: Any,
        lr: float = 1e-3,
        momentum: float = 0,
        dampening: float = 0,
        weight_decay: float = 0,
        nesterov: bool = False,
        *,
        maximize: bool = False,
        foreach: bool | None = None,
    ) -> None:
        _check_lr(lr, "SGD")
        _check_hparam(momentum >= 0.0, "momentum value", momentum, "momentum >= 0", "SGD")
        _check_hparam(weight_decay >= 0.0, "weight_decay value", weight_decay, "weight_decay >= 0", "SGD")
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError(
                f"Nesterov momentum requires a momentum and zero dampening (got momentum={momentum}, dampening={dampening})"
            )
        defaults = {
            "lr": lr,
            "momentum": momentum,
            "dampening": dampening,
            "weight_decay": weight_decay,
            "nesterov": nesterov,
            "maximize": maximize,
            "foreach": foreach,
        }
        super().__init__(params, defaults)

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Update every parameter that has a gradient; returns ``closure()``'s loss if given."""
        loss = self._eval_closure(closure)
        for group in self.param_groups:
            lr = float(group["lr"])
            momentum = group["momentum"]
            dampening = group["dampening"]
            nesterov = group["nesterov"]
            for p in self._params_with_grad(group):
                xp = p.device.xp
                d = p._data
                scratch = xp.empty_like(d)
                g = _grad_for_update(xp, p, group["maximize"], group["weight_decay"], scratch)
                if momentum != 0:
                    state = self.state[p]
                    buf = state.get("momentum_buffer")
                    if buf is None:
                        state["momentum_buffer"] = buf = _state_from(p, g.copy())
                        b = buf._data
                    else:
                        b = buf._data
                        b *= momentum
                        if dampening == 0:
                            b += g
                        else:
                            b += g * (1 - dampening)
                        buf._vc[0] += 1
                    if nesterov:
                        # g + momentum * buf, written over the scratch copy of g
                        if g is not scratch:
                            scratch[...] = g
                        tmp = xp.multiply(b, momentum)
                        scratch += tmp
                        g = scratch
                    else:
                        g = b
                xp.multiply(g, -lr, out=scratch)
                d += scratch
                p._vc[0] += 1
        return loss
