"""Microsoft Entra credentials for Azure SQL, Storage and Application Insights (azure-identity).

In Azure the app uses its managed identity (``ManagedIdentityCredential``, with the client id of a
user-assigned identity); ``DefaultAzureCredential`` is for a developer machine (``az login``).
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

# Ask for a new token this long before the old one expires: a connection opened with a token
# about to lapse would fail its login, and azure-identity's own refresh window is an implementation detail.
REFRESH_BEFORE = 300.0


def azure_credential(*, managed_identity: bool, client_id: str | None) -> Any:
    from azure.identity import DefaultAzureCredential, ManagedIdentityCredential

    if managed_identity:
        return ManagedIdentityCredential(client_id=client_id) if client_id else ManagedIdentityCredential()
    return DefaultAzureCredential(managed_identity_client_id=client_id)


class EntraToken:
    """A callable returning a valid access token for one scope, refreshed before it expires.
    Thread-safe: pool connections opened at once share one token request."""

    def __init__(self, credential: Any, scope: str, *, clock: Callable[[], float] = time.time,
                 refresh_before: float = REFRESH_BEFORE) -> None:
        self.credential, self.scope, self.clock, self.refresh_before = credential, scope, clock, refresh_before
        self._token: Any = None
        self._lock = threading.Lock()

    def __call__(self) -> str:
        with self._lock:
            if self._token is None or self.clock() >= self._token.expires_on - self.refresh_before:
                self._token = self.credential.get_token(self.scope)
            return str(self._token.token)
