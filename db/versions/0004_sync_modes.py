"""sync_runs.mode: the tenant's sync mode a run belongs to (a named subset of entities on its own schedule)

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03 13:50:00
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('sync_runs', sa.Column('mode', sa.String(length=32), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('sync_runs') as batch:
        batch.drop_column('mode')
