"""message scheduling inputs: not before, own windows, candidate zones, window end

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-26 09:20:00
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('message', schema=None) as batch_op:
        batch_op.add_column(sa.Column('not_before', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('windows', sa.Text(), nullable=True))
        batch_op.add_column(sa.Column('time_zones', sa.Text(), nullable=True))
        batch_op.add_column(sa.Column('window_ends_at', sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('message', schema=None) as batch_op:
        batch_op.drop_column('window_ends_at')
        batch_op.drop_column('time_zones')
        batch_op.drop_column('windows')
        batch_op.drop_column('not_before')
