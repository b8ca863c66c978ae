"""Op modules. Each defines Functions, public functions and a ``METHODS`` table."""

from . import activation, basic, conv, core, index, linalg, loss, nn_ops, norm, pointwise, pool, reduce, shape, spatial

OP_MODULES = [core, basic, pointwise, reduce, shape, index, activation, linalg, conv, pool, norm, nn_ops, spatial, loss]

# torch.nn.functional names whose torch top-level namesake differs (argument order) or does
# not exist: they live in axonml.nn.functional only, so `ax.<name>` never surprises.
FUNCTIONAL_ONLY = frozenset({"embedding", "batch_norm", "instance_norm", "pad", "interpolate", "fold", "unfold"})
