"""rate limit windows shared by gateway replicas

Revision ID: 0002_i13a
Revises: 0001
Create Date: 2026-12-05
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0002_i13a'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('rate_limit_windows',
    sa.Column('bucket', sa.String(length=128), nullable=False),
    sa.Column('window_start', sa.BigInteger(), nullable=False),
    sa.Column('count', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('bucket', 'window_start')
    )


def downgrade() -> None:
    op.drop_table('rate_limit_windows')
