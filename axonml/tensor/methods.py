"""Bind op functions as ``Tensor`` methods and operators.

Each op module exports ``METHODS`` (method name -> function taking the tensor first);
this is the one place they are attached, so a reader finds every method's source by
its module. A name bound twice is an error: two modules must not fight over a method.
"""

from __future__ import annotations

from .ops import OP_MODULES
from .tensor import Tensor


def bind_methods() -> None:
    owner: dict[str, str] = {}
    for mod in OP_MODULES:
        for name, fn in mod.METHODS.items():
            if name in owner:
                raise RuntimeError(f"Tensor method {name!r} is bound by both {owner[name]} and {mod.__name__}")
            owner[name] = mod.__name__
            setattr(Tensor, name, fn)


bind_methods()
