"""One retry policy for every storage operation (docs/design.md §6).

The SDKs' own retries are switched off by each provider, so a failure is retried exactly as this
policy says and every retry is counted in the transfer report instead of hiding inside an SDK.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import NamedTuple, TypeVar

from gpstage import aio

T = TypeVar("T")

# Exception class names (anywhere in the cause chain) that mean "try again": connection trouble,
# timeouts, truncated bodies. Names, not imports, so that no SDK is imported to classify an error.
TRANSIENT_NAMES = frozenset(
    {
        "ConnectionError", "ConnectionResetError", "ConnectionAbortedError", "ConnectionRefusedError",
        "BrokenPipeError", "TimeoutError", "CancelledByServer", "IncompleteRead", "IncompleteReadError",
        "ServerDisconnectedError", "ClientConnectorError", "ClientOSError", "ClientPayloadError",
        "ServerTimeoutError", "ContentLengthError", "TransferEncodingError",
        "EndpointConnectionError", "ConnectTimeoutError", "ReadTimeoutError", "ConnectionClosedError",
        "ResponseStreamingError", "ProtocolError", "HTTPClientError", "ResponseParserError",
        "FSTimeoutError", "ServiceRequestError", "ServiceResponseError",
    }
)
TRANSIENT_CODES = frozenset(
    {"SlowDown", "Throttling", "ThrottlingException", "RequestTimeout",
     "InternalError", "ServiceUnavailable", "503", "500", "502", "504", "XAmzContentSHA256Mismatch",
     "BadDigest", "IncompleteBody"}
)


def cause_chain(exc: BaseException) -> list[BaseException]:
    out, seen = [], set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        out.append(cur)
        cur = cur.__cause__ or cur.__context__
    return out


def http_status(exc: BaseException) -> int | None:
    """The HTTP status of an SDK error, wherever the SDK keeps it."""
    for e in cause_chain(exc):
        resp = getattr(e, "response", None)
        if isinstance(resp, dict):
            status = resp.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if status:
                return int(status)
        for attr in ("status", "status_code", "code"):
            v = getattr(e, attr, None)
            if isinstance(v, int) and 100 <= v < 600:
                return v
    return None


def error_code(exc: BaseException) -> str | None:
    for e in cause_chain(exc):
        resp = getattr(e, "response", None)
        if isinstance(resp, dict) and resp.get("Error", {}).get("Code"):
            return str(resp["Error"]["Code"])
    return None


def is_transient(exc: BaseException) -> bool:
    if aio.is_cancelled(exc):
        return False
    chain = cause_chain(exc)
    if any(type(e).__name__ in TRANSIENT_NAMES or isinstance(e, (ConnectionError, TimeoutError)) for e in chain):
        return True
    status = http_status(exc)
    if status is not None and (status >= 500 or status in (408, 429)):
        return True
    return error_code(exc) in TRANSIENT_CODES


class RetryPolicy(NamedTuple):
    """``attempts`` tries in all, waiting ``base_delay * 2**n`` (capped, with jitter) between them.

    A NamedTuple, as every value type on the sync path (docs/design.md §19): a storage profile's
    ``retry = {...}`` table is validated as one, and it costs no ``dataclasses`` import."""

    attempts: int = 5
    base_delay: float = 0.2
    max_delay: float = 5.0

    def delay(self, attempt: int) -> float:
        import random  # on the first retry: not every sync's start-up (docs/design.md §19)

        return min(self.max_delay, self.base_delay * 2**attempt) * (0.5 + random.random() / 2)

    async def run(self, op: Callable[[], Awaitable[T]], on_retry: Callable[[BaseException], None] | None = None,
                  transient: Callable[[BaseException], bool] = is_transient, failed: Exception | None = None) -> T:
        """``op()`` until it succeeds, fails for good, or the attempts are spent. ``failed``: the first
        attempt was made elsewhere (a batch of small downloads) and raised this; go on from the second."""
        for attempt in range(self.attempts):
            try:
                if failed is not None:
                    exc, failed = failed, None
                    raise exc
                return await op()
            except Exception as exc:
                if attempt + 1 >= self.attempts or not transient(exc):
                    raise
                if on_retry:
                    on_retry(exc)
                await aio.sleep(self.delay(attempt))
        raise AssertionError("unreachable")
