"""Client-side failover over several server addresses (``[cloud] targets``), for real: real
gRPC servers on loopback, real TLS handshakes with certificates made in the test.

One channel holds every address (``ipv4:A,B``) with gRPC's ``pick_first``, its address list
shuffled per connection: a stream whose server dies is retried after the supervisor's usual
backoff and lands on a live replica; each address is verified against the one configured
``authority``; a fleet of gateways spreads over the replicas.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from streamer import Backoff, new_streamer_client
from streamer.client.registry import GatewayRegistry
from streamer.host.config import config_from_text
from streamer.host.host import build_registry
from streamer.server.reference import ServerTLS
from streamer.testing import CallHandle
from tests.certs import make_pki
from tests.faults import OptionsScriptedServer
from tests.helpers import eventually, run_cli, streamer_env
from tests.listeners import Recorder


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return make_pki(tmp_path_factory.mktemp("pki"))


def tagged(tag: str) -> OptionsScriptedServer:
    """A push server whose every call gets one batch naming the server, then stays open."""

    async def push(call: CallHandle) -> None:
        await call.push({"server": tag.encode()}, resync=True)

    server = OptionsScriptedServer()
    server.default = push
    return server


def registry_for(text: str, tmp: Path) -> GatewayRegistry:
    """The registry ``streamer run`` builds from ``[cloud]`` ``text`` (fast backoff)."""
    streaming = "[streaming]\nbackoff_initial = 0.05\nbackoff_max = 0.5\n"
    return build_registry(config_from_text(f"[cloud]\n{text}\n{streaming}", tmp))


@contextlib.asynccontextmanager
async def gateways(text: str, tmp: Path, n: int) -> AsyncIterator[list[Recorder]]:
    """``n`` gateways (a client and registry each) streaming ``s1`` with ``[cloud]`` ``text``;
    yields their listeners once each has a batch, and stops them all afterwards."""
    listeners = [Recorder("s1") for _ in range(n)]
    clients = [new_streamer_client(registry_for(text, tmp)) for _ in listeners]
    pairs = list(zip(clients, listeners, strict=True))
    tasks = [asyncio.create_task(c.stream(li)) for c, li in pairs]
    try:
        await eventually(lambda: all(served_by(li) for li in listeners), "every gateway served")
        yield listeners
    finally:
        for client, listener in pairs:
            client.remove_listener(listener)
        await asyncio.wait_for(asyncio.gather(*tasks), 5)
        for client in clients:
            await client.close()


def served_by(listener: Recorder) -> list[str]:
    return [u.value.decode() for b in listener.batches for u in b.updates if u.key == "server"]


async def test_stream_fails_over_to_a_live_replica_over_tls(
    pki: dict[str, Path], tmp_path: Path
) -> None:
    """Both replicas carry the service name (SAN streamer-cloud.test only, not the address
    dialled); the stream moves to the survivor after the usual backoff, over TLS."""
    servers = {"a": tagged("a"), "b": tagged("b")}
    for server in servers.values():
        server.tls = ServerTLS(pki["cloud"], pki["cloud_key"])
        await server.start()
    try:
        registry = registry_for(
            f'targets = ["{servers["a"].address}", "{servers["b"].address}"]\n'
            f'root_ca = "{pki["ca"]}"\nauthority = "streamer-cloud.test"',
            tmp_path / "streamer.toml",
        )
        client = new_streamer_client(
            registry, backoff=Backoff(initial=0.05, maximum=0.5), rng=random.Random(1)
        )
        listener = Recorder("s1")
        task = asyncio.create_task(client.stream(listener))
        await eventually(lambda: served_by(listener), "a first batch")
        first = served_by(listener)[0]
        other = "b" if first == "a" else "a"
        await servers[first].stop()  # the replica the stream is on dies
        await eventually(lambda: other in served_by(listener), "a batch from the survivor")
        # The supervisor saw the failure (and retried after its backoff); the new call is TLS.
        assert [e.code() for e in listener.errors] == [grpc.StatusCode.UNAVAILABLE]  # type: ignore[attr-defined]
        assert servers[other].auth_contexts[-1]["transport_security_type"] == [b"ssl"]
        client.remove_listener(listener)
        await asyncio.wait_for(task, 5)
        await client.close()
    finally:
        for server in servers.values():
            await server.stop()


async def test_every_address_is_checked_against_the_authority(
    pki: dict[str, Path], tmp_path: Path
) -> None:
    """A replica whose certificate lacks the authority name is never used: its handshake fails
    and gRPC moves on to the next address, whatever order the shuffle picked."""
    impostor, good = tagged("impostor"), tagged("good")
    impostor.tls = ServerTLS(pki["server"], pki["server_key"])  # valid for 127.0.0.1 only
    good.tls = ServerTLS(pki["cloud"], pki["cloud_key"])
    await impostor.start()
    await good.start()
    try:
        text = (
            f'targets = ["{impostor.address}", "{good.address}"]\n'
            f'root_ca = "{pki["ca"]}"\nauthority = "streamer-cloud.test"'
        )
        async with gateways(text, tmp_path / "streamer.toml", 8) as listeners:
            assert {s for li in listeners for s in served_by(li)} == {"good"}
            assert impostor.calls == [] and len(good.calls) == len(listeners)
    finally:
        await impostor.stop()
        await good.stop()


async def test_a_fleet_spreads_over_the_replicas(tmp_path: Path) -> None:
    """Each connection shuffles the address list: 16 gateways given the same list do not all
    land on its first address (2 * 2**-16 chance that they would by luck)."""
    servers = [tagged("a"), tagged("b")]
    for server in servers:
        await server.start()
    try:
        text = f'targets = ["{servers[0].address}", "{servers[1].address}"]'
        async with gateways(text, tmp_path / "streamer.toml", 16):
            assert len(servers[0].calls) > 0 and len(servers[1].calls) > 0
            assert len(servers[0].calls) + len(servers[1].calls) == 16
    finally:
        for server in servers:
            await server.stop()


def test_check_shows_the_resolved_targets(tmp_path: Path) -> None:
    cfg = tmp_path / "streamer.toml"
    cfg.write_text(
        'plugins = ["log"]\n[cloud]\ntargets = ["10.0.0.1:7443", "10.0.0.2:7443"]\n'
        f'root_ca = "{tmp_path / "ca.pem"}"\nauthority = "streamer.example"\n'
        '[plugin.log]\nstreams = ["a"]\n'
    )
    code, out = run_cli("check", "--config", str(cfg), "--json", env=streamer_env())
    # The root CA file does not exist: check reports that, and still shows what it would dial.
    assert code == 2 and "ca.pem" in out
    cfg.write_text(cfg.read_text().replace(f'root_ca = "{tmp_path / "ca.pem"}"\n', ""))
    code, out = run_cli("check", "--config", str(cfg), "--json", env=streamer_env())
    assert code == 0, out
    conn = json.loads(out)["connection"]
    assert conn["targets"] == ["10.0.0.1:7443", "10.0.0.2:7443"]
    assert conn["target"] == "ipv4:10.0.0.1:7443,10.0.0.2:7443"
    assert conn["mode"] == "tls" and conn["authority"] == "streamer.example"
    code, out = run_cli("check", "--config", str(cfg), env=streamer_env())
    assert code == 0, out
    assert "targets: 10.0.0.1:7443, 10.0.0.2:7443 (one connection at a time" in out
