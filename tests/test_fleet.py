"""The server's fleet view: which gateway has applied what, from what requests already carry."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import wrappers_pb2

from streamer import StaticRegistry, new_streamer_client
from streamer.cli.status import format_fleet
from streamer.client.registry import TLSConfig
from streamer.observability.http import ObservabilityServer
from streamer.server.fleet import FleetView, identify
from streamer.server.reference import ServerTLS
from streamer.server.sources import MemorySource
from streamer.testing import ReferenceServerFactory
from streamer.wire.digest import Digester
from tests.certs import make_pki
from tests.helpers import eventually, streamer_env


class FakeData:
    def __init__(self) -> None:
        self.now: dict[str, tuple[int, str]] = {"subs": (1, "d1")}

    def current(self, stream: str) -> tuple[int, str] | None:
        return self.now.get(stream)


def state(view: FleetView, gateway: str = "gw1") -> tuple[str, float]:
    (row,) = [r for r in view.rows() if r.gateway == gateway]
    return row.state, row.since


def test_states_follow_reports_deliveries_and_data() -> None:
    data, clock = FakeData(), [100.0]
    view = FleetView(data, clock=lambda: clock[0])
    view.call_started("gw1", "gatewayId", "subs", "d1")  # reports the current digest
    assert state(view) == ("in sync", 100.0)
    clock[0] = 110.0
    data.now["subs"] = (2, "d2")  # the data changes: nobody has acknowledged it yet
    assert state(view) == ("behind", 110.0)
    clock[0] = 111.0
    view.delivered("gw1", "subs", 2)  # the open push call was sent version 2
    assert state(view) == ("delivered", 111.0)
    view.call_ended("gw1", "subs")  # ... but the call ended before an acknowledgement
    assert state(view)[0] == "behind"
    clock[0] = 120.0
    view.call_started("gw1", "gatewayId", "subs", "d2")  # the next request acknowledges
    assert state(view) == ("in sync", 120.0)
    view.call_started("gw2", "peer", "subs", None)  # sent no digest at all
    assert state(view, "gw2")[0] == "behind"
    doc = view.status()
    assert doc["streams"] == [{"stream": "subs", "in sync": 1, "delivered": 0, "behind": 1}]
    body, ctype = view.render_metrics("")
    text = body.decode()
    assert 'streamer_fleet_gateways{stream="subs",state="in_sync"} 1' in text
    assert 'streamer_fleet_gateways{stream="subs",state="behind"} 1' in text
    assert ctype.startswith("text/plain")
    table = format_fleet(doc)
    assert "subs: 1 in sync, 0 delivered, 1 behind" in table


def test_identity_prefers_certificate_then_gateway_id_then_peer() -> None:
    cert = {"x509_common_name": [b"gateway-7"], "transport_security_type": [b"ssl"]}
    assert identify(cert, "claimed", "ipv4:1.2.3.4:5") == ("gateway-7", "certificate")
    assert identify({}, "gw", "ipv4:1.2.3.4:5") == ("gw", "gatewayId")
    assert identify(None, "", "ipv4:1.2.3.4:5") == ("ipv4:1.2.3.4:5", "peer")


class DigestSink:
    """A sync listener that holds its stream and reports its digest, like the first-party sinks."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.data: dict[str, bytes] = {}

    def get_extra_args(self) -> Any:
        d = Digester()
        for k, v in self.data.items():
            d.add(k, v)
        return wrappers_pb2.StringValue(value=d.hexdigest())

    def update(self, batch: Any) -> bool:
        data = {} if batch.resync else dict(self.data)
        for u in batch.updates:
            if u.value:
                data[u.key] = u.value
            else:
                data.pop(u.key, None)
        self.data = data
        return True

    def report_error(self, error: BaseException) -> None:
        return None


async def test_a_polling_gateway_moves_from_behind_to_in_sync_over_mtls(
    reference_server: ReferenceServerFactory, tmp_path: Path
) -> None:
    pki = make_pki(tmp_path / "pki")
    tls = ServerTLS(pki["server"], pki["server_key"], pki["ca"], require_client_cert=True)
    source = MemorySource({"subs": {"a": b"1"}})
    server = await reference_server(source, "poll", tls=tls)
    assert server.fleet is not None
    endpoint = ObservabilityServer(server.fleet, "127.0.0.1", 0)
    endpoint.start()
    registry = StaticRegistry(
        server.address, tls=TLSConfig(pki["ca"], pki["client"], pki["client_key"])
    )
    client = new_streamer_client(registry, streaming_interval=0.1)
    sink = DigestSink("subs")
    task = asyncio.create_task(client.stream(sink))

    def gateway_state() -> str | None:
        rows = [r for r in server.fleet.rows() if r.stream == "subs"] if server.fleet else []
        return rows[0].state if rows else None

    try:
        await eventually(lambda: gateway_state() == "in sync", "in sync", timeout=15)
        (row,) = server.fleet.rows()
        assert (row.gateway, row.identity) == ("gateway-1", "certificate")
        source.set("subs", "b", b"2")
        assert gateway_state() == "behind"  # changed, not yet served or acknowledged
        await eventually(lambda: gateway_state() == "in sync", "in sync again", timeout=15)
        assert sink.data == {"a": b"1", "b": b"2"}

        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "streamer.cli", "fleet", "--address", endpoint.address,
            env=streamer_env(), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await asyncio.wait_for(proc.communicate(), 30)
        assert proc.returncode == 0, err
        lines = out.decode().splitlines()
        assert lines[0].split()[:4] == ["STREAM", "GATEWAY", "BY", "STATE"]
        assert lines[1].split()[:5] == ["subs", "gateway-1", "certificate", "in", "sync"]
        assert lines[-1] == "subs: 1 in sync, 0 delivered, 0 behind"
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "streamer.cli", "fleet", "--address", endpoint.address, "--json",
            env=streamer_env(), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, _ = await asyncio.wait_for(proc.communicate(), 30)
        doc = json.loads(out)
        assert doc["gateways"][0]["reported_digest"].startswith("sha256:")
    finally:
        client.remove_listener(sink)
        await asyncio.gather(task, return_exceptions=True)
        await client.close()
        endpoint.stop()


@pytest.mark.parametrize("mode", ["push"])
async def test_push_gateway_is_delivered_then_in_sync_on_its_next_call(
    reference_server: ReferenceServerFactory, mode: str
) -> None:
    source = MemorySource({"subs": {"a": b"1"}})
    server = await reference_server(source, mode)
    assert server.fleet is not None
    client = new_streamer_client(StaticRegistry(server.address), streaming_interval=0.1)
    sink = DigestSink("subs")
    task = asyncio.create_task(client.stream(sink))
    try:
        await eventually(lambda: sink.data == {"a": b"1"}, "snapshot")
        await eventually(
            lambda: [r.state for r in server.fleet.rows()] == ["delivered"], "delivered"
        )
        source.set("subs", "b", b"2")
        await eventually(lambda: sink.data.get("b") == b"2", "push")
        await eventually(
            lambda: [r.state for r in server.fleet.rows()] == ["delivered"], "delivered again"
        )
    finally:
        client.remove_listener(sink)
        await asyncio.gather(task, return_exceptions=True)
        await client.close()
    # The call has ended (the server learns it a moment after the client cancels): nothing
    # acknowledged the last push.
    fleet = server.fleet
    await eventually(lambda: [r.open_calls for r in fleet.rows()] == [0], "the call's end")
    assert [r.state for r in fleet.rows()] == ["behind"]
