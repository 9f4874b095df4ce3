"""dashboard: the account's default webhook URL, deleted outputs, webhook delivery attempts

Revision ID: 0002_i16
Revises: 0001
Create Date: 2026-12-05
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0002_i16'
down_revision = '0002_i12a'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('accounts') as batch:
        batch.add_column(sa.Column('webhook_url', sa.Text(), nullable=False, server_default=''))
    with op.batch_alter_table('jobs') as batch:
        batch.add_column(sa.Column('output_deleted_at', sa.DateTime(), nullable=True))
    op.create_table('webhook_attempts',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('account_id', sa.String(length=36), nullable=False),
    sa.Column('job_id', sa.String(length=36), nullable=True),
    sa.Column('webhook_id', sa.String(length=64), nullable=False),
    sa.Column('event', sa.String(length=32), nullable=False),
    sa.Column('url', sa.Text(), nullable=False),
    sa.Column('attempt', sa.Integer(), nullable=False),
    sa.Column('status_code', sa.Integer(), nullable=True),
    sa.Column('outcome', sa.String(length=16), nullable=False),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('attempted_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['account_id'], ['accounts.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('webhook_id', 'attempt', name='uq_webhook_attempts_attempt')
    )
    op.create_index('ix_webhook_attempts_account', 'webhook_attempts', ['account_id', 'id'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_webhook_attempts_account', table_name='webhook_attempts')
    op.drop_table('webhook_attempts')
    with op.batch_alter_table('jobs') as batch:
        batch.drop_column('output_deleted_at')
    with op.batch_alter_table('accounts') as batch:
        batch.drop_column('webhook_url')
