"""REST specs and rest tenants: the bundled specs load; every problem is one line naming the
file and the field, and nothing of a secret is echoed."""
from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any

import pytest

from shared.rest.load import BUNDLED, load_spec, spec_path
from shared.settings import SettingsError, parse_tenants

SECRET = "k3y-that-must-not-leak"
SOURCES = ("cliniko", "hie-facilities", "ppb-premises", "pems")


def bundled(name: str) -> dict[str, Any]:
    return json.loads((BUNDLED / f"{name}.json").read_text())


def write(tmp_path: Path, spec: dict[str, Any], name: str = "spec.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(spec))
    return path


@pytest.mark.parametrize("name", SOURCES)
def test_every_bundled_spec_loads(name: str) -> None:
    spec = load_spec(spec_path(name, None))
    assert spec.name == name
    assert spec.entities


def test_cliniko_maps_into_the_dashboards_tables() -> None:
    spec = load_spec(spec_path("cliniko", None))
    assert [(e.name, e.table) for e in spec.entities] == [
        ("practitioners", "practitioners"), ("patients", "clients"), ("appointments", "sessions"),
        ("invoices", "invoices")]


def test_a_broken_spec_lists_every_problem_one_line_each(tmp_path: Path) -> None:
    spec = bundled("cliniko")
    spec["auth"] = {"kind": "oauth2-client-credentials"}  # no token_url
    spec["entities"][0]["paginator"] = {"kind": "pages"}  # no such paginator
    spec["entities"][1]["columns"]["shoe_size"] = "shoe"  # clients has no such column
    spec["entities"][2]["table"] = "appointments_table"  # not a built-in table
    spec["entities"][3]["read"] = {"path": "/invoices/{invoice}"}  # unknown placeholder, no {id}
    path = write(tmp_path, spec)
    with pytest.raises(SettingsError) as caught:
        load_spec(path)
    lines = str(caught.value).splitlines()
    assert all(line.startswith(f"spec {path.resolve()}: ") for line in lines), lines
    text = str(caught.value)
    assert "auth.oauth2-client-credentials.token_url: Field required" in text
    assert "entities[0](name=practitioners).paginator: Input tag 'pages' found using 'kind' does not match" in text
    # Model errors come first; the semantic checks run once the model is valid.
    spec["auth"], spec["entities"][0]["paginator"] = bundled("cliniko")["auth"], {"kind": "none"}
    with pytest.raises(SettingsError) as caught:
        load_spec(write(tmp_path, spec, "second.json"))
    lines = str(caught.value).splitlines()
    assert [line.split(": ", 2)[1] for line in lines] == [
        "entities[1](name=patients).columns.shoe_size", "entities[2](name=appointments).table",
        "entities[3](name=invoices).read", "entities[3](name=invoices).read.path"], lines


@pytest.mark.parametrize(("change", "field"), [
    (lambda s: s["entities"][0].update(updated_at={"field": "lastUpdated", "format": "yesterday"}),
     "entities[0](name=facilities).updated_at.format"),
    (lambda s: s["entities"][0]["incremental"].update(template="lastUpdated"),
     "entities[0](name=facilities).incremental.template"),
    (lambda s: s["entities"][0]["table"].update(unique=["nope"]), "entities[0](name=facilities).table.unique[0]"),
    (lambda s: s["entities"][0]["columns"].update(deleted_at="gone"),
     "entities[0](name=facilities).columns.deleted_at"),
    (lambda s: s["entities"][0].update(mapper="shared.rest.mappers.cliniko:nothing_here"),
     "entities[0](name=facilities).mapper"),
    (lambda s: s["entities"][0]["columns"].update(bad={"field": "x", "type": "enum"}),
     "entities[0](name=facilities).columns.bad"),
    (lambda s: s.update(webhook={**s["webhook"], "entity": "wards"}), "(root)"),
    (lambda s: s["entities"][0]["list"].update(path="/{county}/sync"), "entities[0](name=facilities).list"),
])
def test_each_kind_of_problem_names_its_field(tmp_path: Path, change: Any, field: str) -> None:
    spec = copy.deepcopy(bundled("hie-facilities"))
    change(spec)
    with pytest.raises(SettingsError) as caught:
        load_spec(write(tmp_path, spec))
    assert any(line.split(": ", 2)[1] == field for line in str(caught.value).splitlines()), str(caught.value)


def test_not_json_and_missing_files_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.json"
    path.write_text("{\n  nope")
    with pytest.raises(SettingsError, match=r"broken.json: not valid JSON \(line 2, column 3\)"):
        load_spec(path)
    with pytest.raises(SettingsError, match=r"missing.json: cannot read"):
        load_spec(tmp_path / "missing.json")


def test_an_edited_spec_is_read_again(tmp_path: Path) -> None:
    spec = bundled("pems")
    path = write(tmp_path, spec)
    assert load_spec(path).page_size.max == 10_000
    spec["page_size"] = {"default": 10, "max": 20}
    path.write_text(json.dumps(spec))
    os.utime(path, ns=(1, path.stat().st_mtime_ns + 1_000_000))
    assert load_spec(path).page_size.max == 20


# -- rest tenants -----------------------------------------------------------------------------
def rest_tenant(**overrides: object) -> dict[str, object]:
    base: dict[str, object] = {"id": "cliniko", "name": "Cliniko practice", "source": "rest", "spec": "cliniko",
                               "base_url": "http://127.0.0.1:7072/v1", "username": SECRET}
    base.update(overrides)
    return base


def test_a_rest_tenant_names_a_bundled_spec_or_a_file_beside_the_tenants_file(tmp_path: Path) -> None:
    (t,) = parse_tenants(json.dumps([rest_tenant()]), source="x")
    assert t.rest_spec().name == "cliniko" and t.credential("username") == SECRET and t.credential("password") == ""
    write(tmp_path, bundled("pems"), "mine.json")
    (t,) = parse_tenants(json.dumps([rest_tenant(id="p", spec="mine.json", username=None, api_key=SECRET,
                                                 variables={"organization": "org-1"})]),
                         source="f", spec_folder=tmp_path)
    assert Path(t.spec or "") == (tmp_path / "mine.json").resolve() and t.rest_spec().name == "pems"


def test_rest_tenants_are_checked_against_their_spec_every_problem_at_once(tmp_path: Path) -> None:
    tenants = [rest_tenant(username=None),  # basic auth needs the API key as username
               rest_tenant(id="pems", spec="pems", username=None, variables={"org": "x"}),
               rest_tenant(id="big", page_size=500),
               rest_tenant(id="nofile", spec="nowhere/spec.json")]
    with pytest.raises(SettingsError) as caught:
        parse_tenants(json.dumps(tenants), source="tenants.json", spec_folder=tmp_path)
    text = str(caught.value)
    assert SECRET not in text
    lines = [line for line in text.splitlines() if not line.startswith("  ")]
    assert lines == [
        "tenants.json: tenants[0](id=cliniko).username: required by the spec's auth (basic)",
        "tenants.json: tenants[1](id=pems).api_key: required by the spec's auth (api-key)",
        "tenants.json: tenants[1](id=pems).variables.organization: the spec's requests need it",
        "tenants.json: tenants[1](id=pems).variables.org: the spec has no such variable (organization)",
        "tenants.json: tenants[2](id=big).page_size: at most 100 for this source",
        "tenants.json: tenants[3](id=nofile).spec: 'nowhere/spec.json' is not usable:",
    ], text
    assert "spec.json: cannot read" in text


@pytest.mark.parametrize(("tenant", "message"), [
    ({"id": "a", "name": "A", "client_id": "c", "client_secret": "s"}, "fhir_base_url: Field required"),
    ({"id": "a", "name": "A", "fhir_base_url": "http://h/main", "client_id": "c", "client_secret": "s",
      "spec": "cliniko"}, 'spec: only for a rest tenant; add "source": "rest"'),
    ({"id": "a", "name": "A", "source": "rest"}, "spec: Field required"),
    ({"id": "a", "name": "A", "source": "rest", "spec": "cliniko", "fhir_base_url": "http://h/main"},
     "fhir_base_url: only for a fhir tenant"),
])
def test_source_kind_mistakes_say_what_to_change(tenant: dict[str, object], message: str) -> None:
    with pytest.raises(SettingsError) as caught:
        parse_tenants(json.dumps([tenant]), source="f")
    assert str(caught.value).startswith(f"f: tenants[0](id=a): {message}"), str(caught.value)
