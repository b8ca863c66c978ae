"""The one table of ``AXONML_*`` environment flags.

Read flags through :func:`get_flag`; the table documents every flag in one place.
"""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class Flag:
    name: str
    default: str
    help: str


FLAGS: dict[str, Flag] = {
    f.name: f
    for f in (
        Flag("AXONML_DEFAULT_DEVICE", "cpu", "device used by creation ops when none is given"),
        Flag("AXONML_NUMBA", "1", "use numba-compiled CPU kernels where available (0 disables)"),
        Flag("AXONML_RESTART_COUNT", "0", "set by the launcher: how many times the job restarted"),
        Flag("AXONML_MAX_RESTARTS", "0", "set by the launcher: restarts allowed"),
        Flag("AXONML_RUN_ID", "", "set by the launcher: the run identifier"),
        Flag("AXONML_LOG_LEVEL", "WARNING", "log level of the axonml logger"),
        Flag("AXONML_CHECK_COLLECTIVES", "1", "compare (seq, op, shapes, dtype) of every collective across ranks; 0 disables"),
        Flag("AXONML_SHM", "1", "tcp backend: shared memory between the ranks of one host (0: sockets only)"),
        Flag("AXONML_HOSTNAME", "", "host name a rank presents to its peers; ranks with different names use sockets"),
        Flag("AXONML_SOCKET_ADDR", "", "tcp backend: address peers use to reach this rank (default: route to MASTER_ADDR)"),
        Flag("AXONML_STORE_TOKEN", "", "job token of the gRPC store used by env:// and tcp:// rendezvous"),
        Flag("AXONML_METRICS_PORT", "", "port of this worker's Prometheus metrics (the launcher sets base + local rank)"),
        Flag("AXONML_METRICS_ADDR", "127.0.0.1", "interface the metrics exporters bind (0.0.0.0 to be scraped from other hosts)"),
        Flag("AXONML_BACKEND", "", "backend init_process_group(backend='auto') picks (set by the launcher, the Ray adapter)"),
        Flag("AXONML_USE_AGENT_STORE", "0", "env://: the launcher already serves the store at MASTER_ADDR:MASTER_PORT"),
    )
}


def get_flag(name: str) -> str:
    """Return the value of the ``AXONML_*`` flag ``name`` (its default when unset)."""
    if name not in FLAGS:
        raise KeyError(f"unknown AxonML flag {name!r}; known flags: {sorted(FLAGS)}")
    return os.environ.get(name, FLAGS[name].default)


def flag_enabled(name: str) -> bool:
    """True when the flag is set to a truthy value (1, true, yes, on)."""
    return get_flag(name).strip().lower() in ("1", "true", "yes", "on")
