"""What CI can check of infra/ without Azure: every Bicep file parses (pycep; the Bicep CLI
downloads from GitHub), modules and the parameters file fit main.bicep, the app settings the
Bicep declares are the ones the settings class reads (and docs/settings.md lists exactly those), the
alerts and the workbook query metrics the app emits, and checkov's security scan has no failure."""
from __future__ import annotations

import json
import re
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from pycep import BicepParser

from shared.queues.messages import CHANGES_QUEUE, RECONCILE_QUEUE
from shared.queues.port import poison_name
from shared.settings import Settings, SettingsError, parse_tenants
from shared.telemetry import DIMENSIONS

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
BICEP_FILES = sorted(INFRA.rglob("*.bicep"))


@cache
def parsed(path: Path) -> Any:
    return BicepParser().parse(text=path.read_text(encoding="utf-8"))


def settings_env_names() -> set[str]:
    prefix = Settings.model_config.get("env_prefix", "")
    return {str(f.validation_alias) if f.validation_alias else f"{prefix}{name}".upper()
            for name, f in Settings.model_fields.items()}


def test_there_is_bicep_for_each_part_of_the_deployment() -> None:
    assert {p.name for p in BICEP_FILES} == {"main.bicep", "monitoring.bicep", "storage.bicep", "sql.bicep",
                                             "keyvault.bicep", "roles.bicep", "app.bicep", "alerts.bicep",
                                             "workbook.bicep"}


@pytest.mark.parametrize("path", BICEP_FILES, ids=lambda p: str(p.relative_to(INFRA)))
def test_every_bicep_file_parses(path: Path) -> None:
    tree = parsed(path)
    assert tree["resources"] or tree.get("modules")


def test_each_module_gets_every_parameter_it_needs_and_no_other() -> None:
    main = parsed(INFRA / "main.bicep")
    assert set(main["modules"]) == {"monitoring", "storage", "sql", "vault", "roles", "app", "alerts", "workbook"}
    for name, module in main["modules"].items():
        path = INFRA / module["detail"]["path"]
        assert path.is_file(), f"module {name}: {path} is missing"
        declared = parsed(path)["parameters"]
        given = set(module["config"]["params"])
        assert given <= set(declared), f"module {name} is given unknown parameters {given - set(declared)}"
        required = {p for p, spec in declared.items() if spec.get("default") is None}
        assert required <= given, f"module {name} misses required parameters {required - given}"


def test_the_parameters_file_fits_main_bicep() -> None:
    declared = parsed(INFRA / "main.bicep")["parameters"]
    given = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]
    assert set(given) <= set(declared)
    assert {p for p, spec in declared.items() if spec.get("default") is None} <= set(given)


def declared_app_settings() -> dict[str, Any]:
    value = parsed(INFRA / "modules" / "app.bicep")["variables"]["settings"]["value"]["function"]
    assert value["type"] == "union"  # the template's settings, then the deployer's extraAppSettings
    return value["parameters"]["arg_1"]


def test_the_app_settings_the_bicep_declares_are_read_by_the_settings_class() -> None:
    declared = declared_app_settings()
    unknown = set(declared) - settings_env_names()
    assert unknown == set(), f"app settings no Settings field reads: {sorted(unknown)}"
    # What the app cannot run in Azure without: the database, the tenants (from Key Vault), the
    # timer's schedule (bound as %SYNC_FANOUT_SCHEDULE%), identity-based storage and telemetry.
    assert {"SYNC_DATABASE_URL", "SYNC_TENANTS_JSON", "SYNC_FANOUT_SCHEDULE", "SYNC_AZURE_CLIENT_ID",
            "AzureWebJobsStorage__accountName", "AzureWebJobsStorage__credential", "AzureWebJobsStorage__clientId",
            "APPLICATIONINSIGHTS_CONNECTION_STRING", "APPLICATIONINSIGHTS_AUTHENTICATION_STRING"} <= set(declared)
    assert declared["SYNC_TENANTS_JSON"].startswith("@Microsoft.KeyVault(")
    assert declared["AzureWebJobsStorage__credential"] == "managedidentity"
    assert declared["SYNC_AZURE_CREDENTIAL"] == "managed-identity"
    assert "AzureWebJobsStorage" not in declared  # no connection string: shared keys are disabled


def test_the_settings_page_lists_exactly_the_settings_class() -> None:
    page = (ROOT / "docs" / "settings.md").read_text(encoding="utf-8")
    section = page.split("\n## ", 1)[0]  # the table, before "Tenants file"
    listed = set(re.findall(r"^\| `([A-Za-z_]+)` \|", section, flags=re.MULTILINE))
    assert listed == settings_env_names(), (f"missing from docs/settings.md: {sorted(settings_env_names() - listed)}; "
                                            f"not settings: {sorted(listed - settings_env_names())}")


def queries() -> list[str]:
    rules = parsed(INFRA / "modules" / "alerts.bicep")["variables"]["rules"]["value"]
    workbook = json.loads((INFRA / "modules" / "workbook.json").read_text())
    return [r["query"] for r in rules] + [i["content"]["query"] for i in workbook["items"] if i["type"] == 3]


def test_alerts_and_the_workbook_query_only_metrics_and_dimensions_the_app_emits() -> None:
    emitted = set(re.findall(r'create_\w+\(\s*"([a-z_.]+)"', (ROOT / "shared" / "telemetry.py").read_text()))
    assert len(emitted) == 10
    used: set[str] = set()
    for query in queries():
        for clause in re.findall(r'name (?:==|in) (\([^)]*\)|"[^"]+")', query):
            used |= set(re.findall(r'"([^"]+)"', clause))
        dims = set(re.findall(r"customDimensions\.(\w+)", query))
        assert dims <= DIMENSIONS, (query, dims - DIMENSIONS)
    assert used <= emitted, f"queried but never emitted: {sorted(used - emitted)}"
    assert used == emitted, f"emitted but shown nowhere: {sorted(emitted - used)}"


def test_there_is_an_alert_for_each_condition_operators_asked_for() -> None:
    rules = {r["name"]: r for r in parsed(INFRA / "modules" / "alerts.bicep")["variables"]["rules"]["value"]}
    assert set(rules) == {"freshness", "failed-runs", "poison", "webhook-backlog", "token-failures", "silent-webhooks"}
    assert '"sync.failed_run_streak"' in rules["failed-runs"]["query"]
    assert "depth > ${backlogDepthThreshold} or oldest_seconds > ${backlogAgeThreshold}" in \
        rules["webhook-backlog"]["query"]
    alerts = parsed(INFRA / "modules" / "alerts.bicep")["parameters"]
    assert (alerts["failedRunsThreshold"]["default"], alerts["backlogDepthThreshold"]["default"],
            alerts["backlogAgeThreshold"]["default"]) == (3, 100, 300)


def test_the_queues_are_the_apps_and_their_poison_queues() -> None:
    names = parsed(INFRA / "modules" / "storage.bicep")["variables"]["queueNames"]["value"]
    assert set(names) == {CHANGES_QUEUE, RECONCILE_QUEUE, poison_name(CHANGES_QUEUE), poison_name(RECONCILE_QUEUE)}


def test_nothing_accepts_a_key_or_a_password() -> None:
    storage = parsed(INFRA / "modules" / "storage.bicep")["resources"]["account"]["config"]["properties"]
    assert storage["allowSharedKeyAccess"] is False and storage["minimumTlsVersion"] == "TLS1_2"
    sql = parsed(INFRA / "modules" / "sql.bicep")["resources"]
    admins = sql["server"]["config"]["properties"]["administrators"]
    assert admins["azureADOnlyAuthentication"] is True and admins["administratorType"] == "ActiveDirectory"
    # Auditing and threat detection on the server (checkov looks for them per database: skipped there).
    assert sql["auditing"]["config"]["properties"]["state"] == "Enabled"
    assert sql["threatDetection"]["config"]["properties"]["state"] == "Enabled"
    vault = parsed(INFRA / "modules" / "keyvault.bicep")["resources"]["vault"]["config"]["properties"]
    assert vault["enableRbacAuthorization"] is True and vault["enablePurgeProtection"] is True
    insights = parsed(INFRA / "modules" / "monitoring.bicep")["resources"]["insights"]["config"]["properties"]
    assert insights["DisableLocalAuth"] is True
    app = parsed(INFRA / "modules" / "app.bicep")["resources"]
    assert app["app"]["config"]["properties"]["httpsOnly"] is True
    assert app["app"]["config"]["identity"]["type"] == "UserAssigned"
    assert {app[r]["config"]["properties"]["allow"] for r in ("ftp", "scm")} == {False}


def test_the_identity_gets_four_roles_each_on_one_resource() -> None:
    roles = parsed(INFRA / "modules" / "roles.bicep")
    ids = roles["variables"]["roles"]["value"]
    assert ids == {"blobDataOwner": "b7e6dc6d-f1e8-4753-8033-0f276bb0955b",
                   "queueDataContributor": "974c5e8b-45b9-4653-ba55-5f855dd0fb88",
                   "keyVaultSecretsUser": "4633458b-17de-408a-b874-0445c86b69e6",
                   "monitoringMetricsPublisher": "3913510d-42f4-4e42-8a64-420c390055eb"}
    assignments = [r for r in roles["resources"].values() if r["type"] == "Microsoft.Authorization/roleAssignments"]
    assert len(assignments) == 4
    assert {a["config"]["scope"] for a in assignments} == {"storage", "vault", "insights"}


def test_checkov_finds_no_failed_security_check() -> None:
    checkov = ROOT / ".venv-infra" / "bin" / "checkov"
    if not checkov.exists():
        pytest.fail(f"{checkov} is missing: `make test` (or `make infra-tools`) installs it", pytrace=False)
    run = subprocess.run([str(checkov), "--config-file", str(INFRA / ".checkov.yaml"), "-d", str(INFRA),
                          "-o", "json"], capture_output=True, text=True, timeout=240, cwd=ROOT)
    report = json.loads(run.stdout)
    report = report[0] if isinstance(report, list) else report
    failed = [(c["check_id"], c["resource"], c["file_path"]) for c in report["results"]["failed_checks"]]
    print(f"checkov: {report['summary']}")
    assert failed == [] and report["summary"]["parsing_errors"] == 0
    assert report["summary"]["passed"] >= 25 and run.returncode == 0


def test_the_operators_machine_can_be_let_through_the_sql_firewall() -> None:
    """Without a rule for the operator's address, the README's sqlcmd and migrate steps get 40615."""
    sql = parsed(INFRA / "modules" / "sql.bicep")
    assert sql["parameters"]["operatorIpAddress"]["default"] == ""
    (rule,) = [r for r in sql["resources"].values()
               if r["type"] == "Microsoft.Sql/servers/firewallRules" and r["config"].get("condition")]
    assert rule["config"]["condition"] == {"operator": {"type": "not", "operands": {"bool_value": {"function": {
        "type": "empty", "parameters": {"item_to_test": "operatorIpAddress"}}}}}}
    assert rule["config"]["config"]["name"] == "operator"
    assert rule["config"]["config"]["properties"] == {"startIpAddress": "operatorIpAddress",
                                                      "endIpAddress": "operatorIpAddress"}
    main = parsed(INFRA / "main.bicep")
    assert main["parameters"]["operatorIpAddress"]["default"] == ""
    assert main["modules"]["sql"]["config"]["params"]["operatorIpAddress"] == "operatorIpAddress"
    values = json.loads((INFRA / "main.parameters.json").read_text(encoding="utf-8"))["parameters"]
    assert values["operatorIpAddress"] == {"value": ""}


def readme_section(title: str) -> str:
    text = (INFRA / "README.md").read_text(encoding="utf-8")
    start = text.index(f"\n## {title}")
    end = text.find("\n## ", start + 1)
    return text[start:end if end != -1 else None]


def test_the_prerequisites_name_the_permission_the_template_needs() -> None:
    writes_roles = any(r["type"] == "Microsoft.Authorization/roleAssignments"
                       for path in BICEP_FILES for r in parsed(path)["resources"].values())
    assert writes_roles
    before = " ".join(readme_section("First deployment").split("**Steps**")[0].split())
    assert "Microsoft.Authorization/roleAssignments/write" in before
    assert "Owner" in before and "Role Based Access Control Administrator" in before
    assert "Contributor alone" in before


def test_the_first_deployment_checklist_keeps_its_steps_in_order() -> None:
    steps = readme_section("First deployment").split("**Steps**")[1]
    numbers = [int(n) for n in re.findall(r"^(\d+)\. \[ \]", steps, re.MULTILINE)]
    assert numbers == list(range(1, len(numbers) + 1))
    # Each step's mark, in the order an operator must meet them.
    order = ["az group create", "operatorIpAddress", "az deployment group create", "firewall-rule create",
             "CREATE USER", "Run a migration", "az keyvault secret set",
             "config/configreferences/appsettings/refresh", "properties.status", "config-zip", "/api/health",
             "/api/webhooks/", '{"kind": "full"}', "firewall-rule delete"]
    positions = [steps.index(mark) for mark in order]
    assert positions == sorted(positions), dict(zip(order, positions, strict=True))
    # The app's message for an unresolved reference sends the operator to the refresh step by number.
    before_refresh = steps[:steps.index("configreferences/appsettings/refresh")]
    refresh_step = re.findall(r"^(\d+)\. \[ \]", before_refresh, re.MULTILINE)[-1]
    with pytest.raises(SettingsError, match=f"step {refresh_step}\\)"):
        parse_tenants("@Microsoft.KeyVault(SecretUri=https://kv.vault.azure.net/secrets/tenants-json/)",
                      source="SYNC_TENANTS_JSON")
    # The secret is read through a reference resolved at creation: refreshed after every write.
    for title in ("First deployment", "Configure another tenant", "Rotate a webhook secret"):
        section = readme_section(title)
        assert "restart the app" not in section
        writes = [m.start() for m in re.finditer(r"secret set|store the tenants|write the secret", section)]
        refresh = [m.start() for m in re.finditer(
            r"configreferences/appsettings/refresh|refresh the Key Vault|refresh again", section)]
        assert writes and refresh and max(refresh) > min(writes), title
