"""API keys may expire (`radreport admin create-key --expires-days`) and record when they were
last used.

Revision ID: 0005_api_key_expiry
Revises: 0004_instance_index
Create Date: 2026-12-04
"""

import sqlalchemy as sa
from alembic import op

revision = "0005_api_key_expiry"
down_revision = "0004_instance_index"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.add_column(sa.Column("expires_at", sa.DateTime(), nullable=True))
        batch_op.add_column(sa.Column("last_used_at", sa.DateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.drop_column("last_used_at")
        batch_op.drop_column("expires_at")
