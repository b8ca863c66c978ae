"""Layer 1: the cluster services the process groups and the launcher stand on.

Key-value stores that ranks bootstrap from:

* :class:`MemoryStore`: threads of one process.
* :class:`FileStore`: processes sharing a file (``init_method="file:///path"``).
* :class:`GrpcStore` with :class:`GrpcStoreServer`: processes on many hosts.
* :class:`PrefixStore`: a namespaced view (group name and generation) of any store.

This package imports only the standard library, ``grpc``/``protobuf`` and
``axonml.errors``/``axonml._env``: never NumPy, so that the launcher starts fast and
never touches a GPU.
"""

from .env import WorkerEnv
from .file_store import FileStore
from .grpc_server import GrpcStoreServer
from .grpc_store import GrpcStore
from .memory_store import MemoryStore
from .rendezvous import RendezvousClient, RendezvousConfig, RendezvousServer
from .store_base import DEFAULT_TIMEOUT, PrefixStore, Store

__all__ = [
    "DEFAULT_TIMEOUT",
    "FileStore",
    "GrpcStore",
    "GrpcStoreServer",
    "MemoryStore",
    "PrefixStore",
    "RendezvousClient",
    "RendezvousConfig",
    "RendezvousServer",
    "Store",
    "WorkerEnv",
]
