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
        Flag("AXONML_CHECK_COLLECTIVES", "1", "compare (sequence, op, shapes, dtype) across ranks on every collective"),
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
