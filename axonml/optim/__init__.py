"""Layer 5: optimizers, learning-rate schedules (:mod:`axonml.optim.lr_scheduler`).

Gradient clipping lives in :mod:`axonml.nn.utils` (``clip_grad_norm_``), as in PyTorch.
"""

from . import lr_scheduler
from .adagrad import Adagrad
from .adam import Adam, AdamW
from .grad_scaler import GradScaler
from .lamb import LAMB
from .lion import Lion
from .optimizer import Optimizer, required
from .rmsprop import RMSprop
from .sgd import SGD

__all__ = ["LAMB", "SGD", "Adagrad", "Adam", "AdamW", "GradScaler", "Lion", "Optimizer", "RMSprop", "lr_scheduler", "required"]
