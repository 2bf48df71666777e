"""The streamer-redis tests use the ``redis_server`` fixture of streamer's pytest kit
(``streamer.testing``): a real redis-server on an ephemeral port, skipped when ``redis-server``
is not on PATH unless ``STREAMER_REQUIRE_REDIS=1`` (CI), which turns the absence into a failure.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis


@pytest.fixture
def redis_url(redis_server: str) -> Iterator[str]:
    """The session's server, emptied for each test."""
    client = redis.Redis.from_url(redis_server)
    client.flushall()
    yield redis_server
    client.close()
