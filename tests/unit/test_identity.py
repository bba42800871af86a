"""Entra credentials: which one the app picks from its settings, and tokens refreshed before they expire."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
from azure.identity import DefaultAzureCredential, ManagedIdentityCredential

from shared.bootstrap import queue_port, queue_service_url
from shared.identity import EntraToken, azure_credential
from shared.queues.azure import AzureQueues
from shared.queues.memory import InMemoryQueues
from shared.settings import load_settings
from shared.store.engine import AZURE_SQL_TOKEN_SCOPE, entra_token_provider


@dataclass
class Token:
    token: str
    expires_on: int


class Credential:
    """Hands out numbered tokens that live ``life`` seconds on the fake clock."""

    def __init__(self, clock: list[float], life: int = 3600) -> None:
        self.clock, self.life = clock, life
        self.asked: list[str] = []

    def get_token(self, scope: str) -> Token:
        self.asked.append(scope)
        return Token(f"token-{len(self.asked)}", int(self.clock[0]) + self.life)


def test_a_token_is_reused_until_five_minutes_before_it_expires_then_asked_again() -> None:
    now = [1_000.0]
    credential = Credential(now)
    token = EntraToken(credential, AZURE_SQL_TOKEN_SCOPE, clock=lambda: now[0])
    assert token() == "token-1"
    now[0] += 3600 - 301
    assert token() == "token-1"
    now[0] += 2  # within the last five minutes: a connection opened now would outlive it
    assert token() == "token-2"
    assert credential.asked == [AZURE_SQL_TOKEN_SCOPE] * 2


def test_the_sql_engine_uses_the_managed_identity_in_azure_and_the_default_chain_on_a_laptop() -> None:
    managed = entra_token_provider(load_settings(database_url="mssql+pyodbc://@s.database.windows.net/db",
                                                 azure_client_id="11111111-2222-3333-4444-555555555555"))
    assert isinstance(managed, EntraToken) and isinstance(managed.credential, ManagedIdentityCredential)
    laptop = entra_token_provider(load_settings(database_url="mssql+pyodbc://@s.database.windows.net/db",
                                                azure_credential="default"))
    assert isinstance(laptop, EntraToken) and isinstance(laptop.credential, DefaultAzureCredential)


def test_queues_use_a_connection_string_first_then_the_identity_then_memory(monkeypatch: pytest.MonkeyPatch,
                                                                           tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'm.db'}"
    assert isinstance(queue_port(load_settings(database_url=db)), InMemoryQueues)
    monkeypatch.setenv("AzureWebJobsStorage__accountName", "stmirror")
    monkeypatch.setenv("AzureWebJobsStorage__credential", "managedidentity")
    monkeypatch.setenv("AzureWebJobsStorage__clientId", "11111111-2222-3333-4444-555555555555")
    settings = load_settings(database_url=db)
    assert queue_service_url(settings) == "https://stmirror.queue.core.windows.net"
    port = queue_port(settings)
    assert isinstance(port, AzureQueues)
    assert port.service.url.startswith("https://stmirror.queue.core.windows.net")
    assert isinstance(port.service.credential, ManagedIdentityCredential)
    monkeypatch.setenv("AzureWebJobsStorage", "UseDevelopmentStorage=true")  # Azurite wins
    port = queue_port(load_settings(database_url=db))
    assert isinstance(port, AzureQueues) and port.service.account_name == "devstoreaccount1"


def test_without_managedidentity_the_storage_credential_is_the_default_chain() -> None:
    assert isinstance(azure_credential(managed_identity=False, client_id=None), DefaultAzureCredential)
    assert isinstance(azure_credential(managed_identity=True, client_id=None), ManagedIdentityCredential)
