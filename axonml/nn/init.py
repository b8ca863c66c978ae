"""Parameter initialisation (``torch.nn.init``): fill tensors in place from a distribution.

Note on how values are written: every function draws its numbers on the host with the
tensor's NumPy generator (``generator=`` or axonml's default one, so ``ax.manual_seed``
makes initialisation reproducible, on CPU and GPU alike), casts them to the tensor's dtype,
copies them into the tensor's storage (``t._data[...] = ...``) and bumps its version
counter. This bypasses autograd, exactly as ``torch.nn.init`` runs under ``no_grad``, so it
works on ``Parameter`` leaves that require grad. Views of the tensor see the new values.

Note on formulas: the gains, fans and bounds follow PyTorch's definitions (``fan_in`` is
``size(1) * receptive field``, ``fan_out`` is ``size(0) * receptive field``; Kaiming's
uniform bound is ``gain * sqrt(3 / fan)``...), so a model initialised here has the same
statistics as the PyTorch one.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np

from ..tensor import Generator, Tensor
from ..tensor.random import get_generator

logger = logging.getLogger(__name__)

_LINEAR_FNS = ("linear", "conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d", "conv_transpose3d")


def _check(tensor: Any, fn: str) -> None:
    if not isinstance(tensor, Tensor):
        raise TypeError(f"nn.init.{fn} expects a Tensor, got {type(tensor).__name__}")
    if not tensor.dtype.is_floating_point:
        raise TypeError(f"nn.init.{fn} needs a floating point tensor, got dtype {tensor.dtype}")


def _write(tensor: Tensor, values: Any) -> Tensor:
    """Copy host ``values`` (broadcastable to the tensor) into the tensor's storage."""
    arr = np.asarray(values, dtype=np.float64).astype(tensor.dtype.np)
    tensor._data[...] = tensor.device.from_host(arr)
    tensor._vc[0] += 1
    return tensor


def calculate_gain(nonlinearity: str, param: float | None = None) -> float:
    """The recommended gain for a nonlinearity (PyTorch's table).

    Args:
        nonlinearity: ``'linear'``, ``'conv1d'``..., ``'sigmoid'``, ``'tanh'``, ``'relu'``,
            ``'leaky_relu'`` or ``'selu'``.
        param: the negative slope for ``'leaky_relu'`` (default 0.01).

    Example: ``ax.nn.init.calculate_gain('leaky_relu', 0.2)`` is ``sqrt(2 / 1.04)``.
    """
    if nonlinearity in _LINEAR_FNS or nonlinearity == "sigmoid":
        return 1.0
    if nonlinearity == "tanh":
        return 5.0 / 3
    if nonlinearity == "relu":
        return math.sqrt(2.0)
    if nonlinearity == "leaky_relu":
        if param is None:
            slope = 0.01
        elif isinstance(param, bool) or not isinstance(param, (int, float)):
            raise ValueError(f"calculate_gain: negative_slope {param!r} is not a valid number")
        else:
            slope = param
        return math.sqrt(2.0 / (1 + slope**2))
    if nonlinearity == "selu":
        return 3.0 / 4
    raise ValueError(
        f"calculate_gain: unsupported nonlinearity {nonlinearity!r}; use one of "
        f"{[*_LINEAR_FNS, 'sigmoid', 'tanh', 'relu', 'leaky_relu', 'selu']}"
    )


def _calculate_fan_in_and_fan_out(tensor: Tensor) -> tuple[int, int]:
    """``(fan_in, fan_out)`` of a weight: ``size(1)`` and ``size(0)`` times the receptive
    field (the product of the remaining dims). Needs at least 2 dims."""
    if tensor.dim() < 2:
        raise ValueError(
            f"fan in and fan out can not be computed for a tensor with fewer than 2 dimensions "
            f"(got shape {tuple(tensor.shape)})"
        )
    receptive = 1
    for s in tensor.shape[2:]:
        receptive *= int(s)
    return int(tensor.shape[1]) * receptive, int(tensor.shape[0]) * receptive


def _calculate_correct_fan(tensor: Tensor, mode: str) -> int:
    mode = mode.lower()
    if mode not in ("fan_in", "fan_out"):
        raise ValueError(f"mode {mode!r} not supported; use 'fan_in' or 'fan_out'")
    fan_in, fan_out = _calculate_fan_in_and_fan_out(tensor)
    return fan_in if mode == "fan_in" else fan_out


def uniform_(tensor: Tensor, a: float = 0.0, b: float = 1.0, generator: Generator | None = None) -> Tensor:
    """Fill ``tensor`` with values from U(a, b). Returns the tensor.

    Example: ``ax.nn.init.uniform_(w, -0.1, 0.1)``
    """
    _check(tensor, "uniform_")
    return _write(tensor, get_generator(generator).uniform(a, b, tuple(tensor.shape)))


def normal_(tensor: Tensor, mean: float = 0.0, std: float = 1.0, generator: Generator | None = None) -> Tensor:
    """Fill ``tensor`` with values from N(mean, std²). Returns the tensor."""
    _check(tensor, "normal_")
    return _write(tensor, get_generator(generator).normal(mean, std, tuple(tensor.shape)))


def trunc_normal_(
    tensor: Tensor, mean: float = 0.0, std: float = 1.0, a: float = -2.0, b: float = 2.0, generator: Generator | None = None
) -> Tensor:
    """Fill ``tensor`` with N(mean, std²) values truncated to [a, b] (``a``, ``b`` are
    absolute bounds, as in PyTorch). Uses the inverse-CDF method. Returns the tensor."""
    _check(tensor, "trunc_normal_")
    if std <= 0:
        raise ValueError(f"trunc_normal_: std must be positive, got {std}")
    if not a < b:
        raise ValueError(f"trunc_normal_: the lower bound a={a} must be below the upper bound b={b}")

    def cdf(x: float) -> float:
        return (1.0 + math.erf(x / math.sqrt(2.0))) / 2.0

    lo, hi = cdf((a - mean) / std), cdf((b - mean) / std)
    if hi - lo < 1e-12:
        logger.warning(
            "trunc_normal_: [a, b] = [%s, %s] lies far in the tail of N(%s, %s²); values are clamped", a, b, mean, std
        )
    u = get_generator(generator).uniform(2 * lo - 1, 2 * hi - 1, tuple(tensor.shape))
    # inverse CDF of the standard normal: sqrt(2) * erfinv(u)
    vals = mean + std * math.sqrt(2.0) * _erfinv(u)
    return _write(tensor, np.clip(vals, a, b))


def _erfinv(y: np.ndarray) -> np.ndarray:
    """erf⁻¹ on (-1, 1) in float64: Giles' approximation refined by two Newton steps."""
    y = np.clip(np.asarray(y, dtype=np.float64), -1 + 1e-15, 1 - 1e-15)
    w = -np.log((1.0 - y) * (1.0 + y))
    small = w < 5.0
    ws = w - 2.5
    wl = np.sqrt(np.maximum(w, 5.0)) - 3.0
    p_s = np.polyval([2.81022636e-08, 3.43273939e-07, -3.5233877e-06, -4.39150654e-06, 0.00021858087,
                      -0.00125372503, -0.00417768164, 0.246640727, 1.50140941], ws)
    p_l = np.polyval([-0.000200214257, 0.000100950558, 0.00134934322, -0.00367342844, 0.00573950773,
                      -0.0076224613, 0.00943887047, 1.00167406, 2.83297682], wl)
    x = np.where(small, p_s, p_l) * y
    erf = np.vectorize(math.erf, otypes=[np.float64])
    for _ in range(2):
        x = x - (erf(x) - y) / (2.0 / math.sqrt(math.pi) * np.exp(-x * x))
    return x


def constant_(tensor: Tensor, val: float) -> Tensor:
    """Fill ``tensor`` with ``val``. Returns the tensor."""
    _check(tensor, "constant_")
    return _write(tensor, val)


def ones_(tensor: Tensor) -> Tensor:
    """Fill ``tensor`` with ones."""
    return constant_(tensor, 1.0)


def zeros_(tensor: Tensor) -> Tensor:
    """Fill ``tensor`` with zeros."""
    return constant_(tensor, 0.0)


def eye_(tensor: Tensor) -> Tensor:
    """Fill a 2-D ``tensor`` with the identity (ones on the diagonal, as ``ax.eye``)."""
    _check(tensor, "eye_")
    if tensor.dim() != 2:
        raise ValueError(f"nn.init.eye_ needs a 2-D tensor, got shape {tuple(tensor.shape)}")
    return _write(tensor, np.eye(*tensor.shape))


def dirac_(tensor: Tensor, groups: int = 1) -> Tensor:
    """Fill a 3-, 4- or 5-D conv weight with the Dirac delta, so the convolution is the
    identity on its first input channels (in each of ``groups`` groups)."""
    _check(tensor, "dirac_")
    if tensor.dim() not in (3, 4, 5):
        raise ValueError(f"nn.init.dirac_ needs a 3, 4 or 5-D tensor, got shape {tuple(tensor.shape)}")
    shape = tuple(tensor.shape)
    if shape[0] % groups != 0:
        raise ValueError(f"nn.init.dirac_: dim 0 ({shape[0]}) is not divisible by groups={groups}")
    out_per_group = shape[0] // groups
    arr = np.zeros(shape)
    centre = tuple(s // 2 for s in shape[2:])
    for g in range(groups):
        for d in range(min(out_per_group, shape[1])):
            arr[(g * out_per_group + d, d, *centre)] = 1.0
    return _write(tensor, arr)


def xavier_uniform_(tensor: Tensor, gain: float = 1.0, generator: Generator | None = None) -> Tensor:
    """Glorot uniform: U(-a, a) with ``a = gain * sqrt(6 / (fan_in + fan_out))``."""
    _check(tensor, "xavier_uniform_")
    fan_in, fan_out = _calculate_fan_in_and_fan_out(tensor)
    std = gain * math.sqrt(2.0 / float(fan_in + fan_out))
    bound = math.sqrt(3.0) * std
    return uniform_(tensor, -bound, bound, generator)


def xavier_normal_(tensor: Tensor, gain: float = 1.0, generator: Generator | None = None) -> Tensor:
    """Glorot normal: N(0, std²) with ``std = gain * sqrt(2 / (fan_in + fan_out))``."""
    _check(tensor, "xavier_normal_")
    fan_in, fan_out = _calculate_fan_in_and_fan_out(tensor)
    std = gain * math.sqrt(2.0 / float(fan_in + fan_out))
    return normal_(tensor, 0.0, std, generator)


def kaiming_uniform_(
    tensor: Tensor, a: float = 0, mode: str = "fan_in", nonlinearity: str = "leaky_relu", generator: Generator | None = None
) -> Tensor:
    """He uniform: U(-b, b) with ``b = gain * sqrt(3 / fan)``; ``gain`` from
    ``calculate_gain(nonlinearity, a)``, ``fan`` from ``mode``.

    Example (what ``Linear`` does)::

        ax.nn.init.kaiming_uniform_(w, a=math.sqrt(5))
    """
    _check(tensor, "kaiming_uniform_")
    if 0 in tuple(tensor.shape):
        logger.warning("kaiming_uniform_: initializing a zero-element tensor is a no-op")
        return tensor
    fan = _calculate_correct_fan(tensor, mode)
    bound = math.sqrt(3.0) * calculate_gain(nonlinearity, a) / math.sqrt(fan)
    return uniform_(tensor, -bound, bound, generator)


def kaiming_normal_(
    tensor: Tensor, a: float = 0, mode: str = "fan_in", nonlinearity: str = "leaky_relu", generator: Generator | None = None
) -> Tensor:
    """He normal: N(0, std²) with ``std = gain / sqrt(fan)``."""
    _check(tensor, "kaiming_normal_")
    if 0 in tuple(tensor.shape):
        logger.warning("kaiming_normal_: initializing a zero-element tensor is a no-op")
        return tensor
    fan = _calculate_correct_fan(tensor, mode)
    std = calculate_gain(nonlinearity, a) / math.sqrt(fan)
    return normal_(tensor, 0.0, std, generator)


def orthogonal_(tensor: Tensor, gain: float = 1.0, generator: Generator | None = None) -> Tensor:
    """Fill ``tensor`` (at least 2-D, flattened to ``(size(0), rest)``) with a (semi-)
    orthogonal matrix times ``gain``, from the QR decomposition of a Gaussian matrix."""
    _check(tensor, "orthogonal_")
    if tensor.dim() < 2:
        raise ValueError(f"nn.init.orthogonal_ needs at least 2 dimensions, got shape {tuple(tensor.shape)}")
    if tensor.numel() == 0:
        return tensor
    rows = int(tensor.shape[0])
    cols = tensor.numel() // rows
    flat = get_generator(generator).standard_normal((rows, cols))
    if rows < cols:
        flat = flat.T
    q, r = np.linalg.qr(flat)
    q = q * np.sign(np.diag(r))  # make the decomposition unique (uniform over the group)
    if rows < cols:
        q = q.T
    return _write(tensor, (gain * q).reshape(tuple(tensor.shape)))


def sparse_(tensor: Tensor, sparsity: float, std: float = 0.01, generator: Generator | None = None) -> Tensor:
    """Fill a 2-D ``tensor`` with N(0, std²) values and zero a ``sparsity`` fraction of each
    column (Martens 2010)."""
    _check(tensor, "sparse_")
    if tensor.dim() != 2:
        raise ValueError(f"nn.init.sparse_ needs a 2-D tensor, got shape {tuple(tensor.shape)}")
    rows, cols = tuple(tensor.shape)
    rng = get_generator(generator)
    arr = rng.normal(0.0, std, (rows, cols))
    n_zero = int(math.ceil(sparsity * rows))
    for c in range(cols):
        arr[rng.permutation(rows)[:n_zero], c] = 0.0
    return _write(tensor, arr)


__all__ = [
    "calculate_gain", "constant_", "dirac_", "eye_", "kaiming_normal_", "kaiming_uniform_", "normal_", "ones_",
    "orthogonal_", "sparse_", "trunc_normal_", "uniform_", "xavier_normal_", "xavier_uniform_", "zeros_",
]
