"""Generate the Python gRPC code of every ``proto/*.proto`` into ``axonml/cluster/_proto/``.

Usage (from the repository root)::

    .venv/bin/python proto/generate.py            # rewrite axonml/cluster/_proto/*_pb2*.py
    .venv/bin/python proto/generate.py OUT_DIR    # write the files into OUT_DIR instead

The generated files are committed; ``tests/cluster/test_store_proto.py`` regenerates them
into a temporary folder and fails when they differ. Generate with the pinned
``grpcio-tools`` (the version is written into the files, and the generated
``*_pb2_grpc.py`` refuses to import under an older ``grpcio``).

Two details:

* ``protoc`` runs with ``proto/`` mapped to the virtual folder ``axonml/cluster/_proto``,
  so a file is registered in protobuf's global descriptor pool as
  ``axonml/cluster/_proto/store.proto``, a name no other library will use (a bare
  ``store.proto`` could clash with another package's file of the same name).
* ``protoc`` writes absolute imports between generated modules
  (``from axonml.cluster._proto import store_pb2``); they are rewritten to relative ones
  (``from . import store_pb2``) so that the package works wherever it is imported from.
"""

from __future__ import annotations

import pathlib
import re
import shutil
import sys
import tempfile

REPO = pathlib.Path(__file__).resolve().parents[1]
PROTO_DIR = REPO / "proto"
PACKAGE_DIR = REPO / "axonml" / "cluster" / "_proto"
VIRTUAL = "axonml/cluster/_proto"  # the folder the .proto files appear in for protoc

_ABSOLUTE_IMPORT = re.compile(r"^from axonml\.cluster\._proto import (\w+_pb2) as ", re.MULTILINE)


def generate(out_dir: pathlib.Path) -> list[pathlib.Path]:
    """Generate ``<name>_pb2.py`` and ``<name>_pb2_grpc.py`` for each ``proto/*.proto`` into ``out_dir``.

    Returns the written files. Raises ``RuntimeError`` when ``protoc`` fails.
    """
    try:
        import grpc_tools
        from grpc_tools import protoc
    except ImportError:
        raise RuntimeError("proto/generate.py needs grpcio-tools: .venv/bin/pip install grpcio-tools==1.85.1") from None
    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    protos = sorted(PROTO_DIR.glob("*.proto"))
    if not protos:
        raise RuntimeError(f"no .proto files in {PROTO_DIR}")
    well_known = pathlib.Path(grpc_tools.__file__).parent / "_proto"  # google/protobuf/*.proto
    written = []
    with tempfile.TemporaryDirectory() as tmp:
        args = [
            "grpc_tools.protoc",
            f"-I{VIRTUAL}={PROTO_DIR}",
            f"-I{well_known}",
            f"--python_out={tmp}",
            f"--grpc_python_out={tmp}",
            *(f"{VIRTUAL}/{p.name}" for p in protos),
        ]
        if protoc.main(args) != 0:
            raise RuntimeError(f"protoc failed on {[p.name for p in protos]} (its message is above)")
        for produced in sorted((pathlib.Path(tmp) / VIRTUAL).glob("*.py")):
            text = _ABSOLUTE_IMPORT.sub(r"from . import \1 as ", produced.read_text())
            target = out_dir / produced.name
            target.write_text(text)
            written.append(target)
    return written


def main(argv: list[str]) -> int:
    out_dir = pathlib.Path(argv[1]) if len(argv) > 1 else PACKAGE_DIR
    if out_dir == PACKAGE_DIR:
        # write beside the package first, so that a failed run leaves the committed files alone
        with tempfile.TemporaryDirectory() as tmp:
            for path in generate(pathlib.Path(tmp)):
                shutil.copyfile(path, out_dir / path.name)
                print(f"wrote {(out_dir / path.name).relative_to(REPO)}")
    else:
        for path in generate(out_dir):
            print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
