"""The ``[plugin.redis]`` table, declared as a schema: pure, no I/O."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Annotated
from urllib.parse import urlsplit

from msgspec import Meta

from streamer.client.connection import is_loopback
from streamer.host.schema import UNIQUE, Doc, PluginConfig, Rule

__all__ = ["STREAM_NAME", "RedisConfig", "plaintext_remote_host"]

_SCHEMES = ("redis://", "rediss://", "unix://")

STREAM_NAME = re.compile(r"[A-Za-z0-9_.-]{1,200}")
"""Stream names this plugin accepts. No ``:``, so ``<prefix><stream>:digest`` and
``<prefix><stream>:resync`` can never be another stream's hash."""

_URL_RULE = Rule("a redis://, rediss:// or unix:// URL", lambda url: url.startswith(_SCHEMES))

_HashStreams = Annotated[
    tuple[Annotated[str, Meta(pattern=f"^{STREAM_NAME.pattern}$")], ...],
    Doc(
        "stream names to receive, one hash each (<key_prefix><name>)",
        min_length=1,
        examples=[["example"]],
    ),
    UNIQUE,
]


class RedisConfig(PluginConfig):
    """One Redis hash per stream, each batch applied atomically with its digest."""

    streams: _HashStreams
    url: Annotated[
        str,
        Doc("the server: redis://, rediss:// (TLS) or unix://"),
        _URL_RULE,
    ] = "redis://127.0.0.1:6379/0"
    key_prefix: Annotated[str, Doc("prefix of every key written")] = "streamer:"
    timeout: Annotated[
        float, Doc("seconds for connecting and for each reply", gt=0, le=2**31 // 1000)
    ] = 30.0
    insecure: Annotated[
        bool,
        Doc(
            "allow plaintext redis:// to a host that is not loopback (anyone on the path reads "
            "the mirrored data and the password; prefer rediss://)"
        ),
    ] = False

    def check(self) -> Iterator[tuple[str, str]]:
        host = plaintext_remote_host(self.url)
        if host is not None and not self.insecure:
            yield (
                "url",
                f"plaintext redis:// to {host!r}, which is not loopback; use rediss:// (TLS), "
                "or set insecure = true to send the data unencrypted",
            )


def plaintext_remote_host(url: str) -> str | None:
    """The host of a ``redis://`` URL that leaves this machine (None for loopback, TLS or
    a unix socket)."""
    if not url.startswith("redis://"):
        return None
    try:
        host = urlsplit(url).hostname
    except ValueError:
        return None
    if not host or is_loopback(f"[{host}]:0" if ":" in host else host):
        return None
    return host
