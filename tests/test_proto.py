from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from streamer.wire import DataUpdate, DataUpdateBatch, StreamRequest

ROOT = Path(__file__).resolve().parent.parent


def _pinned(requirements: Path, name: str) -> str:
    found = re.search(rf"^{re.escape(name)}==(\S+)", requirements.read_text(), re.MULTILINE)
    assert found, f"{requirements}: no {name}==... pin"
    return found[1]


def test_generated_modules_are_fresh() -> None:
    pytest.importorskip("grpc_tools")
    import importlib.metadata

    args = [sys.executable, str(ROOT / "scripts" / "gen_proto.py"), "--check"]
    # The .pyi text varies with protoc's version; the module (the descriptor bytes) must not.
    if importlib.metadata.version("grpcio-tools") != _pinned(
        ROOT / "requirements-dev.txt", "grpcio-tools"
    ):
        args.append("--skip-pyi")
    result = subprocess.run(args, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_floors_match_pyproject() -> None:
    """pyproject's ">=" floors are exactly what .ci/floors.txt pins (and .ci/run tests)."""
    pyproject = (ROOT / "pyproject.toml").read_text()
    floors = ROOT / ".ci" / "floors.txt"
    names = (
        "grpcio",
        "protobuf",
        "pluggy",
        "importlib-metadata",
        "tomli",
        "prometheus-client",
        "msgspec",
        "asyncpg",
    )
    for name in names:
        declared = re.search(rf'"{re.escape(name)}>=([0-9.]+)', pyproject)
        assert declared, f"pyproject.toml: no floor for {name}"
        assert declared[1] == _pinned(floors, name), name


def test_wire_contract_matches_magma() -> None:
    def fields(msg: type) -> dict[str, tuple[int, int]]:
        d = msg.DESCRIPTOR  # type: ignore[attr-defined]
        return {f.name: (f.number, f.type) for f in d.fields}

    T = DataUpdate.DESCRIPTOR.fields_by_name["key"].__class__
    assert StreamRequest.DESCRIPTOR.full_name == "magma.orc8r.StreamRequest"
    assert fields(StreamRequest) == {
        "gatewayId": (1, T.TYPE_STRING),
        "stream_name": (2, T.TYPE_STRING),
        "extra_args": (3, T.TYPE_MESSAGE),
    }
    assert StreamRequest.DESCRIPTOR.fields_by_name["extra_args"].message_type.full_name == (
        "google.protobuf.Any"
    )
    assert fields(DataUpdate) == {"key": (1, T.TYPE_STRING), "value": (2, T.TYPE_BYTES)}
    assert fields(DataUpdateBatch) == {"updates": (1, T.TYPE_MESSAGE), "resync": (2, T.TYPE_BOOL)}
    service = StreamRequest.DESCRIPTOR.file.services_by_name["Streamer"]
    method = service.methods_by_name["GetUpdates"]
    assert service.full_name == "magma.orc8r.Streamer"
    assert method.server_streaming and not method.client_streaming


def test_bytes_match_a_hand_encoded_magma_message() -> None:
    # field 1 (key, LEN) "k", field 2 (value, LEN) b"v"; batch: field 1 LEN, field 2 varint 1
    update = DataUpdate(key="k", value=b"v").SerializeToString()
    assert update == b"\x0a\x01k\x12\x01v"
    assert (
        DataUpdateBatch(updates=[DataUpdate(key="k", value=b"v")], resync=True).SerializeToString()
        == b"\x0a" + bytes([len(update)]) + update + b"\x10\x01"
    )


def test_import_streamer_does_not_import_grpc() -> None:
    code = (
        "import sys, streamer, streamer.client.listener; assert 'grpc' not in sys.modules, 'grpc'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


COEXIST = """
import sys
from google.protobuf import wrappers_pb2

def ours():
    import streamer, streamer.client.client  # the whole client, as a plugin host imports it
    from streamer.wire import streamer_pb2
    return streamer_pb2

def magmas():
    from orc8r.protos import streamer_pb2
    return streamer_pb2

first, second = (ours, magmas) if sys.argv[1] == "ours-first" else (magmas, ours)
a = first()
b = second()
mine, theirs = (a, b) if first is ours else (b, a)
assert mine is not theirs
assert theirs.DESCRIPTOR.name == "orc8r/protos/streamer.proto"

def batch(mod):
    return mod.DataUpdateBatch(
        updates=[mod.DataUpdate(key="imsi001", value=b"\\x00\\xff"), mod.DataUpdate(key="k")],
        resync=True,
    )

def request(mod):
    req = mod.StreamRequest(gatewayId="gw-1", stream_name="subscriberdb")
    req.extra_args.Pack(wrappers_pb2.StringValue(value="digest"))
    return req

for make in (batch, request):
    wire = make(mine).SerializeToString(deterministic=True)
    assert wire == make(theirs).SerializeToString(deterministic=True), make.__name__
    assert type(make(mine)).FromString(wire) == make(mine)
    assert type(make(theirs)).FromString(wire) == make(theirs)
print("ok", sys.argv[1])
"""


@pytest.mark.parametrize("order", ["ours-first", "magma-first"])
def test_coexists_with_magmas_generated_streamer_pb2(tmp_path: Path, order: str) -> None:
    """A process that imports streamer and protoc's output for Magma's own streamer.proto (same
    ``magma.orc8r`` names, Magma's file name) works in either order; the wire bytes agree."""
    pytest.importorskip("grpc_tools")
    from grpc_tools import protoc

    proto_dir = tmp_path / "src" / "orc8r" / "protos"
    proto_dir.mkdir(parents=True)
    contract = (ROOT / "core" / "streamer" / "wire" / "streamer.proto").read_text()
    # As in Magma's tree: same package and messages, Magma's file name and Go package option.
    go_package = 'option go_package = "magma/orc8r/lib/go/protos";'
    contract = contract.replace("package magma.orc8r;", f"package magma.orc8r;\n{go_package}")
    (proto_dir / "streamer.proto").write_text(contract)
    out = tmp_path / "out"
    out.mkdir()
    include = Path(protoc.__file__).parent / "_proto"
    args = ["protoc", f"-I{tmp_path / 'src'}", f"-I{include}", f"--python_out={out}"]
    assert protoc.main([*args, "orc8r/protos/streamer.proto"]) == 0
    for package in (out / "orc8r", out / "orc8r" / "protos"):
        (package / "__init__.py").touch()
    result = subprocess.run(
        [sys.executable, "-c", COEXIST, order],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "PYTHONPATH": str(out)},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"ok {order}"
