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
    IPvAnyNetwork,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.records import RESOURCE_TYPES, ResourceType
from shared.rest.load import load_spec, spec_path
from shared.rest.spec import AUTH_CREDENTIALS, Freshness, SourceSpec
from shared.settings_errors import SettingsError, describe_validation_error, validation_problems
from shared.sync.schedule import is_valid

# The types whose changes a tenant's webhooks announce unless its configuration says otherwise.
DEFAULT_WEBHOOK_TYPES: tuple[ResourceType, ...] = ("Patient", "Appointment", "Invoice")

APP_ROOT = Path(__file__).resolve().parent.parent  # spec paths in SYNC_TENANTS_JSON are read from here
DEFAULT_DATABASE_URL = "sqlite:///./.data/mirror.db"
WebhookScheme = Literal["halaxy", "hmac-sha256", "standard-webhooks"]



def _valid_schedule(value: str) -> str:
    if not is_valid(value):
        raise ValueError("expected NCRONTAB (6 fields, seconds first) or cron (5 fields), e.g. '0 */15 * * * *'")
    return value


Schedule = Annotated[str, AfterValidator(_valid_schedule)]


class SyncMode(BaseModel):
    """A named subset of the tenant's entities reconciled incrementally on its own schedule
    (Cliniko's patients-only), besides the runs of everything."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Annotated[str, Field(pattern=r"^[a-z][a-z0-9-]{0,31}$")]
    entities: Annotated[list[Annotated[str, Field(min_length=1, max_length=64)]], Field(min_length=1, max_length=64)]
    schedule: Schedule


class TenantConfig(BaseModel):
    """One practice: its source, credentials, webhook authentication and schedule."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")]
    name: Annotated[str, Field(min_length=1, max_length=200)]
    timezone: str = "Australia/Sydney"
    # fhir: a FHIR R4 source at fhir_base_url (Halaxy); rest: a source described by a spec file
    # (a bundled name such as "cliniko", or a path relative to the tenants file).
    source: Literal["fhir", "rest"] = "fhir"
    fhir_base_url: AnyHttpUrl | None = None
    spec: Annotated[str, Field(min_length=1, max_length=500)] | None = None
    base_url: AnyHttpUrl | None = None  # rest: overrides the spec's base_url
    token_url: AnyHttpUrl | None = None  # rest with OAuth2: overrides the spec's token_url
    # Credentials; which ones a rest tenant needs follows from its spec's auth kind.
    client_id: Annotated[str, Field(min_length=1)] | None = None
    client_secret: SecretStr | None = None
    username: SecretStr | None = None
    password: SecretStr | None = None
    api_key: SecretStr | None = None
    # rest: values for the spec's {placeholders} (PEMS: the organization).
    variables: dict[Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,62}$")], str] = Field(default_factory=dict)
    # The source's request limit per minute (unset: the spec's, or Halaxy's 500) and the page size
    # reconciles ask for (unset: the spec's default; at most the spec's maximum).
    rate_limit: Annotated[int, Field(ge=1, le=100_000)] | None = None
    page_size: Annotated[int, Field(ge=1, le=100_000)] | None = None
    webhook_scheme: WebhookScheme = "halaxy"
    webhook_secrets: list[SecretStr] = Field(default_factory=list)
    # When each reconcile kind is due (evaluated in the tenant's timezone): incremental is the
    # safety net behind webhooks, hot keeps the practitioner's week fresh, full detects deletes.
    schedule: Schedule = "0 */15 * * * *"
    hot_schedule: Schedule = "0 */5 * * * *"
    full_schedule: Schedule = "0 0 3 * * *"
    # Sync modes: a named subset of entities with its own incremental schedule (Cliniko's
    # patients-only); triggered by the fan-out, or by name through the sync route.
    modes: list[SyncMode] = Field(default_factory=list)
    # Health thresholds ({"on_time_minutes", "error_after_minutes"}); unset: the spec's, else one
    # and two intervals of ``schedule`` (docs/api.md, /api/health).
    freshness: Freshness | None = None
    # halaxy: the header carrying the static secret; hmac-sha256: the header carrying the hex HMAC.
    webhook_header: Annotated[str, Field(pattern=r"^[A-Za-z0-9-]{1,64}$")] | None = None
    # Types whose creates and updates the source announces by webhook (Halaxy: patients,
    # appointments, invoices). A reconcile finding such changes no webhook brought warns that the
    # subscription is probably broken; only checked when webhook_secrets are set.
    webhook_types: list[ResourceType] = Field(default_factory=lambda: list(DEFAULT_WEBHOOK_TYPES))
    # Addresses webhooks may come from (CIDRs); empty: any. In Azure the caller's address is the
    # App Service front end's client-ip header; locally, the connection's peer (docs/webhooks.md).
    webhook_allowed_ips: list[IPvAnyNetwork] = Field(default_factory=list)
    enabled: bool = True

    def schedule_for(self, kind: str) -> str | None:
        """When ``kind`` is due; None for a kind this tenant never runs (the hot window is the FHIR
        dashboard's appointments: a rest tenant has none)."""
        if kind == "hot" and not self.is_fhir:
            return None
        return {"incremental": self.schedule, "hot": self.hot_schedule, "full": self.full_schedule}[kind]

    def freshness_thresholds(self) -> Freshness | None:
        """The health thresholds set for this tenant, else by its spec; None: its schedule's."""
        return self.freshness or (None if self.is_fhir else self.rest_spec().freshness)

    def mode(self, name: str) -> SyncMode | None:
        return next((m for m in self.modes if m.name == name), None)

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

    @field_validator("client_secret", "api_key")
    @classmethod
    def _secret_not_empty(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value():
            raise ValueError("must not be empty")
        return value

    @model_validator(mode="after")
    def _source_fields(self) -> TenantConfig:
        # PydanticCustomError: the message as written, without pydantic's "Value error, " prefix.
        if self.source == "fhir":
            missing = [f for f in ("fhir_base_url", "client_id", "client_secret") if getattr(self, f) is None]
            if missing:
                raise PydanticCustomError("missing", f"{', '.join(missing)}: Field required (a fhir tenant needs "
                                          "fhir_base_url, client_id and client_secret)")
            stray = [f for f in ("spec", "base_url", "token_url", "username", "password", "api_key")
                     if getattr(self, f) is not None]
            if stray or self.variables:
                raise PydanticCustomError("rest_only", f"{', '.join(stray or ['variables'])}: only for a rest tenant; "
                                          'add "source": "rest" and a "spec", or remove them')
            problems = _mode_problems(self.modes, self.entities())
            if problems:
                raise PydanticCustomError("modes", "; ".join(problems))
        elif self.spec is None:
            raise PydanticCustomError("missing", 'spec: Field required (a rest tenant names a bundled spec or a '
                                      "spec file)")
        elif self.fhir_base_url is not None:
            raise PydanticCustomError("fhir_only", "fhir_base_url: only for a fhir tenant; a rest tenant's address "
                                      'is its spec\'s base_url, or "base_url" to override it')
        return self

    @property
    def is_fhir(self) -> bool:
        return self.source == "fhir"

    def entities(self) -> tuple[str, ...]:
        """What the tenant's source lists: FHIR resource types, or its spec's entities, in order."""
        return RESOURCE_TYPES if self.is_fhir else tuple(e.name for e in self.rest_spec().entities)

    def credential(self, name: str) -> str:
        """A credential's value ("" for an unset password: Cliniko's API key has none)."""
        value = getattr(self, name)
        if value is None:
            if name == "password":
                return ""
            raise SettingsError(f"tenant {self.id}: {name} is not set")
        return value.get_secret_value() if isinstance(value, SecretStr) else str(value)

    def rest_spec(self) -> SourceSpec:
        """A rest tenant's spec (read once per file version)."""
        if self.spec is None:
            raise SettingsError(f"tenant {self.id}: not a rest tenant")
        return load_spec(spec_path(self.spec, None))

    @property
    def source_url(self) -> str:
        """Where the source answers: the FHIR base, or a rest tenant's base URL (its spec's unless overridden)."""
        if self.is_fhir:
            return self.fhir_url
        return str(self.base_url or self.rest_spec().base_url).rstrip("/")

    @property
    def fhir_url(self) -> str:
        """A fhir tenant's FHIR base URL, without a trailing slash."""
        if self.fhir_base_url is None:
            raise SettingsError(f"tenant {self.id}: not a fhir tenant")
        return str(self.fhir_base_url).rstrip("/")

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
        return parse_tenants(text, source=str(self.tenants_file), spec_folder=self.tenants_file.parent)


def parse_tenants(text: str, *, source: str, spec_folder: Path = APP_ROOT) -> list[TenantConfig]:
    """Tenants from JSON text; a rest tenant's spec path is read relative to ``spec_folder``."""
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
    if not isinstance(raw, dict) or not isinstance(raw.get("tenants"), list):
        _validated(raw, source)  # the file's shape is wrong: say so as pydantic words it
    # Tenant by tenant, so one tenant's mistake does not hide another's (every problem, one line each).
    problems: list[str] = []
    tenants: list[tuple[int, TenantConfig]] = []
    for i, item in enumerate(raw["tenants"]):
        try:
            tenants.append((i, TenantConfig.model_validate(item)))
        except ValidationError as exc:
            problems += [f"{source}: {p}" for p in validation_problems(exc, raw, at=("tenants", i))]
    resolved, spec_problems = _with_specs(tenants, source=source, folder=spec_folder)
    if problems or spec_problems:
        raise SettingsError("\n".join(problems + spec_problems))
    return _validated({**raw, "tenants": resolved}, source).tenants


def _validated(raw: object, source: str) -> TenantsFile:
    try:
        return TenantsFile.model_validate(raw)
    except ValidationError as exc:
        raise SettingsError("\n".join(f"{source}: {problem}" for problem in validation_problems(exc, raw))) from None


def _with_specs(tenants: list[tuple[int, TenantConfig]], *, source: str,
                folder: Path) -> tuple[list[TenantConfig], list[str]]:
    """Rest tenants with their spec read (its path made absolute) and checked against it, and
    every problem of every tenant, one line each; ``tenants`` carry their place in the file."""
    problems: list[str] = []
    resolved = []
    for i, tenant in tenants:
        if tenant.source != "rest" or tenant.spec is None:
            resolved.append(tenant)
            continue
        where = f"{source}: tenants[{i}](id={tenant.id})"
        path = spec_path(tenant.spec, folder)
        try:
            spec = load_spec(path)
        except SettingsError as exc:
            problems.append(f"{where}.spec: {tenant.spec!r} is not usable:")
            problems.extend(f"  {line}" for line in str(exc).splitlines())
            continue
        problems.extend(f"{where}.{p}" for p in _against_spec(tenant, spec))
        resolved.append(tenant.model_copy(update={"spec": str(path.resolve())}))
    return resolved, problems


def _against_spec(tenant: TenantConfig, spec: SourceSpec) -> list[str]:
    problems = [f"{name}: required by the spec's auth ({spec.auth.kind})"
                for name in AUTH_CREDENTIALS[spec.auth.kind] if getattr(tenant, name) is None]
    problems += [f"variables.{name}: the spec's requests need it" for name in spec.variables
                 if name not in tenant.variables]
    problems += [f"variables.{name}: the spec has no such variable ({', '.join(spec.variables) or 'none'})"
                 for name in tenant.variables if name not in spec.variables]
    if tenant.token_url is not None and spec.auth.kind != "oauth2-client-credentials":
        problems.append(f"token_url: the spec's auth ({spec.auth.kind}) uses no token")
    if tenant.page_size is not None and tenant.page_size > spec.page_size.max:
        problems.append(f"page_size: at most {spec.page_size.max} for this source")
    problems += _mode_problems(tenant.modes, tuple(e.name for e in spec.entities))
    return problems


def _mode_problems(modes: list[SyncMode], entities: tuple[str, ...]) -> list[str]:
    """Sync modes against the source's entities: known names, each mode named once."""
    problems = []
    seen: set[str] = set()
    for n, mode in enumerate(modes):
        if mode.name in seen:
            problems.append(f"modes[{n}].name: {mode.name!r} is named twice")
        seen.add(mode.name)
        unknown = [e for e in mode.entities if e not in entities]
        if unknown:
            problems.append(f"modes[{n}].entities: {', '.join(unknown)}: not the source's (it has "
                            f"{', '.join(entities)})")
    return problems


def load_settings(**overrides: object) -> Settings:
    """Build Settings, turning pydantic's errors into a SettingsError that names the field."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]  # values are validated here, by pydantic
    except ValidationError as exc:
        raise SettingsError(f"invalid settings: {describe_validation_error(exc)}") from None
