"""The numba-compiled source behind :mod:`.cpu_kernels`: scalar math helpers and the loops.

Split from :mod:`.cpu_kernels` (which loads, dispatches and falls back) for length. Every
function here is plain Python that numba compiles on first use; the helpers are ordinary
Python too, so they can be checked one value at a time. Keep all compiled code in this one
file: numba's disk cache goes stale only when the jitted function's own file changes.

Note on math: numba here has no vector math library, so ``math.exp`` in a loop is a scalar
libm call. Transcendentals are written as arithmetic that LLVM vectorizes:

- ``exp``: ``x = k ln2 + r`` (``k`` rounded with the ``1.5 * 2**p`` trick, ``ln2`` split in
  two so ``k ln2`` is exact), a Taylor polynomial for ``e**r`` on ``|r| <= ln2/2`` (degree 7
  in float32, 13 in float64: truncation below 1e-8 and 1e-16), and ``2**k`` built from
  exponent bits in two halves, so subnormal results round once and overflow gives ``inf``.
  Accuracy: within 1 ulp; ``exp(-inf) = 0``, ``exp(inf) = inf``, NaN stays NaN.
- the normal CDF (exact GELU), float32: ``0.5 + 0.5 u P(u**2)`` for ``|u| < 1``
  (``u = x / sqrt 2``) and the tail ``erfc(a) / 2 = exp(Q(a - 2.5)) / 2`` for
  ``1 <= a <= 4`` (0 beyond, as ``1 - erf`` is in float32). ``P`` (degree 6) and ``Q``
  (degree 8) are least-squares fits on Chebyshev nodes against mpmath's erf, rounded to
  float32: erf within 1.5e-7 absolute, GELU within 3 ulp of the float64 result. float64
  uses the Taylor table of :func:`erf_taylor_table` (the NumPy path's, about 1 ulp).
- tanh GELU and SiLU: ``x * sigmoid(z) = x / (1 + exp(-z))`` (``z = 2 * tanh's argument``
  for GELU); the derivative takes ``1 - sigmoid`` as ``e * s`` or ``1 - s``, whichever does
  not cancel.

Note on speed: loops are branch-free (selects, clamps) and compiled with
``fastmath={'contract'}`` (FMA only: reassociation could undo the split ``k ln2``) and
``error_model='numpy'`` (no division checks). Only the row sum may reassociate (its own
flags); it accumulates in float64, so float32 rows lose less than NumPy's float32 sum. The
row max compares integer keys that order like the floats, which vectorizes without
fast-math flags. Softmax runs ``exp`` in one flat loop over the whole array, since each
per-row vector loop pays a setup.
"""

from __future__ import annotations

import decimal
import math
from typing import Any

import numpy as np

_f32, _f64 = np.float32, np.float64

# -- scalar math (compiled by numba as inlined helpers; plain Python otherwise) ---------------------------
_LN2 = 0.693147180559945309417232121458
_LN2_DIGITS = "0.69314718055994530941723212145817656807550013436026"


def _ln2_split(bits: int) -> tuple:
    """``ln2 = hi + lo`` with ``hi`` holding ``bits`` significant bits, so ``k * hi`` is exact
    for ``|k| < 2**(p - bits)`` (p = 24 or 53); ``lo`` is the rest, correctly rounded."""
    hi = math.floor(_LN2 * 2.0**bits) / 2.0**bits
    return hi, float(decimal.Decimal(_LN2_DIGITS) - decimal.Decimal(hi))


# k is at most 159 in magnitude in float32 (8 bits) and 1082 in float64 (11 bits)
_F32_LN2_HI, _F32_LN2_LO = (_f32(v) for v in _ln2_split(16))
_F64_LN2_HI, _F64_LN2_LO = (_f64(v) for v in _ln2_split(21))
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


# -- kernels (compiled on first use by cpu_kernels) ----------------------------------------------------------
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


# -- what the loader compiles ----------------------------------------------------------------------
# kernel name -> (Python function, ndim of its arrays, number of arrays); all arrays C-contiguous, one dtype
KERNELS = {
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
_registered = False


def register_helpers(nb: Any, ext: Any) -> None:
    """Teach numba (module ``nb``, ``ext = nb.extending``) the helpers the kernels call: the
    per-dtype ones through overloads of their generic names, inlined into the loops (which
    then vectorize). Once per process; the loader calls it before compiling any kernel."""
    global _registered
    if _registered:
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
    _registered = True
