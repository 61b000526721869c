"""The outbox of reports sent to the PACS (DICOM SR) and FHIR: a row per document and destination.

Revision ID: 0003_sr_outbox
Revises: 0002
Create Date: 2026-12-04
"""

import sqlalchemy as sa
from alembic import op

revision = "0003_sr_outbox"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "outbox_messages",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("study_id", sa.String(length=36), sa.ForeignKey("studies.id"), nullable=False),
        sa.Column("report_id", sa.String(length=36), sa.ForeignKey("reports.id"), nullable=True),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("report_version", sa.Integer(), nullable=False),
        sa.Column("destination", sa.String(length=16), nullable=False),
        sa.Column("document_key", sa.String(length=128), nullable=False),
        sa.Column("media_type", sa.String(length=64), nullable=False),
        sa.Column("payload_sha256", sa.String(length=64), nullable=False),
        sa.Column("state", sa.Enum("pending", "sending", "delivered", "failed", name="outbox_state",
                                   native_enum=False, length=20), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("rejections", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(), nullable=False),
        sa.Column("enqueued_at", sa.DateTime(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("delivered_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("destination", "document_key", name="uq_outbox_destination_document"),
    )
    op.create_index("ix_outbox_lane", "outbox_messages", ["study_id", "destination", "state"])
    op.create_index("ix_outbox_due", "outbox_messages", ["state", "next_attempt_at"])


def downgrade() -> None:
    op.drop_index("ix_outbox_due", table_name="outbox_messages")
    op.drop_index("ix_outbox_lane", table_name="outbox_messages")
    op.drop_table("outbox_messages")
