"""INTERIM (being written): tolerant re-export while the tensor ops land."""

from __future__ import annotations

from ..tensor.ops import OP_MODULES

for _m in OP_MODULES:
    for _name in getattr(_m, "__all__", ()):
        globals()[_name] = getattr(_m, _name)

try:  # INTERIM: conv/pool modules not yet registered in OP_MODULES
    from ..tensor.ops import conv as _conv
    from ..tensor.ops import pool as _pool

    for _m in (_conv, _pool):
        for _name in getattr(_m, "__all__", ()):
            globals()[_name] = getattr(_m, _name)
except ImportError:
    pass
