"""One small hierarchy for everything that can go wrong talking to a source.

Retry decisions key off these classes, never off message strings. Every error names the tenant
and, where there is one, the resource path and status — never a token, secret or body.
"""
from __future__ import annotations

from typing import Any


class SourceError(Exception):
    """Base: a source could not give us what we asked for."""

    retryable = False

    def __init__(self, tenant: str, message: str, *, path: str | None = None, status: int | None = None,
                 unreachable: bool = False) -> None:
        # unreachable: no connection could be made at all (refused, no route, unknown host) — a
        # source that is not running or a wrong URL, which a person reading the error should hear.
        self.tenant, self.path, self.status, self.unreachable = tenant, path, status, unreachable
        where = f" {path}" if path else ""
        code = f" (HTTP {status})" if status else ""
        super().__init__(f"tenant {tenant}:{where}{code}: {message}")


class TokenError(SourceError):
    """No access token: wrong credentials, a missing scope, or the token endpoint failing."""


class CredentialsRefused(TokenError):
    """The token endpoint refused the tenant's credentials. Nothing changes until a person fixes
    them, so the refusal is remembered for a while (no request is sent meanwhile) and queue work
    is put back until ``retry_at`` rather than spending its delivery attempts."""

    held = True

    def __init__(self, tenant: str, message: str, *, retry_at: float, **kwargs: Any) -> None:
        super().__init__(tenant, message, **kwargs)
        self.retry_at, self.detail = retry_at, message


class NotFound(SourceError):
    """404: the source does not know this id."""


class Gone(SourceError):
    """410: the resource was deleted at the source."""


class Rejected(SourceError):
    """A 4xx other than 401/404/410/429: our request is wrong; retrying will not help."""


class BadResponse(SourceError):
    """The answer is not what FHIR promises (not JSON, wrong type, too large, redirected away)."""


class DuplicateKeys(BadResponse):
    """Records the source sent repeat values of columns its spec says are unique (HIE's facility
    codes): nothing of them was written, and the sync stays blocked until the source fixes them."""


class TransientError(SourceError):
    """429, 5xx, timeouts and connection errors: worth retrying later."""

    retryable = True


class SourceUnavailable(TransientError):
    """Retries exhausted or the circuit is open: skip this tenant's work until ``retry_at``.

    ``held`` is true when the source is not failing this request but holding us back: a 429 or
    Retry-After longer than the caller may wait, or the circuit open after earlier failures.
    Queue work then comes back at ``retry_at`` rather than spending a delivery attempt."""

    def __init__(self, tenant: str, message: str, *, retry_at: float | None = None, held: bool = False,
                 **kwargs: Any) -> None:
        super().__init__(tenant, message, **kwargs)
        self.retry_at = retry_at
        self.held = held
