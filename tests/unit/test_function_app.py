"""The function app loads without settings, network or database, as Azure and the local host do."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_function_app_is_import_safe_in_an_empty_environment(tmp_path: Path) -> None:
    code = "import function_app; print(sorted(f.get_function_name() for f in function_app.app.get_functions()))"
    env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(ROOT), "SYNC_DATABASE_URL": "postgresql://nobody@192.0.2.1/x"}
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == (
        "['apply_change_message', 'cancel_sync_run', 'cleanup_sync_runs', 'health', 'openapi', "
        "'practitioner_dashboard', 'practitioners', 'receive_webhook', 'reconcile_fan_out', 'reconcile_step', "
        "'redrive_poison', 'replay_sync', 'status_page', 'sync_run', 'sync_runs', 'sync_status', 'trigger_sync']")
    assert not (tmp_path / ".data").exists()  # importing created no database, read no settings


def test_the_full_list_of_functions_with_triggers_and_queues() -> None:
    """A broken registration fails here, not as "0 functions found" in Azure."""
    from tests.fakes import registered_functions

    found = {name: json.loads(f.get_function_json())["bindings"] for name, f in registered_functions().items()}
    assert found == {
        "receive_webhook": [{"direction": "IN", "type": "httpTrigger", "name": "req", "methods": ["POST"],
                             "authLevel": "ANONYMOUS", "route": "webhooks/{tenant}/{event}"},
                            {"direction": "OUT", "type": "http", "name": "$return"}],
        "apply_change_message": [{"direction": "IN", "type": "queueTrigger", "name": "msg", "queueName": "changes",
                                  "connection": "AzureWebJobsStorage"}],
        "reconcile_step": [{"direction": "IN", "type": "queueTrigger", "name": "msg", "queueName": "reconcile",
                            "connection": "AzureWebJobsStorage"}],
        "reconcile_fan_out": [{"direction": "IN", "type": "timerTrigger", "name": "timer",
                               "schedule": "%SYNC_FANOUT_SCHEDULE%", "runOnStartup": False, "useMonitor": True}],
        "practitioner_dashboard": [{"direction": "IN", "type": "httpTrigger", "name": "req", "methods": ["GET"],
                                    "authLevel": "FUNCTION",
                                    "route": "tenants/{tenant}/practitioners/{practitioner}/dashboard"},
                                   {"direction": "OUT", "type": "http", "name": "$return"}],
        "health": [{"direction": "IN", "type": "httpTrigger", "name": "req", "methods": ["GET"],
                    "authLevel": "ANONYMOUS", "route": "health"},
                   {"direction": "OUT", "type": "http", "name": "$return"}],
        "openapi": [{"direction": "IN", "type": "httpTrigger", "name": "req", "methods": ["GET"],
                     "authLevel": "ANONYMOUS", "route": "openapi.json"},
                    {"direction": "OUT", "type": "http", "name": "$return"}],
        **{name: [{"direction": "IN", "type": "httpTrigger", "name": "req", "methods": [method],
                   "authLevel": "FUNCTION", "route": route},
                  {"direction": "OUT", "type": "http", "name": "$return"}]
           for name, method, route in [
               ("practitioners", "GET", "tenants/{tenant}/practitioners"),
               ("trigger_sync", "POST", "tenants/{tenant}/sync"),
               ("sync_run", "GET", "tenants/{tenant}/sync/runs/{run_id}"),
               ("sync_runs", "GET", "tenants/{tenant}/sync/runs"),
               ("cancel_sync_run", "POST", "tenants/{tenant}/sync/runs/{run_id}/cancel"),
               ("cleanup_sync_runs", "POST", "sync/cleanup"),
               ("redrive_poison", "POST", "tenants/{tenant}/poison/redrive"),
               ("sync_status", "GET", "tenants/{tenant}/sync/status"),
               ("replay_sync", "POST", "tenants/{tenant}/sync/replay"),
               ("status_page", "GET", "status")]},
    }


def test_only_blueprints_import_azure_functions() -> None:
    pattern = re.compile(r"^\s*(import azure\.functions|from azure\.functions |from azure import functions)", re.M)
    offenders = [str(p.relative_to(ROOT)) for p in (ROOT / "shared").rglob("*.py")
                 if "blueprints" not in p.parts and pattern.search(p.read_text())]
    assert offenders == []
    assert pattern.search((ROOT / "function_app.py").read_text())  # the pattern does match an import


def test_host_json_declares_queue_encoding_and_poison_threshold() -> None:
    host = json.loads((ROOT / "host.json").read_text())
    queues = host["extensions"]["queues"]
    assert host["version"] == "2.0"
    assert queues["messageEncoding"] in ("none", "base64")
    from shared.queues.messages import MAX_DEQUEUE_COUNT

    assert queues["maxDequeueCount"] == MAX_DEQUEUE_COUNT  # the reconcile worker knows its last attempt


def test_local_settings_example_names_only_known_settings() -> None:
    from shared.settings import Settings

    values = json.loads((ROOT / "local.settings.json.example").read_text())["Values"]
    ours = {k.removeprefix("SYNC_").lower() for k in values if k.startswith("SYNC_")}
    assert ours <= set(Settings.model_fields), ours - set(Settings.model_fields)


def test_the_openapi_document_lists_every_http_route_with_its_method() -> None:
    from shared.reads.openapi import document
    from tests.fakes import registered_functions

    paths = document()["paths"]
    for name, function in registered_functions().items():
        trigger = json.loads(function.get_function_json())["bindings"][0]
        if trigger["type"] != "httpTrigger":
            continue
        operations = paths.get("/" + trigger["route"])
        assert operations is not None, f"{name}: /{trigger['route']} is missing from the OpenAPI document"
        assert set(operations) == {m.lower() for m in trigger["methods"]}, name
        keyed = "security" in next(iter(operations.values()))
        assert keyed == (trigger["authLevel"] != "ANONYMOUS"), name
