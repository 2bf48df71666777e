"""A minimal streamer plugin. The class is the factory: streamer calls it with the plugin's
``[plugin.hello]`` table from streamer.toml."""

from __future__ import annotations

import logging
from typing import Any

from streamer.proto import DataUpdateBatch

log = logging.getLogger("streamer.plugin.hello")


class HelloListener:
    def __init__(self, config: dict[str, Any]) -> None:
        self.name: str = config.get("stream", "hello")  # the stream this listener receives
        self.greeting: str = config.get("greeting", "hello")
        self.seen: dict[str, bytes] = {}

    def get_extra_args(self) -> None:
        return None  # nothing to tell the server

    def update(self, batch: DataUpdateBatch) -> bool:
        if batch.resync:
            self.seen.clear()
        for u in batch.updates:
            if u.value:
                self.seen[u.key] = u.value
            else:
                self.seen.pop(u.key, None)
            log.info("%s, %s", self.greeting, u.key)
        return True  # keep streaming

    def report_error(self, error: BaseException) -> BaseException | None:
        log.warning("stream %s: %s", self.name, error)
        return None  # keep streaming; return the error to stop
