"""The layer table of ../shared/DESIGN.md, enforced: no module imports a higher layer or
a sideways package the table does not allow, and no function-local imports."""

import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1] / "axonml"

# package (first component under axonml/) -> layer; may import its own package and lower layers
LAYER = {
    "errors": 0,
    "_env": 0,
    "runtime": 1,
    "cluster": 1,
    "autograd": 2,
    "tensor": 3,
    "serialize": 3.5,  # above tensor, below nn: "as low as it can sit"
    "nn": 4,
    "optim": 5,
    "data": 5,
    "collectives": 6,
    "ddp": 7,
    "fsdp": 7,
    "llm": 8,
    "launch": 9,
    "__init__": 99,
    "__main__": 99,
}
# same-layer packages that may import each other is not allowed unless listed here
SIDEWAYS_OK = {("collectives", "cluster")}
# layer-1 cluster may use only layer 0 (plus its generated proto code)
RESTRICTED = {"cluster": 0}


def _package_of(path: pathlib.Path) -> str:
    rel = path.relative_to(ROOT)
    return rel.parts[0].removesuffix(".py")


def _resolve(module: str, node: ast.ImportFrom, path: pathlib.Path) -> str | None:
    if node.level == 0:
        return module if module.startswith("axonml") else None
    pkg_parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if path.name != "__init__.py":
        pkg_parts = pkg_parts[:-1]
    else:
        pkg_parts = pkg_parts[:-1]
    base = pkg_parts[: len(pkg_parts) - (node.level - 1)] if node.level > 1 else pkg_parts
    return ".".join(base + ([module] if module else []))


def _imports(path: pathlib.Path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("axonml"):
                    yield node, a.name
        elif isinstance(node, ast.ImportFrom):
            target = _resolve(node.module or "", node, path)
            if target is None:
                continue
            if target == "axonml" or target.count(".") == 0:
                # `from axonml import x` / `from . import x` at the package root
                for a in node.names:
                    yield node, f"{target}.{a.name}"
            else:
                yield node, target


def _function_local_axonml_imports(path: pathlib.Path):
    tree = ast.parse(path.read_text())
    for fn in ast.walk(tree):
        if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for node in ast.walk(fn):
                if isinstance(node, ast.ImportFrom) and (node.level > 0 or (node.module or "").startswith("axonml")):
                    yield fn.name, node.lineno
                if isinstance(node, ast.Import) and any(a.name.startswith("axonml") for a in node.names):
                    yield fn.name, node.lineno


def test_every_package_has_a_layer():
    unknown = sorted({_package_of(p) for p in ROOT.rglob("*.py")} - set(LAYER))
    assert not unknown, f"packages missing from the layer table: {unknown}"


def test_no_upward_or_sideways_imports():
    problems = []
    for path in sorted(ROOT.rglob("*.py")):
        src_pkg = _package_of(path)
        src_layer = LAYER[src_pkg]
        for node, target in _imports(path):
            parts = target.split(".")
            if parts[0] != "axonml" or len(parts) < 2:
                continue
            dst_pkg = parts[1]
            if dst_pkg not in LAYER:
                continue
            if dst_pkg == src_pkg or (src_pkg, dst_pkg) in SIDEWAYS_OK:
                continue
            allowed = LAYER[dst_pkg] <= RESTRICTED[src_pkg] if src_pkg in RESTRICTED else LAYER[dst_pkg] < src_layer
            if not allowed:
                problems.append(
                    f"{path.relative_to(ROOT.parent)}:{node.lineno} ({src_pkg}, layer {src_layer}) "
                    f"imports {target} (layer {LAYER[dst_pkg]})"
                )
    assert not problems, "layer violations:\n" + "\n".join(problems)


def test_no_function_local_axonml_imports():
    found = [
        f"{p.relative_to(ROOT.parent)}:{line} in {fn}()"
        for p in sorted(ROOT.rglob("*.py"))
        for fn, line in _function_local_axonml_imports(p)
    ]
    assert not found, "function-local imports of axonml modules (move the code instead):\n" + "\n".join(found)


def test_axonml_never_imports_torch():
    offenders = []
    for path in sorted(ROOT.rglob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            if any(n == "torch" or n.startswith("torch.") for n in names):
                offenders.append(str(path.relative_to(ROOT.parent)))
    assert not offenders, f"axonml/ must not import torch: {offenders}"
