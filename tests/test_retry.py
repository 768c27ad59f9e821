"""The one retry policy: transient errors are retried and counted, others fail at once (docs/design.md §6)."""

from __future__ import annotations

import asyncio

import pytest

from gpstage.retry import RetryPolicy, is_transient


class FakeClientError(Exception):
    def __init__(self, status: int, code: str) -> None:
        super().__init__(code)
        self.response = {"Error": {"Code": code}, "ResponseMetadata": {"HTTPStatusCode": status}}


@pytest.mark.parametrize(
    ("exc", "transient"),
    [
        (ConnectionResetError(), True),
        (TimeoutError(), True),
        (FakeClientError(503, "SlowDown"), True),
        (FakeClientError(500, "InternalError"), True),
        (FakeClientError(403, "AccessDenied"), False),
        (FakeClientError(404, "NoSuchKey"), False),
        (FileNotFoundError(), False),
        (ValueError("bad"), False),
    ],
)
def test_classification(exc: Exception, transient: bool) -> None:
    assert is_transient(exc) is transient


def test_wrapped_transient_cause_is_found() -> None:
    try:
        try:
            raise ConnectionResetError("reset")
        except ConnectionResetError as inner:
            raise OSError("upload failed") from inner
    except OSError as outer:
        assert is_transient(outer)


def test_retries_are_bounded_and_counted() -> None:
    policy = RetryPolicy(attempts=4, base_delay=0.001, max_delay=0.002)
    calls, retries = [], []

    async def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionResetError("reset")
        return "ok"

    assert asyncio.run(policy.run(flaky, retries.append)) == "ok"
    assert (len(calls), len(retries)) == (3, 2)

    async def always() -> None:
        calls.append(1)
        raise ConnectionResetError("down")

    calls.clear()
    with pytest.raises(ConnectionResetError):
        asyncio.run(policy.run(always))
    assert len(calls) == 4


def test_permanent_error_is_not_retried() -> None:
    calls = []

    async def denied() -> None:
        calls.append(1)
        raise FakeClientError(403, "AccessDenied")

    with pytest.raises(FakeClientError):
        asyncio.run(RetryPolicy(base_delay=0.001).run(denied))
    assert len(calls) == 1


def test_a_first_attempt_made_elsewhere_counts_as_one_of_the_attempts() -> None:
    """A batch's failed GET goes on from the second attempt: the policy's total stays the same."""
    policy = RetryPolicy(attempts=3, base_delay=0.001, max_delay=0.002)
    calls, retries = [], []

    async def always() -> None:
        calls.append(1)
        raise ConnectionResetError("down")

    with pytest.raises(ConnectionResetError):
        asyncio.run(policy.run(always, retries.append, failed=ConnectionResetError("batch")))
    assert (len(calls), len(retries)) == (2, 2)

    calls.clear()
    with pytest.raises(FakeClientError):  # a permanent first failure ends it without another request
        asyncio.run(policy.run(always, failed=FakeClientError(404, "NoSuchKey")))
    assert calls == []
