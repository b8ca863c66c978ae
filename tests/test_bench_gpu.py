"""bench/gpu_train.py without a GPU ends with a message saying so (CI has no GPU)."""

import os
import subprocess
import sys

import pytest

import axonml as ax

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.skipif(ax.runtime.cuda_available(), reason="a GPU is present")
def test_gpu_bench_without_a_gpu_says_so():
    r = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "gpu_train.py"), "--iters", "1"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and "needs a CUDA GPU with CuPy; none is visible here" in r.stderr, (r.stdout, r.stderr)
