"""``gradcheck``: compare analytic gradients with float64 central differences.

Note on method: for a random cotangent ``v`` of each output, the analytic
vector-Jacobian product (one backward) is compared with the numerical derivative of
``sum(v * f(x))`` for every input element (two forwards each). Inputs should be small
float64 tensors.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from ..errors import AutogradError
from .engine import run_backward
from .grad_mode import no_grad
from .variable import TensorBase, make_tensor


def _outputs(fn: Callable, inputs: Sequence[Any]) -> list:
    out = fn(*inputs)
    if isinstance(out, TensorBase):
        return [out]
    return [o for o in out if isinstance(o, TensorBase)]


def gradcheck(
    fn: Callable[..., Any],
    inputs: Sequence[Any],
    eps: float = 1e-6,
    atol: float = 1e-5,
    rtol: float = 1e-3,
    raise_exception: bool = True,
    seed: int = 0,
) -> bool:
    """Check ``fn``'s gradients with respect to every input that requires grad.

    Example::

        x = ax.randn(3, 4, dtype=ax.float64, requires_grad=True)
        assert ax.autograd.gradcheck(lambda t: (t * t).sum(dim=1), [x])
    """
    inputs = list(inputs)
    targets = [i for i, x in enumerate(inputs) if isinstance(x, TensorBase) and x.requires_grad]
    if not targets:
        raise AutogradError("gradcheck: no input requires grad")
    for i in targets:
        if inputs[i].dtype.name != "float64":
            raise AutogradError(f"gradcheck: input {i} is {inputs[i].dtype}; use float64 inputs for a meaningful check")
    rng = np.random.default_rng(seed)
    outs = _outputs(fn, inputs)
    diff_outs = [o for o in outs if o.requires_grad]
    if not diff_outs:
        raise AutogradError("gradcheck: no output requires grad")
    vs = [rng.standard_normal(o.shape) for o in diff_outs]
    xp = diff_outs[0].device.xp
    vs_dev = [xp.asarray(v) for v in vs]
    grads = run_backward(
        diff_outs,
        [v.astype(o._data.dtype) for v, o in zip(vs_dev, diff_outs)],
        retain_graph=False,
        inputs=[inputs[i] for i in targets],
        allow_unused=True,
    )

    def scalar(xs: list) -> float:
        with no_grad():
            os_ = [o for o in _outputs(fn, xs) if o.dtype.is_floating_point]
        total = 0.0
        for o, v in zip(os_, vs):
            total += float(np.sum(o.device.to_host(o._data).astype(np.float64) * v))
        return total

    for k, i in enumerate(targets):
        x = inputs[i]
        host = x.device.to_host(x._data).astype(np.float64)
        num = np.zeros_like(host)
        flat = host.reshape(-1)
        for j in range(flat.size):
            orig = flat[j]
            res = []
            for delta in (eps, -eps):
                flat[j] = orig + delta
                xs = list(inputs)
                xs[i] = make_tensor(x.device.from_host(host.copy()), x.device)
                res.append(scalar(xs))
            flat[j] = orig
            num.reshape(-1)[j] = (res[0] - res[1]) / (2 * eps)
        ana = grads[k]
        ana = np.zeros_like(host) if ana is None else x.device.to_host(ana).astype(np.float64)
        if ana.shape != num.shape or not np.allclose(ana, num, atol=atol, rtol=rtol):
            err = np.max(np.abs(ana - num)) if ana.shape == num.shape else float("nan")
            msg = (
                f"gradcheck failed for input {i} (shape {tuple(host.shape)}): max abs error {err:.3g}\n"
                f"analytic:\n{ana}\nnumerical:\n{num}"
            )
            if raise_exception:
                raise AutogradError(msg)
            return False
    return True
