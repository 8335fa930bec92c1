"""callbacks: the outbox of status changes for the rows' callback url

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-02 15:00:00
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0014'
down_revision = '0013'
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')
_DUE = sa.text('next_attempt_at IS NOT NULL')


def upgrade() -> None:
    op.create_table('callback',
    sa.Column('event_id', _ID, autoincrement=False, nullable=False),
    sa.Column('message_id', _ID, nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('next_attempt_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('claimed_by', sa.String(length=64), nullable=True),
    sa.Column('claimed_until', sa.DateTime(timezone=True), nullable=True),
    sa.Column('last_error', sa.Text(), nullable=False),
    sa.Column('response_status', sa.Integer(), nullable=True),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('event_id')
    )
    op.create_index('ix_callback_due', 'callback', ['next_attempt_at'], unique=False, sqlite_where=_DUE, postgresql_where=_DUE)
    op.create_index('ix_callback_message_due', 'callback', ['message_id', 'event_id'], unique=False,
                    sqlite_where=_DUE, postgresql_where=_DUE)


def downgrade() -> None:
    op.drop_index('ix_callback_message_due', table_name='callback')
    op.drop_index('ix_callback_due', table_name='callback')
    op.drop_table('callback')
