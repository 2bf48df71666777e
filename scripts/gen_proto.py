"""Regenerate the committed protobuf/gRPC modules from core/streamer/proto/streamer.proto.

Usage: python scripts/gen_proto.py [--check]

--check generates into a temporary directory and exits 1 if the committed files differ,
which is what tests/test_proto.py runs so stale generated code fails the suite.
"""

from __future__ import annotations

import filecmp
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "core"
PROTO = "streamer/proto/streamer.proto"
OUTPUTS = ("streamer_pb2.py", "streamer_pb2.pyi", "streamer_pb2_grpc.py")


def generate(out: Path) -> None:
    import grpc_tools
    from grpc_tools import protoc

    include = Path(grpc_tools.__file__).parent / "_proto"
    args = [
        "protoc",
        f"-I{SRC}",
        f"-I{include}",
        f"--python_out={out}",
        f"--pyi_out={out}",
        f"--grpc_python_out={out}",
        str(SRC / PROTO),
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")


def main(argv: list[str]) -> int:
    check = "--check" in argv
    target = SRC / "streamer" / "proto"
    if not check:
        generate(SRC)
        print("regenerated", ", ".join(OUTPUTS))
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        generate(Path(tmp))
        fresh = Path(tmp) / "streamer" / "proto"
        stale = [n for n in OUTPUTS if not filecmp.cmp(fresh / n, target / n, shallow=False)]
    if stale:
        print("stale generated files:", ", ".join(stale), "- run python scripts/gen_proto.py")
        return 1
    print("generated files are up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
