"""dtypes and PyTorch's type-promotion rules.

Note on promotion: PyTorch ranks operands in three tiers: dimensioned tensors, zero-dim
tensors, then Python scalars. The result's *category* (bool < integer < floating) is the
highest category among all operands; its dtype comes from the highest tier that holds an
operand of that category. A Python float meeting only integer/bool tensors gives the
default float dtype (float32). :func:`result_type` implements exactly that.
"""

from __future__ import annotations

from typing import Any

import ml_dtypes
import numpy as np

from ..errors import DTypeError


class DType:
    """An AxonML dtype: a name, a NumPy dtype and its category."""

    __slots__ = ("name", "np", "itemsize", "is_floating_point", "is_signed", "_cat")

    def __init__(self, name: str, np_dtype: Any, category: int, is_signed: bool) -> None:
        self.name = name
        self.np = np.dtype(np_dtype)
        self.itemsize = self.np.itemsize
        self.is_floating_point = category == 2
        self.is_signed = is_signed
        self._cat = category  # 0 bool, 1 integer, 2 floating

    def __repr__(self) -> str:
        return f"axonml.{self.name}"

    def __reduce__(self):  # pickles as the singleton
        return (get_dtype, (self.name,))


float64 = DType("float64", np.float64, 2, True)
float32 = DType("float32", np.float32, 2, True)
float16 = DType("float16", np.float16, 2, True)
bfloat16 = DType("bfloat16", ml_dtypes.bfloat16, 2, True)
int64 = DType("int64", np.int64, 1, True)
int32 = DType("int32", np.int32, 1, True)
int16 = DType("int16", np.int16, 1, True)
int8 = DType("int8", np.int8, 1, True)
uint8 = DType("uint8", np.uint8, 1, False)
bool_ = DType("bool", np.bool_, 0, False)

ALL_DTYPES = (float64, float32, float16, bfloat16, int64, int32, int16, int8, uint8, bool_)
_BY_NAME = {d.name: d for d in ALL_DTYPES}
_BY_NAME.update({"float": float32, "double": float64, "half": float16, "long": int64, "int": int32})
_BY_NP = {d.np: d for d in ALL_DTYPES}

_default_float = float32


def get_default_dtype() -> DType:
    """The dtype of floating tensors created from Python floats (float32 by default)."""
    return _default_float


def set_default_dtype(dtype: DType) -> None:
    """Set the default floating dtype (float32 or float64, as in PyTorch)."""
    global _default_float
    dtype = get_dtype(dtype)
    if dtype not in (float32, float64, float16, bfloat16):
        raise DTypeError(f"default dtype must be a floating dtype, got {dtype}")
    _default_float = dtype


def get_dtype(dtype: Any) -> DType:
    """Turn a DType, a name ('float32'), a NumPy dtype or a Python type into a DType."""
    if isinstance(dtype, DType):
        return dtype
    if isinstance(dtype, str):
        d = _BY_NAME.get(dtype.removeprefix("axonml.").removeprefix("torch."))
        if d is None:
            raise DTypeError(f"unknown dtype {dtype!r}; known: {sorted(_BY_NAME)}")
        return d
    if dtype is float:
        return _default_float
    if dtype is int:
        return int64
    if dtype is bool:
        return bool_
    try:
        npd = np.dtype(dtype)
    except TypeError:
        npd = None
    d = _BY_NP.get(npd) if npd is not None else None
    if d is None:
        raise DTypeError(f"dtype {dtype!r} has no AxonML equivalent; use one of {[x.name for x in ALL_DTYPES]}")
    return d


def from_numpy_dtype(npd: np.dtype) -> DType:
    """The DType of a NumPy dtype (float64 arrays stay float64, as in torch.from_numpy)."""
    d = _BY_NP.get(npd)
    if d is None:
        raise DTypeError(
            f"NumPy dtype {npd} is not supported; convert the array to one of {[x.np.name for x in ALL_DTYPES]} first"
        )
    return d


def promote_types(a: DType, b: DType) -> DType:
    """PyTorch's ``promote_types`` for two dtypes."""
    if a is b:
        return a
    if a._cat != b._cat:
        return a if a._cat > b._cat else b
    if a._cat == 2:
        if {a, b} == {float16, bfloat16}:
            return float32
        return a if a.itemsize >= b.itemsize else b
    return _BY_NP[np.promote_types(a.np, b.np)]


def result_type(*operands: Any) -> DType:
    """The dtype of an elementwise op over ``operands`` (Tensors with ``.dtype``/``.ndim``,
    or Python scalars), following PyTorch's three-tier promotion."""
    # tiers: 0 dimensioned tensors, 1 zero-dim tensors, 2 python scalars
    best = [None, None, None]
    top_cat = -1
    for op in operands:
        dt = getattr(op, "dtype", None)
        if isinstance(dt, DType):
            tier = 0 if op.ndim > 0 else 1
        else:
            if isinstance(op, bool):
                dt = bool_
            elif isinstance(op, int):
                dt = int64
            elif isinstance(op, float):
                dt = _default_float
            else:
                raise DTypeError(f"cannot promote operand of type {type(op).__name__}")
            tier = 2
        top_cat = max(top_cat, dt._cat)
        cur = best[tier]
        best[tier] = dt if cur is None else promote_types(cur, dt)
    for tier in range(3):
        d = best[tier]
        if d is not None and d._cat == top_cat:
            return d
    raise DTypeError("result_type needs at least one operand")
