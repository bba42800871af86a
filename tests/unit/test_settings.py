"""Settings and tenants: valid files load, invalid ones name the field, secrets never leak."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from shared.settings import DEFAULT_DATABASE_URL, SettingsError, load_settings, parse_tenants

SECRET = "s3cr3t-value-that-must-not-leak"


def tenant(**overrides: object) -> dict[str, object]:
    base: dict[str, object] = {
        "id": "north-clinic", "name": "North Clinic", "timezone": "Australia/Sydney",
        "fhir_base_url": "https://au-api.halaxy.com/main", "client_id": "cid",
        "client_secret": SECRET, "webhook_scheme": "halaxy", "webhook_secrets": [SECRET + "-wh"],
        "schedule": "0 */15 * * * *", "enabled": True,
    }
    base.update(overrides)
    return base


def test_defaults_use_sqlite_under_data_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SYNC_DATABASE_URL", raising=False)
    assert load_settings().database_url == DEFAULT_DATABASE_URL == "sqlite:///./.data/mirror.db"


def test_environment_variables_use_the_sync_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SYNC_DATABASE_URL", "postgresql://u@h/db")
    monkeypatch.setenv("SYNC_UPSERT_BATCH_SIZE", "250")
    settings = load_settings()
    assert settings.database_url == "postgresql://u@h/db"
    assert settings.upsert_batch_size == 250


def test_tenants_file_loads_every_field(tmp_path: Path) -> None:
    path = tmp_path / "tenants.json"
    path.write_text(json.dumps({"tenants": [tenant(), tenant(id="south", webhook_scheme="hmac-sha256")]}))
    tenants = load_settings(tenants_file=path).load_tenants()
    assert [t.id for t in tenants] == ["north-clinic", "south"]
    first = tenants[0]
    assert first.credential("client_secret") == SECRET
    assert [s.get_secret_value() for s in first.webhook_secrets] == [SECRET + "-wh"]
    assert (first.timezone, first.schedule, first.enabled, first.webhook_scheme) == (
        "Australia/Sydney", "0 */15 * * * *", True, "halaxy")
    assert str(first.fhir_base_url) == "https://au-api.halaxy.com/main"


def test_a_bare_list_is_accepted() -> None:
    assert [t.id for t in parse_tenants(json.dumps([tenant()]), source="x")] == ["north-clinic"]


def test_tenants_json_setting_takes_precedence(tmp_path: Path) -> None:
    settings = load_settings(tenants_json=json.dumps([tenant(id="inline")]), tenants_file=tmp_path / "missing.json")
    assert [t.id for t in settings.load_tenants()] == ["inline"]


def test_an_unresolved_key_vault_reference_says_how_to_fix_it() -> None:
    """Before the secret exists, App Service hands the reference itself to the app as the value."""
    reference = "@Microsoft.KeyVault(SecretUri=https://kv-fhirmirror-abc123.vault.azure.net/secrets/tenants-json/)"
    settings = load_settings(tenants_json=reference)
    with pytest.raises(SettingsError) as caught:
        settings.load_tenants()
    message = str(caught.value)
    assert message.startswith("SYNC_TENANTS_JSON: the Key Vault reference did not resolve;")
    assert "refresh" in message and "step 8" in message and "kv-fhirmirror" not in message


def test_secrets_never_appear_in_repr_or_str() -> None:
    (t,) = parse_tenants(json.dumps([tenant()]), source="x")
    assert SECRET not in repr(t) and SECRET not in str(t)
    assert SECRET not in repr(load_settings(tenants_json=json.dumps([tenant()])))


@pytest.mark.parametrize(("overrides", "field", "hint"), [
    ({"timezone": "Mars/Olympus"}, "timezone", "IANA"),
    ({"webhook_scheme": "basic"}, "webhook_scheme", "halaxy"),
    ({"id": "Bad Id!"}, ".id", "pattern"),
    ({"fhir_base_url": "not a url"}, "fhir_base_url", "URL"),
    ({"client_secret": ""}, "client_secret", "empty"),
    ({"schedule": "every 5 minutes"}, "schedule", "cron"),
    ({"webhook_secrets": [""]}, "webhook_secrets", "empty"),
    ({"webhook_scheme": "standard-webhooks"}, "webhook_secrets", "whsec_"),
    ({"unexpected": 1}, "unexpected", "Extra"),
])
def test_invalid_tenant_names_the_field_and_hides_secrets(overrides: dict[str, object], field: str, hint: str) -> None:
    with pytest.raises(SettingsError) as caught:
        parse_tenants(json.dumps([tenant(**overrides)]), source="tenants.json")
    message = str(caught.value)
    assert message.startswith("tenants.json: ")
    assert field in message and hint in message
    assert "id=north-clinic" in message or overrides.get("id") == "Bad Id!"
    assert SECRET not in message


def test_missing_required_field_is_named() -> None:
    data = tenant()
    del data["client_id"]
    with pytest.raises(SettingsError, match=r"client_id: Field required"):
        parse_tenants(json.dumps([data]), source="f")


def test_wrong_type_for_a_secret_does_not_echo_it() -> None:
    with pytest.raises(SettingsError) as caught:
        parse_tenants(json.dumps([tenant(client_secret=["leaky-" + SECRET])]), source="f")
    assert "client_secret" in str(caught.value) and SECRET not in str(caught.value)


def test_duplicate_tenant_ids_are_rejected() -> None:
    with pytest.raises(SettingsError, match="duplicate tenant id 'north-clinic'"):
        parse_tenants(json.dumps([tenant(), tenant()]), source="f")


def test_unreadable_or_invalid_json_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="cannot read"):
        load_settings(tenants_file=tmp_path / "nope.json").load_tenants()
    bad = tmp_path / "bad.json"
    bad.write_text('{"tenants": [')
    with pytest.raises(SettingsError, match=r"bad.json: not valid JSON \(line 1"):
        load_settings(tenants_file=bad).load_tenants()


def test_invalid_settings_fail_with_the_field_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SYNC_UPSERT_BATCH_SIZE", "0")
    with pytest.raises(SettingsError, match="upsert_batch_size"):
        load_settings()
    monkeypatch.delenv("SYNC_UPSERT_BATCH_SIZE")
    with pytest.raises(SettingsError, match=r"database_url: .*supported databases"):
        load_settings(database_url="mysql://x")


def test_no_tenants_configured_is_an_empty_list() -> None:
    assert load_settings(tenants_file=None, tenants_json=None).load_tenants() == []
