"""message channel chains: step, send order, required, waits for

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-02 14:20:00
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('message', schema=None) as batch_op:
        batch_op.add_column(sa.Column('step', sa.Integer(), nullable=False, server_default='0'))
        batch_op.add_column(sa.Column('send_order', sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column('required', sa.Boolean(), nullable=False, server_default=sa.false()))
        batch_op.add_column(sa.Column('waits_for', sa.String(length=255), nullable=True))
    where = sa.text('waits_for IS NOT NULL')
    op.create_index('ix_message_task_waits', 'message', ['task_id', 'row'], unique=False, sqlite_where=where, postgresql_where=where)


def downgrade() -> None:
    op.drop_index('ix_message_task_waits', table_name='message')
    with op.batch_alter_table('message', schema=None) as batch_op:
        batch_op.drop_column('waits_for')
        batch_op.drop_column('required')
        batch_op.drop_column('send_order')
        batch_op.drop_column('step')
