"""Gradient clipping: ``clip_grad_norm_``, ``clip_grad_value_``, ``get_total_norm``,
``clip_grads_with_norm_``, with PyTorch's semantics.

Note on devices and syncs: norms are computed on the gradients' device and stay there
(0-d arrays); the clip coefficient ``min(max_norm / (total + 1e-6), 1)`` multiplies every
gradient unconditionally, as in PyTorch, so clipping never waits for the GPU unless
``error_if_nonfinite`` asks to look at the norm. Gradients are scaled in place (their
version counters are bumped). float16/bfloat16 gradients are reduced in float32; the total
norm has the gradients' dtype.
"""

from __future__ import annotations

import math
import warnings
from typing import Any, Iterable

import numpy as np

from ...autograd.variable import make_tensor
from ...runtime.dtypes import promote_types
from ...tensor import Tensor, tensor

__all__ = ["clip_grad_norm", "clip_grad_norm_", "clip_grad_value_", "clip_grads_with_norm_", "get_total_norm"]


def _as_list(tensors: Any) -> list:
    if isinstance(tensors, Tensor):
        return [tensors]
    return list(tensors)


def _array_norm(xp: Any, a: Any, p: float) -> Any:
    """The p-norm of all elements of array ``a`` as a 0-d array (half types in float32)."""
    if a.dtype.itemsize < 4:
        a = a.astype(np.float32)
    flat = a.reshape(-1)  # (numel,)
    if flat.size == 0:
        # the identity of the reduction: an empty tensor adds nothing to the total
        return xp.asarray(math.inf if p == -math.inf else 0.0, dtype=flat.dtype)
    if p == 2.0:
        return xp.sqrt(xp.dot(flat, flat))
    if p == math.inf:
        return xp.max(xp.abs(flat))
    if p == -math.inf:
        return xp.min(xp.abs(flat))
    if p == 1.0:
        return xp.sum(xp.abs(flat))
    if p == 0.0:
        return xp.asarray(xp.count_nonzero(flat), dtype=flat.dtype)
    return xp.sum(xp.abs(flat) ** p) ** (1.0 / p)


def get_total_norm(
    tensors: Tensor | Iterable[Tensor],
    norm_type: float = 2.0,
    error_if_nonfinite: bool = False,
    foreach: bool | None = None,
) -> Tensor:
    """The p-norm of ``tensors`` viewed as one vector (the norm of the per-tensor norms).

    Args:
        tensors: a tensor or an iterable of tensors (typically gradients).
        norm_type: p of the norm; ``inf`` for the max-norm.
        error_if_nonfinite: raise if the norm is nan or inf.
        foreach: accepted for PyTorch compatibility.

    Returns:
        A 0-d tensor on the first tensor's device (``0.0`` for no tensors).

    Example: ``ax.nn.utils.get_total_norm([p.grad for p in model.parameters()])``
    """
    tensors = _as_list(tensors)
    norm_type = float(norm_type)
    if len(tensors) == 0:
        return tensor(0.0)
    device = tensors[0].device
    xp = device.xp
    dtype = tensors[0].dtype
    norms = []
    for t in tensors:
        dtype = promote_types(dtype, t.dtype)
        n = _array_norm(t.device.xp, t._data, norm_type)
        if t.device is not device:
            n = device.from_host(t.device.to_host(n))
        norms.append(n.astype(np.float64 if n.dtype == np.float64 else np.float32))
    total = xp.asarray(_array_norm(xp, xp.stack(norms), norm_type), dtype=dtype.np)  # 0-d array, not a scalar
    if error_if_nonfinite and not bool(xp.isfinite(total)):
        raise RuntimeError(
            f"The total norm of order {norm_type} for gradients from `parameters` is non-finite ({float(total)}), so it "
            "cannot be clipped. To disable this error and scale the gradients by the non-finite norm anyway, set "
            "`error_if_nonfinite=False`"
        )
    return make_tensor(total, device)


def clip_grads_with_norm_(
    parameters: Tensor | Iterable[Tensor],
    max_norm: float,
    total_norm: Tensor,
    foreach: bool | None = None,
) -> None:
    """Scale the gradients of ``parameters`` in place by ``min(max_norm / (total_norm + 1e-6), 1)``.

    Example::

        norm = ax.nn.utils.get_total_norm([p.grad for p in params])
        ax.nn.utils.clip_grads_with_norm_(params, 1.0, norm)
    """
    grads = [p.grad for p in _as_list(parameters) if p.grad is not None]
    max_norm = float(max_norm)
    if len(grads) == 0:
        return
    tn = total_norm._data
    xp = total_norm.device.xp
    coef = xp.minimum(max_norm / (tn + tn.dtype.type(1e-6)), 1.0).astype(tn.dtype)
    for g in grads:
        c = coef if g.device is total_norm.device else g.device.from_host(total_norm.device.to_host(coef))
        with np.errstate(invalid="ignore"):  # a non-finite norm makes nan gradients, silently as in PyTorch
            g._data *= c.astype(g._data.dtype)
        g._vc[0] += 1


def clip_grad_norm_(
    parameters: Tensor | Iterable[Tensor],
    max_norm: float,
    norm_type: float = 2.0,
    error_if_nonfinite: bool = False,
    foreach: bool | None = None,
) -> Tensor:
    """Clip the gradients of ``parameters`` in place so that their total p-norm (all
    gradients viewed as one vector) is at most ``max_norm``.

    Args:
        parameters: a tensor or an iterable of tensors whose ``.grad`` is clipped.
        max_norm: the largest allowed norm. norm_type: p (``inf`` for the max-norm).
        error_if_nonfinite: raise ``RuntimeError`` when the norm is nan or inf.
        foreach: accepted for PyTorch compatibility.

    Returns:
        The total norm before clipping, a 0-d tensor.

    Example::

        loss.backward()
        norm = ax.nn.utils.clip_grad_norm_(model.parameters(), max_norm=1.0)
        opt.step()
    """
    is_generator = not isinstance(parameters, (Tensor, list, tuple))
    parameters = _as_list(parameters)
    if is_generator and len(parameters) == 0:
        warnings.warn("`parameters` is an empty generator, no gradient clipping will occur.", stacklevel=2)
    grads = [p.grad for p in parameters if p.grad is not None]
    total = get_total_norm(grads, norm_type, error_if_nonfinite, foreach)
    clip_grads_with_norm_(parameters, max_norm, total, foreach)
    return total


def clip_grad_norm(
    parameters: Tensor | Iterable[Tensor],
    max_norm: float,
    norm_type: float = 2.0,
    error_if_nonfinite: bool = False,
    foreach: bool | None = None,
) -> Tensor:
    """Deprecated alias of :func:`clip_grad_norm_` (as in PyTorch)."""
    warnings.warn(
        "`axonml.nn.utils.clip_grad_norm` is now deprecated in favor of `axonml.nn.utils.clip_grad_norm_`.",
        FutureWarning,
        stacklevel=2,
    )
    return clip_grad_norm_(parameters, max_norm, norm_type, error_if_nonfinite, foreach)


def clip_grad_value_(parameters: Tensor | Iterable[Tensor], clip_value: float, foreach: bool | None = None) -> None:
    """Clamp the gradients of ``parameters`` in place to ``[-clip_value, clip_value]``.

    Example: ``ax.nn.utils.clip_grad_value_(model.parameters(), clip_value=0.5)``
    """
    clip_value = float(clip_value)
    for p in _as_list(parameters):
        g = p.grad
        if g is None:
            continue
        xp = g.device.xp
        xp.clip(g._data, -clip_value, clip_value, out=g._data)
        g._vc[0] += 1
