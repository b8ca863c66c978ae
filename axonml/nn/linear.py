"""Affine layers and shape helpers: ``Identity``, ``Linear``, ``Bilinear``, ``Flatten`` and
``Unflatten``.

Note on initialisation: weights use ``kaiming_uniform_(a=sqrt(5))`` and biases
``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``, PyTorch's defaults, drawn from axonml's default
generator so that ``ax.manual_seed`` makes a model reproducible.

Note on imports: this module calls the ops from ``axonml.tensor`` rather than through
``axonml.nn.functional``, because ``functional`` re-exports attention, which builds on
``Linear``: going through ``functional`` here would make an import cycle.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

from ..tensor import Tensor, bilinear, empty, linear
from . import init
from .module import Module
from .parameter import Parameter


def _factory(device: Any, dtype: Any) -> dict:
    return {"device": device, "dtype": dtype}


def _check_positive(cls: str, **sizes: int) -> None:
    for name, v in sizes.items():
        if not isinstance(v, int) or isinstance(v, bool) or v < 0:
            raise ValueError(f"{cls}: {name} must be a non-negative int, got {v!r}")


class Identity(Module):
    """Returns its input unchanged; accepts and ignores any constructor arguments.

    Example: ``ax.nn.Identity()(x) is x``
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__()

    def forward(self, input: Tensor) -> Tensor:
        return input


class Linear(Module):
    """``y = x @ weight.T + bias`` on the last dimension.

    Args:
        in_features: size of each input sample's last dimension.
        out_features: size of each output sample's last dimension.
        bias: learn an additive bias (default True).

    Attributes: ``weight`` of shape ``(out_features, in_features)``, ``bias`` of shape
    ``(out_features,)`` or None.

    Example::

        fc = ax.nn.Linear(4, 2)
        fc(ax.randn(8, 4)).shape  # (8, 2)
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, device: Any = None, dtype: Any = None) -> None:
        super().__init__()
        _check_positive("Linear", in_features=in_features, out_features=out_features)
        self.in_features = in_features
        self.out_features = out_features
        self.weight = Parameter(empty(out_features, in_features, **_factory(device, dtype)))
        if bias:
            self.bias = Parameter(empty(out_features, **_factory(device, dtype)))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            fan_in, _ = init._calculate_fan_in_and_fan_out(self.weight)
            bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0
            init.uniform_(self.bias, -bound, bound)

    def forward(self, input: Tensor) -> Tensor:
        return linear(input, self.weight, self.bias)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


class Bilinear(Module):
    """``y_k = x1 @ weight[k] @ x2 + bias_k``.

    Args:
        in1_features, in2_features: last-dimension sizes of the two inputs.
        out_features: output size.
        bias: learn an additive bias (default True).

    Example: ``ax.nn.Bilinear(3, 4, 2)(ax.randn(5, 3), ax.randn(5, 4)).shape  # (5, 2)``
    """

    def __init__(
        self, in1_features: int, in2_features: int, out_features: int, bias: bool = True, device: Any = None, dtype: Any = None
    ) -> None:
        super().__init__()
        _check_positive("Bilinear", in1_features=in1_features, in2_features=in2_features, out_features=out_features)
        self.in1_features = in1_features
        self.in2_features = in2_features
        self.out_features = out_features
        self.weight = Parameter(empty(out_features, in1_features, in2_features, **_factory(device, dtype)))
        if bias:
            self.bias = Parameter(empty(out_features, **_factory(device, dtype)))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        bound = 1 / math.sqrt(self.weight.shape[1]) if self.weight.shape[1] > 0 else 0
        init.uniform_(self.weight, -bound, bound)
        if self.bias is not None:
            init.uniform_(self.bias, -bound, bound)

    def forward(self, input1: Tensor, input2: Tensor) -> Tensor:
        return bilinear(input1, input2, self.weight, self.bias)

    def extra_repr(self) -> str:
        return (
            f"in1_features={self.in1_features}, in2_features={self.in2_features}, "
            f"out_features={self.out_features}, bias={self.bias is not None}"
        )


def _norm_dim(dim: int, ndim: int, cls: str) -> int:
    if not -ndim <= dim < max(ndim, 1):
        raise IndexError(f"{cls}: dimension {dim} out of range for a {ndim}-D input (expected in [{-ndim}, {ndim - 1}])")
    return dim % ndim if ndim else 0


class Flatten(Module):
    """Flatten dims ``start_dim..end_dim`` into one (a view when possible).

    Example: ``ax.nn.Flatten()(ax.randn(2, 3, 4)).shape  # (2, 12)``
    """

    def __init__(self, start_dim: int = 1, end_dim: int = -1) -> None:
        super().__init__()
        self.start_dim = start_dim
        self.end_dim = end_dim

    def forward(self, input: Tensor) -> Tensor:
        shape = tuple(input.shape)
        if not shape:
            return input.reshape(1)
        s = _norm_dim(self.start_dim, len(shape), "Flatten")
        e = _norm_dim(self.end_dim, len(shape), "Flatten")
        if s > e:
            raise ValueError(f"Flatten: start_dim ({self.start_dim}) cannot come after end_dim ({self.end_dim})")
        merged = 1
        for v in shape[s : e + 1]:
            merged *= v
        return input.reshape(*shape[:s], merged, *shape[e + 1 :])  # (..., prod(start..end), ...)

    def extra_repr(self) -> str:
        return f"start_dim={self.start_dim}, end_dim={self.end_dim}"


class Unflatten(Module):
    """Split dimension ``dim`` into ``unflattened_size`` (one entry may be -1).

    Example: ``ax.nn.Unflatten(1, (3, 4))(ax.randn(2, 12)).shape  # (2, 3, 4)``
    """

    def __init__(self, dim: int | str, unflattened_size: Sequence[int]) -> None:
        super().__init__()
        if isinstance(dim, str):
            raise TypeError("Unflatten: named dimensions are not supported; give dim as an int")
        if not isinstance(unflattened_size, (tuple, list)) or not all(isinstance(v, int) for v in unflattened_size):
            raise TypeError(f"Unflatten: unflattened_size must be a tuple of ints, got {unflattened_size!r}")
        self.dim = dim
        self.unflattened_size = tuple(unflattened_size) if isinstance(unflattened_size, list) else unflattened_size

    def forward(self, input: Tensor) -> Tensor:
        shape = tuple(input.shape)
        d = _norm_dim(self.dim, len(shape), "Unflatten")
        sizes = list(self.unflattened_size)
        known = 1
        for v in sizes:
            if v != -1:
                known *= v
        if sizes.count(-1) > 1:
            raise ValueError(f"Unflatten: at most one -1 allowed in unflattened_size {self.unflattened_size}")
        if -1 in sizes:
            if known == 0 or shape[d] % known:
                raise ValueError(f"Unflatten: cannot split dim {d} of size {shape[d]} into {self.unflattened_size}")
            sizes[sizes.index(-1)] = shape[d] // known
        elif known != shape[d]:
            raise ValueError(
                f"Unflatten: unflattened_size {self.unflattened_size} (product {known}) does not match "
                f"the size {shape[d]} of dim {d} of an input of shape {shape}"
            )
        return input.reshape(*shape[:d], *sizes, *shape[d + 1 :])

    def extra_repr(self) -> str:
        return f"dim={self.dim}, unflattened_size={self.unflattened_size}"
