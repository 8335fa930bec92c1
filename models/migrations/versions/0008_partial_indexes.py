"""partial indexes on message columns that are empty at intake

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-26 10:50:00
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None

# name → (column that must be set, indexed columns)
PARTIAL = {
    'ix_message_task_poll': ('next_poll_at', ['task_id', 'next_poll_at']),
    'ix_message_provider_message_id': ('provider_message_id', ['provider_message_id']),
    'ix_message_template_id': ('template_id', ['template_id']),
}


def upgrade() -> None:
    for name, (present, columns) in PARTIAL.items():
        where = sa.text(f"{present} IS NOT NULL")
        op.drop_index(name, table_name='message')
        op.create_index(name, 'message', columns, unique=False, sqlite_where=where, postgresql_where=where)


def downgrade() -> None:
    for name, (_present, columns) in PARTIAL.items():
        op.drop_index(name, table_name='message')
        op.create_index(name, 'message', columns, unique=False)
