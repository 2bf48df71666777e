"""`streamer tap`: a read-only view of one stream, against a real reference server."""

from __future__ import annotations

import asyncio
import base64
import json
import signal
import sys
from pathlib import Path

from streamer.cli.tap import TapView
from streamer.server.sources import MemorySource
from streamer.testing import ReferenceServerFactory
from streamer.wire.streamer_pb2 import DataUpdate, DataUpdateBatch
from tests.helpers import eventually, streamer_env


class Tap:
    """`streamer tap` in a child process; stdout lines collected as they arrive."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[str] = []
        assert proc.stdout is not None
        self._reader = asyncio.create_task(self._read(proc.stdout))

    async def _read(self, stdout: asyncio.StreamReader) -> None:
        async for raw in stdout:
            self.lines.append(raw.decode().rstrip("\n"))

    @classmethod
    async def start(cls, config: Path, *args: str) -> Tap:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "streamer.cli", "tap", "--config", str(config), *args,
            env=streamer_env(), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        return cls(proc)

    async def interrupt(self) -> tuple[int, str]:
        self.proc.send_signal(signal.SIGINT)
        assert self.proc.stderr is not None
        err = (await asyncio.wait_for(self.proc.stderr.read(), 15)).decode()
        code = await asyncio.wait_for(self.proc.wait(), 15)
        await self._reader
        return code, err


def _config(tmp_path: Path, address: str, interval: float = 5.0) -> Path:
    path = tmp_path / "streamer.toml"
    path.write_text(
        f'[cloud]\ntarget = "{address}"\n\n[streaming]\ninterval = {interval}\n', encoding="utf-8"
    )
    return path


async def test_tap_prints_push_batches_and_exits_0_on_ctrl_c(
    reference_server: ReferenceServerFactory, tmp_path: Path
) -> None:
    source = MemorySource({"subs": {"a": b"1", "b": b"22"}})
    server = await reference_server(source, "push")
    tap = await Tap.start(_config(tmp_path, server.address), "subs")
    await eventually(lambda: any("snapshot" in x for x in tap.lines), "the snapshot", 15)
    source.set("subs", "c", b"333")
    await eventually(lambda: "  + c (3 B)" in tap.lines, "the update", 15)
    source.delete("subs", "a")
    await eventually(lambda: "  - a" in tap.lines, "the deletion", 15)
    code, err = await tap.interrupt()
    assert code == 0, err
    assert "Traceback" not in err
    out = "\n".join(tap.lines)
    assert "snapshot 2 set, 0 deleted (stream now holds 2 keys)" in out
    assert "update   1 set, 0 deleted" in out and "update   0 set, 1 deleted" in out
    assert "  + b (2 B)" in out and " = " not in out  # values only with --values
    # Read-only: the server saw tap's calls, nothing else changed its data.
    assert dict(source.snapshot_now("subs").items) == {"b": b"22", "c": b"333"}


async def test_tap_poll_mode_prints_only_changes(
    reference_server: ReferenceServerFactory, tmp_path: Path
) -> None:
    source = MemorySource({"subs": {"a": b"1"}})
    server = await reference_server(source, "poll")
    tap = await Tap.start(_config(tmp_path, server.address, interval=0.1), "subs", "--json")
    await eventually(lambda: len(tap.lines) >= 1, "the first snapshot", 15)
    # tap sends the digest of what it holds: unchanged polls bring nothing to print.
    await eventually(lambda: len(server.requests) >= 4, "several polls", 15)
    assert len(tap.lines) == 1
    source.set("subs", "b", b"2")
    await eventually(lambda: len(tap.lines) >= 2, "the changed snapshot", 15)
    code, err = await tap.interrupt()
    assert code == 0 and "Traceback" not in err
    first, second = (json.loads(x) for x in tap.lines[:2])
    assert first["resync"] and [u["key"] for u in first["updates"]] == ["a"]
    assert sorted(u["key"] for u in second["updates"]) == ["a", "b"]
    assert "value_base64" not in second["updates"][0]


async def test_tap_unknown_stream_exits_1_with_the_reason(
    reference_server: ReferenceServerFactory, tmp_path: Path
) -> None:
    server = await reference_server(MemorySource({"subs": {}}), "push")
    tap = await Tap.start(_config(tmp_path, server.address), "nosuch")
    code = await asyncio.wait_for(tap.proc.wait(), 15)
    assert tap.proc.stderr is not None
    err = (await tap.proc.stderr.read()).decode()
    assert code == 1
    assert "streamer tap: nosuch: " in err and "Traceback" not in err


def _batch(resync: bool, **kv: bytes) -> DataUpdateBatch:
    return DataUpdateBatch(
        updates=[DataUpdate(key=k, value=v) for k, v in kv.items()], resync=resync
    )


def test_tap_view_escapes_network_text_and_shows_values_on_request() -> None:
    view = TapView("s", values=True, as_json=False)
    batch = DataUpdateBatch(
        updates=[DataUpdate(key="evil\n12:00:00 ERROR forged", value=b"v\x1b[2J")]
    )
    view.apply(batch)
    text = view.render(batch, 0.0)
    assert len(text.splitlines()) == 2
    assert "evil\\n12:00:00 ERROR forged" in text and "\\x1b[2J" in text

    js = TapView("s", values=True, as_json=True)
    doc = json.loads(js.render(_batch(False, k=b"\x00\xff", gone=b""), 0.0))
    assert doc["set"] == 1 and doc["deleted"] == 1
    assert base64.b64decode(doc["updates"][0]["value_base64"]) == b"\x00\xff"
    assert doc["updates"][1] == {"key": "gone", "size": 0, "deleted": True}


def test_tap_view_digest_follows_what_it_holds() -> None:
    from streamer.wire.digest import snapshot_digest

    view = TapView("s", values=False, as_json=False)
    view.apply(_batch(True, a=b"1", b=b"2"))
    view.apply(_batch(False, b=b"", c=b"3"))
    sent = view.extra_args()
    from google.protobuf import wrappers_pb2

    value = wrappers_pb2.StringValue()
    assert sent.Unpack(value)
    assert value.value == snapshot_digest([("a", b"1"), ("c", b"3")])
