"""Core ops (arithmetic, matmul, sum/mean, views) against PyTorch and gradcheck."""

import numpy as np
import pytest
from helpers import check_vs_torch, gradcheck, rand, torch

import axonml as ax
from axonml.errors import ShapeError


@pytest.mark.parametrize(
    "sa,sb",
    [((3, 4), (3, 4)), ((3, 4), (4,)), ((2, 1, 4), (3, 1)), ((0, 4), (4,)), ((1,), (5, 1)), ((), (2, 3))],
)
@pytest.mark.parametrize("op", ["add", "sub", "mul", "div"])
def test_binary_broadcast(op, sa, sb):
    a, b = rand(*sa), rand(*sb, seed=1) + 3.0
    f = {"add": lambda x, y: x + y, "sub": lambda x, y: x - y, "mul": lambda x, y: x * y, "div": lambda x, y: x / y}[op]
    check_vs_torch(f, f, [a, b])
    gradcheck(f, [a, b])


def test_pow_and_scalars():
    a = np.abs(rand(3, 4)) + 0.5
    check_vs_torch(lambda x: x**3 + 2 * x - 1 / x + (2.0 - x) ** 2, lambda x: x**3 + 2 * x - 1 / x + (2.0 - x) ** 2, [a])
    b = rand(3, 4, seed=2)
    check_vs_torch(lambda x, y: x**y, lambda x, y: x**y, [a, b])
    gradcheck(lambda x, y: x**y, [a, b])


@pytest.mark.parametrize(
    "sa,sb", [((3, 4), (4, 5)), ((4,), (4,)), ((4,), (4, 2)), ((3, 4), (4,)), ((2, 3, 4), (4, 5)), ((2, 1, 3, 4), (5, 4, 2))]
)
def test_matmul(sa, sb):
    a, b = rand(*sa), rand(*sb, seed=3)
    check_vs_torch(lambda x, y: x @ y, lambda x, y: x @ y, [a, b])
    gradcheck(lambda x, y: x @ y, [a, b])


def test_matmul_shape_error_names_shapes():
    with pytest.raises(ShapeError, match=r"\(3, 4\).*\(5, 2\)"):
        ax.randn(3, 4) @ ax.randn(5, 2)


@pytest.mark.parametrize("dim,keepdim", [(None, False), (0, False), (1, True), ((0, 2), False), (-1, False)])
def test_sum_mean(dim, keepdim):
    a = rand(2, 3, 4)
    for name in ("sum", "mean"):
        f = lambda x, n=name: getattr(x, n)(dim, keepdim=keepdim) if dim is not None else getattr(x, n)()  # noqa: E731
        check_vs_torch(f, f, [a])
        gradcheck(f, [a])


def test_views_share_storage_and_version():
    x = ax.arange(12).reshape(3, 4)
    v = x.transpose(0, 1)
    v2 = x.view(12)
    x.add_(1)
    assert v[0, 0].item() == 1 and v2[0].item() == 1
    assert v._version == x._version == 1


def test_view_refuses_noncontiguous():
    x = ax.randn(3, 4).t()
    with pytest.raises(ShapeError, match="reshape"):
        x.view(12)
    assert x.reshape(12).shape == (12,)


def test_reshape_permute_expand_grad():
    a = rand(2, 3, 4)
    f = lambda x: x.permute(2, 0, 1).reshape(4, 6).t().expand(3, 6, 4).sum(0)  # noqa: E731
    check_vs_torch(f, lambda x: x.permute(2, 0, 1).reshape(4, 6).t().expand(3, 6, 4).sum(0), [a])
    gradcheck(f, [a])


def test_promotion_matches_torch():
    cases = [
        (np.arange(3, dtype=np.int64), 1.5),
        (np.arange(3, dtype=np.int32), np.arange(3, dtype=np.int64)),
        (np.ones(3, np.float32), np.ones(3, np.float64)),
        (np.ones(3, np.bool_), 2),
        (np.ones(3, np.float16), np.ones((), np.float32)),
        (np.ones(3, np.uint8), np.ones(3, np.int8)),
    ]
    for a, b in cases:
        xa = ax.tensor(a)
        ta = torch.tensor(a)
        xb = ax.tensor(b) if isinstance(b, np.ndarray) else b
        tb = torch.tensor(b) if isinstance(b, np.ndarray) else b
        assert str((xa + xb).dtype).split(".")[-1] == str((ta + tb).dtype).split(".")[-1], (a.dtype, b)
        assert str((xa / xb).dtype).split(".")[-1] == str((ta / tb).dtype).split(".")[-1], (a.dtype, b)
