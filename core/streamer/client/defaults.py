"""Every default of the client and the config file, declared once.

The client's parameters (``Client``, ``Backoff``, ``StaticRegistry``) and the fields of
``streamer.toml``'s schema (``streamer.host.config``) take their defaults from here, so a
program using the library and a host reading a file behave the same without a setting.
"""

from __future__ import annotations

__all__ = [
    "BACKOFF_INITIAL",
    "BACKOFF_JITTER",
    "BACKOFF_MULTIPLIER",
    "GUARD_CONFIRMATIONS",
    "GUARD_MAX_DELETE_FRACTION",
    "KEEPALIVE_TIME",
    "KEEPALIVE_TIMEOUT",
    "MAX_RECEIVE_MESSAGE_MB",
    "MAX_STREAMS_PER_CHANNEL",
    "SHUTDOWN_TIMEOUT",
    "STREAMING_INTERVAL",
]

STREAMING_INTERVAL = 20.0
"""Seconds between calls when the server ends a call (Magma's poll cadence). Also the default
cap of the reconnect backoff: a fleet spreads its reconnects over one poll period."""

# gRPC's connection-backoff spec: initial 1 s, x1.6, +/-20 % jitter.
BACKOFF_INITIAL = 1.0
BACKOFF_MULTIPLIER = 1.6
BACKOFF_JITTER = 0.2

# Default gRPC servers (C core, Go) count a ping as abuse when it comes less than 5 minutes after
# the previous one while they send no data, and close the connection with too_many_pings after
# two strikes. 300 s is the shortest interval that never trips that on a quiet stream, and it is
# under common NAT idle timeouts (AWS NAT: 350 s); the timeout then detects a half-open path.
KEEPALIVE_TIME = 300.0
KEEPALIVE_TIMEOUT = 20.0

MAX_RECEIVE_MESSAGE_MB = 64
"""gRPC's default receive limit is 4 MiB; Magma users hit it with ~18k subscribers."""

MAX_STREAMS_PER_CHANNEL = 100
"""Front ends (nginx, Google's) allow ~100-128 concurrent streams per HTTP/2 connection."""

SHUTDOWN_TIMEOUT = 10.0
"""Seconds a stopping host waits for running ``update`` calls before it gives up on them."""

GUARD_MAX_DELETE_FRACTION = 0.5
"""The mass-change guard holds a batch that would delete more than this fraction of a stream."""

GUARD_CONFIRMATIONS = 2
"""Further calls that must serve the same held snapshot before it is applied."""
