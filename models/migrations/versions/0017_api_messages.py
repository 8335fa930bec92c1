"""api messages: API tasks per token and day, unique message ids per token, stored Idempotency-Keys

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-04 10:00:00
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0017'
down_revision = '0016'
branch_labels = None
depends_on = None

_KEYED = sa.text('unique_key IS NOT NULL')


def upgrade() -> None:
    with op.batch_alter_table('notification_task', schema=None) as batch_op:
        batch_op.add_column(sa.Column('api_token_id', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('api_day', sa.String(length=10), nullable=True))
    # An index, not a constraint: SQLite adds one without copying the table.
    op.create_index('uq_notification_task_api_day', 'notification_task', ['api_token_id', 'api_day'], unique=True)
    with op.batch_alter_table('message', schema=None) as batch_op:
        batch_op.add_column(sa.Column('unique_key', sa.String(length=64), nullable=True))
    op.create_index('uq_message_unique_key', 'message', ['unique_key', 'step'], unique=True,
                    sqlite_where=_KEYED, postgresql_where=_KEYED)
    op.create_table('api_request',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('api_token_id', sa.Integer(), nullable=False),
    sa.Column('key', sa.String(length=255), nullable=False),
    sa.Column('request_hash', sa.String(length=64), nullable=False),
    sa.Column('status_code', sa.Integer(), nullable=False),
    sa.Column('response', sa.Text(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['api_token_id'], ['api_token.id']),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('api_token_id', 'key', name='uq_api_request_key'),
    )


def downgrade() -> None:
    op.drop_table('api_request')
    op.drop_index('uq_message_unique_key', table_name='message')
    with op.batch_alter_table('message', schema=None) as batch_op:
        batch_op.drop_column('unique_key')
    op.drop_index('uq_notification_task_api_day', table_name='notification_task')
    with op.batch_alter_table('notification_task', schema=None) as batch_op:
        batch_op.drop_column('api_day')
        batch_op.drop_column('api_token_id')
