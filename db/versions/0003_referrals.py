"""referrals: Halaxy's referrals (care plans) with their session limits, for the dashboard

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23 21:40:00
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import shared.store.types

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('referrals',
    sa.Column('tenant_id', sa.String(length=64), nullable=False),
    sa.Column('source_id', sa.String(length=64), nullable=False),
    sa.Column('source_version', sa.String(length=64), nullable=True),
    sa.Column('source_version_seq', sa.BigInteger(), nullable=True),
    sa.Column('source_updated_at', shared.store.types.UTCDateTime(), nullable=False),
    sa.Column('content_hash', sa.String(length=32), nullable=False),
    sa.Column('deleted_at', shared.store.types.UTCDateTime(), nullable=True),
    sa.Column('last_synced_at', shared.store.types.UTCDateTime(), nullable=False),
    sa.Column('client_id', sa.String(length=64), nullable=True),
    sa.Column('practitioner_id', sa.String(length=64), nullable=True),
    sa.Column('status', sa.String(length=16), nullable=True),
    sa.Column('name', sa.Unicode(length=200), nullable=True),
    sa.Column('starts_on', sa.Date(), nullable=True),
    sa.Column('ends_on', sa.Date(), nullable=True),
    sa.Column('session_limit', sa.Integer(), nullable=True),
    sa.Column('prior_sessions', sa.Integer(), nullable=True),
    sa.Column('preferred', sa.Boolean(), nullable=True),
    sa.PrimaryKeyConstraint('tenant_id', 'source_id', name=op.f('pk_referrals')),
    postgresql_with={'fillfactor': 85}
    )
    with op.batch_alter_table('referrals', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_referrals_client_id_tenant_id'), ['client_id', 'tenant_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('referrals', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_referrals_client_id_tenant_id'))
    op.drop_table('referrals')
