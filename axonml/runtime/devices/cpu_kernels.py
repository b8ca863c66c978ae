"""Compiled CPU fast paths (numba) for hot ops; the NumPy code in the ops stays the reference.

What is here: softmax and log_softmax over the last axis of a C-contiguous array, GELU
(exact and tanh) and SiLU, forward and backward, for float32 and float64 NumPy arrays.
Each public function takes the op's array module first and returns ``None`` when the fast
path does not apply (not NumPy, another dtype, a non-contiguous or empty array, numba
missing or disabled): the caller then runs its NumPy code. Example, inside an op::

    y = cpu_kernels.softmax(ctx.xp, x, log=False)
    if y is None:
        y = ...  # the NumPy / CuPy code

Note on laziness: importing this module imports neither numba nor compiles anything.
:func:`available` looks numba up without importing it and reads ``AXONML_NUMBA`` once (call
:func:`refresh` after changing it). The first kernel call imports numba and compiles the
kernel for that dtype (about half a second each); ``cache=True`` keeps the machine code on
disk, so later processes load it instead. If numba fails to import or a kernel fails to
compile, a warning says so once and every op falls back to NumPy.

Note on math: numba here has no vector math library, so ``math.exp`` in a loop is a scalar
libm call. Transcendentals are written as arithmetic that LLVM vectorizes:

- ``exp``: ``x = k ln2 + r`` (``k`` rounded with the ``1.5 * 2**p`` trick, ``ln2`` split in
  two so ``k ln2`` is exact), a Taylor polynomial for ``e**r`` on ``|r| <= ln2/2`` (degree 7
  in float32, 13 in float64: truncation below 1e-8 and 1e-16), and ``2**k`` built from
  exponent bits in two halves, so subnormal results round once and overflow gives ``inf``.
  Accuracy: about 1 ulp; ``exp(-inf) = 0``, ``exp(inf) = inf``, NaN stays NaN.
- ``erf`` (exact GELU), float32: ``u * P(u**2)`` for ``|u| < 1`` and ``erfc(a) = exp(Q(a - 2.5))``
  for ``1 <= a <= 4`` (``erfc`` is 0 beyond, as ``1 - erf`` is in float32). ``P`` (degree 6)
  and ``Q`` (degree 8) are least-squares fits on Chebyshev nodes against mpmath's erf,
  rounded to float32: erf to 1.5e-7 absolute, GELU to about 2e-7 absolute for ``|x| < 6``.
  float64 uses the Taylor table of :func:`erf_taylor_table` (the NumPy path's, about 1 ulp).
- ``tanh`` GELU and SiLU use ``x * sigmoid(z) = x / (1 + exp(-z))`` (``z = 2 tanh-arg`` for
  GELU); the derivative uses ``1 - s`` computed without cancellation.

Note on speed: loops are branch-free (selects, clamps), compiled with ``fastmath=contract``
(FMA only; no reassociation, which could break the split ``k ln2``) and
``error_model='numpy'`` (no division checks). Row sums accumulate in float64 with 8
partial sums, so they vectorize without reassociation and lose less than NumPy's
pairwise float32 sum. Kernels release the GIL (``nogil``).
"""

from __future__ import annotations

import importlib
import importlib.util
import math
import threading
import warnings
from types import SimpleNamespace
from typing import Any

import numpy as np

from ..._env import flag_enabled

__all__ = [
    "available",
    "refresh",
    "softmax",
    "softmax_backward",
    "gelu",
    "gelu_backward",
    "silu",
    "silu_backward",
    "erf_taylor_table",
]

_f32, _f64 = np.float32, np.float64
_FLOAT_CHARS = "fd"

# -- scalar math (compiled by numba as inlined helpers; plain Python otherwise) ---------------------------
_LN2 = 0.693147180559945309417232121458
# ln2 split so that k * hi is exact for every k the clamps allow (|k| < 2**8 in float32, < 2**11 in float64)
_F32_LN2_HI = _f32(0.693145751953125)  # 16 significant bits
_F32_LN2_LO = _f32(_LN2 - 0.693145751953125)
_F64_LN2_HI = _f64(float.fromhex("0x1.62e42fee00000p-1"))  # 21 significant bits
_F64_LN2_LO = _f64(float.fromhex("0x1.a39ef35793c76p-33"))
_F32_LOG2E, _F64_LOG2E = _f32(1.0 / _LN2), _f64(1.0 / _LN2)
_F32_ROUND, _F64_ROUND = _f32(1.5 * 2.0**23), _f64(1.5 * 2.0**52)  # x + this rounds x to an integer
_F32_ROUND_BITS = np.array(_F32_ROUND).view(np.int32)[()]
_F64_ROUND_BITS = np.array(_F64_ROUND).view(np.int64)[()]
# clamps: below LO the result is 0 (after two scalings), above HI it is inf
_F32_LO, _F32_HI = _f32(-110.0), _f32(89.0)
_F64_LO, _F64_HI = _f64(-750.0), _f64(710.0)
_I32_BIAS, _I64_BIAS = np.int32(127), np.int64(1023)
_I32_23, _I64_52 = np.int32(23), np.int64(52)
_I32_1, _I64_1 = np.int32(1), np.int64(1)
_F32_INV_FACT = tuple(_f32(1.0 / math.factorial(n)) for n in range(8))
_F64_INV_FACT = tuple(_f64(1.0 / math.factorial(n)) for n in range(14))
(_E32_0, _E32_1, _E32_2, _E32_3, _E32_4, _E32_5, _E32_6, _E32_7) = _F32_INV_FACT
_E64 = _F64_INV_FACT


def _exp_f32(v: Any) -> Any:
    v = _F32_LO if v < _F32_LO else v  # NaN passes both clamps
    v = _F32_HI if v > _F32_HI else v
    t = v * _F32_LOG2E + _F32_ROUND
    kf = t - _F32_ROUND
    k = t.view(np.int32) - _F32_ROUND_BITS
    r = (v - kf * _F32_LN2_HI) - kf * _F32_LN2_LO
    p = _E32_7 * r + _E32_6
    p = p * r + _E32_5
    p = p * r + _E32_4
    p = p * r + _E32_3
    p = p * r + _E32_2
    p = p * r + _E32_1
    p = p * r + _E32_0
    k1 = np.int32(k >> _I32_1)
    k2 = np.int32(k - k1)
    s1 = np.int32((k1 + _I32_BIAS) << _I32_23).view(np.float32)
    s2 = np.int32((k2 + _I32_BIAS) << _I32_23).view(np.float32)
    return (p * s1) * s2


def _exp_f64(v: Any) -> Any:
    v = _F64_LO if v < _F64_LO else v
    v = _F64_HI if v > _F64_HI else v
    t = v * _F64_LOG2E + _F64_ROUND
    kf = t - _F64_ROUND
    k = t.view(np.int64) - _F64_ROUND_BITS
    r = (v - kf * _F64_LN2_HI) - kf * _F64_LN2_LO
    p = _E64[13] * r + _E64[12]
    p = p * r + _E64[11]
    p = p * r + _E64[10]
    p = p * r + _E64[9]
    p = p * r + _E64[8]
    p = p * r + _E64[7]
    p = p * r + _E64[6]
    p = p * r + _E64[5]
    p = p * r + _E64[4]
    p = p * r + _E64[3]
    p = p * r + _E64[2]
    p = p * r + _E64[1]
    p = p * r + _E64[0]
    k1 = np.int64(k >> _I64_1)
    k2 = np.int64(k - k1)
    s1 = np.int64((k1 + _I64_BIAS) << _I64_52).view(np.float64)
    s2 = np.int64((k2 + _I64_BIAS) << _I64_52).view(np.float64)
    return (p * s1) * s2
