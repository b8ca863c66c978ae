"""``Optimizer``: parameter groups, per-parameter state, ``zero_grad``, state dicts, hooks.

Note on updates: optimizers write the new values straight into the parameters' raw
arrays (``p._data``) with the device's array module (``p.device.xp``: NumPy or CuPy),
using ufuncs with ``out=`` so that an update allocates at most one scratch array per
parameter. The loop runs over parameters; each update is whole-array math. Because the
write is in place, every update bumps the parameter's version counter (``p._vc``), so a
graph that saved the old value refuses to backpropagate through it. No autograd graph is
involved, so ``step`` needs no ``no_grad`` block of its own.

Note on the state format: ``state_dict()`` follows PyTorch exactly. ``state`` maps an
integer parameter index (the position of the parameter when the groups are read in
order) to that parameter's state (axonml Tensors and plain numbers); ``param_groups`` is
a list of hyperparameter dicts whose ``params`` entry lists those indices. Step counters
are 0-d float32 CPU tensors, as in PyTorch, so a state dict moves between the two
frameworks by converting tensors through NumPy. As in PyTorch, ``state_dict()`` returns
references to the live state tensors (save or deep-copy it before training on);
``load_state_dict`` copies what it loads, so the loaded dict is never aliased.
"""

from __future__ import annotations

import copy
import functools
from collections import OrderedDict, defaultdict
from typing import Any, Callable

from ..autograd.grad_mode import enable_grad
from ..autograd.variable import make_tensor
from ..errors import ShapeError, StateDictError
from ..runtime.dtypes import float32
from ..tensor import Tensor, tensor

__all__ = ["Optimizer", "required"]


class _RequiredParameter:
    """Marks a hyperparameter that has no default and must be given per group."""

    def __repr__(self) -> str:
        return "<required parameter>"


required = _RequiredParameter()


class _HookHandle:
    _next_id = 0

    def __init__(self, table: dict) -> None:
        self.table = table
        self.id = _HookHandle._next_id
        _HookHandle._next_id += 1

    def remove(self) -> None:
        self.table.pop(self.id, None)


def _with_step_hooks(step: Callable) -> Callable:
    """Wrap a subclass's ``step`` so that step hooks run once around it (also when a
    subclass's ``step`` calls ``super().step()``), and record that it was called (the LR
    schedulers warn when they are stepped before the optimizer)."""

    @functools.wraps(step)
    def wrapper(self: "Optimizer", *args: Any, **kwargs: Any) -> Any:
        if self._in_step:
            return step(self, *args, **kwargs)
        for hook in list(self._step_pre_hooks.values()):
            res = hook(self, args, kwargs)
            if res is not None:
                if not (isinstance(res, tuple) and len(res) == 2):
                    raise RuntimeError(f"a step pre-hook must return None or a tuple (new_args, new_kwargs), got {res!r}")
                args, kwargs = res
        self._in_step = True
        try:
            out = step(self, *args, **kwargs)
        finally:
            self._in_step = False
        self._opt_called = True
        for hook in list(self._step_post_hooks.values()):
            hook(self, args, kwargs)
        return out

    wrapper._axonml_step_hooks = True  # type: ignore[attr-defined]
    return wrapper


class Optimizer:
    """Base class of optimizers.

    Args:
        params: an iterable of tensors, of ``(name, tensor)`` pairs (as from
            ``model.named_parameters()``), or of dicts, one per parameter group, each with a
            ``params`` entry and optional per-group hyperparameters.
        defaults: the hyperparameters that groups do not set.

    Subclasses implement ``step(closure=None)``, which returns the closure's loss.

    Example::

        opt = ax.optim.SGD([{"params": model.fc1.parameters()},
                            {"params": model.fc2.parameters(), "lr": 1e-3}], lr=1e-2)
        opt.zero_grad(); loss.backward(); opt.step()
    """

    #: load_state_dict checks that non-scalar state tensors have their parameter's shape;
    #: an optimizer with factored state (shapes unlike the parameter's) sets this False.
    _state_shaped_like_params: bool = True

    def __init__(self, params: Any, defaults: dict[str, Any]) -> None:
        self.defaults = defaults
        self.state: defaultdict = defaultdict(dict)
        self.param_groups: list[dict[str, Any]] = []
        self._step_pre_hooks: OrderedDict = OrderedDict()
        self._step_post_hooks: OrderedDict = OrderedDict()
        self._in_step = False
        self._opt_called = False
        if isinstance(params, Tensor):
            raise TypeError(
                f"{type(self).__name__}: params should be an iterable of Tensors or dicts, but got a "
                f"Tensor of shape {tuple(params.shape)}; wrap it in a list: [t]"
            )
        groups = list(params)
        if len(groups) == 0:
            raise ValueError(f"{type(self).__name__} got an empty parameter list")
        if not isinstance(groups[0], dict):
            groups = [{"params": groups}]
        for group in groups:
            self.add_param_group(group)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        step = cls.__dict__.get("step")
        if step is not None and not getattr(step, "_axonml_step_hooks", False):
            cls.step = _with_step_hooks(step)  # type: ignore[method-assign]

    # -- groups --------------------------------------------------------------------------
    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a group of parameters (a dict with ``params`` and optional hyperparameters).

        Hyperparameters the group does not set are filled from ``defaults``. A parameter
        may belong to one group only.

        Example: ``opt.add_param_group({"params": head.parameters(), "lr": 1e-4})``
        """
        if not isinstance(param_group, dict):
            raise TypeError(f"a parameter group must be a dict, got {type(param_group).__name__}")
        group = dict(param_group)
        params = group.get("params")
        if params is None:
            raise ValueError("a parameter group needs a 'params' entry (a list of tensors)")
        if isinstance(params, Tensor):
            params = [params]
        elif isinstance(params, (set, frozenset)):
            raise TypeError(
                "optimizer parameters need to be organized in ordered collections, but the ordering of "
                "tensors in sets will change between runs. Please use a list instead."
            )
        params = list(params)
        names: list[str] = []
        tensors: list[Any] = []
        for p in params:
            if isinstance(p, tuple):
                names.append(p[0])
                tensors.append(p[1])
            else:
                tensors.append(p)
        if names and len(names) != len(tensors):
            raise ValueError("all optimizer params should be with/without names. Some param names are missing")
        for i, p in enumerate(tensors):
            if not isinstance(p, Tensor):
                raise TypeError(f"optimizer can only optimize Tensors, but parameter {i} of the group is a {type(p).__name__}")
            if not (p.is_leaf or p.retains_grad):
                raise ValueError(
                    f"can't optimize a non-leaf Tensor (parameter {i}, shape {tuple(p.shape)}, made by "
                    f"{type(p.grad_fn).__name__}); optimize the leaf it was computed from, or .detach() it"
                )
        group["params"] = tensors
        if names:
            group["param_names"] = names
        for key, default in self.defaults.items():
            if default is required and key not in group:
                raise ValueError(f"parameter group didn't specify a value of required optimization parameter {key}")
            group.setdefault(key, default)
        ids = [id(p) for p in tensors]
        if len(set(ids)) != len(ids):
            raise ValueError(
                f"{type(self).__name__}: a parameter group lists the same parameter more than once; list each parameter once"
            )
        for gi, other in enumerate(self.param_groups):
            taken = {id(p) for p in other["params"]}
            for i, p in enumerate(tensors):
                if id(p) in taken:
                    raise ValueError(
                        f"some parameters appear in more than one parameter group: parameter {i} of the new "
                        f"group (shape {tuple(p.shape)}) is already in group {gi}; put each parameter in one group"
                    )
            if ("param_names" in other) != ("param_names" in group):
                raise ValueError(
                    "all optimizer param groups should be with/without names; the new group "
                    f"{'has' if names else 'has no'} names but group {gi} {'has none' if names else 'has them'}"
                )
        self.param_groups.append(group)

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Reset the gradients of all parameters: to ``None`` (default), or to zeros in place.

        Example: ``opt.zero_grad()``
        """
        for group in self.param_groups:
            for p in group["params"]:
                g = p.grad
                if g is None:
                    continue
                if set_to_none:
                    p.grad = None
                else:
                    if g.grad_fn is not None:
                        g.detach_()
                    else:
                        g.requires_grad_(False)
                    g._data[...] = 0
                    g._vc[0] += 1

    # -- stepping ------------------------------------------------------------------------
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Update the parameters once; ``closure`` re-evaluates the model and returns the loss."""
        raise NotImplementedError(f"{type(self).__name__} does not implement step()")

    @staticmethod
    def _eval_closure(closure: Callable[[], Any] | None) -> Any:
        if closure is None:
            return None
        with enable_grad():
            return closure()

    @staticmethod
    def _params_with_grad(group: dict[str, Any]) -> list:
        """The group's parameters that have a gradient, checked against their gradient."""
        out = []
        for p in group["params"]:
            g = p.grad
            if g is None:
                continue
            if g.shape != p.shape:
                raise ShapeError(
                    f"the gradient of a parameter has shape {tuple(g.shape)}, but the parameter has shape "
                    f"{tuple(p.shape)}; assign .grad a tensor of the parameter's shape"
                )
            out.append(p)
        return out

    def register_step_pre_hook(self, hook: Callable) -> _HookHandle:
        """``hook(optimizer, args, kwargs)`` runs before each ``step``; it may return a
        tuple ``(new_args, new_kwargs)``. Returns a handle with ``remove()``."""
        handle = _HookHandle(self._step_pre_hooks)
        self._step_pre_hooks[handle.id] = hook
        return handle

    def register_step_post_hook(self, hook: Callable) -> _HookHandle:
        """``hook(optimizer, args, kwargs)`` runs after each ``step``. Returns a handle with ``remove()``."""
        handle = _HookHandle(self._step_post_hooks)
        self._step_post_hooks[handle.id] = hook
        return handle

    # -- state dicts -----------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The optimizer's state in PyTorch's format (see the module note).

        Example::

            sd = opt.state_dict()      # {"state": {0: {...}, ...}, "param_groups": [...]}
        """
        index: dict[int, int] = {}
        groups = []
        for group in self.param_groups:
            packed = {k: v for k, v in group.items() if k != "params"}
            for p in group["params"]:
                index.setdefault(id(p), len(index))
            packed["params"] = [index[id(p)] for p in group["params"]]
            groups.append(packed)
        state = {(index[id(k)] if isinstance(k, Tensor) and id(k) in index else k): v for k, v in self.state.items()}
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load a state from :meth:`state_dict` (this optimizer's or PyTorch's format).

        The groups must match this optimizer's in number and sizes. Floating state tensors
        are copied to each parameter's device and dtype; step counters are kept as saved.

        Example: ``opt.load_state_dict(saved["optimizer"])``
        """
        if not isinstance(state_dict, dict) or "state" not in state_dict or "param_groups" not in state_dict:
            got = sorted(state_dict) if isinstance(state_dict, dict) else type(state_dict).__name__
            raise StateDictError(
                f"{type(self).__name__}.load_state_dict expects a dict with 'state' and 'param_groups', got {got}"
            )
        saved_groups = copy.deepcopy(state_dict["param_groups"])
        groups = self.param_groups
        if len(groups) != len(saved_groups):
            raise ValueError(
                f"loaded state dict has a different number of parameter groups: {len(saved_groups)}, but "
                f"{type(self).__name__} has {len(groups)}; build the optimizer with the groups that were saved"
            )
        for gi, (g, sg) in enumerate(zip(groups, saved_groups)):
            if len(g["params"]) != len(sg["params"]):
                raise ValueError(
                    f"loaded state dict contains a parameter group that doesn't match the size of optimizer's "
                    f"group: saved group {gi} has {len(sg['params'])} parameters, the optimizer's has "
                    f"{len(g['params'])}"
                )
        id_map: dict[Any, Any] = {}
        group_of: dict[Any, int] = {}
        for gi, (g, sg) in enumerate(zip(groups, saved_groups)):
            for saved_id, p in zip(sg["params"], g["params"]):
                id_map[saved_id] = p
                group_of[saved_id] = gi
        state: defaultdict = defaultdict(dict)
        for k, v in state_dict["state"].items():
            if k in id_map:
                p = id_map[k]
                state[p] = self._cast_state(p, v, k, group_of[k])
            else:
                state[k] = v
        new_groups = []
        for g, sg in zip(groups, saved_groups):
            sg["params"] = g["params"]
            if "param_names" in g and "param_names" not in sg:
                sg["param_names"] = g["param_names"]
            for key, default in self.defaults.items():
                if default is not required:
                    sg.setdefault(key, default)
            new_groups.append(sg)
        self.__setstate__({"state": state, "param_groups": new_groups})

    def _cast_state(self, param: Tensor, value: Any, index: Any, group: int, key: Any = None) -> Any:
        """A deep copy of ``value`` with tensors moved to ``param``'s device (and dtype, if
        floating), except step counters, which keep their device and dtype."""
        if isinstance(value, Tensor):
            value = value.detach()
            if key == "step":
                return value.to(copy=True)
            if self._state_shaped_like_params and value.ndim > 0 and value.shape != param.shape:
                raise StateDictError(
                    f"{type(self).__name__}.load_state_dict: state {key!r} of parameter {index} (group {group}) "
                    f"has shape {tuple(value.shape)}, but the parameter has shape {tuple(param.shape)}; the state "
                    "dict was saved for a different model"
                )
            if value.is_floating_point() and param.is_floating_point():
                return value.to(device=param.device, dtype=param.dtype, copy=True)
            return value.to(device=param.device, copy=True)
        if isinstance(value, dict):
            return {k: self._cast_state(param, v, index, group, k) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return type(value)(self._cast_state(param, v, index, group) for v in value)
        return copy.deepcopy(value)

    def __getstate__(self) -> dict[str, Any]:
        return {"defaults": self.defaults, "state": self.state, "param_groups": self.param_groups}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        for attr, default in (("_step_pre_hooks", OrderedDict), ("_step_post_hooks", OrderedDict)):
            if attr not in self.__dict__:
                setattr(self, attr, default())
        self.__dict__.setdefault("_in_step", False)
        self.__dict__.setdefault("_opt_called", False)
        # a step counter saved as a plain number (older PyTorch) becomes a tensor
        for group in self.param_groups:
            for p in group["params"]:
                st = self.state.get(p)
                if st and "step" in st and not isinstance(st["step"], Tensor):
                    st["step"] = tensor(float(st["step"]), dtype=float32, device="cpu")

    def __repr__(self) -> str:
        lines = [f"{type(self).__name__} ("]
        for i, group in enumerate(self.param_groups):
            lines.append(f"Parameter Group {i}")
            for key in sorted(group):
                if key != "params":
                    lines.append(f"    {key}: {group[key]}")
        lines.append(")")
        return "\n".join(lines)


# -- helpers shared by the optimizers -------------------------------------------------------
def _check_hparam(ok: bool, what: str, value: Any, need: str, opt: str) -> None:
    """Raise ``ValueError("Invalid <what>: <value> ...")`` (PyTorch's wording) unless ``ok``."""
    if not ok:
        raise ValueError(f"Invalid {what}: {value} ({opt} needs {need})")


def _check_lr(lr: Any, opt: str) -> None:
    """A learning rate must be >= 0 (``required`` passes: each group must then set it)."""
    if lr is not required:
        _check_hparam(float(lr) >= 0.0, "learning rate", lr, "lr >= 0", opt)


def _check_betas(betas: Any, opt: str) -> None:
    if not (isinstance(betas, (tuple, list)) and len(betas) == 2):
        raise ValueError(f"{opt}: betas must be a pair (beta1, beta2), got {betas!r}")
    for i, b in enumerate(betas):
        _check_hparam(0.0 <= float(b) < 1.0, f"beta parameter at index {i}", b, "0 <= beta < 1", opt)


def _state_zeros(p: Tensor) -> Tensor:
    """A zero state tensor like ``p`` (device, dtype, shape), outside any graph."""
    xp = p.device.xp
    return make_tensor(xp.zeros(p._data.shape, dtype=p._data.dtype), p.device)


def _state_from(p: Tensor, array: Any) -> Tensor:
    """Wrap an array on ``p``'s device as a state tensor."""
    return make_tensor(array, p.device)


def _step_tensor(value: float = 0.0) -> Tensor:
    """A step counter: a 0-d float32 CPU tensor, as in PyTorch (whatever the default device)."""
    return tensor(float(value), dtype=float32, device="cpu")


def _incr_step(state: dict) -> float:
    """Add one to ``state['step']`` in place and return the new count."""
    st = state["step"]
    st._data += 1
    st._vc[0] += 1
    return float(st._data)


def _lerp_(xp: Any, start: Any, end: Any, weight: float, scratch: Any) -> None:
    """``start.lerp_(end, weight)`` in place, with PyTorch's two-sided formula."""
    xp.subtract(end, start, out=scratch)
    if weight < 0.5:
        scratch *= weight
        start += scratch
    else:
        scratch *= 1.0 - weight
        xp.subtract(end, scratch, out=start)


def _grad_for_update(xp: Any, p: Tensor, maximize: bool, weight_decay: float, scratch: Any) -> Any:
    """The gradient the update uses: ``-grad`` if maximizing, plus ``weight_decay * p``
    (coupled decay). Returns ``p.grad``'s own array when neither applies, else ``scratch``."""
    g = p.grad._data
    if weight_decay != 0:
        xp.multiply(p._data, weight_decay, out=scratch)
        if maximize:
            scratch -= g
        else:
            scratch += g
        return scratch
    if maximize:
        return xp.negative(g, out=scratch)
    return g
