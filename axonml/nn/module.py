"""``Module``: the base of every layer and model.

Note on names: parameters, buffers and submodules are kept in ordered dicts and named
with dotted paths (``layers.0.weight``) exactly as PyTorch does, so a state dict maps
onto a PyTorch model of the same structure and back.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Callable, Iterator, NamedTuple

from ..autograd.grad_mode import no_grad
from ..errors import StateDictError
from ..runtime.devices.device import as_device
from ..runtime.dtypes import DType, get_dtype
from ..tensor import Tensor, as_tensor
from .parameter import Parameter


class IncompatibleKeys(NamedTuple):
    missing_keys: list
    unexpected_keys: list


class _Handle:
    _next_id = 0

    def __init__(self, table: dict) -> None:
        self.table = table
        self.id = _Handle._next_id
        _Handle._next_id += 1

    def remove(self) -> None:
        self.table.pop(self.id, None)


class Module:
    """Base class of layers and models; subclass and define ``forward``.

    Example::

        class MLP(ax.nn.Module):
            def __init__(self):
                super().__init__()
                self.fc = ax.nn.Linear(4, 2)
            def forward(self, x):
                return self.fc(x).relu()
    """

    training: bool
    _version: int = 1

    def __init__(self) -> None:
        object.__setattr__(self, "training", True)
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_buffers", OrderedDict())
        object.__setattr__(self, "_non_persistent_buffers", set())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "_forward_pre_hooks", OrderedDict())
        object.__setattr__(self, "_forward_hooks", OrderedDict())

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError(f"{type(self).__name__} has no forward()")

    # -- calling ---------------------------------------------------------------------
    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        for hook in list(self._forward_pre_hooks.values()):
            res = hook(self, args)
            if res is not None:
                args = res if isinstance(res, tuple) else (res,)
        out = self.forward(*args, **kwargs)
        for hook in list(self._forward_hooks.values()):
            res = hook(self, args, out)
            if res is not None:
                out = res
        return out

    def register_forward_pre_hook(self, hook: Callable) -> _Handle:
        """``hook(module, args)`` runs before forward; it may return replacement args."""
        h = _Handle(self._forward_pre_hooks)
        self._forward_pre_hooks[h.id] = hook
        return h

    def register_forward_hook(self, hook: Callable) -> _Handle:
        """``hook(module, args, output)`` runs after forward; it may return a new output."""
        h = _Handle(self._forward_hooks)
        self._forward_hooks[h.id] = hook
        return h

    # -- attributes ------------------------------------------------------------------
    def __setattr__(self, name: str, value: Any) -> None:
        params = self.__dict__.get("_parameters")
        if isinstance(value, Parameter):
            if params is None:
                raise AttributeError("cannot assign parameters before Module.__init__() is called")
            self._remove_from(name, "_buffers", "_modules")
            self.__dict__.pop(name, None)
            params[name] = value
        elif params is not None and name in params:
            if value is not None and not isinstance(value, Parameter):
                raise TypeError(f"cannot assign {type(value).__name__} as parameter {name!r} (expected a Parameter or None)")
            params[name] = value
        elif isinstance(value, Module):
            mods = self.__dict__.get("_modules")
            if mods is None:
                raise AttributeError("cannot assign a submodule before Module.__init__() is called")
            self._remove_from(name, "_parameters", "_buffers")
            self.__dict__.pop(name, None)
            mods[name] = value
        elif name in self.__dict__.get("_modules", {}):
            if value is not None:
                raise TypeError(f"cannot assign {type(value).__name__} as submodule {name!r} (expected a Module or None)")
            self._modules[name] = None
        elif name in self.__dict__.get("_buffers", {}):
            if value is not None and not isinstance(value, Tensor):
                raise TypeError(f"cannot assign {type(value).__name__} as buffer {name!r} (expected a Tensor or None)")
            self._buffers[name] = value
        else:
            object.__setattr__(self, name, value)

    def _remove_from(self, name: str, *tables: str) -> None:
        for t in tables:
            d = self.__dict__.get(t)
            if d is not None:
                d.pop(name, None)

    def __getattr__(self, name: str) -> Any:
        d = self.__dict__
        for table in ("_parameters", "_buffers", "_modules"):
            t = d.get(table)
            if t is not None and name in t:
                return t[name]
        raise AttributeError(f"'{type(self).__name__}' object has no attribute '{name}'")

    def __delattr__(self, name: str) -> None:
        for table in ("_parameters", "_buffers", "_modules"):
            t = self.__dict__.get(table)
            if t is not None and name in t:
                del t[name]
                self._non_persistent_buffers.discard(name)
                return
        object.__delattr__(self, name)

    def register_parameter(self, name: str, param: Parameter | None) -> None:
        if "." in name or not name:
            raise KeyError(f"parameter name {name!r} must be non-empty and contain no '.'")
        if param is not None and not isinstance(param, Parameter):
            raise TypeError(f"register_parameter expects a Parameter or None, got {type(param).__name__}")
        self._parameters[name] = param

    def register_buffer(self, name: str, tensor: Tensor | None, persistent: bool = True) -> None:
        """Register state that is not a parameter (e.g. BatchNorm's running mean).
        Non-persistent buffers are left out of the state dict."""
        if "." in name or not name:
            raise KeyError(f"buffer name {name!r} must be non-empty and contain no '.'")
        if tensor is not None and not isinstance(tensor, Tensor):
            raise TypeError(f"register_buffer expects a Tensor or None, got {type(tensor).__name__}")
        self._remove_from(name, "_parameters", "_modules")
        self._buffers[name] = tensor
        if persistent:
            self._non_persistent_buffers.discard(name)
        else:
            self._non_persistent_buffers.add(name)

    def add_module(self, name: str, module: "Module | None") -> None:
        if module is not None and not isinstance(module, Module):
            raise TypeError(f"add_module expects a Module, got {type(module).__name__}")
        if "." in name or not name:
            raise KeyError(f"module name {name!r} must be non-empty and contain no '.'")
        self._modules[name] = module

    register_module = add_module

    def get_submodule(self, target: str) -> "Module":
        mod = self
        for part in target.split(".") if target else []:
            if part not in mod._modules:
                raise AttributeError(f"{type(mod).__name__} has no submodule {part!r} (looking up {target!r})")
            mod = mod._modules[part]
        return mod

    def get_parameter(self, target: str) -> Parameter:
        mod_path, _, name = target.rpartition(".")
        mod = self.get_submodule(mod_path)
        if name not in mod._parameters:
            raise AttributeError(f"{type(mod).__name__} has no parameter {name!r}")
        return mod._parameters[name]

    # -- traversal -------------------------------------------------------------------
    def named_modules(
        self, memo: set | None = None, prefix: str = "", remove_duplicate: bool = True
    ) -> Iterator[tuple[str, "Module"]]:
        if memo is None:
            memo = set()
        if remove_duplicate:
            if id(self) in memo:
                return
            memo.add(id(self))
        yield prefix, self
        for name, mod in self._modules.items():
            if mod is None:
                continue
            yield from mod.named_modules(memo, prefix + ("." if prefix else "") + name, remove_duplicate)

    def modules(self) -> Iterator["Module"]:
        for _, m in self.named_modules():
            yield m

    def named_children(self) -> Iterator[tuple[str, "Module"]]:
        seen = set()
        for name, mod in self._modules.items():
            if mod is not None and id(mod) not in seen:
                seen.add(id(mod))
                yield name, mod

    def children(self) -> Iterator["Module"]:
        for _, m in self.named_children():
            yield m

    def _named_members(
        self, table: str, prefix: str, recurse: bool, remove_duplicate: bool = True
    ) -> Iterator[tuple[str, Tensor]]:
        seen: set = set()
        mods = self.named_modules(prefix=prefix, remove_duplicate=remove_duplicate) if recurse else [(prefix, self)]
        for mprefix, mod in mods:
            for name, val in getattr(mod, table).items():
                if val is None or (remove_duplicate and id(val) in seen):
                    continue
                seen.add(id(val))
                yield mprefix + ("." if mprefix else "") + name, val

    def named_parameters(
        self, prefix: str = "", recurse: bool = True, remove_duplicate: bool = True
    ) -> Iterator[tuple[str, Parameter]]:
        """(dotted name, parameter) pairs in registration order; shared ones once."""
        yield from self._named_members("_parameters", prefix, recurse, remove_duplicate)

    def parameters(self, recurse: bool = True) -> Iterator[Parameter]:
        for _, p in self.named_parameters(recurse=recurse):
            yield p

    def named_buffers(
        self, prefix: str = "", recurse: bool = True, remove_duplicate: bool = True
    ) -> Iterator[tuple[str, Tensor]]:
        yield from self._named_members("_buffers", prefix, recurse, remove_duplicate)

    def buffers(self, recurse: bool = True) -> Iterator[Tensor]:
        for _, b in self.named_buffers(recurse=recurse):
            yield b

    def num_parameters(self, trainable_only: bool = False) -> int:
        """The number of parameter elements (shared parameters counted once)."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)

    # -- state -----------------------------------------------------------------------
    def state_dict(
        self, destination: dict | None = None, prefix: str = "", keep_vars: bool = False
    ) -> "OrderedDict[str, Tensor]":
        """Parameters and persistent buffers by dotted name. Values share storage with
        the module (detached unless ``keep_vars``)."""
        out = OrderedDict() if destination is None else destination
        for name, p in self._parameters.items():
            if p is not None:
                out[prefix + name] = p if keep_vars else p.detach()
        for name, b in self._buffers.items():
            if b is not None and name not in self._non_persistent_buffers:
                out[prefix + name] = b if keep_vars else b.detach()
        for name, mod in self._modules.items():
            if mod is not None:
                mod.state_dict(out, prefix + name + ".", keep_vars)
        return out

    def load_state_dict(self, state_dict: dict, strict: bool = True, assign: bool = False) -> IncompatibleKeys:
        """Copy ``state_dict`` into this module's parameters and buffers.

        With ``strict`` (default), missing or unexpected keys are an error; a shape
        mismatch is always an error. Nothing is modified when an error is raised.
        Returns ``(missing_keys, unexpected_keys)``.
        """
        own = self.state_dict(keep_vars=True)
        missing = [k for k in own if k not in state_dict]
        unexpected = [k for k in state_dict if k not in own]
        mismatched = []
        for k, t in own.items():
            if k in state_dict:
                src = state_dict[k]
                shape = tuple(getattr(src, "shape", ()))
                if shape != tuple(t.shape):
                    mismatched.append(f"{k}: checkpoint shape {shape}, model shape {tuple(t.shape)}")
        problems = []
        if mismatched:
            problems.append("size mismatch for " + "; ".join(mismatched))
        if strict and missing:
            problems.append(f"missing keys: {missing}")
        if strict and unexpected:
            problems.append(f"unexpected keys: {unexpected}")
        if problems:
            raise StateDictError(
                f"error(s) loading state dict into {type(self).__name__}: "
                + " | ".join(problems)
                + ". Pass strict=False to ignore missing/unexpected keys; fix shapes by building the model "
                "with the checkpoint's config."
            )
        with no_grad():
            for k, t in own.items():
                if k not in state_dict:
                    continue
                src = state_dict[k]
                if not isinstance(src, Tensor):
                    src = as_tensor(src)  # e.g. NumPy arrays from safetensors
                if assign:
                    mod_path, _, name = k.rpartition(".")
                    mod = self.get_submodule(mod_path)
                    if name in mod._parameters:
                        mod._parameters[name] = Parameter(src.detach(), t.requires_grad)
                    else:
                        mod._buffers[name] = src.detach()
                else:
                    t.copy_(src)
        return IncompatibleKeys(missing, unexpected)

    # -- modes and movement ------------------------------------------------------------
    def train(self, mode: bool = True) -> "Module":
        for m in self.modules():
            object.__setattr__(m, "training", bool(mode))
        return self

    def eval(self) -> "Module":
        return self.train(False)

    def requires_grad_(self, requires_grad: bool = True) -> "Module":
        for p in self.parameters():
            p.requires_grad_(requires_grad)
        return self

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.parameters():
            if p.grad is not None:
                if set_to_none:
                    p.grad = None
                else:
                    p.grad.zero_()

    def apply(self, fn: Callable[["Module"], Any]) -> "Module":
        """Call ``fn`` on every submodule (children first) and on self."""
        for child in self.children():
            child.apply(fn)
        fn(self)
        return self

    def _apply_tensors(self, convert: Callable[[Tensor], Tensor]) -> "Module":
        with no_grad():
            for mod in self.modules():
                for _name, p in mod._parameters.items():
                    if p is None:
                        continue
                    new = convert(p)
                    if new is not p:
                        p._data, p._dtype, p._device, p._storage = new._data, new._dtype, new._device, new._storage
                        p._vc = [0]
                        if p.grad is not None:
                            p.grad = convert(p.grad)
                for name, b in mod._buffers.items():
                    if b is not None:
                        mod._buffers[name] = convert(b)
        return self

    def to(self, *args: Any, **kwargs: Any) -> "Module":
        """Move parameters and buffers to a device and/or cast floating ones to a dtype,
        in place (parameter objects keep their identity, so optimizers stay valid)."""
        device = kwargs.pop("device", None)
        dtype = kwargs.pop("dtype", None)
        for a in args:
            if isinstance(a, DType) or (isinstance(a, str) and not a.startswith(("cpu", "cuda"))):
                dtype = a
            else:
                device = a
        dev = None if device is None else as_device(device)
        dt = None if dtype is None else get_dtype(dtype)

        def convert(t: Tensor) -> Tensor:
            out = t
            if dt is not None and t.dtype.is_floating_point:
                out = out.to(dt)
            if dev is not None:
                out = out.to(dev)
            return out.detach() if out is not t else t

        return self._apply_tensors(convert)

    def cpu(self) -> "Module":
        return self.to("cpu")

    def cuda(self, device: Any = None) -> "Module":
        return self.to("cuda" if device is None else device)

    def float(self) -> "Module":
        return self.to(dtype="float32")

    def double(self) -> "Module":
        return self.to(dtype="float64")

    def half(self) -> "Module":
        return self.to(dtype="float16")

    def bfloat16(self) -> "Module":
        return self.to(dtype="bfloat16")

    # -- printing --------------------------------------------------------------------
    def extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        extra = self.extra_repr()
        extra_lines = extra.split("\n") if extra else []
        child_lines = [f"({name}): " + repr(mod).replace("\n", "\n  ") for name, mod in self._modules.items()]
        lines = extra_lines + child_lines
        head = type(self).__name__ + "("
        if not lines:
            return head + ")"
        if len(extra_lines) == 1 and not child_lines:
            return head + extra_lines[0] + ")"
        return head + "\n  " + "\n  ".join(lines) + "\n)"

    def __dir__(self) -> list:
        return sorted(set(super().__dir__()) | set(self._parameters) | set(self._buffers) | set(self._modules))
