"""Op modules. Each defines Functions, public functions and a ``METHODS`` table."""

from . import core

OP_MODULES = [core]
