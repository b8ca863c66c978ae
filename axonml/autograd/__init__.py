"""Layer 2: autograd (Function, the backward engine, grad mode, hooks, checkpointing, autocast)."""

from .engine import AccumulateGrad, claim_grad_buffer, offer_grad_buffer, queue_callback, run_backward
from .function import Function, Node, once_differentiable
from .grad_mode import enable_grad, inference_mode, is_grad_enabled, is_inference_mode_enabled, no_grad, set_grad_enabled
from .variable import TensorBase, make_tensor, register_tensor_class

__all__ = [
    "AccumulateGrad",
    "Function",
    "Node",
    "TensorBase",
    "claim_grad_buffer",
    "enable_grad",
    "inference_mode",
    "is_grad_enabled",
    "is_inference_mode_enabled",
    "make_tensor",
    "no_grad",
    "offer_grad_buffer",
    "once_differentiable",
    "register_tensor_class",
    "queue_callback",
    "run_backward",
    "set_grad_enabled",
]

from .autocast import autocast, is_autocast_enabled  # noqa: E402

__all__ += ["autocast", "is_autocast_enabled"]

from .gradcheck import gradcheck  # noqa: E402

__all__ += ["gradcheck"]

from .checkpoint import checkpoint, checkpoint_sequential, register_rng_state  # noqa: E402

__all__ += ["checkpoint", "checkpoint_sequential", "register_rng_state"]
