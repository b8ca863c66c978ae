"""Layer 3: ``Tensor``, its ops, creation ops and random generators."""

from . import methods  # noqa: F401  (binds Tensor methods)
from .creation import *  # noqa: F403
from .creation import __all__ as _creation_all
from .ops import FUNCTIONAL_ONLY, OP_MODULES
from .random import Generator, default_generator, get_rng_state, initial_seed, manual_seed, seed, set_rng_state
from .tensor import Tensor, backward, grad

_op_all: list[str] = []
for _m in OP_MODULES:
    for _name in getattr(_m, "__all__", ()):
        if _name not in FUNCTIONAL_ONLY:
            globals()[_name] = getattr(_m, _name)
            _op_all.append(_name)

__all__ = [
    "Generator",
    "Tensor",
    "backward",
    "default_generator",
    "get_rng_state",
    "grad",
    "initial_seed",
    "manual_seed",
    "seed",
    "set_rng_state",
    *_creation_all,
    *_op_all,
]
