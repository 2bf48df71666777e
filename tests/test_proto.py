from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from streamer.proto import DataUpdate, DataUpdateBatch, StreamRequest

ROOT = Path(__file__).resolve().parent.parent


def test_generated_modules_are_fresh() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen_proto.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


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
    code = "import sys, streamer, streamer.listener; assert 'grpc' not in sys.modules, 'grpc'"
    subprocess.run([sys.executable, "-c", code], check=True)
