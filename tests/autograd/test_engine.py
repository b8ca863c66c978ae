"""The autograd engine: hooks and their order, grad(), second order, grad modes,
custom Functions, and the errors a user can trigger."""

import numpy as np
import pytest
from helpers import rand, to_ax, to_torch, torch

import axonml as ax
from axonml.errors import AutogradError, DTypeError, ShapeError


def test_post_accumulate_hooks_fire_once_per_leaf_in_ready_order():
    # a chain x -> l1 -> l2 -> l3: gradients become ready last layer first
    ws = [ax.randn(4, 4, requires_grad=True) for _ in range(3)]
    bs = [ax.randn(4, requires_grad=True) for _ in range(3)]
    fired = []
    for i, (w, b) in enumerate(zip(ws, bs)):
        w.register_post_accumulate_grad_hook(lambda t, i=i: fired.append(("w", i)))
        b.register_post_accumulate_grad_hook(lambda t, i=i: fired.append(("b", i)))
    h = ax.randn(2, 4)
    for w, b in zip(ws, bs):
        h = h @ w + b
    h.sum().backward()
    assert sorted(fired) == sorted({*fired}), "a hook fired twice"
    assert len(fired) == 6
    layer_order = [i for _, i in fired]
    assert layer_order == sorted(layer_order, reverse=True), f"not in ready order: {fired}"


def test_post_accumulate_hook_sees_accumulated_grad():
    w = ax.ones(3, requires_grad=True)
    seen = []
    w.register_post_accumulate_grad_hook(lambda t: seen.append(t.grad.numpy().copy()))
    (w * 2).sum().backward()
    (w * 3).sum().backward()
    assert np.allclose(seen[0], 2) and np.allclose(seen[1], 5)


def test_tensor_hook_replaces_gradient_and_retain_grad():
    x = ax.randn(3, requires_grad=True)
    y = x * 2
    y.retain_grad()
    h = y.register_hook(lambda g: g * 10)
    y.sum().backward()
    assert np.allclose(x.grad.numpy(), 20)
    assert np.allclose(y.grad.numpy(), 10)
    h.remove()
    x.grad = None
    (x * 2).sum().backward()
    assert np.allclose(x.grad.numpy(), 2)
    leaf_calls = []
    x.register_hook(lambda g: leaf_calls.append(1))
    (x * 1).sum().backward()
    assert leaf_calls == [1]


def test_hook_returning_wrong_shape_is_an_error():
    x = ax.randn(3, requires_grad=True)
    y = x * 2
    y.register_hook(lambda g: ax.zeros(4))
    with pytest.raises(ShapeError, match=r"\(4,\).*\(3,\)"):
        y.sum().backward()


def test_backward_twice_through_freed_graph():
    x = ax.randn(3, requires_grad=True)
    y = (x * x).sum()
    y.backward()
    with pytest.raises(AutogradError, match="retain_graph=True"):
        y.backward()
    z = (x * x).sum()
    z.backward(retain_graph=True)
    z.backward()
    assert np.allclose(x.grad.numpy(), 2 * x.detach().numpy() * 3)


def test_modified_saved_tensor_is_detected_and_named():
    a = ax.randn(3, requires_grad=True)
    b = ax.randn(3)
    y = a * b
    b.add_(1)
    with pytest.raises(AutogradError, match=r"modified by an inplace operation.*Mul"):
        y.sum().backward()


def test_inplace_on_leaf_requiring_grad():
    w = ax.randn(3, requires_grad=True)
    with pytest.raises(AutogradError, match="no_grad"):
        w.add_(1)
    with ax.no_grad():
        w.add_(1)
    assert w._version == 1


def test_inplace_on_nonleaf_matches_torch():
    a = rand(3, 4)
    xa, xt = to_ax(a), to_torch(a)
    ya, yt = xa * 2, xt * 2
    ya.mul_(xa)
    yt.mul_(xt)
    ya.add_(1.0)
    yt.add_(1.0)
    ya.sum().backward()
    yt.sum().backward()
    np.testing.assert_allclose(xa.grad.numpy(), xt.grad.numpy(), rtol=1e-6)


def test_implicit_gradient_needs_scalar():
    x = ax.randn(3, requires_grad=True)
    with pytest.raises(AutogradError, match=r"shape \(3,\)"):
        (x * 2).backward()
    (x * 2).backward(ax.ones(3))
    assert np.allclose(x.grad.numpy(), 2)


def test_backward_on_tensor_without_grad():
    with pytest.raises(AutogradError, match="does not require grad"):
        ax.randn(3).sum().backward()


def test_requires_grad_only_on_floats():
    with pytest.raises(DTypeError, match="floating"):
        ax.arange(3).requires_grad_()


def test_grad_api_does_not_touch_dot_grad():
    x = ax.randn(3, requires_grad=True)
    y = ax.randn(3, requires_grad=True)
    (gx,) = ax.grad((x * y).sum(), [x])
    assert np.allclose(gx.numpy(), y.detach().numpy())
    assert x.grad is None and y.grad is None
    z = ax.randn(3, requires_grad=True)
    with pytest.raises(AutogradError, match="allow_unused"):
        ax.grad((x * 2).sum(), [z])
    assert ax.grad((x * 2).sum(), [z], allow_unused=True) == (None,)


@pytest.mark.parametrize(
    "fn",
    [
        lambda x, y: (x * x * y).sum(),
        lambda x, y: (x / (y * y + 1)).sum(),
        lambda x, y: ((x - y) ** 3).sum(),
        lambda x, y: ((x @ y.transpose(0, 1)) * x.sum()).sum(),
        lambda x, y: (x.reshape(-1) * y.reshape(-1)).sum() ** 2,
    ],
)
def test_second_order_matches_torch(fn):
    a, b = rand(3, 3), rand(3, 3, seed=1) + 2
    xa, ya = to_ax(a), to_ax(b)
    xt, yt = to_torch(a), to_torch(b)
    (ga,) = ax.grad(fn(xa, ya), [xa], create_graph=True)
    (gt,) = torch.autograd.grad(fn(xt, yt), [xt], create_graph=True)
    np.testing.assert_allclose(ga.detach().numpy(), gt.detach().numpy(), rtol=1e-4, atol=1e-5)
    hxa, hya = ax.grad(ga.sum(), [xa, ya], allow_unused=True)
    hxt, hyt = torch.autograd.grad(gt.sum(), [xt, yt], allow_unused=True)
    for h1, h2 in ((hxa, hxt), (hya, hyt)):
        if h2 is None:
            assert h1 is None or np.allclose(h1.numpy(), 0)
        else:
            np.testing.assert_allclose(h1.detach().numpy(), h2.detach().numpy(), rtol=1e-4, atol=1e-5)


def test_second_order_through_unsupported_op_is_a_clear_error():
    class NoSecond(ax.Function):
        @staticmethod
        def forward(ctx, x):
            return x * 1

        @staticmethod
        def backward(ctx, g):
            return g

    x = ax.randn(3, requires_grad=True)
    with pytest.raises(AutogradError, match="create_graph=True is not supported through NoSecond"):
        ax.grad(NoSecond.apply(x).sum(), [x], create_graph=True)


def test_custom_function_api():
    class Cube(ax.autograd.Function):
        @staticmethod
        def forward(ctx, x, scale):
            ctx.save_for_backward(x)
            ctx.scale = scale
            return ctx.xp.power(x, 3) * scale

        @staticmethod
        def backward(ctx, g):
            (x,) = ctx.saved_tensors
            assert ctx.needs_input_grad == (True, False)
            return 3 * x * x * g * ctx.scale, None

    x = ax.tensor([1.0, 2.0, -1.0], requires_grad=True)
    y = Cube.apply(x, 2.0)
    assert y.grad_fn.name() == "Cube"
    y.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [6.0, 24.0, 6.0])
    assert ax.autograd.gradcheck(lambda t: Cube.apply(t, 0.5), [ax.randn(4, dtype=ax.float64, requires_grad=True)])


def test_custom_function_wrong_number_of_grads():
    class Bad(ax.Function):
        @staticmethod
        def forward(ctx, x, y):
            return x + y

        @staticmethod
        def backward(ctx, g):
            return g

    x = ax.randn(2, requires_grad=True)
    with pytest.raises(AutogradError, match="returned 1 gradient"):
        Bad.apply(x, ax.randn(2)).sum().backward()


def test_grad_modes():
    x = ax.randn(3, requires_grad=True)
    with ax.no_grad():
        assert not (x * 2).requires_grad
        with ax.enable_grad():
            assert (x * 2).requires_grad
    with ax.set_grad_enabled(False):
        assert not (x * 2).requires_grad
    with ax.inference_mode():
        assert not (x * 2).requires_grad and not ax.is_grad_enabled()

    @ax.no_grad()
    def f(t):
        return t * 2

    assert not f(x).requires_grad and ax.is_grad_enabled()


def test_detach_shares_storage_and_cuts_graph():
    x = ax.randn(3, requires_grad=True)
    d = x.detach()
    assert not d.requires_grad and d.grad_fn is None
    with ax.no_grad():
        x.mul_(0)
    assert np.allclose(d.numpy(), 0)


def test_gradcheck_catches_a_wrong_backward():
    class Wrong(ax.Function):
        @staticmethod
        def forward(ctx, x):
            return x * x

        @staticmethod
        def backward(ctx, g):
            return g  # should be 2 x g

    with pytest.raises(AutogradError, match="gradcheck failed"):
        ax.autograd.gradcheck(Wrong.apply, [ax.randn(3, dtype=ax.float64, requires_grad=True)])


def test_queue_callback_runs_once_after_the_whole_backward():
    import axonml.autograd as ag

    a = ax.randn(3, requires_grad=True)
    b = ax.randn(3, requires_grad=True)
    log = []

    def at_end():
        # every leaf's gradient is in place when the callback runs
        log.append(("end", a.grad is not None, b.grad is not None))
        ag.queue_callback(lambda: log.append(("chained",)))

    def hook(p):
        log.append(("hook",))
        if len(log) == 1:
            ag.queue_callback(at_end)

    a.register_post_accumulate_grad_hook(hook)
    b.register_post_accumulate_grad_hook(hook)
    ((a * 2).sum() + (b * 3).sum()).backward()
    assert log == [("hook",), ("hook",), ("end", True, True), ("chained",)]
    log.clear()
    (a * b).sum().backward()  # a new backward queues afresh; nothing left over from the last
    assert log == [("hook",), ("hook",), ("end", True, True), ("chained",)]


def test_queue_callback_outside_backward_and_after_error():
    import axonml.autograd as ag

    with pytest.raises(AutogradError, match="no backward is running"):
        ag.queue_callback(lambda: None)
    a = ax.randn(2, requires_grad=True)
    ran = []

    def bad(g):
        ag.queue_callback(lambda: ran.append(1))
        raise RuntimeError("boom")

    a.register_hook(bad)
    with pytest.raises(RuntimeError, match="boom"):
        (a * 2).sum().backward()
    assert ran == []  # callbacks of a failed backward do not run
    with pytest.raises(AutogradError, match="no backward is running"):
        ag.queue_callback(lambda: None)  # and the failed backward left no stale frame
