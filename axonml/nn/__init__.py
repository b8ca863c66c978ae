"""Layer 4: ``Module``, ``Parameter``, layers, ``functional``, ``init``, losses."""

from .module import Module
from .parameter import Parameter

__all__ = ["Module", "Parameter"]
