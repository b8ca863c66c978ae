"""AxonML: a distributed-first training framework.

The public surface, re-exported so that it reads on one screen::

    import axonml as ax
    x = ax.randn(4, 8, requires_grad=True)
    loss = (x @ w).relu().sum(); loss.backward()
"""

from . import autograd, collectives, data, ddp, errors, fsdp, nn, optim, runtime, serialize, tensor
from .autograd import Function, autocast, enable_grad, inference_mode, is_grad_enabled, no_grad, set_grad_enabled
from .runtime import (
    Device,
    get_default_device,
    get_default_dtype,
    memory_stats,
    reset_peak_memory_stats,
    set_default_device,
    set_default_dtype,
)
from .runtime.dtypes import (
    DType,
    bfloat16,
    bool_,
    float16,
    float32,
    float64,
    int8,
    int16,
    int32,
    int64,
    promote_types,
    result_type,
    uint8,
)
from .serialize import load, load_checkpoint, save, save_checkpoint
from .tensor import *  # noqa: F403
from .tensor import Tensor

bool = bool_  # noqa: A001  (ax.bool, as torch.bool)
float = float32  # noqa: A001
double = float64
half = float16
long = int64
int = int32  # noqa: A001
device = Device

__version__ = "0.1.0"
