"""CPU offload: where a unit's sharded state lives, and the copies between host and device.

Note on the two devices of a unit: the *compute* device is where the parameters were
when ``fully_shard`` ran (``unit.device``): the unsharded parameters, the all-gather and
reduce-scatter buffers and the unsharded gradients live there. The *shard* device
(``unit.shard_device``) holds the sharded parameters (float32 master shards under a
mixed-precision policy), their gradients and so the optimizer state. Without offload the
two are the same device. With :class:`~axonml.fsdp.CPUOffloadPolicy` and parameters on a
GPU, the shard device is the host::

    host shard --H2D copy--> device send buffer --(cast)--> all-gather --> unsharded params
    unsharded grads --> reduce-scatter (device) --(cast to master dtype)--D2H copy--> += host .grad

The device send buffer is transient (freed once the all-gather has read it), so between
steps the GPU holds no sharded state, and resharded units give their unsharded parameter
buffers' physical memory back (see :mod:`axonml.fsdp._storage`).

Note on testing without a GPU: on CPU the policy is a no-op (``offload_active`` is False,
nothing is copied). Tests set :data:`FORCE_ON_CPU` to run the offload path on CPU, where
the "device" copies are host copies; nothing else reads it.
"""

from __future__ import annotations

from typing import Any

from ..runtime.devices.device import Device, as_device
from .config import CPUOffloadPolicy, OffloadPolicy

__all__ = ["FORCE_ON_CPU", "HOST", "offload_active", "to_compute", "to_host"]

HOST = as_device("cpu")

#: Tests only: with True, CPUOffloadPolicy runs the offload path on CPU parameters too (read by
#: ``fully_shard`` when it builds a unit; the copies are then host-to-host).
FORCE_ON_CPU = False


def offload_active(policy: OffloadPolicy | None, device: Device) -> bool:
    """Whether a unit whose parameters live on ``device`` keeps its shards in host memory."""
    if not isinstance(policy, CPUOffloadPolicy):
        return False
    return device.type != "cpu" or FORCE_ON_CPU


def to_compute(host_array: Any, device: Device) -> Any:
    """A new copy of the host array ``host_array`` on the compute ``device`` (H2D)."""
    if device.type == "cpu":
        return host_array.copy()  # the forced test path: a real copy, as on a GPU
    return device.from_host(host_array)


def to_host(array: Any, device: Device) -> Any:
    """A new host (NumPy) copy of ``array``, which lives on ``device`` (D2H)."""
    if device.type == "cpu":
        return array.copy()
    return device.to_host(array)
