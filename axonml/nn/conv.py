"""Convolutions: ``Conv1d``, ``Conv2d``, ``ConvTranspose1d``, ``ConvTranspose2d``.

Note on padding: ``padding`` is an int, a tuple, ``'valid'`` (none) or ``'same'`` (the
output keeps the input's spatial size; stride must be 1). ``'same'`` needs a total padding
of ``dilation * (kernel_size - 1)`` per dim; when that is odd the extra element goes on the
right, as in PyTorch, and the layer pads the input explicitly with ``F.pad`` before a
convolution with no padding. ``padding_mode`` other than ``'zeros'`` (``'reflect'``,
``'replicate'``, ``'circular'``) always pads with ``F.pad(mode=padding_mode)`` first.
"""

from __future__ import annotations

import math
from typing import Any

from ..tensor import Tensor, empty
from . import functional as F
from . import init
from .module import Module
from .parameter import Parameter

_PADDING_MODES = ("zeros", "reflect", "replicate", "circular")


def _ntuple(value: Any, n: int, name: str, cls: str) -> tuple:
    if isinstance(value, (tuple, list)):
        if len(value) != n:
            raise ValueError(f"{cls}: {name} must be an int or a tuple of {n} ints, got {value!r}")
        return tuple(int(v) for v in value)
    return (int(value),) * n


class _ConvNd(Module):
    _n: int = 0

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: Any, stride: Any = 1, padding: Any = 0, dilation: Any = 1,
        groups: int = 1, bias: bool = True, padding_mode: str = "zeros", device: Any = None, dtype: Any = None,
        transposed: bool = False, output_padding: Any = 0,
    ) -> None:
        super().__init__()
        cls, n = type(self).__name__, self._n
        if groups <= 0:
            raise ValueError(f"{cls}: groups must be a positive integer, got {groups}")
        if in_channels % groups != 0:
            raise ValueError(f"{cls}: in_channels ({in_channels}) must be divisible by groups ({groups})")
        if out_channels % groups != 0:
            raise ValueError(f"{cls}: out_channels ({out_channels}) must be divisible by groups ({groups})")
        if padding_mode not in _PADDING_MODES:
            raise ValueError(f"{cls}: padding_mode must be one of {_PADDING_MODES}, but got padding_mode={padding_mode!r}")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = _ntuple(kernel_size, n, "kernel_size", cls)
        self.stride = _ntuple(stride, n, "stride", cls)
        self.dilation = _ntuple(dilation, n, "dilation", cls)
        if isinstance(padding, str):
            if padding not in ("same", "valid"):
                raise ValueError(f"{cls}: invalid padding string {padding!r}, should be one of ('same', 'valid')")
            if padding == "same" and any(s != 1 for s in self.stride):
                raise ValueError(f"{cls}: padding='same' is not supported for strided convolutions (stride={self.stride})")
            self.padding = padding
        else:
            self.padding = _ntuple(padding, n, "padding", cls)
        self.output_padding = _ntuple(output_padding, n, "output_padding", cls)
        self.transposed = transposed
        self.groups = groups
        self.padding_mode = padding_mode
        # F.pad order: last dim first, (left, right) per dim
        self._pad_pairs = self._explicit_padding()
        self._reversed_padding_repeated_twice = [v for pair in reversed(self._pad_pairs) for v in pair]
        # (out, in/groups, *k), or (in, out/groups, *k) for a transposed convolution
        wshape = (in_channels, out_channels // groups) if transposed else (out_channels, in_channels // groups)
        self.weight = Parameter(empty(*wshape, *self.kernel_size, device=device, dtype=dtype))
        if bias:
            self.bias = Parameter(empty(out_channels, device=device, dtype=dtype))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def _explicit_padding(self) -> list:
        """(left, right) padding per spatial dim, first dim first."""
        if self.padding == "valid":
            return [(0, 0)] * self._n
        if self.padding == "same":
            pairs = []
            for d, k in zip(self.dilation, self.kernel_size):
                total = d * (k - 1)
                pairs.append((total // 2, total - total // 2))
            return pairs
        return [(p, p) for p in self.padding]

    def reset_parameters(self) -> None:
        init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            fan_in, _ = init._calculate_fan_in_and_fan_out(self.weight)
            if fan_in != 0:
                bound = 1 / math.sqrt(fan_in)
                init.uniform_(self.bias, -bound, bound)

    def _conv(self, input: Tensor, weight: Tensor, bias: Tensor | None, padding: Any) -> Tensor:
        raise NotImplementedError

    def forward(self, input: Tensor) -> Tensor:
        symmetric = all(left == right for left, right in self._pad_pairs)
        if self.padding_mode != "zeros":
            padded = F.pad(input, self._reversed_padding_repeated_twice, mode=self.padding_mode)
            return self._conv(padded, self.weight, self.bias, 0)
        if symmetric:
            return self._conv(input, self.weight, self.bias, tuple(left for left, _ in self._pad_pairs))
        # 'same' with an odd total padding: the extra element goes on the right
        padded = F.pad(input, self._reversed_padding_repeated_twice)
        return self._conv(padded, self.weight, self.bias, 0)

    def extra_repr(self) -> str:
        s = f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}"
        if self.padding != (0,) * self._n:
            s += f", padding={self.padding}"
        if self.dilation != (1,) * self._n:
            s += f", dilation={self.dilation}"
        if self.output_padding != (0,) * self._n:
            s += f", output_padding={self.output_padding}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        if self.bias is None:
            s += ", bias=False"
        if self.padding_mode != "zeros":
            s += f", padding_mode={self.padding_mode}"
        return s


class Conv1d(_ConvNd):
    """1-D convolution over ``(N, C_in, L)`` (or unbatched ``(C_in, L)``) inputs.

    Args:
        in_channels, out_channels: channel counts.
        kernel_size, stride, padding, dilation: ints or 1-tuples; ``padding`` may be
            ``'same'`` or ``'valid'``.
        groups: split channels into this many independent groups.
        bias: learn a per-output-channel bias.
        padding_mode: ``'zeros'``, ``'reflect'``, ``'replicate'`` or ``'circular'``.

    Example: ``ax.nn.Conv1d(3, 8, 5, padding='same')(ax.randn(2, 3, 20)).shape  # (2, 8, 20)``
    """

    _n = 1

    def _conv(self, input: Tensor, weight: Tensor, bias: Tensor | None, padding: Any) -> Tensor:
        return F.conv1d(input, weight, bias, self.stride, padding, self.dilation, self.groups)


class Conv2d(_ConvNd):
    """2-D convolution over ``(N, C_in, H, W)`` (or unbatched ``(C_in, H, W)``) inputs.

    Args: as :class:`Conv1d`, with ints or 2-tuples.

    Example::

        conv = ax.nn.Conv2d(3, 16, kernel_size=3, padding=1)
        conv(ax.randn(2, 3, 32, 32)).shape  # (2, 16, 32, 32)
    """

    _n = 2

    def _conv(self, input: Tensor, weight: Tensor, bias: Tensor | None, padding: Any) -> Tensor:
        return F.conv2d(input, weight, bias, self.stride, padding, self.dilation, self.groups)


class _ConvTransposeNd(_ConvNd):
    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: Any, stride: Any = 1, padding: Any = 0, output_padding: Any = 0,
        groups: int = 1, bias: bool = True, dilation: Any = 1, padding_mode: str = "zeros", device: Any = None, dtype: Any = None,
    ) -> None:
        cls = type(self).__name__
        if padding_mode != "zeros":
            raise ValueError(f'{cls}: only "zeros" padding mode is supported, got padding_mode={padding_mode!r}')
        if isinstance(padding, str):
            raise ValueError(f"{cls}: padding must be an int or a tuple of ints, got {padding!r}")
        super().__init__(
            in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias, padding_mode, device, dtype,
            transposed=True, output_padding=output_padding,
        )
        for op, s, d in zip(self.output_padding, self.stride, self.dilation):
            if op >= s and op >= d:
                raise ValueError(f"{cls}: output_padding {self.output_padding} must be smaller than either stride or dilation")

    def _output_padding(self, input: Tensor, output_size: Any) -> tuple:
        """The output padding that makes the output ``output_size`` (PyTorch's rule)."""
        if output_size is None:
            return self.output_padding
        n = self._n
        non_spatial = 2 if input.dim() == n + 2 else 1
        size = [int(v) for v in output_size]
        if len(size) == n + non_spatial:
            size = size[non_spatial:]
        if len(size) != n:
            raise ValueError(f"{type(self).__name__}: output_size must have {n} or {n + non_spatial} elements, got {output_size}")
        res = []
        for d in range(n):
            span = self.dilation[d] * (self.kernel_size[d] - 1) + 1
            lo = (input.shape[d + non_spatial] - 1) * self.stride[d] - 2 * self.padding[d] + span
            hi = lo + self.stride[d] - 1
            if not lo <= size[d] <= hi:
                raise ValueError(
                    f"{type(self).__name__}: requested an output size of {size}, but valid sizes range from "
                    f"{lo} to {hi} in dim {d} (for an input of shape {tuple(input.shape)})"
                )
            res.append(size[d] - lo)
        return tuple(res)


class ConvTranspose1d(_ConvTransposeNd):
    """1-D transposed convolution (the gradient of ``Conv1d`` with respect to its input).

    ``forward(input, output_size=None)``: ``output_size`` resolves the ambiguity of strided
    outputs. The weight has shape ``(in_channels, out_channels // groups, k)``.

    Example: ``ax.nn.ConvTranspose1d(4, 3, 3, stride=2)(ax.randn(2, 4, 10)).shape  # (2, 3, 21)``
    """

    _n = 1

    def forward(self, input: Tensor, output_size: Any = None) -> Tensor:
        op = self._output_padding(input, output_size)
        return F.conv_transpose1d(input, self.weight, self.bias, self.stride, self.padding, op, self.groups, self.dilation)


class ConvTranspose2d(_ConvTransposeNd):
    """2-D transposed convolution (see :class:`ConvTranspose1d`).

    Example: ``ax.nn.ConvTranspose2d(8, 4, 2, stride=2)(ax.randn(1, 8, 5, 5)).shape  # (1, 4, 10, 10)``
    """

    _n = 2

    def forward(self, input: Tensor, output_size: Any = None) -> Tensor:
        op = self._output_padding(input, output_size)
        return F.conv_transpose2d(input, self.weight, self.bias, self.stride, self.padding, op, self.groups, self.dilation)
