"""in-flight index: the few messages handed to a provider with no answer recorded, per task and channel

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-02 18:40:00
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0018'
down_revision = '0017'
branch_labels = None
depends_on = None

_IN_FLIGHT = sa.text("handed_at IS NOT NULL AND provider_message_id IS NULL")


def upgrade() -> None:
    with op.batch_alter_table('message', schema=None) as batch_op:
        batch_op.create_index('ix_message_in_flight', ['task_id', 'channel'], unique=False,
                              sqlite_where=_IN_FLIGHT, postgresql_where=_IN_FLIGHT)


def downgrade() -> None:
    with op.batch_alter_table('message', schema=None) as batch_op:
        batch_op.drop_index('ix_message_in_flight')
