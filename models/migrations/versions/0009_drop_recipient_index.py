"""drop the message recipient index, which no query can use

History finds a subscriber's messages by a fragment of the number (LIKE '%…%'), which a B-tree index
cannot serve; the index only cost every stored message a random-order insert (about a fifth of
SQLite's time storing a task file's messages).

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-26 12:10:00
"""
from __future__ import annotations

from alembic import op

revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index('ix_message_recipient', table_name='message')


def downgrade() -> None:
    op.create_index('ix_message_recipient', 'message', ['recipient'], unique=False)
