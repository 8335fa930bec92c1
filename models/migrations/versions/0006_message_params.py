"""message params: every column of the full param list, unique message id, longer recipients

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-26 09:05:00
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('message', schema=None) as batch_op:
        batch_op.add_column(sa.Column('unique_message_id', sa.Text(), nullable=True))
        batch_op.add_column(sa.Column('params', sa.JSON(none_as_null=True), nullable=True))
        batch_op.alter_column('recipient', existing_type=sa.String(length=64), type_=sa.String(length=1024),
                              existing_nullable=False)


def downgrade() -> None:
    with op.batch_alter_table('message', schema=None) as batch_op:
        batch_op.alter_column('recipient', existing_type=sa.String(length=1024), type_=sa.String(length=64),
                              existing_nullable=False)
        batch_op.drop_column('params')
        batch_op.drop_column('unique_message_id')
