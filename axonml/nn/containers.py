"""Containers: ``Sequential``, ``ModuleList``, ``ModuleDict``, ``ParameterList``, ``ParameterDict``.

Note on names: children are registered under their index (``"0"``, ``"1"``...) or their key,
so state-dict keys read ``layers.0.weight`` exactly as in PyTorch. Deleting from a
``Sequential`` or ``ModuleList`` renumbers the remaining children, as PyTorch does, so
indices and names stay in step.
"""

from __future__ import annotations

import operator
from collections import OrderedDict
from typing import Any, Iterable, Iterator, Mapping

from ..tensor import Tensor
from .module import Module
from .parameter import Parameter


def _index(idx: Any, n: int, cls: str) -> int:
    i = operator.index(idx)
    if not -n <= i < n:
        raise IndexError(f"{cls}: index {i} is out of range for a container of length {n}")
    return i % n


class Sequential(Module):
    """Chain modules: ``forward(x)`` feeds ``x`` through each child in order.

    Build from modules, or from an ``OrderedDict`` to name them::

        net = ax.nn.Sequential(ax.nn.Linear(4, 8), ax.nn.ReLU(), ax.nn.Linear(8, 2))
        net = ax.nn.Sequential(OrderedDict([("fc", ax.nn.Linear(4, 2)), ("act", ax.nn.ReLU())]))
        net[0], net[-1], net[1:]  # indexing and slicing (a slice is a Sequential)
    """

    def __init__(self, *args: Any) -> None:
        super().__init__()
        if len(args) == 1 and isinstance(args[0], OrderedDict):
            for key, module in args[0].items():
                self.add_module(key, module)
        else:
            for idx, module in enumerate(args):
                self.add_module(str(idx), module)

    def __getitem__(self, idx: int | slice) -> Any:
        if isinstance(idx, slice):
            return type(self)(OrderedDict(list(self._modules.items())[idx]))
        return list(self._modules.values())[_index(idx, len(self), type(self).__name__)]

    def __setitem__(self, idx: int, module: Module) -> None:
        key = list(self._modules.keys())[_index(idx, len(self), type(self).__name__)]
        self.add_module(key, module)

    def __delitem__(self, idx: int | slice) -> None:
        keys = list(self._modules.keys())
        if isinstance(idx, slice):
            for key in keys[idx]:
                del self._modules[key]
        else:
            del self._modules[keys[_index(idx, len(self), type(self).__name__)]]
        # keep numbering contiguous, as PyTorch does
        items = list(self._modules.values())
        self._modules.clear()
        for i, m in enumerate(items):
            self._modules[str(i)] = m

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self) -> Iterator[Module]:
        return iter(self._modules.values())

    def __add__(self, other: "Sequential") -> "Sequential":
        if not isinstance(other, Sequential):
            raise TypeError(f"can only add a Sequential to a Sequential, got {type(other).__name__}")
        out = Sequential()
        for m in (*self, *other):
            out.append(m)
        return out

    def __iadd__(self, other: "Sequential") -> "Sequential":
        if not isinstance(other, Sequential):
            raise TypeError(f"can only add a Sequential to a Sequential, got {type(other).__name__}")
        for m in list(other):
            self.append(m)
        return self

    def append(self, module: Module) -> "Sequential":
        """Add ``module`` at the end; returns self."""
        self.add_module(str(len(self)), module)
        return self

    def insert(self, index: int, module: Module) -> "Sequential":
        """Insert ``module`` before position ``index`` (negative counts from the end)."""
        if not isinstance(module, Module):
            raise TypeError(f"Sequential.insert expects a Module, got {type(module).__name__}")
        n = len(self)
        if not -n <= index <= n:
            raise IndexError(f"Sequential.insert: index {index} is out of range for length {n}")
        if index < 0:
            index += n
        items = list(self._modules.values())
        items.insert(index, module)
        self._modules.clear()
        for i, m in enumerate(items):
            self._modules[str(i)] = m
        return self

    def extend(self, modules: Iterable[Module]) -> "Sequential":
        for m in modules:
            self.append(m)
        return self

    def pop(self, index: int = -1) -> Module:
        m = self[index]
        del self[index]
        return m

    def forward(self, input: Any) -> Any:
        for module in self:
            input = module(input)
        return input


class ModuleList(Module):
    """A list of submodules, registered so their parameters are the container's.

    Example::

        blocks = ax.nn.ModuleList([ax.nn.Linear(4, 4) for _ in range(3)])
        for b in blocks: x = b(x)
    """

    def __init__(self, modules: Iterable[Module] | None = None) -> None:
        super().__init__()
        if modules is not None:
            self.extend(modules)

    def __getitem__(self, idx: int | slice) -> Any:
        if isinstance(idx, slice):
            return type(self)(list(self._modules.values())[idx])
        return self._modules[str(_index(idx, len(self), type(self).__name__))]

    def __setitem__(self, idx: int, module: Module) -> None:
        self.add_module(str(_index(idx, len(self), type(self).__name__)), module)

    def __delitem__(self, idx: int | slice) -> None:
        if isinstance(idx, slice):
            for k in range(len(self))[idx]:
                del self._modules[str(k)]
        else:
            del self._modules[str(_index(idx, len(self), type(self).__name__))]
        items = list(self._modules.values())
        self._modules.clear()
        for i, m in enumerate(items):
            self._modules[str(i)] = m

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self) -> Iterator[Module]:
        return iter(self._modules.values())

    def __iadd__(self, modules: Iterable[Module]) -> "ModuleList":
        return self.extend(modules)

    def __add__(self, other: Iterable[Module]) -> "ModuleList":
        out = ModuleList()
        for m in (*self, *other):
            out.append(m)
        return out

    def insert(self, index: int, module: Module) -> None:
        """Insert ``module`` before position ``index``."""
        items = list(self._modules.values())
        items.insert(index, module)
        self._modules.clear()
        for i, m in enumerate(items):
            self.add_module(str(i), m)

    def append(self, module: Module) -> "ModuleList":
        self.add_module(str(len(self)), module)
        return self

    def extend(self, modules: Iterable[Module]) -> "ModuleList":
        if isinstance(modules, (Module, Tensor)) and not isinstance(modules, (ModuleList, Sequential)):
            raise TypeError(f"ModuleList.extend expects an iterable of Modules, got {type(modules).__name__}")
        for m in modules:
            self.append(m)
        return self

    def pop(self, index: int = -1) -> Module:
        m = self[index]
        del self[index]
        return m

    def __repr__(self) -> str:
        """PyTorch's layout: runs of identical children collapse to ``(0-2): 3 x Linear(...)``."""
        reprs = [repr(m) for m in self]
        if not reprs:
            return type(self).__name__ + "()"
        runs: list[list] = []  # [first index, last index, repr]
        for i, r in enumerate(reprs):
            if runs and runs[-1][2] == r:
                runs[-1][1] = i
            else:
                runs.append([i, i, r])
        lines = []
        for first, last, r in runs:
            key = f"({first}): " if first == last else f"({first}-{last}): {last - first + 1} x "
            lines.append((key + r).replace("\n", "\n  "))
        return type(self).__name__ + "(\n  " + "\n  ".join(lines) + "\n)"

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError("ModuleList has no forward(); iterate over it and call its modules")


class ModuleDict(Module):
    """An ordered dict of submodules keyed by name.

    Example::

        heads = ax.nn.ModuleDict({"cls": ax.nn.Linear(8, 3), "reg": ax.nn.Linear(8, 1)})
        heads["cls"](x)
    """

    def __init__(self, modules: Mapping[str, Module] | Iterable[tuple[str, Module]] | None = None) -> None:
        super().__init__()
        if modules is not None:
            self.update(modules)

    def __getitem__(self, key: str) -> Module:
        if key not in self._modules:
            raise KeyError(f"ModuleDict has no key {key!r}; keys: {list(self._modules)}")
        return self._modules[key]

    def __setitem__(self, key: str, module: Module) -> None:
        self.add_module(key, module)

    def __delitem__(self, key: str) -> None:
        del self._modules[key]

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self) -> Iterator[str]:
        return iter(self._modules)

    def __contains__(self, key: object) -> bool:
        return key in self._modules

    def clear(self) -> None:
        self._modules.clear()

    def pop(self, key: str) -> Module:
        m = self[key]
        del self[key]
        return m

    def keys(self) -> Iterable[str]:
        return self._modules.keys()

    def items(self) -> Iterable[tuple[str, Module]]:
        return self._modules.items()

    def values(self) -> Iterable[Module]:
        return self._modules.values()

    def update(self, modules: Mapping[str, Module] | Iterable[tuple[str, Module]]) -> None:
        """Add or replace entries from a mapping or an iterable of (key, module) pairs."""
        if isinstance(modules, (Mapping, ModuleDict)):
            for key, m in modules.items():
                self[key] = m
            return
        for j, pair in enumerate(modules):
            if not isinstance(pair, (tuple, list)) or len(pair) != 2:
                raise ValueError(f"ModuleDict.update: element {j} should be a (key, module) pair, got {pair!r}")
            self[pair[0]] = pair[1]

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError("ModuleDict has no forward(); look up a module and call it")


def _as_parameter(value: Any) -> Any:
    if isinstance(value, Tensor) and not isinstance(value, Parameter):
        return Parameter(value)
    return value


def _param_line(key: str, p: Any) -> str:
    kind = "Parameter" if isinstance(p, Parameter) else "Tensor"
    size = "x".join(str(v) for v in p.shape)
    device = f" ({p.device})" if p.device.type != "cpu" else ""
    return f"  ({key}): {kind} containing: [{p.dtype} of size {size}{device}]"


def _multiline_repr(module: Module) -> str:
    """PyTorch's layout for a module whose extra_repr has one line per entry."""
    extra = module.extra_repr()
    if not extra:
        return type(module).__name__ + "()"
    return type(module).__name__ + "(\n  " + extra.replace("\n", "\n  ") + "\n)"


class ParameterList(Module):
    """A list of parameters (tensors are wrapped as ``Parameter``), keyed ``"0"``, ``"1"``...

    Example: ``ps = ax.nn.ParameterList([ax.nn.Parameter(ax.randn(3)) for _ in range(2)])``
    """

    def __init__(self, values: Iterable[Any] | None = None) -> None:
        super().__init__()
        object.__setattr__(self, "_size", 0)
        if values is not None:
            self.extend(values)

    def __getitem__(self, idx: int | slice) -> Any:
        if isinstance(idx, slice):
            return type(self)([self[i] for i in range(len(self))[idx]])
        return self._parameters[str(_index(idx, len(self), "ParameterList"))]

    def __setitem__(self, idx: int, value: Any) -> None:
        self.register_parameter(str(_index(idx, len(self), "ParameterList")), _as_parameter(value))

    def __len__(self) -> int:
        return self._size

    def __iter__(self) -> Iterator[Any]:
        return (self[i] for i in range(len(self)))

    def __iadd__(self, values: Iterable[Any]) -> "ParameterList":
        return self.extend(values)

    def append(self, value: Any) -> "ParameterList":
        i = self._size
        object.__setattr__(self, "_size", i + 1)
        self.register_parameter(str(i), _as_parameter(value))
        return self

    def extend(self, values: Iterable[Any]) -> "ParameterList":
        if isinstance(values, Tensor):
            raise TypeError("ParameterList.extend expects an iterable of tensors, got a single Tensor")
        for v in values:
            self.append(v)
        return self

    def extra_repr(self) -> str:
        return "\n".join(_param_line(str(i), p) for i, p in enumerate(self))

    def __repr__(self) -> str:
        return _multiline_repr(self)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError("ParameterList has no forward()")


class ParameterDict(Module):
    """An ordered dict of parameters (tensors are wrapped as ``Parameter``).

    Example: ``pd = ax.nn.ParameterDict({"scale": ax.nn.Parameter(ax.ones(3))})``
    """

    def __init__(self, parameters: Mapping[str, Any] | Iterable[tuple[str, Any]] | None = None) -> None:
        super().__init__()
        if parameters is not None:
            self.update(parameters)

    def __getitem__(self, key: str) -> Any:
        if key not in self._parameters:
            raise KeyError(f"ParameterDict has no key {key!r}; keys: {list(self._parameters)}")
        return self._parameters[key]

    def __setitem__(self, key: str, value: Any) -> None:
        self.register_parameter(key, _as_parameter(value))

    def __delitem__(self, key: str) -> None:
        del self._parameters[key]

    def __len__(self) -> int:
        return len(self._parameters)

    def __iter__(self) -> Iterator[str]:
        return iter(self._parameters)

    def __contains__(self, key: object) -> bool:
        return key in self._parameters

    def keys(self) -> Iterable[str]:
        return self._parameters.keys()

    def items(self) -> Iterable[tuple[str, Any]]:
        return self._parameters.items()

    def values(self) -> Iterable[Any]:
        return self._parameters.values()

    def pop(self, key: str) -> Any:
        v = self[key]
        del self[key]
        return v

    def clear(self) -> None:
        self._parameters.clear()

    def update(self, parameters: Mapping[str, Any] | Iterable[tuple[str, Any]]) -> None:
        items = parameters.items() if isinstance(parameters, (Mapping, ParameterDict)) else parameters
        for key, v in items:
            self[key] = v

    def extra_repr(self) -> str:
        return "\n".join(_param_line(k, p) for k, p in self.items())

    def __repr__(self) -> str:
        return _multiline_repr(self)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError("ParameterDict has no forward()")
