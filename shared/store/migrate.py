"""Run the alembic migrations from code (make run, the CLI, tests), then bring the tables REST
specs declare up to date (shared/store/declared.py): created, columns added, never dropped."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from alembic import command
from alembic.config import Config

from shared.settings import Settings, TenantConfig
from shared.store.declared import declare, ensure_tables
from shared.store.engine import create_store_engine

ROOT = Path(__file__).resolve().parents[2]


def alembic_config(database_url: str) -> Config:
    config = Config(str(ROOT / "alembic.ini"))
    config.set_main_option("script_location", str(ROOT / "db"))
    config.attributes["database_url"] = database_url
    config.attributes["configure_logging"] = False
    return config


def migrate(settings: Settings, revision: str = "head", *, tenants: list[TenantConfig] | None = None,
            report: Callable[[str], None] = print) -> list[str]:
    """Migrate to ``revision``, then the declared tables of the tenants' specs (the settings'
    tenants unless given). Returns what was done to declared tables, one line each; ``report``
    hears what was left alone (a column whose type the spec changed)."""
    command.upgrade(alembic_config(settings.database_url), revision)
    if revision != "head":
        return []
    specs = {t.spec: t.rest_spec() for t in (settings.load_tenants() if tenants is None else tenants)
             if not t.is_fhir}
    tables = declare(specs.values())
    if not tables:
        return []
    engine = create_store_engine(settings)
    try:
        return ensure_tables(engine, tables, report)
    finally:
        engine.dispose()
