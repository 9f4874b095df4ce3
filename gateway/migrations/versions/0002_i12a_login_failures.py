"""login failures: per-account and per-IP counters for login throttling

Revision ID: 0002_i12a
Revises: 0001
Create Date: 2026-12-05
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0002_i12a'
down_revision = '0002_i13a'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('login_failures',
    sa.Column('key', sa.String(length=400), nullable=False),
    sa.Column('failures', sa.Integer(), nullable=False),
    sa.Column('window_ends_at', sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint('key')
    )
    op.create_index('ix_login_failures_window_ends_at', 'login_failures', ['window_ends_at'])


def downgrade() -> None:
    op.drop_index('ix_login_failures_window_ends_at', table_name='login_failures')
    op.drop_table('login_failures')
