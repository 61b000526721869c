"""Reports remember which findings of their AI draft raised their priority (TRIAGE_FINDINGS).

Revision ID: 0006_report_triage
Revises: 0005_api_key_expiry
Create Date: 2026-12-04
"""

import sqlalchemy as sa
from alembic import op

revision = "0006_report_triage"
down_revision = "0005_api_key_expiry"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("reports", schema=None) as batch_op:
        batch_op.add_column(sa.Column("triage", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("reports", schema=None) as batch_op:
        batch_op.drop_column("triage")
