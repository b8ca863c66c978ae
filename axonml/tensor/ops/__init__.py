"""Op modules. Each defines Functions, public functions and a ``METHODS`` table."""

from . import activation, core, index, linalg, loss, nn_ops, pointwise, reduce, shape

OP_MODULES = [core, pointwise, reduce, shape, index, activation, linalg, nn_ops, loss]
