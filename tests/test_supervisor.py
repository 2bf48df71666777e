"""The decision table, row by row, as pure logic (no I/O). The same rows are exercised against a
real gRPC server in test_client.py."""

from __future__ import annotations

import grpc
import pytest

from streamer.client.supervisor import (
    Action,
    Event,
    ListenerDeclined,
    Wait,
    decide,
    error_to_report,
)


def test_batch_accepted_reads_next_and_resets_backoff() -> None:
    step = decide(Event.BATCH_ACCEPTED)
    assert step.action is Action.READ_NEXT
    assert step.reset_backoff
    assert error_to_report(Event.BATCH_ACCEPTED, None) is None


def test_update_declined_reports_eof_then_new_call_after_interval() -> None:
    err = error_to_report(Event.UPDATE_DECLINED, None, stream="s", verdict=False)
    assert isinstance(err, EOFError) and isinstance(err, ListenerDeclined)
    assert "'s'" in str(err)
    step = decide(Event.UPDATE_DECLINED, None)
    assert (step.action, step.wait) == (Action.NEW_CALL, Wait.INTERVAL)
    assert not step.reset_backoff


def test_update_declined_with_none_hints_at_missing_return() -> None:
    err = error_to_report(Event.UPDATE_DECLINED, None, stream="s", verdict=None)
    assert "forget to return True" in str(err)


@pytest.mark.parametrize(
    "event",
    [Event.UPDATE_DECLINED, Event.UPDATE_RAISED, Event.CALL_FAILED, Event.EXTRA_ARGS_FAILED],
)
def test_report_error_returning_an_error_stops_with_it(event: Event) -> None:
    chosen = RuntimeError("stop now")
    step = decide(event, chosen)
    assert step.action is Action.STOP
    assert step.error is chosen


@pytest.mark.parametrize("event", [Event.UPDATE_RAISED, Event.CALL_FAILED, Event.EXTRA_ARGS_FAILED])
def test_errors_continue_after_backoff(event: Event) -> None:
    raised = ValueError("boom")
    assert error_to_report(event, raised) is raised
    step = decide(event, None)
    assert (step.action, step.wait) == (Action.NEW_CALL, Wait.BACKOFF)


def test_call_failed_reports_the_rpc_error_itself() -> None:
    class FakeRpcError(grpc.RpcError):
        pass

    err = FakeRpcError()
    assert error_to_report(Event.CALL_FAILED, err) is err


def test_call_ended_is_not_reported_and_waits_interval() -> None:
    assert error_to_report(Event.CALL_ENDED, None) is None
    step = decide(Event.CALL_ENDED)
    assert (step.action, step.wait) == (Action.NEW_CALL, Wait.INTERVAL)


def test_report_error_raising_stops_with_that_exception() -> None:
    raised = KeyError("in report_error")
    step = decide(Event.REPORT_ERROR_RAISED, raised)
    assert step.action is Action.STOP
    assert step.error is raised


def test_report_error_returning_a_non_error_stops_with_type_error() -> None:
    step = decide(Event.CALL_FAILED, "oops")
    assert step.action is Action.STOP
    assert isinstance(step.error, TypeError)
    assert "must return None or an exception" in str(step.error)


def test_reported_event_without_error_is_a_programming_error() -> None:
    with pytest.raises(ValueError):
        error_to_report(Event.CALL_FAILED, None)


def test_declined_message_never_quotes_a_returned_object() -> None:
    secret = {"IMSI001": b"Ki=465B5CE8B199B49FAA5F0A2EE238A6BC"}
    err = error_to_report(Event.UPDATE_DECLINED, None, stream="s", verdict=secret)
    assert str(err) == "update() of stream 's' returned a dict"
    err = error_to_report(Event.UPDATE_DECLINED, None, stream="s", verdict=0)
    assert "returned 0" in str(err)
