"""A minimal streamer plugin. The class is the factory: streamer validates the plugin's
``[plugin.hello]`` table from streamer.toml against :class:`HelloConfig` and calls the class
with the result."""

from __future__ import annotations

import logging
from typing import Annotated

from streamer import Doc, PluginConfig, config_schema
from streamer.base.logs import escape
from streamer.wire import DataUpdateBatch

log = logging.getLogger("streamer.plugin.hello")


class HelloConfig(PluginConfig):
    """Greets every key it receives, in the log."""

    stream: Annotated[str, Doc("the stream this listener receives", min_length=1)] = "hello"
    greeting: Annotated[str, Doc("said before each key received")] = "hello"


@config_schema(HelloConfig)
class HelloListener:
    def __init__(self, config: HelloConfig) -> None:
        self.name = config.stream  # the stream this listener receives
        self.greeting = config.greeting
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
            log.info("%s, %s", self.greeting, escape(u.key))  # keys come from the network
        return True  # keep streaming

    def report_error(self, error: BaseException) -> BaseException | None:
        # The host has already logged this error (once, with the traceback when update()
        # raised): decide here, don't log it again.
        return None  # keep streaming; return the error to stop
