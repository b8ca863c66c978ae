"""axonml/cluster is layer 1 for the launcher: importing it must not import NumPy (the
launcher starts fast and never touches a GPU), and it may import only the standard
library, grpc/protobuf and axonml.errors/_env."""

import ast
import pathlib
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parents[2]
CLUSTER = REPO / "axonml" / "cluster"

# Load axonml.cluster under a stub parent package, so that axonml/__init__.py (which
# imports the tensor stack and NumPy) does not run: what is left is cluster's own imports.
STUB_IMPORT = f"""
import sys, types
pkg = types.ModuleType("axonml")
pkg.__path__ = [{str(REPO / "axonml")!r}]
sys.modules["axonml"] = pkg
import axonml.cluster
heavy = sorted(m for m in ("numpy", "cupy", "torch", "ml_dtypes", "numba") if m in sys.modules)
assert not heavy, f"importing axonml.cluster imported {{heavy}}"
loaded = sorted(m for m in sys.modules if m.startswith("axonml."))
assert "axonml.cluster.grpc_store" in loaded, loaded
outside = [m for m in loaded if not m.startswith(("axonml.cluster", "axonml.errors", "axonml._env"))]
assert not outside, f"axonml.cluster imported {{outside}}"
print("ok")
"""


def test_cluster_imports_no_numpy():
    done = subprocess.run([sys.executable, "-c", STUB_IMPORT], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr


def test_cluster_modules_import_only_stdlib_grpc_and_layer_0():
    allowed_third_party = {"grpc", "google"}
    problems = []
    for path in sorted(CLUSTER.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top in sys.stdlib_module_names or top in allowed_third_party or top == "__future__":
                    continue
                if name.startswith(("axonml.errors", "axonml._env", "axonml.cluster")):
                    continue
                problems.append(f"{path.relative_to(REPO)}:{node.lineno} imports {name}")
    assert not problems, "axonml/cluster may import only the stdlib, grpc/protobuf and layer 0:\n" + "\n".join(problems)
