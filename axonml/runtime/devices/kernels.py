"""Array kernels whose best form differs between NumPy and CuPy.

Note: this is the one place that tells the two apart. NumPy has no BLAS for float16 and
its bfloat16 matmul (ml_dtypes) returns float32, so on the CPU a low-precision product is
computed from the low-precision inputs with float32 accumulation and rounded back to the
input dtype (what GPUs' tensor cores do too); CuPy computes float16 natively and bfloat16
(which its GEMMs lack) the CPU's way, on the GPU.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def _is_low_float(dtype: Any) -> bool:
    return dtype.itemsize == 2 and dtype.kind in "fV"


def matmul(xp: Any, a: Any, b: Any) -> Any:
    """``a @ b`` in the inputs' dtype (float16/bfloat16 accumulate in float32 on the CPU)."""
    if _is_low_float(a.dtype) and (xp is np or a.dtype.kind == "V"):
        # CuPy has float16 GEMMs but no bfloat16 ones: bfloat16 is computed in float32 there too
        return xp.matmul(a.astype(np.float32), b.astype(np.float32)).astype(a.dtype)
    return xp.matmul(a, b)


_ADAM_BODY = """
T pp = p * decay;
T gg = sign * g;
if (wd != (T)0) { gg = pp * wd + gg; }
T diff = gg - m;
if (lerp_low) { m = m + diff * w; } else { m = gg - diff * omw; }
v = v * b2 + (gg * omb2) * gg;
T denom = sqrt(v) / bc2_sqrt + eps;
p = pp + (m / denom) * neg_step_size;
"""
_adam_kernel: Any = None


def adam_update(xp: Any, p: Any, g: Any, m: Any, v: Any, *, decay: float, wd: float, maximize: bool, beta1: float,
                beta2: float, bias_correction2_sqrt: float, eps: float, step_size: float) -> bool:
    """One fused Adam/AdamW update of ``p``, ``m``, ``v`` in place on CuPy (one kernel instead
    of about ten); returns False on NumPy, where the optimizer runs its array expressions.

    The kernel does the CPU path's float operations in the same order, without fused
    multiply-adds (``--fmad=false``), so a GPU step rounds like a CPU step."""
    global _adam_kernel
    if xp is np:
        return False
    if _adam_kernel is None:
        _adam_kernel = xp.ElementwiseKernel(
            "T g, T decay, T wd, T sign, bool lerp_low, T w, T omw, T b2, T omb2, T bc2_sqrt, T eps, T neg_step_size",
            "T p, T m, T v", _ADAM_BODY, "axonml_adam_update", options=("--fmad=false",))
    w = 1.0 - beta1
    _adam_kernel(g, decay, wd, -1.0 if maximize else 1.0, w < 0.5, w, 1.0 - w, beta2, 1.0 - beta2, bias_correction2_sqrt, eps,
                 -step_size, p, m, v)
    return True
