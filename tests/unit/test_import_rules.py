"""Which way imports go (docs/architecture.md), checked on the source rather than trusted.

- No module of the deployed package imports another inside a function, except the few listed
  here with their reason (an optional SDK, a command's start-up time). A late import is how a
  cycle hides; a new one fails here: move it to the top, and if a cycle stops that, break the
  cycle (the shared name goes to a module both sides import).
- Only shared/blueprints imports azure.functions; shared/service and the pure modules import no
  blueprint; nothing in shared/ imports devtools (test_deployed_package runs that one).
"""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SHARED = ROOT / "shared"

# (module, imported module): why it is imported where it is used.
LATE_IMPORTS_ALLOWED = {
    ("shared.bootstrap", "shared.queues.azure"): "the storage SDK loads only where the queues are Azure's",
    ("shared.cli", "devtools.cli"): "optional: present in a checkout, not in the deployed package",
    ("shared.cli", "shared.cli"): "the __main__ guard runs the imported module's main",
}
# shared.cli's commands import what they run when they run: `tenants` and `--help` stay fast.
LATE_IMPORTS_ALLOWED_IN = {"shared.cli": ("shared.store.", "shared.importer.", "shared.source.", "shared.sync.")}


def modules() -> dict[str, ast.Module]:
    found = {}
    for path in sorted(SHARED.rglob("*.py")):
        name = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        found[name] = ast.parse(path.read_text(encoding="utf-8"))
    return found


def imported(node: ast.AST) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
        return [node.module]
    return []


def late_imports(tree: ast.Module) -> list[str]:
    """Imports inside a function or method body (top-level and TYPE_CHECKING ones are not late)."""
    late = []
    for function in ast.walk(tree):
        if isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for node in ast.walk(function):
                late.extend(imported(node))
    return late


def test_no_late_import_of_our_own_modules_but_the_listed_ones() -> None:
    unexplained = []
    for name, tree in modules().items():
        for target in late_imports(tree):
            if not target.startswith(("shared", "devtools")):
                continue
            if (name, target) in LATE_IMPORTS_ALLOWED or target.startswith(LATE_IMPORTS_ALLOWED_IN.get(name, ("-",))):
                continue
            unexplained.append(f"{name} imports {target} inside a function")
    assert unexplained == []


def test_only_the_blueprints_import_azure_functions_and_nothing_imports_devtools() -> None:
    for name, tree in modules().items():
        targets = [t for node in ast.walk(tree) for t in imported(node)]
        if not name.startswith("shared.blueprints"):
            assert not any(t.split(".")[0] == "azure" and t.startswith("azure.functions") for t in targets), name
        if name != "shared.cli":
            assert not any(t.startswith("devtools") for t in targets), name
        if name.startswith("shared.service"):
            assert not any(t.startswith("shared.blueprints") for t in targets), name


# The SQL a module may name: connection and engine types, errors. Building a statement (select,
# insert, a table of the schema) belongs in shared/store.
SQL_TYPES = {"Connection", "Engine"}
NO_SQL_PACKAGES = ("shared.sync", "shared.webhooks", "shared.source", "shared.service", "shared.reads",
                   "shared.metrics", "shared.fhir", "shared.rest")


def sql_names(tree: ast.Module) -> list[str]:
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "sqlalchemy":
            if node.module == "sqlalchemy.exc":
                continue
            names += [f"{node.module}.{a.name}" for a in node.names if a.name not in SQL_TYPES]
        elif isinstance(node, ast.ImportFrom) and node.module == "shared.store.schema":
            names += [f"shared.store.schema.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names += [a.name for a in node.names if a.name.split(".")[0] == "sqlalchemy"]
    return names


def test_only_the_store_speaks_sql() -> None:
    speaking = {name: found for name, tree in modules().items()
                if name.startswith(NO_SQL_PACKAGES) and (found := sql_names(tree))}
    assert speaking == {}
