from __future__ import annotations

import logging
from importlib.metadata import entry_points

import pytest
from streamer_log import LOGGER_NAME, LogListener, create_listeners

from streamer.client.listener import listener_problems
from streamer.wire.streamer_pb2 import DataUpdate, DataUpdateBatch


def _batch(keys: list[str], resync: bool = False) -> DataUpdateBatch:
    return DataUpdateBatch(
        updates=[DataUpdate(key=k, value=b"secret-" + k.encode()) for k in keys], resync=resync
    )


def test_one_listener_per_stream_and_valid_contract() -> None:
    listeners = create_listeners({"streams": ["a", "b"]})
    assert [lst.name for lst in listeners] == ["a", "b"]
    for lst in listeners:
        assert listener_problems(lst) == []
        assert lst.get_extra_args() is None  # type: ignore[func-returns-value]


def test_entry_point_is_registered() -> None:
    (ep,) = [e for e in entry_points(group="streamer.listeners") if e.name == "log"]
    assert ep.load() is create_listeners


def test_logs_stream_count_resync_and_first_keys_never_values(
    caplog: pytest.LogCaptureFixture,
) -> None:
    (lst,) = create_listeners({"streams": ["subs"], "max_keys": 2})
    with caplog.at_level(logging.INFO, logger=LOGGER_NAME):
        assert lst.update(_batch(["k1", "k2", "k3"], resync=True)) is True
        assert lst.update(_batch([])) is True
    first, second = (r.getMessage() for r in caplog.records)
    assert first == "stream=subs updates=3 resync=True keys=['k1', 'k2'] (+1 more)"
    assert second == "stream=subs updates=0 resync=False keys=[]"
    assert "secret" not in caplog.text


def test_hostile_key_cannot_forge_a_log_line(caplog: pytest.LogCaptureFixture) -> None:
    lst = LogListener("s")
    with caplog.at_level(logging.INFO, logger=LOGGER_NAME):
        lst.update(_batch(["x\nstream=evil updates=0"]))
    assert "\n" not in caplog.records[0].getMessage()


def test_report_error_keeps_streaming_and_leaves_logging_to_the_host(
    caplog: pytest.LogCaptureFixture,
) -> None:
    lst = LogListener("s")
    with caplog.at_level(logging.DEBUG, logger=LOGGER_NAME):
        assert lst.report_error(EOFError("gone\nforged")) is None
    assert [r.levelno for r in caplog.records] == [logging.DEBUG]  # the host logs it once
    assert "EOFError: gone\\nforged" in caplog.text
    lst.close()


@pytest.mark.parametrize(
    ("table", "key"),
    [
        ({}, "streams"),
        ({"streams": "a"}, "streams"),
        ({"streams": []}, "streams"),
        ({"streams": ["a", "a"]}, "streams"),
        ({"streams": ["a", 3]}, "streams"),
        ({"streams": ["a"], "max_keys": -1}, "max_keys"),
        ({"streams": ["a"], "max_keys": True}, "max_keys"),
        ({"streams": ["a"], "level": "LOUD"}, "level"),
        ({"streams": ["a"], "strems": ["b"]}, "strems"),
    ],
)
def test_bad_config_names_the_key(table: dict[str, object], key: str) -> None:
    with pytest.raises(ValueError, match=rf"(^|\d\. ){key}(\[\d+\])?: "):
        create_listeners(table)
