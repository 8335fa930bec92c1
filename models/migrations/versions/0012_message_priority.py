"""message priority and the dispatch claim index

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-02 14:40:00
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0012'
down_revision = '0011'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('message', schema=None) as batch_op:
        batch_op.add_column(sa.Column('priority', sa.Integer(), nullable=False, server_default='1'))
    op.create_index('ix_message_claim', 'message', ['task_id', 'status', 'priority', 'id'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_message_claim', table_name='message')
    with op.batch_alter_table('message', schema=None) as batch_op:
        batch_op.drop_column('priority')
