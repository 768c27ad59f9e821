"""What an SDK's exception says, read once for every provider's error messages.

SDKs chain their errors (aiohttp under gcsfs, azure-core under adlfs, botocore's shapes in gpstage's
own S3 client), and keep the HTTP status and the store's error code in different places. Providers
look at the facts gathered here (:meth:`~gpstage.storage.base.RemoteProvider.specific_error`) and
never re-walk the chain themselves.
"""

from __future__ import annotations

from typing import NamedTuple

from gpstage.retry import cause_chain, error_code, http_status

# aiohttp's and the socket layer's names for "the endpoint did not answer"
UNREACHABLE_NAMES = frozenset({"ClientConnectorError", "ClientConnectorDNSError", "ConnectionRefusedError",
                               "ServerTimeoutError", "ConnectionTimeoutError", "SocketTimeoutError"})


class ErrorFacts(NamedTuple):
    chain: tuple[BaseException, ...]  # the exception and its causes, outermost first
    names: frozenset[str]  # their class names (SDK classes are matched by name: the SDK may be absent)
    status: int | None  # the HTTP status, if any layer kept one
    code: str | None  # the store's error code (S3's <Code>), if any
    text: str  # the message on one line, at most 300 characters

    @classmethod
    def of(cls, exc: BaseException) -> ErrorFacts:
        chain = tuple(cause_chain(exc))
        return cls(chain=chain, names=frozenset(type(e).__name__ for e in chain), status=http_status(exc),
                   code=error_code(exc), text=" ".join(str(exc).split())[:300] or type(exc).__name__)

    @property
    def unreachable(self) -> bool:
        return bool(self.names & UNREACHABLE_NAMES)

    @property
    def not_found(self) -> bool:
        return self.status == 404 or any(isinstance(e, FileNotFoundError) for e in self.chain)

    @property
    def denied(self) -> bool:
        return self.status in (401, 403) or any(isinstance(e, PermissionError) for e in self.chain)
