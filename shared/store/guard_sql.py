"""The version guard (shared.store.guard.decide) as a SQL condition, for every dialect's write:
imported by upsert and by the per-dialect modules alike, so neither has to import the other late."""
from __future__ import annotations

from typing import Any

from sqlalchemy import and_, func, literal_column, or_
from sqlalchemy.sql import ColumnElement


def guard_condition(target: Any, incoming: Any, *, tombstones: bool) -> ColumnElement[bool]:
    """The SQL form of guard.decide: true when ``incoming`` may overwrite ``target``."""
    if tombstones:
        return and_(target.deleted_at.is_(None), incoming.source_updated_at >= target.source_updated_at)
    none: ColumnElement[int] = literal_column("-1")  # a literal, not a parameter: the fast paths bind columns only
    t_seq = func.coalesce(target.source_version_seq, none)
    i_seq = func.coalesce(incoming.source_version_seq, none)
    same_time = incoming.source_updated_at == target.source_updated_at
    return or_(
        incoming.source_updated_at > target.source_updated_at,
        and_(same_time, i_seq > t_seq),
        and_(same_time, i_seq == t_seq, target.deleted_at.is_(None),
             incoming.content_hash != target.content_hash),
    )
