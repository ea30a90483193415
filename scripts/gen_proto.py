"""Regenerate ioswarm/proto/ from protos/ioswarm.proto (the one way generated code is made)."""

from __future__ import annotations

import re
import sys
import tempfile
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = ROOT / "protos"
OUT_DIR = ROOT / "ioswarm" / "proto"


def generate(out_dir: Path) -> None:
    """Run protoc into out_dir and make the grpc module import its sibling relatively."""
    out_dir.mkdir(parents=True, exist_ok=True)
    include = Path(protoc.__file__).parent / "_proto"
    args = [
        "protoc",
        f"-I{PROTO_DIR}",
        f"-I{include}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        str(PROTO_DIR / "ioswarm.proto"),
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    grpc_file = out_dir / "ioswarm_pb2_grpc.py"
    text = grpc_file.read_text()
    text = re.sub(r"^import ioswarm_pb2 as", "from . import ioswarm_pb2 as", text, flags=re.M)
    grpc_file.write_text(text)
    (out_dir / "__init__.py").write_text('"""Code generated from protos/ioswarm.proto."""\n')


def main() -> int:
    if "--check" in sys.argv:
        with tempfile.TemporaryDirectory() as tmp:
            generate(Path(tmp))
            stale = [
                p.name
                for p in sorted(Path(tmp).iterdir())
                if not (OUT_DIR / p.name).exists()
                or (OUT_DIR / p.name).read_text() != p.read_text()
            ]
        if stale:
            print("stale generated code: " + ", ".join(stale) + " (run make proto)")
            return 1
        return 0
    generate(OUT_DIR)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
