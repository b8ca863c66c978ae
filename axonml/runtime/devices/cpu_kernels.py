"""Compiled CPU fast paths (numba) for hot ops; the NumPy code in the ops stays the reference.

What is here: softmax and log_softmax over the last axis of a C-contiguous array, GELU
(exact and tanh) and SiLU, forward and backward, for float32 and float64 NumPy arrays.
Each public function takes the op's array module first and returns ``None`` when the fast
path does not apply (not NumPy, another dtype, a non-contiguous or empty array, numba
missing or disabled): the caller then runs its NumPy code. Example, inside an op::

    y = cpu_kernels.softmax(ctx.xp, x, log=False)
    if y is None:
        y = ...  # the NumPy / CuPy code

The compiled source (math helpers, loops, their accuracy) lives in :mod:`.cpu_kernels_impl`
(split for length); this module loads it, dispatches and falls back.

Note on laziness: importing axonml imports neither numba nor compiles anything.
:func:`available` looks numba up without importing it and reads ``AXONML_NUMBA`` once (call
:func:`refresh` after changing it). The first kernel call imports numba (about 0.3 s) and
compiles that kernel for that dtype (about 0.5 s each); ``cache=True`` keeps the machine
code on disk, so later processes load it in milliseconds. If numba fails to import or a
kernel fails to compile, one warning says so and every op falls back to NumPy.

Note on call cost: a softmax over 32x32 computes in about a microsecond, so the Python
around it matters. The kernels are called through numba's compiled entry points (skipping
its per-call type dispatch, about 0.5 us), one per kernel and dtype, after this module has
checked dtype, contiguity and ndim itself. Kernels release the GIL (``nogil``).
"""

from __future__ import annotations

import importlib
import importlib.util
import threading
import warnings
from typing import Any

import numpy as np

from ..._env import flag_enabled
from .cpu_kernels_impl import KERNELS, erf_taylor_table, register_helpers

__all__ = [
    "available",
    "refresh",
    "softmax",
    "softmax_backward",
    "gelu",
    "gelu_backward",
    "silu",
    "silu_backward",
    "erf_taylor_table",
]

# -- the registry ----------------------------------------------------------------------------------
_lock = threading.RLock()
_enabled: bool | None = None  # None: not decided yet (see available())
_by_char: dict = {}  # dtype.char ('f', 'd') -> _Kernels, filled on the first kernel use


class _Kernels:
    """The kernels for one dtype, as attributes: each is compiled (or loaded from numba's disk
    cache) on first access for one exact signature, C-contiguous arrays of that dtype, and
    the attribute is then the compiled entry point itself.

    Note: entry points skip numba's per-call type dispatch (half of a small call's cost), so
    they trust their arguments: the public functions below pass only C-contiguous arrays of
    this dtype with the kernel's ndim (a wrong dtype or ndim would be read as garbage).
    """

    def __init__(self, nb: Any, dispatchers: dict, dtype: np.dtype) -> None:
        self._nb, self._dispatchers, self._dtype = nb, dispatchers, dtype

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_") or name not in KERNELS:
            raise AttributeError(name)
        _, ndim, nargs = KERNELS[name]
        arr = self._nb.types.Array(self._nb.from_dtype(self._dtype), ndim, "C")
        with _lock:
            entry = self._dispatchers[name].compile((arr,) * nargs)
        setattr(self, name, entry)
        return entry


def available() -> bool:
    """True when the compiled kernels may be used: ``AXONML_NUMBA`` is not 0 and numba is installed.

    Does not import numba (the first kernel call does). The flag is read once; see :func:`refresh`.
    Example: ``cpu_kernels.available()`` -> ``True``
    """
    global _enabled
    if _enabled is None:
        _enabled = flag_enabled("AXONML_NUMBA") and importlib.util.find_spec("numba") is not None
    return _enabled


def refresh() -> None:
    """Read ``AXONML_NUMBA`` again on the next op (after changing it), and retry a numba that failed."""
    global _enabled
    _enabled = None


def _disable(what: str, err: BaseException) -> None:
    global _enabled
    _enabled = False
    warnings.warn(
        f"axonml: the numba CPU kernels are disabled ({what} failed: {type(err).__name__}: {err}); "
        "ops use their NumPy code. Set AXONML_NUMBA=0 to skip numba.",
        RuntimeWarning,
        stacklevel=4,
    )


def _load(char: str) -> _Kernels | None:
    """The kernels for dtype ``char`` ('f' or 'd'); imports numba on the first call. None when
    numba is unusable (after one warning)."""
    with _lock:
        if not _by_char and available():
            try:
                nb = importlib.import_module("numba")
                register_helpers(nb, importlib.import_module("numba.extending"))
                jit = nb.njit(cache=True, nogil=True, fastmath={"contract"}, error_model="numpy")
                dispatchers = {name: jit(fn) for name, (fn, _, _) in KERNELS.items()}
                for dt in (np.dtype(np.float32), np.dtype(np.float64)):
                    _by_char[dt.char] = _Kernels(nb, dispatchers, dt)
            except Exception as err:  # an ImportError, or a numba that does not work with this NumPy
                _disable("importing numba", err)
    return _by_char.get(char) if _enabled else None


def _fast(xp: Any, x: Any) -> _Kernels | None:
    """The kernels when ``x`` suits them (NumPy, native float32/float64, C-contiguous, not empty)."""
    if xp is np and (_enabled or (_enabled is None and available())):
        dt = x.dtype
        k = _by_char.get(dt.char) if _by_char else _load(dt.char)
        if k is not None and x.flags.c_contiguous and x.size and dt.isnative:
            return k
    return None


# -- public entry points ------------------------------------------------------------------------------
def softmax(xp: Any, x: Any, log: bool = False) -> Any:
    """Softmax (``log=True``: log_softmax) over the LAST axis of ``x``, or None (no fast path).

    Example: ``y = cpu_kernels.softmax(np, np.ones((2, 3), np.float32))`` -> rows of 1/3
    """
    k = _fast(xp, x)
    if k is None or not x.ndim:
        return None
    out = np.empty(x.shape, x.dtype)
    try:
        fn = k.log_softmax_fwd if log else k.softmax_fwd
        if x.ndim == 2:
            fn(x, out)
        else:
            n = x.shape[-1]
            fn(x.reshape(-1, n), out.reshape(-1, n))
    except Exception as err:
        _disable("the softmax kernel", err)
        return None
    return out


def softmax_backward(xp: Any, y: Any, g: Any, log: bool = False) -> Any:
    """The input gradient of :func:`softmax` from its output ``y`` and the output gradient ``g``, or None."""
    k = _fast(xp, y)
    if k is None or y.ndim == 0 or g.shape != y.shape or g.dtype != y.dtype:
        return None
    g = np.ascontiguousarray(g)  # e.g. the broadcast gradient of a sum; no copy when contiguous
    n = y.shape[-1]
    out = np.empty(y.shape, y.dtype)
    try:
        (k.log_softmax_bwd if log else k.softmax_bwd)(y.reshape(-1, n), g.reshape(-1, n), out.reshape(-1, n))
    except Exception as err:
        _disable("the softmax backward kernel", err)
        return None
    return out


def _elementwise(name: str, xp: Any, x: Any, g: Any = None) -> Any:
    k = _fast(xp, x)
    if k is None or (g is not None and (g.shape != x.shape or g.dtype != x.dtype)):
        return None
    out = np.empty(x.shape, x.dtype)
    try:
        if g is None:
            getattr(k, name)(x.reshape(-1), out.reshape(-1))
        else:
            getattr(k, name)(x.reshape(-1), np.ascontiguousarray(g).reshape(-1), out.reshape(-1))
    except Exception as err:
        _disable(f"the {name} kernel", err)
        return None
    return out


def gelu(xp: Any, x: Any, approximate: str = "none") -> Any:
    """``x * Phi(x)`` (``approximate='tanh'``: the tanh form) elementwise, or None (no fast path).

    Example: ``cpu_kernels.gelu(np, np.array([1.0]))`` -> ``array([0.84134475])``
    """
    return _elementwise("gelu_tanh_fwd" if approximate == "tanh" else "gelu_fwd", xp, x)


def gelu_backward(xp: Any, x: Any, g: Any, approximate: str = "none") -> Any:
    """``g * gelu'(x)`` from the input ``x`` and the output gradient ``g``, or None."""
    return _elementwise("gelu_tanh_bwd" if approximate == "tanh" else "gelu_bwd", xp, x, g)


def silu(xp: Any, x: Any) -> Any:
    """``x * sigmoid(x)`` elementwise, or None (no fast path)."""
    return _elementwise("silu_fwd", xp, x)


def silu_backward(xp: Any, x: Any, g: Any) -> Any:
    """``g * silu'(x)`` from the input ``x`` and the output gradient ``g``, or None."""
    return _elementwise("silu_bwd", xp, x, g)
