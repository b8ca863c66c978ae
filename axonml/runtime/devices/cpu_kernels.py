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


def _exp_f32_parts(v):  # noqa: ANN001, ANN202
    """``(p, k)`` with ``exp(v) = p * 2**k``, ``p`` in [0.7, 1.42]; ``v`` already clamped (or NaN)."""
    t = v * _F32_LOG2E + _F32_ROUND  # round(v / ln2) in the low mantissa bits
    kf = t - _F32_ROUND
    k = np.int32(np.float32(t).view(np.int32) - _F32_ROUND_BITS)
    r = (v - kf * _F32_LN2_HI) - kf * _F32_LN2_LO
    p = _E32_7 * r + _E32_6
    p = p * r + _E32_5
    p = p * r + _E32_4
    p = p * r + _E32_3
    p = p * r + _E32_2
    p = p * r + _E32_1
    p = p * r + _E32_0
    return p, k


def _exp_f32(v):  # noqa: ANN001, ANN202
    v = _F32_LO if v < _F32_LO else v  # NaN passes both clamps
    v = _F32_HI if v > _F32_HI else v
    p, k = _exp_f32_parts(v)
    k1 = np.int32(k >> _I32_1)  # 2**k in two factors: subnormal results round once, overflow is inf
    k2 = np.int32(k - k1)
    s1 = np.int32((k1 + _I32_BIAS) << _I32_23).view(np.float32)
    s2 = np.int32((k2 + _I32_BIAS) << _I32_23).view(np.float32)
    return (p * s1) * s2


def _exp_f32_normal(v):  # noqa: ANN001, ANN202
    """``exp(v)`` for ``-87 <= v <= 88`` only (normal results): no clamps, one scaling."""
    p, k = _exp_f32_parts(v)
    return p * np.int32((k + _I32_BIAS) << _I32_23).view(np.float32)


def _exp_f64(v):  # noqa: ANN001, ANN202
    v = _F64_LO if v < _F64_LO else v
    v = _F64_HI if v > _F64_HI else v
    t = v * _F64_LOG2E + _F64_ROUND
    kf = t - _F64_ROUND
    k = np.int64(np.float64(t).view(np.int64) - _F64_ROUND_BITS)
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


def _exp(v: Any) -> Any:
    """``e**v`` for a float32/float64 scalar (numba: the dtype's helper, inlined)."""
    return _exp_f32(v) if isinstance(v, np.float32) else _exp_f64(v)


_F32_NEG_MAX = _f32(87.0)


def _exp_neg_f32(h):  # noqa: ANN001, ANN202
    e = _exp_f32_normal(-(h if h < _F32_NEG_MAX else _F32_NEG_MAX))
    return _F32_ZERO if h > _F32_NEG_MAX else e  # flushes results below 1.6e-38 to 0


def _exp_neg(h: Any) -> Any:
    """``e**-h`` for ``h >= 0`` (a Gaussian's tail), cheaper than :func:`_exp` in float32."""
    return _exp_neg_f32(h) if isinstance(h, np.float32) else _exp_f64(-h)


# erf for float32 (see the module note): erf(u) = u * P(u^2) for |u| < 1; erfc(a) = exp(Q(a - 2.5)) for 1 <= a <= 4
_F32_ERF_P = tuple(
    _f32(c)
    for c in (
        1.128379225730896, -0.3761262893676758, 0.11283625662326813, -0.02685539983212948,
        0.005191218573600054, -0.0008034846396185458, 7.933493907330558e-05,
    )
)  # fmt: skip
_F32_ERFC_Q = tuple(
    _f32(c)
    for c in (
        -7.806815147399902, -5.352680683135986, -0.9438936114311218, -0.01085851714015007,
        0.0021651603747159243, -0.0004201445553917438, 7.739442662568763e-05,
        -1.3309389942151029e-05, 1.6140616025950294e-06,
    )
)  # fmt: skip
(_P0, _P1, _P2, _P3, _P4, _P5, _P6) = _F32_ERF_P
(_Q0, _Q1, _Q2, _Q3, _Q4, _Q5, _Q6, _Q7, _Q8) = _F32_ERFC_Q
_F32_SQRT1_2, _F64_SQRT1_2 = _f32(1.0 / math.sqrt(2.0)), _f64(1.0 / math.sqrt(2.0))
_F32_HALF, _F32_ONE, _F32_ZERO, _F32_FOUR, _F32_MID = _f32(0.5), _f32(1.0), _f32(0.0), _f32(4.0), _f32(2.5)
_F64_HALF = _f64(0.5)


def _ncdf_f32(x):  # noqa: ANN001, ANN202
    u = x * _F32_SQRT1_2
    u2 = u * u
    p = _P6 * u2 + _P5
    p = p * u2 + _P4
    p = p * u2 + _P3
    p = p * u2 + _P2
    p = p * u2 + _P1
    p = p * u2 + _P0
    inner = _F32_HALF + _F32_HALF * (u * p)  # |u| < 1
    a = abs(u)
    w = (a if a < _F32_FOUR else _F32_FOUR) - _F32_MID  # Q(w) in [-17.4, -1.8]
    q = _Q8 * w + _Q7
    q = q * w + _Q6
    q = q * w + _Q5
    q = q * w + _Q4
    q = q * w + _Q3
    q = q * w + _Q2
    q = q * w + _Q1
    q = q * w + _Q0
    c = _F32_HALF * _exp_f32_normal(q)  # erfc(a) / 2, the lower tail
    c = _F32_ZERO if a > _F32_FOUR else c
    outer = c if x < _F32_ZERO else _F32_ONE - c
    return inner if a < _F32_ONE else outer


# -- erf by a table of Taylor expansions (float64 kernels and the NumPy reference share it) -----------------
_ERF_TABLE_SPECS = {np.dtype(np.float64): (0.125, 6.0, 10), np.dtype(np.float32): (0.0625, 4.0, 4)}


def _taylor_table(h: float, x_max: float, degree: int) -> np.ndarray:
    """Taylor coefficients of erf around the centres ``c_k = k h``, k = 0..K, plus a row that is
    the constant 1 (used beyond ``x_max``): ``coef[n, k]`` is the n-th coefficient around ``c_k``.

    The coefficients ``b_n`` of ``exp(-x**2)`` around ``c`` obey ``(n+1) b_{n+1} = -2 (c b_n + b_{n-1})``;
    erf's are ``a_0 = erf(c)`` and ``a_n = 2/sqrt(pi) b_{n-1} / n``.
    """
    rows = []
    for k in range(int(round(x_max / h)) + 1):
        c = k * h
        b = [math.exp(-c * c)]
        for n in range(degree):
            b.append(-2.0 * (c * b[n] + (b[n - 1] if n >= 1 else 0.0)) / (n + 1))
        rows.append([math.erf(c)] + [2.0 / math.sqrt(math.pi) * b[n - 1] / n for n in range(1, degree + 1)])
    rows.append([1.0] + [0.0] * degree)
    return np.ascontiguousarray(np.array(rows, dtype=np.float64).T)


_ERF_TABLES = {dt: (h, x_max, _taylor_table(h, x_max, deg)) for dt, (h, x_max, deg) in _ERF_TABLE_SPECS.items()}


def erf_taylor_table(dtype: Any) -> tuple:
    """``(h, x_max, coef)``: the erf table for ``dtype`` (float32 or float64).

    ``erf(x)`` for ``0 <= x <= x_max + h/2`` is ``sum_n coef[n, k] * (x - k h)**n`` with ``k = round(x / h)``;
    column ``K + 1`` (``K = x_max / h``) is the constant 1 for larger ``x``. Degree 10 with
    ``h = 1/8`` in float64 (about 1 ulp), degree 4 with ``h = 1/16`` in float32 (about 6e-8).
    Example: ``h, x_max, coef = erf_taylor_table(np.float64)``
    """
    return _ERF_TABLES[np.dtype(dtype)]


_E64_H, _E64_XMAX, _E64_COEF = _ERF_TABLES[np.dtype(np.float64)]
_E64_T = np.ascontiguousarray(_E64_COEF.T)  # one row of coefficients per centre
_E64_INV_H, _E64_CAP = _f64(1.0 / _E64_H), _f64(_E64_XMAX + _E64_H)
_E64_HH = _f64(_E64_H)
_E64_DEG = _E64_T.shape[1] - 1


def _ncdf_f64(x):  # noqa: ANN001, ANN202
    u = x * _F64_SQRT1_2
    a = abs(u)
    a = a if a < _E64_CAP else _E64_CAP  # NaN -> the cap; x * cdf is NaN anyway
    k = np.int64(a * _E64_INV_H + _F64_HALF)
    t = a - np.float64(k) * _E64_HH
    r = _E64_T[k, _E64_DEG]
    for j in range(_E64_DEG - 1, -1, -1):
        r = r * t + _E64_T[k, j]
    r = r if u >= 0.0 else -r
    return _F64_HALF + _F64_HALF * r


def _ncdf(x: Any) -> Any:
    """The standard normal CDF of a float32/float64 scalar."""
    return _ncdf_f32(x) if isinstance(x, np.float32) else _ncdf_f64(x)


# -- row reductions (softmax) -----------------------------------------------------------------------
_I32_SIGN, _I32_MAG = np.int32(31), np.int32(0x7FFFFFFF)
_I64_SIGN, _I64_MAG = np.int64(63), np.int64(0x7FFFFFFFFFFFFFFF)


def _row_max_f32(x, i, n):  # noqa: ANN001, ANN202
    # max over integer keys that order like the floats (negative floats get their magnitude bits
    # flipped): vectorizes without fast-math, and returns NaN when the row holds a (positive) NaN
    bits = x[i].view(np.int32)
    best = np.int32(-(2**31))
    for j in range(n):
        b = bits[j]
        key = np.int32(b ^ np.int32(np.int32(b >> _I32_SIGN) & _I32_MAG))
        best = key if key > best else best
    return np.int32(best ^ np.int32(np.int32(best >> _I32_SIGN) & _I32_MAG)).view(np.float32)


def _row_max_f64(x, i, n):  # noqa: ANN001, ANN202
    bits = x[i].view(np.int64)
    best = np.int64(-(2**63))
    for j in range(n):
        b = bits[j]
        key = np.int64(b ^ np.int64(np.int64(b >> _I64_SIGN) & _I64_MAG))
        best = key if key > best else best
    return np.int64(best ^ np.int64(np.int64(best >> _I64_SIGN) & _I64_MAG)).view(np.float64)


def _row_max(x: Any, i: int, n: int) -> Any:
    """The max of row ``i`` of a 2-D float array (NaN when it holds NaN)."""
    return _row_max_f32(x, i, n) if x.dtype == np.float32 else _row_max_f64(x, i, n)


def _row_sum(x, i, n):  # noqa: ANN001, ANN202
    """The sum of row ``i`` of a 2-D float array, accumulated in float64 (compiled with reassociation)."""
    s = 0.0
    for j in range(n):
        s += x[i, j]
    return s


# -- kernels (compiled lazily by _build) ---------------------------------------------------------------
def _exp_inplace(a):  # noqa: ANN001, ANN202
    """``a = exp(a)`` over a whole C-contiguous array: one flat loop, as per-row loops pay a
    vector setup per row."""
    f = a.reshape(-1)
    for j in range(f.size):
        f[j] = _exp(f[j])


def _exp_into(src, dst):  # noqa: ANN001, ANN202
    """``dst = exp(src)`` for distinct C-contiguous arrays (the same array would fail the vectorized
    loop's overlap check and run the scalar one: use :func:`_exp_inplace`)."""
    s, d = src.reshape(-1), dst.reshape(-1)
    for j in range(s.size):
        d[j] = _exp(s[j])


def _shift_rows(x, out):  # noqa: ANN001, ANN202
    """``out = x - max(x, axis=1)``. A row holding NaN has a NaN max; a fully masked row (all
    -inf) gets ``-inf - -inf = NaN``: such rows come out NaN, as in PyTorch."""
    rows, n = x.shape
    for i in range(rows):
        mi = _row_max(x, i, n)
        for j in range(n):
            out[i, j] = x[i, j] - mi


def _softmax_fwd(x: Any, out: Any) -> None:
    T = x.dtype.type
    rows, n = x.shape
    _shift_rows(x, out)
    _exp_inplace(out)
    for i in range(rows):
        c = T(1.0 / _row_sum(out, i, n))
        for j in range(n):
            out[i, j] *= c


def _log_softmax_fwd(x: Any, out: Any) -> None:
    T = x.dtype.type
    rows, n = x.shape
    _shift_rows(x, out)
    _exp_inplace(out)
    for i in range(rows):
        mi, c = _row_max(x, i, n), T(math.log(_row_sum(out, i, n)))  # the max again: cheaper than storing it
        for j in range(n):
            out[i, j] = (x[i, j] - mi) - c


def _softmax_bwd(y: Any, g: Any, out: Any) -> None:
    # dx = y * g - y * sum(y * g), as the NumPy path
    T = y.dtype.type
    rows, n = y.shape
    for i in range(rows):
        for j in range(n):
            out[i, j] = y[i, j] * g[i, j]
        c = T(_row_sum(out, i, n))
        for j in range(n):
            out[i, j] -= y[i, j] * c


def _log_softmax_bwd(y: Any, g: Any, out: Any) -> None:
    # dx = g - exp(y) * sum(g)
    T = y.dtype.type
    rows, n = y.shape
    _exp_into(y, out)
    for i in range(rows):
        c = T(_row_sum(g, i, n))
        for j in range(n):
            out[i, j] = g[i, j] - out[i, j] * c


_GELU_K2 = 2.0 * math.sqrt(2.0 / math.pi)  # tanh(z) = 2 sigmoid(2z) - 1
_GELU_C = 0.044715
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


def _gelu_fwd(x: Any, out: Any) -> None:
    for i in range(x.size):
        v = x[i]
        out[i] = v * _ncdf(v)


def _gelu_bwd(x: Any, g: Any, out: Any) -> None:
    T = x.dtype.type
    for i in range(x.size):
        v = x[i]
        out[i] = g[i] * (_ncdf(v) + v * (T(_INV_SQRT_2PI) * _exp_neg(T(0.5) * v * v)))


def _gelu_tanh_fwd(x: Any, out: Any) -> None:
    T = x.dtype.type
    for i in range(x.size):
        v = x[i]
        z = T(_GELU_K2) * (v + T(_GELU_C) * v * v * v)
        out[i] = v / (T(1.0) + _exp(-z))


def _gelu_tanh_bwd(x: Any, g: Any, out: Any) -> None:
    T = x.dtype.type
    for i in range(x.size):
        v = x[i]
        z = T(_GELU_K2) * (v + T(_GELU_C) * v * v * v)
        e = _exp(-z)
        s = T(1.0) / (T(1.0) + e)
        q = e * s if e < T(1.0) else T(1.0) - s
        dz = T(_GELU_K2) * (T(1.0) + T(3.0 * _GELU_C) * v * v)
        out[i] = g[i] * (s * (T(1.0) + v * q * dz))


def _silu_fwd(x: Any, out: Any) -> None:
    T = x.dtype.type
    for i in range(x.size):
        v = x[i]
        out[i] = v / (T(1.0) + _exp(-v))


def _silu_bwd(x: Any, g: Any, out: Any) -> None:
    T = x.dtype.type
    for i in range(x.size):
        v = x[i]
        e = _exp(-v)
        s = T(1.0) / (T(1.0) + e)
        q = e * s if e < T(1.0) else T(1.0) - s
        out[i] = g[i] * (s * (T(1.0) + v * q))


# -- the registry ----------------------------------------------------------------------------------
# kernel name -> (Python function, ndim of its arrays, number of arrays)
_KERNELS = {
    "softmax_fwd": (_softmax_fwd, 2, 2),
    "log_softmax_fwd": (_log_softmax_fwd, 2, 2),
    "softmax_bwd": (_softmax_bwd, 2, 3),
    "log_softmax_bwd": (_log_softmax_bwd, 2, 3),
    "gelu_fwd": (_gelu_fwd, 1, 2),
    "gelu_bwd": (_gelu_bwd, 1, 3),
    "gelu_tanh_fwd": (_gelu_tanh_fwd, 1, 2),
    "gelu_tanh_bwd": (_gelu_tanh_bwd, 1, 3),
    "silu_fwd": (_silu_fwd, 1, 2),
    "silu_bwd": (_silu_bwd, 1, 3),
}
_lock = threading.RLock()
_enabled: bool | None = None  # None: not decided yet (see available())
_by_char: dict = {}  # dtype.char ('f', 'd') -> _Kernels, filled on the first kernel use
_overloads_registered = False


class _Kernels:
    """The kernels for one dtype, as attributes: each is compiled (or loaded from numba's disk
    cache) on first access for one exact signature, C-contiguous arrays of that dtype, and
    the attribute is then the compiled entry point itself.

    Note: entry points skip numba's per-call type dispatch (half of a small call's cost), so
    they trust their arguments: the public functions below pass only C-contiguous arrays of
    this dtype with the kernel's ndim (a wrong dtype or ndim would be read as garbage).
    """

    def __init__(self, nb: Any, dispatchers: dict, dtype: np.dtype) -> None:
        self._nb, self._dispatchers, self._dtype = nb, dispatchers, dtype

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_") or name not in _KERNELS:
            raise AttributeError(name)
        _, ndim, nargs = _KERNELS[name]
        arr = self._nb.types.Array(self._nb.from_dtype(self._dtype), ndim, "C")
        with _lock:
            entry = self._dispatchers[name].compile((arr,) * nargs)
        setattr(self, name, entry)
        return entry


def available() -> bool:
    """True when the compiled kernels may be used: ``AXONML_NUMBA`` is not 0 and numba is installed.

    Does not import numba (the first kernel call does). The flag is read once; see :func:`refresh`.
    Example: ``cpu_kernels.available()`` -> ``True``
    """
    global _enabled
    if _enabled is None:
        _enabled = flag_enabled("AXONML_NUMBA") and importlib.util.find_spec("numba") is not None
    return _enabled


def refresh() -> None:
    """Read ``AXONML_NUMBA`` again on the next op (after changing it), and retry a numba that failed."""
    global _enabled
    _enabled = None


def _disable(what: str, err: BaseException) -> None:
    global _enabled
    _enabled = False
    warnings.warn(
        f"axonml: the numba CPU kernels are disabled ({what} failed: {type(err).__name__}: {err}); "
        "ops use their NumPy code. Set AXONML_NUMBA=0 to skip numba.",
        RuntimeWarning,
        stacklevel=4,
    )


def _register_overloads(nb: Any, ext: Any) -> None:
    """Teach numba the scalar helpers: per dtype, inlined into the loops (they vectorize there)."""
    global _overloads_registered
    if _overloads_registered:
        return
    f32, f64 = nb.types.float32, nb.types.float64
    elem = {"fastmath": {"contract"}, "error_model": "numpy"}
    inlined = {**elem, "forceinline": True}  # LLVM inlines them into the loops, which then vectorize

    @ext.overload(_exp, jit_options=inlined)
    def _ov_exp(v):  # noqa: ANN001, ANN202
        return _exp_f32 if v == f32 else _exp_f64 if v == f64 else None

    @ext.overload(_exp_neg, jit_options=inlined)
    def _ov_exp_neg(h):  # noqa: ANN001, ANN202
        return _exp_neg_f32 if h == f32 else (lambda h: _exp_f64(-h)) if h == f64 else None

    @ext.overload(_ncdf, jit_options=inlined)
    def _ov_ncdf(x):  # noqa: ANN001, ANN202
        return _ncdf_f32 if x == f32 else _ncdf_f64 if x == f64 else None

    @ext.overload(_row_max, jit_options=elem)
    def _ov_row_max(x, i, n):  # noqa: ANN001, ANN202
        return _row_max_f32 if x.dtype == f32 else _row_max_f64 if x.dtype == f64 else None

    ext.register_jitable(**inlined)(_exp_f32_parts)
    ext.register_jitable(**inlined)(_exp_f32_normal)
    ext.register_jitable(**inlined)(_exp_f32)
    ext.register_jitable(**inlined)(_exp_f64)
    # the sum may reassociate (vectorized partial sums); nothing else is compiled with it
    ext.register_jitable(fastmath={"reassoc", "nsz", "contract"}, error_model="numpy")(_row_sum)
    ext.register_jitable(**elem)(_exp_inplace)
    ext.register_jitable(**elem)(_exp_into)
    ext.register_jitable(**elem)(_shift_rows)
    _overloads_registered = True


def _load(char: str) -> _Kernels | None:
    """The kernels for dtype ``char`` ('f' or 'd'); imports numba on the first call. None when
    numba is unusable (after one warning)."""
    with _lock:
        if not _by_char and available():
            try:
                nb = importlib.import_module("numba")
                _register_overloads(nb, importlib.import_module("numba.extending"))
                jit = nb.njit(cache=True, nogil=True, fastmath={"contract"}, error_model="numpy")
                dispatchers = {name: jit(fn) for name, (fn, _, _) in _KERNELS.items()}
                for dt in (np.dtype(np.float32), np.dtype(np.float64)):
                    _by_char[dt.char] = _Kernels(nb, dispatchers, dt)
            except Exception as err:  # an ImportError, or a numba that does not work with this NumPy
                _disable("importing numba", err)
    return _by_char.get(char) if _enabled else None


def _fast(xp: Any, x: Any) -> _Kernels | None:
    """The kernels when ``x`` suits them (NumPy, native float32/float64, C-contiguous, not empty)."""
    if xp is np and (_enabled or (_enabled is None and available())):
        dt = x.dtype
        k = _by_char.get(dt.char) if _by_char else _load(dt.char)
        if k is not None and x.flags.c_contiguous and x.size and dt.isnative:
            return k
    return None


# -- public entry points ------------------------------------------------------------------------------
def softmax(xp: Any, x: Any, log: bool = False) -> Any:
    """Softmax (``log=True``: log_softmax) over the LAST axis of ``x``, or None (no fast path).

    Example: ``y = cpu_kernels.softmax(np, np.ones((2, 3), np.float32))`` -> rows of 1/3
    """
    k = _fast(xp, x)
    if k is None or not x.ndim:
        return None
    out = np.empty(x.shape, x.dtype)
    try:
        fn = k.log_softmax_fwd if log else k.softmax_fwd
        if x.ndim == 2:
            fn(x, out)
        else:
            n = x.shape[-1]
            fn(x.reshape(-1, n), out.reshape(-1, n))
    except Exception as err:
        _disable("the softmax kernel", err)
        return None
    return out


def softmax_backward(xp: Any, y: Any, g: Any, log: bool = False) -> Any:
    """The input gradient of :func:`softmax` from its output ``y`` and the output gradient ``g``, or None."""
    k = _fast(xp, y)
    if k is None or y.ndim == 0 or g.shape != y.shape or g.dtype != y.dtype:
        return None
    g = np.ascontiguousarray(g)  # e.g. the broadcast gradient of a sum; no copy when contiguous
    n = y.shape[-1]
    out = np.empty(y.shape, y.dtype)
    try:
        (k.log_softmax_bwd if log else k.softmax_bwd)(y.reshape(-1, n), g.reshape(-1, n), out.reshape(-1, n))
    except Exception as err:
        _disable("the softmax backward kernel", err)
        return None
    return out


def _elementwise(name: str, xp: Any, x: Any, g: Any = None) -> Any:
    k = _fast(xp, x)
    if k is None or (g is not None and (g.shape != x.shape or g.dtype != x.dtype)):
        return None
    out = np.empty(x.shape, x.dtype)
    try:
        if g is None:
            getattr(k, name)(x.reshape(-1), out.reshape(-1))
        else:
            getattr(k, name)(x.reshape(-1), np.ascontiguousarray(g).reshape(-1), out.reshape(-1))
    except Exception as err:
        _disable(f"the {name} kernel", err)
        return None
    return out


def gelu(xp: Any, x: Any, approximate: str = "none") -> Any:
    """``x * Phi(x)`` (``approximate='tanh'``: the tanh form) elementwise, or None (no fast path).

    Example: ``cpu_kernels.gelu(np, np.array([1.0]))`` -> ``array([0.84134475])``
    """
    return _elementwise("gelu_tanh_fwd" if approximate == "tanh" else "gelu_fwd", xp, x)


def gelu_backward(xp: Any, x: Any, g: Any, approximate: str = "none") -> Any:
    """``g * gelu'(x)`` from the input ``x`` and the output gradient ``g``, or None."""
    return _elementwise("gelu_tanh_bwd" if approximate == "tanh" else "gelu_bwd", xp, x, g)


def silu(xp: Any, x: Any) -> Any:
    """``x * sigmoid(x)`` elementwise, or None (no fast path)."""
    return _elementwise("silu_fwd", xp, x)


def silu_backward(xp: Any, x: Any, g: Any) -> Any:
    """``g * silu'(x)`` from the input ``x`` and the output gradient ``g``, or None."""
    return _elementwise("silu_bwd", xp, x, g)
