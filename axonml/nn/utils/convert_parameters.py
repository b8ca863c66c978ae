"""``parameters_to_vector`` and ``vector_to_parameters``: a model's parameters as one
flat vector and back (PyTorch's ``torch.nn.utils`` functions)."""

from __future__ import annotations

from typing import Iterable

from ...autograd.function import Function
from ...autograd.variable import make_tensor
from ...errors import DeviceError, ShapeError
from ...tensor import Tensor

__all__ = ["parameters_to_vector", "vector_to_parameters"]


class _FlattenCat(Function):
    """Concatenate the flattened inputs; backward splits the gradient back into shapes."""

    @staticmethod
    def forward(ctx, *arrays):
        ctx.shapes = [a.shape for a in arrays]
        return ctx.xp.concatenate([a.reshape(-1) for a in arrays])  # (sum of numels,)

    @staticmethod
    def backward(ctx, g):
        out = []
        start = 0
        for shape in ctx.shapes:
            n = 1
            for s in shape:
                n *= s
            out.append(g[start : start + n].reshape(shape))
            start += n
        return tuple(out)


def _check_devices(params: list) -> None:
    for i, p in enumerate(params):
        if p.device is not params[0].device:
            raise DeviceError(
                f"Found two parameters on different devices ({params[0].device} and {p.device} at index {i}), "
                "this is currently not supported; move them to one device first"
            )


def parameters_to_vector(parameters: Iterable[Tensor]) -> Tensor:
    """One 1-D tensor holding all ``parameters`` flattened, in order (differentiable).

    Example: ``vec = ax.nn.utils.parameters_to_vector(model.parameters())``
    """
    params = list(parameters)
    if not params:
        raise ValueError("parameters_to_vector got no parameters; pass a non-empty iterable of tensors")
    for i, p in enumerate(params):
        if not isinstance(p, Tensor):
            raise TypeError(f"parameters_to_vector expects Tensors, but item {i} is a {type(p).__name__}")
    _check_devices(params)
    return _FlattenCat.apply(*params)


def vector_to_parameters(vec: Tensor, parameters: Iterable[Tensor]) -> None:
    """Copy consecutive slices of the 1-D ``vec`` into ``parameters`` (each parameter's
    ``.data`` becomes a view of ``vec``, as in PyTorch).

    Example: ``ax.nn.utils.vector_to_parameters(vec, model.parameters())``
    """
    if not isinstance(vec, Tensor):
        raise TypeError(f"expected axonml.Tensor, but got: {type(vec).__name__}")
    params = list(parameters)
    _check_devices(params + [vec])
    total = sum(p.numel() for p in params)
    if vec.ndim != 1 or vec.numel() != total:
        raise ShapeError(
            f"vector_to_parameters: vec has shape {tuple(vec.shape)}, but the parameters hold {total} elements; "
            f"pass a 1-D vector of {total} elements (as parameters_to_vector returns)"
        )
    data = vec._data
    start = 0
    for p in params:
        n = p.numel()
        p.data = make_tensor(data[start : start + n].reshape(p.shape), vec.device, base=vec)
        start += n
