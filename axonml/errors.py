"""The AxonML exception hierarchy.

Every error a user can trigger derives from :class:`AxonError`. Messages say what
happened, with the offending values, and what to do about it.
"""

from __future__ import annotations


class AxonError(Exception):
    """Base class of every AxonML error."""


class ShapeError(AxonError, ValueError):
    """Shapes that do not fit an operation (broadcasting, matmul, reshape...)."""


class DTypeError(AxonError, TypeError):
    """A dtype that an operation does not accept, or an unknown dtype name."""


class DeviceError(AxonError, RuntimeError):
    """A device that cannot be used: missing package, missing GPU, mixed devices."""


class AutogradError(AxonError, RuntimeError):
    """Misuse of autograd: backward through a freed graph, a modified saved tensor..."""


class CheckpointError(AxonError, IOError):
    """A checkpoint or state file that cannot be read or written."""


class StateDictError(AxonError, KeyError):
    """Missing or unexpected keys, or shape mismatches, when loading a state dict."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0]) if self.args else ""


class DataLoaderError(AxonError, RuntimeError):
    """A data loader worker died or a batch could not be produced."""


class CollectiveError(AxonError, RuntimeError):
    """A collective failed: a diverging or dead rank, a closed connection."""


class CollectiveTimeout(CollectiveError, TimeoutError):
    """A collective did not complete within its timeout."""


class RendezvousError(AxonError, RuntimeError):
    """Rendezvous or store failure: refused token, stale generation, timeout."""


class DDPError(AxonError, RuntimeError):
    """A DistributedDataParallel usage error: models that differ across ranks, a parameter
    that received no gradient, a backward run twice over one forward."""


class StoreTimeout(RendezvousError, TimeoutError):
    """A store get/wait did not see its keys within the timeout."""
