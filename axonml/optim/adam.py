"""``Adam`` and ``AdamW`` (decoupled weight decay), with AMSGrad.

The update is PyTorch's (``torch.optim.Adam`` / ``AdamW``, single-tensor path)::

    step += 1
    g = -grad if maximize else grad
    p = p * (1 - lr * weight_decay)          (AdamW: decoupled decay)
    g = g + weight_decay * p                 (Adam: coupled decay)
    m = m.lerp(g, 1 - beta1)
    v = beta2 * v + (1 - beta2) * g * g
    v_max = max(v_max, v)                    (amsgrad; v_max replaces v below)
    denom = sqrt(v) / sqrt(1 - beta2 ** step) + eps
    p = p - lr / (1 - beta1 ** step) * m / denom
"""

from __future__ import annotations

from typing import Any, Callable

from ..runtime.devices.kernels import adam_update
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

__all__ = ["Adam", "AdamW"]


class Adam(Optimizer):
    """Adam (Kingma & Ba, 2015), optionally AMSGrad, with coupled or decoupled weight decay.

    Args:
        params: parameters or parameter groups (see :class:`Optimizer`).
        lr: learning rate. betas: decay rates of the first and second moment averages.
        eps: added to the denominator. weight_decay: decay coefficient (an L2 penalty
        added to the gradient unless ``decoupled_weight_decay``). amsgrad: use the running
        maximum of the second moment. maximize: maximize the objective.
        foreach: accepted for PyTorch compatibility (updates run per parameter).
        decoupled_weight_decay: shrink the parameters directly, as :class:`AdamW`.

    State per parameter: ``step`` (0-d float32 tensor), ``exp_avg``, ``exp_avg_sq`` and,
    with amsgrad, ``max_exp_avg_sq``.

    Example::

        opt = ax.optim.Adam(model.parameters(), lr=1e-3, betas=(0.9, 0.999))
    """

    def __init__(
        self,
        params: Any,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0,
        amsgrad: bool = False,
        *,
        foreach: bool | None = None,
        maximize: bool = False,
        decoupled_weight_decay: bool = False,
    ) -> None:
        name = type(self).__name__
        _check_lr(lr, name)
        _check_hparam(eps >= 0.0, "epsilon value", eps, "eps >= 0", name)
        _check_betas(betas, name)
        _check_hparam(weight_decay >= 0.0, "weight_decay value", weight_decay, "weight_decay >= 0", name)
        defaults = {
            "lr": lr,
            "betas": tuple(betas),
            "eps": eps,
            "weight_decay": weight_decay,
            "amsgrad": amsgrad,
            "maximize": maximize,
            "foreach": foreach,
            "decoupled_weight_decay": decoupled_weight_decay,
        }
        super().__init__(params, defaults)

    def _init_state(self, p: Any, amsgrad: bool) -> dict:
        state = self.state[p]
        if len(state) == 0:
            state["step"] = _step_tensor()
            state["exp_avg"] = _state_zeros(p)
            state["exp_avg_sq"] = _state_zeros(p)
            if amsgrad:
                state["max_exp_avg_sq"] = _state_zeros(p)
        elif amsgrad and "max_exp_avg_sq" not in state:
            state["max_exp_avg_sq"] = _state_zeros(p)
        return state

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Update every parameter that has a gradient; returns ``closure()``'s loss if given."""
        loss = self._eval_closure(closure)
        for group in self.param_groups:
            lr = float(group["lr"])
            beta1, beta2 = (float(b) for b in group["betas"])
            eps = group["eps"]
            wd = group["weight_decay"]
            amsgrad = group["amsgrad"]
            decoupled = group["decoupled_weight_decay"]
            for p in self._params_with_grad(group):
                state = self._init_state(p, amsgrad)
                xp = p.device.xp
                d = p._data
                step = _incr_step(state)
                if not amsgrad and adam_update(
                        xp, d, p.grad._data, state["exp_avg"]._data, state["exp_avg_sq"]._data,
                        decay=1 - lr * wd if decoupled else 1.0, wd=0 if decoupled else wd, maximize=group["maximize"],
                        beta1=beta1, beta2=beta2, bias_correction2_sqrt=(1 - beta2**step) ** 0.5, eps=eps,
                        step_size=lr / (1 - beta1**step)):
                    p._vc[0] += 1  # one fused kernel on a GPU
                    state["exp_avg"]._vc[0] += 1
                    state["exp_avg_sq"]._vc[0] += 1
                    continue
                scratch = xp.empty_like(d)
                if wd != 0 and decoupled:
                    d *= 1 - lr * wd
                g = _grad_for_update(xp, p, group["maximize"], 0 if decoupled else wd, scratch)
                m = state["exp_avg"]._data
                v = state["exp_avg_sq"]._data
                # a second scratch array only when g itself lives in the first
                work = scratch if g is not scratch else xp.empty_like(d)
                _lerp_(xp, m, g, 1 - beta1, work)
                v *= beta2
                xp.multiply(g, 1 - beta2, out=work)
                work *= g
                v += work

                bias_correction1 = 1 - beta1**step
                bias_correction2_sqrt = (1 - beta2**step) ** 0.5
                step_size = lr / bias_correction1
                if amsgrad:
                    vmax = state["max_exp_avg_sq"]._data
                    xp.maximum(vmax, v, out=vmax)
                    state["max_exp_avg_sq"]._vc[0] += 1
                    v = vmax
                denom = xp.sqrt(v, out=work)
                denom /= bias_correction2_sqrt
                denom += eps
                xp.divide(m, denom, out=denom)
                denom *= -step_size
                d += denom
                p._vc[0] += 1
                state["exp_avg"]._vc[0] += 1
                state["exp_avg_sq"]._vc[0] += 1
        return loss


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter, 2019): each step first
    shrinks the parameters by ``1 - lr * weight_decay``, then applies the Adam update.

    Same arguments as :class:`Adam` (``weight_decay`` defaults to ``1e-2``).

    Example::

        opt = ax.optim.AdamW(model.parameters(), lr=3e-4, weight_decay=0.1)
    """

    def __init__(
        self,
        params: Any,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
        amsgrad: bool = False,
        *,
        maximize: bool = False,
        foreach: bool | None = None,
    ) -> None:
        super().__init__(
            params, lr, betas, eps, weight_decay, amsgrad, foreach=foreach, maximize=maximize, decoupled_weight_decay=True
        )

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        # AdamW always decouples, whatever a loaded state dict says (as in PyTorch)
        for group in self.param_groups:
            group["decoupled_weight_decay"] = True
