"""The numba CPU kernels (axonml/runtime/devices/cpu_kernels.py) against the NumPy reference.

Each op runs twice, with ``AXONML_NUMBA=1`` (compiled kernels) and ``AXONML_NUMBA=0`` (the
NumPy code in the op), and the two must agree: softmax to 1e-6 relative in float32, GELU
and SiLU to 1e-6 absolute in float32, and to about 1e-14 in float64. Also: the fast path
really runs where it should and declines elsewhere, PyTorch's NaN rules for masked rows,
float64 gradcheck through the public ops, and the fallback when numba is off or broken.
"""

import contextlib
import importlib.util
import os
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import check_vs_torch, gradcheck

import axonml as ax
from axonml.runtime.devices import cpu_kernels as ck
from axonml.runtime.devices import cpu_kernels_impl as cki

NUMBA_INSTALLED = importlib.util.find_spec("numba") is not None
HAVE_NUMBA = NUMBA_INSTALLED and ck.available()  # installed, and not switched off for this run
needs_numba = pytest.mark.skipif(not HAVE_NUMBA, reason="numba is not installed (or AXONML_NUMBA=0)")
DTYPES = [np.float32, np.float64]


@contextlib.contextmanager
def numba_flag(value: str):
    """Run the block with AXONML_NUMBA set to ``value`` (the kernels re-read it via refresh())."""
    old = os.environ.get("AXONML_NUMBA")
    os.environ["AXONML_NUMBA"] = value
    ck.refresh()
    try:
        yield
    finally:
        if old is None:
            del os.environ["AXONML_NUMBA"]
        else:
            os.environ["AXONML_NUMBA"] = old
        ck.refresh()


def run_both(fn, x: np.ndarray, g: np.ndarray | None = None) -> tuple:
    """``(y, dx)`` of ``fn`` on ``x`` with the kernels and with NumPy: ((yk, gk), (yn, gn))."""
    res = []
    for flag in ("1", "0"):
        with numba_flag(flag):
            t = ax.tensor(x, requires_grad=True)
            y = fn(t)
            y.backward(ax.tensor(g if g is not None else np.ones_like(x)))
            res.append((y.detach().numpy(), t.grad.numpy()))
            assert ck.available() == (flag == "1" and HAVE_NUMBA)  # no silent fallback (it would warn)
    return res[0], res[1]


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


# -- softmax family ------------------------------------------------------------------------------------
SOFTMAX_SHAPES = [(1,), (7,), (1, 1), (3, 1), (4, 7), (2, 1000), (2, 3, 7), (0, 5), (3, 0)]
SOFTMAX_FNS = {"softmax": lambda t: ax.softmax(t, -1), "log_softmax": lambda t: ax.log_softmax(t, -1)}


def _tols(dtype, log: bool) -> dict:
    if dtype == np.float64:
        return {"rtol": 1e-12, "atol": 1e-13}
    # log_softmax: NumPy's float32 row sum leaves ~6e-8 absolute error in log(sum); relative is too strict near 0
    return {"rtol": 1e-6, "atol": 1e-6 if log else float(np.finfo(np.float32).tiny)}


@needs_numba
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SOFTMAX_SHAPES, ids=str)
@pytest.mark.parametrize("name", list(SOFTMAX_FNS))
def test_softmax_kernel_matches_numpy(name, shape, dtype):
    x = (rng().standard_normal(shape) * 3).astype(dtype)
    g = rng(1).standard_normal(shape).astype(dtype)
    (yk, gk), (yn, gn) = run_both(SOFTMAX_FNS[name], x, g)
    assert yk.dtype == yn.dtype == dtype and yk.shape == yn.shape == shape
    np.testing.assert_allclose(yk, yn, **_tols(dtype, name == "log_softmax"))
    scale = float(np.abs(gn).max(initial=1.0))
    np.testing.assert_allclose(
        gk, gn, rtol=1e-5 if dtype == np.float32 else 1e-12, atol=1e-6 * scale if dtype == np.float32 else 1e-13
    )


@needs_numba
@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_kernel_runs_on_the_fast_path_only(dtype):
    x = rng().standard_normal((4, 6)).astype(dtype)
    with numba_flag("1"):
        for log in (False, True):
            assert ck.softmax(np, x, log) is not None
            assert ck.softmax_backward(np, x, x, log) is not None
            assert ck.softmax(np, x.T, log) is None  # not C-contiguous
            assert ck.softmax(np, x.astype(np.float16), log) is None
            assert ck.softmax(np, x.astype(x.dtype.newbyteorder()), log) is None  # non-native byte order
            assert ck.softmax(np, np.zeros((0, 3), dtype), log) is None  # empty: NumPy handles it
            assert ck.softmax(np, np.array(1.0, dtype), log) is None  # 0-d
            assert ck.softmax(None, x, log) is None  # another array module (CuPy)
            # read-only and unaligned (but C-contiguous) inputs run the kernel and give the same values
            ro = x.copy()
            ro.setflags(write=False)
            buf = np.zeros(x.nbytes + 1, np.uint8)
            unaligned = np.frombuffer(buf.data, dtype, count=x.size, offset=1).reshape(x.shape)
            assert not unaligned.flags.aligned and unaligned.flags.c_contiguous
            np.copyto(unaligned, x)
            for arr in (ro, unaligned):
                np.testing.assert_array_equal(ck.softmax(np, arr, log), ck.softmax(np, x, log))


@needs_numba
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", list(SOFTMAX_FNS))
def test_softmax_extreme_rows_follow_torch(name, dtype):
    inf, nan = np.inf, np.nan
    x = np.array(
        [
            [1e4, -1e4, 0.0, 5.0],
            [-inf, 0.0, 1.0, -inf],  # masked entries
            [-inf, -inf, -inf, -inf],  # fully masked: NaN, as in PyTorch
            [1.0, nan, 2.0, 3.0],  # NaN anywhere: the row is NaN
            [1.0, inf, 2.0, 3.0],  # +inf: inf - inf is NaN
            [-1e4, -1e4, -1e4, -1e4],
        ],
        dtype=dtype,
    )
    torch_fn = {"softmax": torch.softmax, "log_softmax": torch.log_softmax}[name]
    expected = torch_fn(torch.from_numpy(x), -1).numpy()
    with numba_flag("1"):
        y = SOFTMAX_FNS[name](ax.tensor(x)).numpy()
        assert ck.softmax(np, x, name == "log_softmax") is not None
    np.testing.assert_allclose(y, expected, rtol=1e-6, atol=1e-7)  # NaN positions must agree too
    assert np.isnan(y[2:5]).all() and not np.isnan(y[[0, 1, 5]]).any()


@needs_numba
@pytest.mark.parametrize("fa,ft", [(ax.softmax, F.softmax), (ax.log_softmax, F.log_softmax)], ids=["softmax", "log_softmax"])
def test_softmax_kernel_vs_torch_and_gradcheck(fa, ft):
    with numba_flag("1"):
        x = rng().standard_normal((3, 5, 9))
        check_vs_torch(lambda t: fa(t, -1), lambda t: ft(t, -1), [x.astype(np.float32)])
        check_vs_torch(lambda t: fa(t, dim=2) * 2.0, lambda t: ft(t, dim=2) * 2.0, [x])
        gradcheck(lambda t: fa(t, -1), [x[:2, :3]])
        # the gradient of .sum() arrives broadcast (not contiguous): the kernel copies it
        t = ax.tensor(x[0], requires_grad=True)
        fa(t, -1).sum().backward()
        tt = torch.tensor(x[0], requires_grad=True)
        ft(tt, -1).sum().backward()
        np.testing.assert_allclose(t.grad.numpy(), tt.grad.numpy(), atol=1e-12)


# -- GELU and SiLU ------------------------------------------------------------------------------------
ELEMENTWISE = {
    "gelu": lambda t: ax.gelu(t),
    "gelu_tanh": lambda t: ax.gelu(t, approximate="tanh"),
    "silu": lambda t: ax.silu(t),
}
TORCH_ELEMENTWISE = {"gelu": F.gelu, "gelu_tanh": lambda t: F.gelu(t, approximate="tanh"), "silu": F.silu}
# float64: the kernels' exp is within 1 ulp and exact GELU shares the NumPy path's erf table;
# measured differences from the NumPy path are below 4e-15 (forward and gradient)
F64_TOL = {"rtol": 1e-13, "atol": 1e-14}


def _inputs(n: int, dtype) -> np.ndarray:
    base = np.linspace(-12.0, 12.0, 2001)
    special = [0.0, -0.0, 1e-30, -1e-30, 1e4, -1e4, 5.6, -5.6, 3.0, -3.0]
    return np.concatenate([base, special, rng().standard_normal(n) * 4]).astype(dtype)


@needs_numba
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", list(ELEMENTWISE))
def test_elementwise_kernel_matches_numpy(name, dtype):
    x = _inputs(1000, dtype)
    g = rng(2).standard_normal(x.shape).astype(dtype)
    (yk, gk), (yn, gn) = run_both(ELEMENTWISE[name], x, g)
    assert yk.dtype == dtype and gk.dtype == dtype
    if dtype == np.float32:
        np.testing.assert_allclose(yk, yn, rtol=0, atol=1e-6)
        # the gradients differ more: NumPy's tanh-GELU gradient cancels (1 - tanh^2), off by up to 1.2e-6
        np.testing.assert_allclose(gk, gn, rtol=0, atol=2e-6 * np.abs(g).max())
        with numba_flag("0"):  # the float64 NumPy path as the exact answer: the kernels are within ~3 ulp
            t64 = ax.tensor(x.astype(np.float64), requires_grad=True)
            y64 = ELEMENTWISE[name](t64)
            y64.backward(ax.tensor(g.astype(np.float64)))
        np.testing.assert_allclose(yk, y64.detach().numpy(), rtol=3e-7, atol=3e-7)
        np.testing.assert_allclose(gk, t64.grad.numpy(), rtol=3e-7, atol=3e-7 * np.abs(g).max())
        tt = torch.tensor(x, requires_grad=True)
        yt = TORCH_ELEMENTWISE[name](tt)
        yt.backward(torch.tensor(g))
        np.testing.assert_allclose(yk, yt.detach().numpy(), rtol=0, atol=1e-6)
        np.testing.assert_allclose(gk, tt.grad.numpy(), rtol=0, atol=2e-6 * np.abs(g).max())
    else:
        np.testing.assert_allclose(yk, yn, **F64_TOL)
        np.testing.assert_allclose(gk, gn, **F64_TOL)


@needs_numba
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", list(ELEMENTWISE))
@pytest.mark.parametrize("shape", [(1,), (7,), (3, 1000), (2, 0, 3)], ids=str)
def test_elementwise_kernel_shapes_and_specials(name, shape, dtype):
    x = (rng().standard_normal(shape) * 3).astype(dtype)
    (yk, gk), (yn, gn) = run_both(ELEMENTWISE[name], x)
    assert yk.shape == shape and gk.shape == shape
    np.testing.assert_allclose(yk, yn, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(gk, gn, rtol=1e-6, atol=2e-6)  # NumPy's tanh-GELU gradient is off by up to 1.2e-6
    special = np.array([np.inf, -np.inf, np.nan, 1e4, -1e4, 0.0], dtype)
    with numba_flag("1"):
        got = ELEMENTWISE[name](ax.tensor(special)).numpy()
        assert ck.silu(np, special) is not None and ck.gelu(np, special) is not None
    expected = TORCH_ELEMENTWISE[name](torch.from_numpy(special)).numpy()
    np.testing.assert_array_equal(got, expected)  # inf, NaN (-inf * 0), exact saturation


@needs_numba
def test_elementwise_kernel_declines_other_cases():
    x = rng().standard_normal((4, 5)).astype(np.float32)
    with numba_flag("1"):
        assert ck.gelu(np, x) is not None and ck.gelu_backward(np, x, x, "tanh") is not None
        assert ck.gelu(np, x.T) is None  # a transposed view stays on NumPy
        assert ck.gelu(np, x.astype(np.float16)) is None
        assert ck.silu_backward(np, x, x[:2]) is None  # mismatched gradient
        assert ck.silu(None, x) is None
        # and the ops still give the right answer there
        check_vs_torch(lambda t: ax.gelu(t.transpose(0, 1)), lambda t: F.gelu(t.transpose(0, 1)), [x])
        check_vs_torch(ax.silu, F.silu, [x.astype(np.float16)], atol=2e-3, rtol=2e-3)


@needs_numba
def test_elementwise_kernel_gradcheck_float64():
    x = np.linspace(-4.0, 4.0, 13).reshape(13)
    with numba_flag("1"):
        for fn in ELEMENTWISE.values():
            gradcheck(fn, [x])
        gradcheck(lambda t: ax.softmax(ax.gelu(t).reshape(1, 13), -1), [x])
        assert ck.available()


# -- switching off, failing, laziness ------------------------------------------------------------------
def test_flag_off_uses_numpy_everywhere():
    x = rng().standard_normal((3, 4)).astype(np.float32)
    with numba_flag("0"):
        assert not ck.available()
        assert ck.softmax(np, x) is None and ck.gelu(np, x) is None and ck.silu_backward(np, x, x) is None
        check_vs_torch(lambda t: ax.softmax(t, -1), lambda t: F.softmax(t, -1), [x])
        check_vs_torch(ax.gelu, F.gelu, [x])


def test_missing_numba_means_numpy(monkeypatch):
    monkeypatch.setitem(sys.modules, "numba", None)  # find_spec("numba") is None: as if not installed
    ck.refresh()
    try:
        assert not ck.available()
        x = rng().standard_normal((3, 4)).astype(np.float32)
        assert ck.softmax(np, x) is None and ck.gelu(np, x) is None
        check_vs_torch(lambda t: ax.log_softmax(t, -1), lambda t: F.log_softmax(t, -1), [x])
        check_vs_torch(ax.silu, F.silu, [x])
    finally:
        monkeypatch.undo()
        ck.refresh()


@needs_numba
def test_broken_numba_warns_and_falls_back(monkeypatch):
    def broken_import(name):
        raise ImportError(f"numba needs a NumPy older than {np.__version__} (simulated)")

    x = rng().standard_normal((3, 4)).astype(np.float32)
    monkeypatch.setattr(ck, "_by_char", {})  # as if no kernel was loaded yet
    monkeypatch.setattr(ck, "importlib", SimpleNamespace(import_module=broken_import, util=importlib.util))
    ck.refresh()
    try:
        with pytest.warns(RuntimeWarning, match="numba CPU kernels are disabled.*importing numba.*simulated"):
            y = ax.softmax(ax.tensor(x), -1)
        assert not ck.available()
        np.testing.assert_allclose(y.numpy(), F.softmax(torch.from_numpy(x), -1).numpy(), rtol=1e-6)
        check_vs_torch(ax.gelu, F.gelu, [x])  # no further warning: the kernels stay off
    finally:
        monkeypatch.undo()
        ck.refresh()
    assert ck.available()


def test_importing_axonml_does_not_import_numba():
    code = (
        "import sys, numpy as np, axonml as ax\n"
        "assert 'numba' not in sys.modules, 'numba imported at import time'\n"
        "from axonml.runtime.devices import cpu_kernels as ck\n"
        "y = ax.softmax(ax.tensor(np.ones((2, 3), np.float32)), -1)\n"
        "print(ck.available(), 'numba' in sys.modules)\n"
    )
    env = {**os.environ, "AXONML_NUMBA": "1"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == (["True", "True"] if NUMBA_INSTALLED else ["False", "False"])


def test_exp_helpers_in_plain_python():
    # the scalar helpers are ordinary Python too (numba compiles the same source)
    for v in (-110.0, -87.5, -20.0, -1.0, 0.0, 0.5, 20.0, 88.0):
        assert cki._exp_f32(np.float32(v)) == pytest.approx(np.exp(np.float64(v)), rel=2e-7, abs=1e-44)
    for v in (-745.0, -700.0, -1.0, 0.0, 1e-3, 300.0, 709.0):
        assert cki._exp_f64(np.float64(v)) == pytest.approx(np.exp(v), rel=3e-16, abs=5e-324)
    with np.errstate(over="ignore"):
        assert cki._exp_f32(np.float32(100.0)) == np.inf and cki._exp_f64(np.float64(1e4)) == np.inf
    assert cki._exp_f32(np.float32(-np.inf)) == 0.0 and np.isnan(cki._exp_f64(np.float64(np.nan)))
    h, x_max, coef = ck.erf_taylor_table(np.float64)
    assert (h, x_max) == (0.125, 6.0) and coef.shape == (11, 50) and coef[0, -1] == 1.0
