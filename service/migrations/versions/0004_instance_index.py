"""The QIDO-RS search index of instances, the `viewer` role, and the original of a de-identified
copy.

Revision ID: 0004_instance_index
Revises: 0003_sr_outbox
Create Date: 2026-12-04

Roles are stored as text without a CHECK constraint, so the new `viewer` role needs no DDL.
Instances stored before this revision are indexed by `radreport admin reindex`.
"""

import sqlalchemy as sa
from alembic import op

revision = "0004_instance_index"
down_revision = "0003_sr_outbox"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("instances") as batch:
        batch.add_column(sa.Column("original_sha256", sa.String(length=64), nullable=True))
    op.create_table(
        "instance_index",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("instance_id", sa.Integer(), sa.ForeignKey("instances.id"), nullable=False),
        sa.Column("study_id", sa.String(length=36), sa.ForeignKey("studies.id"), nullable=False),
        sa.Column("study_uid", sa.String(length=64), nullable=False),
        sa.Column("series_uid", sa.String(length=64), nullable=False),
        sa.Column("sop_uid", sa.String(length=64), nullable=False),
        sa.Column("sop_class_uid", sa.String(length=64), nullable=False),
        sa.Column("transfer_syntax_uid", sa.String(length=64), nullable=False),
        sa.Column("patient_id", sa.String(length=64), nullable=True),
        sa.Column("patient_name", sa.String(length=200), nullable=True),
        sa.Column("study_date", sa.String(length=8), nullable=True),
        sa.Column("study_time", sa.String(length=16), nullable=True),
        sa.Column("accession_number", sa.String(length=16), nullable=True),
        sa.Column("study_description", sa.String(length=64), nullable=True),
        sa.Column("modality", sa.String(length=16), nullable=True),
        sa.Column("series_number", sa.Integer(), nullable=True),
        sa.Column("instance_number", sa.Integer(), nullable=True),
        sa.Column("header", sa.JSON(), nullable=False),
        sa.Column("indexed_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("instance_id"),
        sa.UniqueConstraint("sop_uid"),
    )
    op.create_index("ix_instance_index_study", "instance_index", ["study_uid", "series_uid"])
    op.create_index("ix_instance_index_patient", "instance_index", ["patient_id"])
    op.create_index("ix_instance_index_date", "instance_index", ["study_date"])
    op.create_index("ix_instance_index_accession", "instance_index", ["accession_number"])


def downgrade() -> None:
    for name in ("ix_instance_index_accession", "ix_instance_index_date",
                 "ix_instance_index_patient", "ix_instance_index_study"):
        op.drop_index(name, table_name="instance_index")
    op.drop_table("instance_index")
    with op.batch_alter_table("instances") as batch:
        batch.drop_column("original_sha256")
