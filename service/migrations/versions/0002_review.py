"""Review: sign-in tokens, e-signatures, draft scores, offline evaluations; append-only guards.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27

Append-only (21 CFR 11.10(e)): triggers refuse UPDATE and DELETE of report versions, audit events
and signatures, and any change of a draft's text, bundle or study, on SQLite and PostgreSQL alike.
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

#: table -> the trigger's event clause; drafts stay updatable for their findings/scored_at only.
APPEND_ONLY = {
    "report_versions": "UPDATE OR DELETE",
    "audit_events": "UPDATE OR DELETE",
    "signatures": "UPDATE OR DELETE",
    "drafts": "UPDATE OF text, bundle_id, study_id OR DELETE",
}


def upgrade() -> None:
    with op.batch_alter_table("reports") as batch:
        batch.add_column(sa.Column("claimed_at", sa.DateTime(), nullable=True))
        batch.add_column(sa.Column("updated_at", sa.DateTime(), nullable=True))
        batch.add_column(sa.Column("rejected_reason", sa.Text(), nullable=True))
    op.create_table(
        "login_tokens",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), sa.ForeignKey("users.id"), nullable=False),
        sa.Column("token_sha256", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=False),
        sa.Column("idle_s", sa.Integer(), nullable=False),
        sa.Column("last_seen", sa.DateTime(), nullable=False),
        sa.Column("revoked_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("token_sha256"),
    )
    op.create_index("ix_login_tokens_user_id", "login_tokens", ["user_id"])
    op.create_table(
        "signatures",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("report_id", sa.String(length=36), sa.ForeignKey("reports.id"), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("signer_id", sa.Integer(), sa.ForeignKey("users.id"), nullable=False),
        sa.Column("signer_name", sa.String(length=200), nullable=False),
        sa.Column("meaning", sa.String(length=32), nullable=False),
        sa.Column("signed_at", sa.DateTime(), nullable=False),
        sa.Column("content_sha256", sa.String(length=64), nullable=False),
        sa.Column(
            "amends_signature_id", sa.Integer(), sa.ForeignKey("signatures.id"), nullable=True
        ),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("previous_seal", sa.String(length=64), nullable=True),
        sa.Column("seal", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("report_id", "version", name="uq_signature_report_version"),
    )
    op.create_index("ix_signatures_report_id", "signatures", ["report_id"])
    op.create_table(
        "draft_scores",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("report_id", sa.String(length=36), sa.ForeignKey("reports.id"), nullable=False),
        sa.Column("draft_id", sa.String(length=36), sa.ForeignKey("drafts.id"), nullable=False),
        sa.Column("bundle_id", sa.String(length=200), nullable=False),
        sa.Column("signature_id", sa.Integer(), sa.ForeignKey("signatures.id"), nullable=False),
        sa.Column("signed_version", sa.Integer(), nullable=False),
        sa.Column("draft_created_at", sa.DateTime(), nullable=False),
        sa.Column("signed_at", sa.DateTime(), nullable=False),
        sa.Column("draft_to_sign_s", sa.Float(), nullable=False),
        sa.Column("unchanged", sa.Boolean(), nullable=False),
        sa.Column("edit_distance", sa.Integer(), nullable=False),
        sa.Column("edit_distance_words", sa.Integer(), nullable=False),
        sa.Column("normalized_edit_distance", sa.Float(), nullable=False),
        sa.Column("metrics", sa.JSON(), nullable=False),
        sa.Column("draft_labels", sa.JSON(), nullable=False),
        sa.Column("signed_labels", sa.JSON(), nullable=False),
        sa.Column("scored_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("report_id"),
    )
    op.create_index("ix_draft_scores_bundle_id", "draft_scores", ["bundle_id"])
    op.create_index("ix_draft_scores_signed_at", "draft_scores", ["signed_at"])
    op.create_table(
        "evaluations",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column(
            "state",
            sa.Enum("queued", "running", "succeeded", "failed", name="evaluation_state",
                    native_enum=False, length=20),
            nullable=False,
        ),
        sa.Column("bundle_dir", sa.Text(), nullable=False),
        sa.Column("data_dir", sa.Text(), nullable=False),
        sa.Column("split", sa.String(length=32), nullable=False),
        sa.Column("options", sa.JSON(), nullable=False),
        sa.Column("phase", sa.String(length=32), nullable=True),
        sa.Column("done", sa.Integer(), nullable=False),
        sa.Column("total", sa.Integer(), nullable=True),
        sa.Column("out_dir", sa.Text(), nullable=True),
        sa.Column("results", sa.JSON(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("worker", sa.String(length=200), nullable=True),
        sa.Column("created_by", sa.Integer(), sa.ForeignKey("users.id"), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("started_at", sa.DateTime(), nullable=True),
        sa.Column("finished_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_evaluations_state", "evaluations", ["state"])
    _append_only_triggers()


def _append_only_triggers() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "postgresql":
        op.execute(
            "CREATE FUNCTION rr_append_only() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            "RAISE EXCEPTION 'table % is append-only: its rows are never changed or deleted', "
            "TG_TABLE_NAME; END $$"
        )
        for table, events in APPEND_ONLY.items():
            op.execute(f"CREATE TRIGGER {table}_append_only BEFORE {events} ON {table} "
                       "FOR EACH ROW EXECUTE FUNCTION rr_append_only()")
    elif dialect == "sqlite":
        for table, events in APPEND_ONLY.items():
            for event in events.split(" OR "):
                name = f"{table}_append_only_{event.split()[0].lower()}"
                op.execute(f"CREATE TRIGGER {name} BEFORE {event} ON {table} BEGIN "
                           f"SELECT RAISE(ABORT, 'table {table} is append-only: its rows are never "
                           "changed or deleted'); END")


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    for table, events in APPEND_ONLY.items():
        if dialect == "postgresql":
            op.execute(f"DROP TRIGGER IF EXISTS {table}_append_only ON {table}")
        elif dialect == "sqlite":
            for event in events.split(" OR "):
                op.execute(f"DROP TRIGGER IF EXISTS {table}_append_only_{event.split()[0].lower()}")
    if dialect == "postgresql":
        op.execute("DROP FUNCTION IF EXISTS rr_append_only()")
    op.drop_table("evaluations")
    op.drop_table("draft_scores")
    op.drop_table("signatures")
    op.drop_table("login_tokens")
    with op.batch_alter_table("reports") as batch:
        batch.drop_column("rejected_reason")
        batch.drop_column("updated_at")
        batch.drop_column("claimed_at")
