"""provider parts: each part of a multipart SMS with its own SMSC id and status

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-02 15:00:00
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0015'
down_revision = '0014'
branch_labels = None
depends_on = None

_BIGINT_ID = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')


def upgrade() -> None:
    op.create_table('provider_part',
    sa.Column('id', _BIGINT_ID, nullable=False, autoincrement=True),
    sa.Column('provider', sa.String(length=32), nullable=False),
    sa.Column('provider_message_id', sa.String(length=128), nullable=False),
    sa.Column('message_id', _BIGINT_ID, nullable=False),
    sa.Column('part', sa.Integer(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('status_description', sa.Text(), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['message_id'], ['message.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('provider', 'provider_message_id', name='uq_provider_part_id')
    )
    with op.batch_alter_table('provider_part', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_provider_part_message_id'), ['message_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('provider_part', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_provider_part_message_id'))
    op.drop_table('provider_part')
