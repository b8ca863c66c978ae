"""Normalisation layers: ``LayerNorm``, ``RMSNorm``, ``GroupNorm``, ``BatchNorm1d/2d/3d``,
``InstanceNorm1d/2d``.

Note on BatchNorm running statistics: in training mode with ``track_running_stats`` the
layer counts batches in the ``num_batches_tracked`` buffer and hands ``F.batch_norm`` the
exponential-average factor: ``momentum``, or ``1 / num_batches_tracked`` when ``momentum``
is None (a cumulative moving average). ``F.batch_norm`` updates ``running_mean`` and
``running_var`` in place (the variance with Bessel's correction), exactly as PyTorch. In
eval mode the running statistics normalise the input; without tracked statistics the
batch statistics are used in both modes.
"""

from __future__ import annotations

from typing import Any, Sequence

from ..autograd.grad_mode import no_grad
from ..errors import ShapeError
from ..runtime.dtypes import int64
from ..tensor import Tensor, empty, ones, tensor, zeros
from . import functional as F
from . import init
from .module import Module
from .parameter import Parameter


def _shape_tuple(normalized_shape: int | Sequence[int]) -> tuple:
    if isinstance(normalized_shape, int):
        return (normalized_shape,)
    return tuple(int(s) for s in normalized_shape)


def _register_affine(module: Module, shape: tuple, affine: bool, bias: bool, device: Any, dtype: Any) -> None:
    """Register ``weight`` (and ``bias`` unless ``bias=False``) of ``shape``, or None for both
    when not ``affine``; the values are set by the module's ``reset_parameters``."""
    module.register_parameter("weight", Parameter(empty(*shape, device=device, dtype=dtype)) if affine else None)
    module.register_parameter("bias", Parameter(empty(*shape, device=device, dtype=dtype)) if affine and bias else None)


class LayerNorm(Module):
    """Normalise over the last ``len(normalized_shape)`` dims, then scale and shift.

    Args:
        normalized_shape: the trailing shape to normalise over (an int means one dim).
        eps: added to the variance (default 1e-5).
        elementwise_affine: learn ``weight`` (ones) and ``bias`` (zeros) of that shape.
        bias: learn the bias (when ``elementwise_affine``).

    Example: ``ax.nn.LayerNorm(8)(ax.randn(2, 5, 8))``
    """

    def __init__(
        self, normalized_shape: int | Sequence[int], eps: float = 1e-5, elementwise_affine: bool = True, bias: bool = True,
        device: Any = None, dtype: Any = None,
    ) -> None:
        super().__init__()
        self.normalized_shape = _shape_tuple(normalized_shape)
        self.eps = eps
        self.elementwise_affine = elementwise_affine
        _register_affine(self, self.normalized_shape, elementwise_affine, bias, device, dtype)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        if self.weight is not None:
            init.ones_(self.weight)
        if self.bias is not None:
            init.zeros_(self.bias)

    def forward(self, input: Tensor) -> Tensor:
        return F.layer_norm(input, self.normalized_shape, self.weight, self.bias, self.eps)

    def extra_repr(self) -> str:
        return (
            f"{self.normalized_shape}, eps={self.eps}, elementwise_affine={self.elementwise_affine}, "
            f"bias={self.bias is not None}"
        )


class RMSNorm(Module):
    """Root-mean-square normalisation over the trailing ``normalized_shape``:
    ``x / sqrt(mean(x²) + eps) * weight``.

    Args:
        normalized_shape: the trailing shape to normalise over.
        eps: added to the mean square; None means the dtype's machine epsilon (PyTorch's default).
        elementwise_affine: learn ``weight`` (ones).

    Example: ``ax.nn.RMSNorm(8)(ax.randn(2, 8))``
    """

    def __init__(
        self, normalized_shape: int | Sequence[int], eps: float | None = None, elementwise_affine: bool = True,
        device: Any = None, dtype: Any = None,
    ) -> None:
        super().__init__()
        self.normalized_shape = _shape_tuple(normalized_shape)
        self.eps = eps
        self.elementwise_affine = elementwise_affine
        if elementwise_affine:
            self.weight = Parameter(empty(*self.normalized_shape, device=device, dtype=dtype))
        else:
            self.register_parameter("weight", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        if self.weight is not None:
            init.ones_(self.weight)

    def forward(self, input: Tensor) -> Tensor:
        return F.rms_norm(input, self.normalized_shape, self.weight, self.eps)

    def extra_repr(self) -> str:
        return f"{self.normalized_shape}, eps={self.eps}, elementwise_affine={self.elementwise_affine}"


class GroupNorm(Module):
    """Split the channels (dim 1) into ``num_groups`` groups and normalise each group over
    its channels and spatial dims, then apply a per-channel affine.

    Example: ``ax.nn.GroupNorm(2, 4)(ax.randn(3, 4, 5))``
    """

    def __init__(
        self, num_groups: int, num_channels: int, eps: float = 1e-5, affine: bool = True, device: Any = None, dtype: Any = None,
        *, bias: bool = True,
    ) -> None:
        super().__init__()
        if num_groups <= 0 or num_channels % num_groups != 0:
            raise ValueError(f"GroupNorm: num_channels ({num_channels}) must be divisible by num_groups ({num_groups})")
        self.num_groups = num_groups
        self.num_channels = num_channels
        self.eps = eps
        self.affine = affine
        _register_affine(self, (num_channels,), affine, bias, device, dtype)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        if self.affine:
            init.ones_(self.weight)
            if self.bias is not None:
                init.zeros_(self.bias)

    def forward(self, input: Tensor) -> Tensor:
        return F.group_norm(input, self.num_groups, self.weight, self.bias, self.eps)

    def extra_repr(self) -> str:
        return f"{self.num_groups}, {self.num_channels}, eps={self.eps}, affine={self.affine}, bias={self.bias is not None}"


class _BatchNorm(Module):
    """Shared implementation of ``BatchNorm1d/2d/3d`` (see the module note)."""

    _expected_dims: tuple = ()

    def __init__(
        self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1, affine: bool = True,
        track_running_stats: bool = True, device: Any = None, dtype: Any = None, *, bias: bool = True,
    ) -> None:
        super().__init__()
        self.num_features = num_features
        self.eps = eps
        self.momentum = momentum
        self.affine = affine
        self.track_running_stats = track_running_stats
        _register_affine(self, (num_features,), affine, bias, device, dtype)
        if track_running_stats:
            self.register_buffer("running_mean", zeros(num_features, device=device, dtype=dtype))
            self.register_buffer("running_var", ones(num_features, device=device, dtype=dtype))
            self.register_buffer("num_batches_tracked", tensor(0, dtype=int64, device=device))
        else:
            self.register_buffer("running_mean", None)
            self.register_buffer("running_var", None)
            self.register_buffer("num_batches_tracked", None)
        self.reset_parameters()

    def reset_running_stats(self) -> None:
        """Running mean to 0, running variance to 1, batch count to 0."""
        if self.track_running_stats:
            init.zeros_(self.running_mean)
            init.ones_(self.running_var)
            self.num_batches_tracked._data[...] = 0
            self.num_batches_tracked._vc[0] += 1

    def reset_parameters(self) -> None:
        self.reset_running_stats()
        if self.affine:
            init.ones_(self.weight)
            if self.bias is not None:
                init.zeros_(self.bias)

    def _check_input_dim(self, input: Tensor) -> None:
        if input.dim() not in self._expected_dims:
            want = " or ".join(f"{d}D" for d in self._expected_dims)
            raise ShapeError(
                f"{type(self).__name__}: expected {want} input (got {input.dim()}D input of shape {tuple(input.shape)})"
            )
        if input.shape[1] != self.num_features:
            raise ShapeError(
                f"{type(self).__name__}: expected {self.num_features} channels in dim 1, got input of shape {tuple(input.shape)}"
            )

    def forward(self, input: Tensor) -> Tensor:
        self._check_input_dim(input)
        factor = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats and self.num_batches_tracked is not None:
            with no_grad():
                self.num_batches_tracked._data += 1
                self.num_batches_tracked._vc[0] += 1
            factor = 1.0 / float(self.num_batches_tracked.item()) if self.momentum is None else self.momentum
        # batch statistics in training, or always when there are no running statistics
        use_batch_stats = self.training or (self.running_mean is None and self.running_var is None)
        track = not self.training or self.track_running_stats
        return F.batch_norm(
            input,
            self.running_mean if track else None,
            self.running_var if track else None,
            self.weight,
            self.bias,
            use_batch_stats,
            factor,
            self.eps,
        )

    def extra_repr(self) -> str:
        return (
            f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}, "
            f"bias={self.bias is not None}, track_running_stats={self.track_running_stats}"
        )


class BatchNorm1d(_BatchNorm):
    """Batch normalisation of ``(N, C)`` or ``(N, C, L)`` inputs over N (and L) per channel.

    Args:
        num_features: C.
        eps: added to the variance (default 1e-5).
        momentum: running-statistics update factor; None for a cumulative average.
        affine: learn ``weight`` (ones) and ``bias`` (zeros).
        track_running_stats: keep ``running_mean``/``running_var`` for eval mode.
        bias: learn the bias (keyword only; when ``affine``).

    Example::

        bn = ax.nn.BatchNorm1d(4)
        y = bn(ax.randn(8, 4)); bn.eval(); y = bn(ax.randn(8, 4))
    """

    _expected_dims = (2, 3)


class BatchNorm2d(_BatchNorm):
    """Batch normalisation of ``(N, C, H, W)`` inputs per channel (see :class:`BatchNorm1d`)."""

    _expected_dims = (4,)


class BatchNorm3d(_BatchNorm):
    """Batch normalisation of ``(N, C, D, H, W)`` inputs per channel (see :class:`BatchNorm1d`)."""

    _expected_dims = (5,)


class _InstanceNorm(_BatchNorm):
    """Shared implementation of ``InstanceNorm1d/2d``: per-sample, per-channel statistics
    over the spatial dims; no affine and no running statistics by default."""

    _no_batch_dim: int = 0

    def __init__(
        self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1, affine: bool = False,
        track_running_stats: bool = False, device: Any = None, dtype: Any = None, *, bias: bool = True,
    ) -> None:
        super().__init__(num_features, eps, momentum, affine, track_running_stats, device, dtype, bias=bias)

    def _check_input_dim(self, input: Tensor) -> None:
        want = (self._no_batch_dim, self._no_batch_dim + 1)
        if input.dim() not in want:
            raise ShapeError(
                f"{type(self).__name__}: expected {want[0]}D (unbatched) or {want[1]}D (batched) input "
                f"(got {input.dim()}D input of shape {tuple(input.shape)})"
            )
        feature_dim = input.dim() - self._no_batch_dim
        if self.affine and input.shape[feature_dim] != self.num_features:
            raise ShapeError(
                f"{type(self).__name__}: expected input's size at dim={feature_dim} to match num_features "
                f"({self.num_features}), but got: {input.shape[feature_dim]}"
            )

    def _apply_instance_norm(self, input: Tensor) -> Tensor:
        return F.instance_norm(
            input, self.running_mean, self.running_var, self.weight, self.bias,
            self.training or not self.track_running_stats, self.momentum if self.momentum is not None else 0.0, self.eps,
        )

    def forward(self, input: Tensor) -> Tensor:
        self._check_input_dim(input)
        if input.dim() == self._no_batch_dim:
            return self._apply_instance_norm(input.unsqueeze(0)).squeeze(0)
        return self._apply_instance_norm(input)


class InstanceNorm1d(_InstanceNorm):
    """Instance normalisation of ``(N, C, L)`` (or unbatched ``(C, L)``) inputs.

    Example: ``ax.nn.InstanceNorm1d(3, affine=True)(ax.randn(2, 3, 8))``
    """

    _no_batch_dim = 2


class InstanceNorm2d(_InstanceNorm):
    """Instance normalisation of ``(N, C, H, W)`` (or unbatched ``(C, H, W)``) inputs."""

    _no_batch_dim = 3
