"""The default device of creation ops: ``set_default_device`` and the AXONML_DEFAULT_DEVICE flag."""

import os
import subprocess
import sys

import numpy as np
import pytest

import axonml as ax
from axonml.errors import DeviceError

HAS_GPU = ax.runtime.cuda_available()


@pytest.fixture(autouse=True)
def _restore_default():
    yield
    ax.set_default_device(None)


def test_cpu_is_the_default():
    assert ax.get_default_device() == ax.Device("cpu")
    assert ax.zeros(2).device == ax.Device("cpu") and ax.nn.Linear(2, 3).weight.device == ax.Device("cpu")


def test_unknown_device_is_refused_and_the_default_kept():
    with pytest.raises(DeviceError, match="unknown device 'tpu'"):
        ax.set_default_device("tpu")
    assert ax.get_default_device() == ax.Device("cpu")


@pytest.mark.skipif(HAS_GPU, reason="a GPU is present")
def test_cuda_without_a_gpu_is_a_clear_error_and_the_default_kept():
    with pytest.raises(DeviceError, match="CUDA"):
        ax.set_default_device("cuda")
    assert ax.get_default_device() == ax.Device("cpu")


def _run(code: str, **env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          env={**os.environ, **env})


def test_flag_sets_the_default_and_a_bad_flag_names_itself():
    ok = _run("import axonml as ax; print(ax.get_default_device(), ax.ones(1).device)", AXONML_DEFAULT_DEVICE="cpu")
    assert ok.returncode == 0 and ok.stdout.split() == ["cpu", "cpu"], ok.stderr
    bad = _run("import axonml as ax; ax.zeros(1)", AXONML_DEFAULT_DEVICE="tpu")
    assert bad.returncode != 0 and "AXONML_DEFAULT_DEVICE='tpu'" in bad.stderr and "unknown device" in bad.stderr


@pytest.mark.skipif(not HAS_GPU, reason="needs a CUDA GPU")
def test_creation_ops_follow_the_default_device():
    ax.set_default_device("cuda")
    gpu = ax.Device("cuda:0")
    made = [ax.tensor([1.0, 2.0]), ax.zeros(2), ax.ones(2, 3), ax.empty(4), ax.full((2,), 3.0), ax.arange(5),
            ax.linspace(0, 1, 3), ax.eye(2), ax.randn(3), ax.rand(3), ax.randint(0, 5, (3,)), ax.randperm(4),
            ax.as_tensor(np.ones(3, np.float32))]
    assert all(t.device == gpu for t in made), [t.device for t in made]
    assert ax.nn.Linear(2, 3).weight.device == gpu
    assert ax.from_numpy(np.ones(2)).device == ax.Device("cpu")  # shares host memory, as torch.from_numpy
    assert ax.zeros_like(ax.from_numpy(np.ones(2))).device == ax.Device("cpu")  # *_like keep their input's device
    ax.set_default_device(None)
    assert ax.zeros(1).device == ax.Device("cpu")
