"""Settings and tenants: the one reader of environment variables and tenant files."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
    AnyHttpUrl,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.records import ResourceType
from shared.sync.schedule import is_valid

# The types whose changes a tenant's webhooks announce unless its configuration says otherwise.
DEFAULT_WEBHOOK_TYPES: tuple[ResourceType, ...] = ("Patient", "Appointment", "Invoice")

DEFAULT_DATABASE_URL = "sqlite:///./.data/mirror.db"
WebhookScheme = Literal["halaxy", "hmac-sha256", "standard-webhooks"]



def _valid_schedule(value: str) -> str:
    if not is_valid(value):
        raise ValueError("expected NCRONTAB (6 fields, seconds first) or cron (5 fields), e.g. '0 */15 * * * *'")
    return value


Schedule = Annotated[str, AfterValidator(_valid_schedule)]


class SettingsError(ValueError):
    """Invalid configuration. The message names each bad field and never echoes its value."""


class TenantConfig(BaseModel):
    """One practice: its source, credentials, webhook authentication and schedule."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")]
    name: Annotated[str, Field(min_length=1, max_length=200)]
    timezone: str = "Australia/Sydney"
    fhir_base_url: AnyHttpUrl
    client_id: Annotated[str, Field(min_length=1)]
    client_secret: SecretStr
    webhook_scheme: WebhookScheme = "halaxy"
    webhook_secrets: list[SecretStr] = Field(default_factory=list)
    # When each reconcile kind is due (evaluated in the tenant's timezone): incremental is the
    # safety net behind webhooks, hot keeps the practitioner's week fresh, full detects deletes.
    schedule: Schedule = "0 */15 * * * *"
    hot_schedule: Schedule = "0 */5 * * * *"
    full_schedule: Schedule = "0 0 3 * * *"
    # halaxy: the header carrying the static secret; hmac-sha256: the header carrying the hex HMAC.
    webhook_header: Annotated[str, Field(pattern=r"^[A-Za-z0-9-]{1,64}$")] | None = None
    # Types whose creates and updates the source announces by webhook (Halaxy: patients,
    # appointments, invoices). A reconcile finding such changes no webhook brought warns that the
    # subscription is probably broken; only checked when webhook_secrets are set.
    webhook_types: list[ResourceType] = Field(default_factory=lambda: list(DEFAULT_WEBHOOK_TYPES))
    enabled: bool = True

    def schedule_for(self, kind: str) -> str:
        return {"incremental": self.schedule, "hot": self.hot_schedule, "full": self.full_schedule}[kind]

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)  # zoneinfo caches zones: this is a dictionary lookup

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError("unknown IANA timezone (for example 'Australia/Sydney')") from None
        return value

    @field_validator("client_secret")
    @classmethod
    def _secret_not_empty(cls, value: SecretStr) -> SecretStr:
        if not value.get_secret_value():
            raise ValueError("must not be empty")
        return value

    @field_validator("webhook_secrets")
    @classmethod
    def _webhook_secrets_valid(cls, values: list[SecretStr], info: ValidationInfo) -> list[SecretStr]:
        if any(not v.get_secret_value().strip() for v in values):
            raise ValueError("secrets must not be empty strings")
        if info.data.get("webhook_scheme") == "standard-webhooks" and not all(
                v.get_secret_value().startswith("whsec_") for v in values):
            raise ValueError("standard-webhooks secrets must start with 'whsec_'")
        return values


class TenantsFile(BaseModel):
    """The tenants file: ``{"tenants": [...]}`` or a bare list."""

    model_config = ConfigDict(extra="forbid")

    tenants: list[TenantConfig]

    @model_validator(mode="after")
    def _unique_ids(self) -> TenantsFile:
        seen: set[str] = set()
        for tenant in self.tenants:
            if tenant.id in seen:
                raise ValueError(f"duplicate tenant id {tenant.id!r}")
            seen.add(tenant.id)
        return self


class Settings(BaseSettings):
    """Every setting of the app. Environment variables carry the ``SYNC_`` prefix."""

    model_config = SettingsConfigDict(env_prefix="SYNC_", extra="ignore", frozen=True)

    database_url: str = DEFAULT_DATABASE_URL
    tenants_file: Path | None = None
    # Tenants inline as JSON: how an Azure app setting (with Key Vault references) carries them.
    tenants_json: SecretStr | None = None
    # Azure SQL (mssql+pyodbc): the ODBC driver name and how the Entra token is obtained.
    odbc_driver: str = "ODBC Driver 18 for SQL Server"
    azure_credential: Literal["managed-identity", "default"] = "managed-identity"
    azure_client_id: str | None = None
    upsert_batch_size: Annotated[int, Field(ge=1, le=10_000)] = 1000
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    # The Functions host's storage (queues); "UseDevelopmentStorage=true" means Azurite. Unset:
    # the local host keeps queues in memory.
    azure_webjobs_storage: SecretStr | None = Field(default=None, validation_alias="AzureWebJobsStorage")
    # Azure Storage through an identity (the Functions host's identity-based connection): the
    # queue endpoint, or the account name for https://<name>.queue.core.windows.net. With
    # ``credential`` "managedidentity" the app uses ManagedIdentityCredential(clientId), otherwise
    # DefaultAzureCredential (az login on a developer machine). Ignored when AzureWebJobsStorage is set.
    storage_queue_service_uri: str | None = Field(default=None, validation_alias="AzureWebJobsStorage__queueServiceUri")
    storage_account_name: str | None = Field(default=None, validation_alias="AzureWebJobsStorage__accountName")
    storage_credential: str | None = Field(default=None, validation_alias="AzureWebJobsStorage__credential")
    storage_client_id: str | None = Field(default=None, validation_alias="AzureWebJobsStorage__clientId")
    # Application Insights; unset: telemetry is a no-op. The authentication string
    # ("Authorization=AAD;ClientId=<identity>") makes the exporter use Entra instead of the key.
    appinsights_connection_string: SecretStr | None = Field(
        default=None, validation_alias="APPLICATIONINSIGHTS_CONNECTION_STRING")
    appinsights_authentication_string: str | None = Field(
        default=None, validation_alias="APPLICATIONINSIGHTS_AUTHENTICATION_STRING")
    # The local host's stand-in for Azure's function keys: routes at auth level FUNCTION or ADMIN
    # want it in the `x-functions-key` header or the `code` query parameter. Unset or empty: open.
    local_function_key: SecretStr | None = Field(default=None, validation_alias="LOCAL_FUNCTION_KEY")
    # Seconds a reconcile invocation works before it checkpoints and enqueues its continuation
    # (under host.json's functionTimeout of 10 minutes).
    reconcile_time_budget: Annotated[float, Field(gt=0, le=540)] = 300.0
    # A running reconcile whose heartbeat (one per page) is older than this is presumed dead: the
    # next message for that tenant and kind takes it over and resumes from its checkpoint. The
    # fan-out marks runs silent for four times this long as failed_stale.
    run_stale_after: Annotated[float, Field(gt=0)] = 900.0
    # The circuit breaker per tenant and source host: this many consecutive failures open it; after
    # the cooldown (seconds) exactly one probe request is let through, and its outcome closes or
    # re-opens it. While it is open, webhooks' changes are put back until the probe may run.
    breaker_failures: Annotated[int, Field(ge=1, le=100)] = 5
    breaker_cooldown: Annotated[float, Field(gt=0, le=3600)] = 30.0
    # Credentials the source refused are not presented again for this long (seconds); a webhook's
    # change waiting on them is put back until then (up to 50 times) instead of failing to poison.
    credentials_retry_after: Annotated[float, Field(gt=0, le=3600)] = 300.0
    # Seconds one request to a source may take (connect, each read, write) before it counts as a
    # failure (retried, and towards the breaker).
    source_timeout: Annotated[float, Field(gt=0, le=300)] = 30.0
    # How often the timer looks for due tenants (NCRONTAB). The timer binds it as the app setting
    # %SYNC_FANOUT_SCHEDULE%, so in Azure it must be set (the Bicep sets it).
    fanout_schedule: Schedule = "0 */5 * * * *"
    # Backport event numbers missing this long (senders retry and reorder) are a gap: counted,
    # and answered with an incremental reconcile of the subscription's types at the next fan-out.
    # Longer than the reconcile's 2-minute lag, so that run's window covers the missed change.
    webhook_gap_grace: Annotated[float, Field(ge=0)] = 180.0
    # A change a reconcile had to bring in although its type is announced by webhook and it is
    # older than this (seconds) was missed by the webhooks: recorded as a silent-webhook warning.
    webhook_silent_grace: Annotated[float, Field(gt=0)] = 600.0

    @field_validator("database_url")
    @classmethod
    def _supported_database(cls, value: str) -> str:
        if not value.startswith(("sqlite", "postgresql", "mssql")):
            raise ValueError("supported databases: sqlite, postgresql(+psycopg), mssql+pyodbc")
        return value

    def load_tenants(self) -> list[TenantConfig]:
        """Tenants from ``tenants_json`` or ``tenants_file``; an empty list when neither is set."""
        if self.tenants_json is not None:
            return parse_tenants(self.tenants_json.get_secret_value(), source="SYNC_TENANTS_JSON")
        if self.tenants_file is None:
            return []
        try:
            text = self.tenants_file.read_text(encoding="utf-8")
        except OSError as exc:
            raise SettingsError(f"tenants file {self.tenants_file}: cannot read ({exc.strerror})") from None
        return parse_tenants(text, source=str(self.tenants_file))


def parse_tenants(text: str, *, source: str) -> list[TenantConfig]:
    if text.lstrip().startswith("@Microsoft.KeyVault("):
        # App Service hands the reference through as text when it could not resolve it (the secret
        # did not exist when the app resolved it, or the identity may not read it).
        raise SettingsError(f"{source}: the Key Vault reference did not resolve; store the secret, then refresh "
                            "the app's Key Vault references and check the status says Resolved "
                            "(infra/README.md, first deployment, step 8)")
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SettingsError(f"{source}: not valid JSON (line {exc.lineno}, column {exc.colno})") from None
    if isinstance(raw, list):
        raw = {"tenants": raw}
    try:
        return TenantsFile.model_validate(raw).tenants
    except ValidationError as exc:
        raise SettingsError(f"{source}: {describe_validation_error(exc, raw)}") from None


def load_settings(**overrides: object) -> Settings:
    """Build Settings, turning pydantic's errors into a SettingsError that names the field."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]  # values are validated here, by pydantic
    except ValidationError as exc:
        raise SettingsError(f"invalid settings: {describe_validation_error(exc)}") from None


def describe_validation_error(exc: ValidationError, raw: object = None) -> str:
    """Field paths and messages only: pydantic's default text echoes input values (secrets)."""
    parts = []
    for error in exc.errors(include_input=False, include_context=False, include_url=False):
        parts.append(f"{_field_path(error['loc'], raw)}: {error['msg']}")
    return "; ".join(parts)


def _field_path(loc: tuple[int | str, ...], raw: object) -> str:
    # Name a tenant by its id rather than its list index where the id is readable.
    path: list[str] = []
    node = raw
    for part in loc:
        if isinstance(part, int) and isinstance(node, list) and part < len(node):
            node = node[part]
            ident = node.get("id") if isinstance(node, dict) else None
            path.append(f"[{part}]" + (f"(id={ident})" if isinstance(ident, str) else ""))
            continue
        node = node.get(part) if isinstance(node, dict) else None
        path.append(f".{part}" if path else str(part))
    return "".join(path) or "(root)"
