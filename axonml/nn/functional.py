"""INTERIM (being written): tolerant re-export while the tensor ops land."""

from __future__ import annotations

from ..tensor.ops import OP_MODULES

for _m in OP_MODULES:
    for _name in getattr(_m, "__all__", ()):
        globals()[_name] = getattr(_m, _name)
