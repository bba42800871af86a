"""tenant metrics; webhook subscription bookkeeping for gap detection; silent-webhook warnings

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23 16:40:00
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import shared.store.types

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('tenant_metrics',
    sa.Column('tenant_id', sa.String(length=64), nullable=False),
    sa.Column('name', sa.String(length=80), nullable=False),
    sa.Column('value', sa.BigInteger(), nullable=False),
    sa.Column('updated_at', shared.store.types.UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('tenant_id', 'name', name=op.f('pk_tenant_metrics'))
    )
    op.create_table('webhook_subscriptions',
    sa.Column('tenant_id', sa.String(length=64), nullable=False),
    sa.Column('subscription', sa.String(length=200), nullable=False),
    sa.Column('resource_types', sa.String(length=200), nullable=False),
    sa.Column('highest_event', sa.BigInteger(), nullable=False),
    sa.Column('checked_through', sa.BigInteger(), nullable=False),
    sa.Column('gap_seen_at', shared.store.types.UTCDateTime(), nullable=True),
    sa.Column('gap_through', sa.BigInteger(), nullable=True),
    sa.Column('gaps', sa.BigInteger(), nullable=False),
    sa.Column('last_event_at', shared.store.types.UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('tenant_id', 'subscription', name=op.f('pk_webhook_subscriptions'))
    )
    op.create_table('webhook_events',
    sa.Column('tenant_id', sa.String(length=64), nullable=False),
    sa.Column('subscription', sa.String(length=200), nullable=False),
    sa.Column('event_number', sa.BigInteger(), nullable=False),
    sa.Column('received_at', shared.store.types.UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('tenant_id', 'subscription', 'event_number', name=op.f('pk_webhook_events'))
    )
    op.create_table('webhook_silence',
    sa.Column('tenant_id', sa.String(length=64), nullable=False),
    sa.Column('resource_type', sa.String(length=64), nullable=False),
    sa.Column('changes', sa.BigInteger(), nullable=False),
    sa.Column('first_seen_at', shared.store.types.UTCDateTime(), nullable=False),
    sa.Column('last_seen_at', shared.store.types.UTCDateTime(), nullable=False),
    sa.Column('last_run_id', sa.String(length=36), nullable=False),
    sa.Column('last_change_at', shared.store.types.UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('tenant_id', 'resource_type', name=op.f('pk_webhook_silence'))
    )


def downgrade() -> None:
    op.drop_table('webhook_silence')
    op.drop_table('webhook_events')
    op.drop_table('webhook_subscriptions')
    op.drop_table('tenant_metrics')
