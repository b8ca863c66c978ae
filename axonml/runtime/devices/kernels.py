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
