"""Regenerate the committed Python code from the .proto files: `python -m mamql.protos.generate [OUT_DIR]`.

Generated code is committed so users need no protoc; tests/protos checks it is up to date.
Needs grpcio-tools (the `dev` extra) at the version pinned there.
"""

from __future__ import annotations

import sys
from pathlib import Path

PROTO_FILES = ("mamql/protos/tensor.proto", "mamql/protos/replay.proto", "mamql/protos/weights.proto")
SERVICE_FILES = ("mamql/protos/replay.proto", "mamql/protos/weights.proto")
ROOT = Path(__file__).resolve().parent.parent


def generate(out_dir: Path) -> None:
    from grpc_tools import protoc

    include = str(Path(protoc.__file__).parent / "_proto")
    out_dir.mkdir(parents=True, exist_ok=True)
    for proto in PROTO_FILES:
        args = ["protoc", f"-I{ROOT}", f"-I{include}", f"--python_out={out_dir}", f"--pyi_out={out_dir}"]
        if proto in SERVICE_FILES:
            args.append(f"--grpc_python_out={out_dir}")
        if protoc.main(args + [str(ROOT / proto)]) != 0:
            raise SystemExit(f"protoc failed on {proto}")


if __name__ == "__main__":
    generate(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT)
