"""`radreport serve`, `radreport worker` and `radreport admin ...`: the service's commands."""

from __future__ import annotations

import os
import socket

import typer

admin_app = typer.Typer(help="Administer the service: API keys, migrations, reconciliation.",
                        no_args_is_help=True)


def serve(
    host: str = typer.Option("127.0.0.1", help="Interface to listen on."),
    port: int = typer.Option(8000, help="TCP port."),
    workers: int = typer.Option(1, help="API processes (uvicorn workers)."),
) -> None:
    """Run the API (migrations first); settings come from DATABASE_URL, REDIS_URL, STORAGE_DIR."""
    import uvicorn

    from service.core import logs
    from service.core.config import get_settings
    from service.core.db import migrate

    settings = get_settings()
    logs.configure(settings.log_level)
    settings.ensure_dirs()
    migrate(settings.database_url)
    if workers > 1:
        uvicorn.run("service.app:create_app", factory=True, host=host, port=port, workers=workers,
                    access_log=False, log_config=None)
    else:
        from service.app import create_app

        uvicorn.run(create_app(settings), host=host, port=port, access_log=False, log_config=None)


def worker(
    queues: str = typer.Option("ingest,generate,score", help="Comma-separated queues to consume."),
    concurrency: int = typer.Option(
        0, help="Processes for CPU queues (0: WORKER_CONCURRENCY). Ignored with generate."),
    name: str = typer.Option("", help="Worker node name (default: queues@host:pid)."),
) -> None:
    """Run a Celery worker. With `generate` it uses the solo pool (JAX is not fork-safe), loads
    MODEL_BUNDLE once and compiles its shape buckets before taking any task."""
    from service.core import logs
    from service.core.config import get_settings
    from service.core.queues import EVALUATE, OUTBOX, QUEUES

    settings = get_settings()
    logs.configure(settings.log_level)
    chosen = [q.strip() for q in queues.split(",") if q.strip()]
    unknown = set(chosen) - {*QUEUES, EVALUATE, OUTBOX}
    if unknown or not chosen:
        raise typer.BadParameter(f"unknown queues {sorted(unknown)}; use ingest, generate, score, "
                                 "evaluate, outbox")
    from service.worker.app import celery_app
    from service.worker.model import load_model

    if "generate" in chosen:
        model = load_model(settings, warmup=True)
        compile_s = sum(model.compile_s.values())
        typer.echo(f"model bundle {model.bundle_id} loaded in {model.load_s:.1f} s; "
                   f"buckets {model.buckets} compiled in {compile_s:.1f} s", err=True)
        pool, processes = "solo", 1
    elif "evaluate" in chosen:  # an offline evaluation loads a bundle with JAX: no fork after that
        pool, processes = "solo", 1
    else:
        pool, processes = "prefork", concurrency or settings.worker_concurrency
    node = name or f"{'+'.join(chosen)}@{socket.gethostname()}:{os.getpid()}"
    celery_app().worker_main([
        "worker", "--queues", ",".join(chosen), "--pool", pool, "--concurrency", str(processes),
        "--hostname", node, "--loglevel", settings.log_level,
        "--without-gossip", "--without-mingle", "--prefetch-multiplier", "1",
    ])


def scp(
    host: str = typer.Option("0.0.0.0", help="Interface to listen on."),
    port: int = typer.Option(11112, help="DICOM TCP port."),
    ae_title: str = typer.Option("RADREPORT", help="Our AE title (the called AE title)."),
) -> None:
    """Run the DICOM C-STORE listener: studies pushed by a PACS or a modality enter the same intake
    as STOW-RS. Only calling AE titles in SCP_CALLING_AETS may connect; a study goes to ingest when
    its association ends or after SCP_STUDY_IDLE_S without new instances."""
    import logging
    import signal
    import threading

    from service.core import logs
    from service.core.config import get_settings
    from service.core.db import migrate
    from service.dicomweb.scp import StoreSCP

    settings = get_settings()
    logs.configure(settings.log_level)
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)  # its INFO/DEBUG dumps quote headers
    settings.ensure_dirs()
    migrate(settings.database_url)
    try:
        listener = StoreSCP(settings, ae_title=ae_title).start(host, port)
    except ValueError as error:
        raise typer.BadParameter(str(error)) from None
    stopped = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stopped.set())
    typer.echo(f"C-STORE SCP {ae_title} listening on {host}:{listener.port}; calling AE titles: "
               f"{', '.join(listener.allowed) or 'none (every association refused)'}", err=True)
    stopped.wait()
    listener.stop()


@admin_app.command("create-key")
def create_key(
    role: str = typer.Option(..., help="uploader, radiologist, admin or viewer (QIDO-RS/WADO-RS)."),
    name: str = typer.Option(..., help="User (person or machine) the key belongs to."),
    expires_days: float | None = typer.Option(
        None, help="Days until the key stops working (default: until revoked)."),
) -> None:
    """Create an API key; prints the bearer token alone on stdout (only its hash is stored)."""
    from service.auth.api_keys import create_api_key
    from service.core.config import get_settings
    from service.core.db import migrate, session_scope
    from service.core.models import Role

    try:
        chosen = Role(role)
    except ValueError:
        roles = ", ".join(r.value for r in Role)
        raise typer.BadParameter(f"role must be one of {roles}") from None
    settings = get_settings()
    settings.ensure_dirs()
    migrate(settings.database_url)
    try:
        with session_scope(settings.database_url) as session:
            token = create_api_key(session, name=name, role=chosen, expires_days=expires_days)
    except ValueError as error:
        typer.echo(str(error), err=True)
        raise typer.Exit(1) from None
    typer.echo(token)


@admin_app.command("list-keys")
def list_keys() -> None:
    """List API keys (never the tokens): user, role, prefix, created, expires, last use, revoked."""
    from service.auth.api_keys import describe_api_keys
    from service.core.config import get_settings
    from service.core.db import migrate, session_scope

    settings = get_settings()
    migrate(settings.database_url)
    with session_scope(settings.database_url) as session:
        rows = describe_api_keys(session)
    typer.echo("\t".join(("user", "role", "prefix", "created", "expires", "last_used", "revoked")))
    for row in rows:
        typer.echo("\t".join(row))


@admin_app.command("revoke-keys")
def revoke_keys(name: str = typer.Option(..., help="User whose keys to revoke.")) -> None:
    """Revoke every API key of a user."""
    from service.auth.api_keys import revoke_api_keys
    from service.core.config import get_settings
    from service.core.db import session_scope

    with session_scope(get_settings().database_url) as session:
        count = revoke_api_keys(session, name=name)
    typer.echo(f"revoked {count} keys", err=True)


@admin_app.command("migrate")
def migrate_command() -> None:
    """Bring the database schema up to date (what the compose `migrate` service runs)."""
    from service.core.config import get_settings
    from service.core.db import migrate

    settings = get_settings()
    settings.ensure_dirs()
    migrate(settings.database_url)
    typer.echo("database schema is up to date", err=True)


@admin_app.command("reconcile")
def reconcile_command() -> None:
    """Re-enqueue unfinished work and due PACS deliveries once (the API does it periodically)."""
    from service.core import logs
    from service.core.config import get_settings
    from service.dicomweb import outbox
    from service.studies.reconcile import reconcile

    settings = get_settings()
    logs.configure(settings.log_level)
    typer.echo(str({**reconcile(settings), "outbox": outbox.resend_due(settings)}), err=True)


@admin_app.command("outbox-retry")
def outbox_retry_command(
    study: str = typer.Option("", help="Only this study's failed messages (its id)."),
) -> None:
    """Send failed PACS / FHIR deliveries again (after fixing why the destination refused them)."""
    from service.core.config import get_settings
    from service.core.db import session_scope
    from service.dicomweb import outbox

    settings = get_settings()
    with session_scope(settings.database_url) as session:
        count = outbox.retry_failed(session, actor="admin-cli", study_id=study or None)
    sent = outbox.resend_due(settings)
    typer.echo(f"{count} failed messages queued again; {sent} deliveries sent to the workers",
               err=True)


@admin_app.command("reindex")
def reindex_command() -> None:
    """Add the instances stored before the QIDO-RS index existed (migration 0004) to the index."""
    from service.core.config import get_settings
    from service.core.db import migrate, session_scope
    from service.core.storage import BlobStore
    from service.studies.index import reindex

    settings = get_settings()
    migrate(settings.database_url)
    total = 0
    while True:
        with session_scope(settings.database_url) as session:
            count = reindex(session, BlobStore(settings.storage_dir), limit=500)
        total += count
        if count == 0:
            break
    typer.echo(f"{total} instances indexed", err=True)


@admin_app.command("create-user")
def create_user_command(
    role: str = typer.Option(..., help="radiologist, admin, uploader or viewer."),
    name: str = typer.Option(
        ..., help="The person's user name (also the printed name on signatures)."),
    password_stdin: bool = typer.Option(
        False, "--password-stdin", help="Read the password from stdin (scripts)."),
) -> None:
    """Create a person's account with a password (argon2), or set a new one (for POST /v1/login)."""
    import sys

    from service.auth.accounts import AccountError, create_user
    from service.core.config import get_settings
    from service.core.db import migrate, session_scope
    from service.core.models import Role

    try:
        chosen = Role(role)
    except ValueError:
        roles = ", ".join(r.value for r in Role)
        raise typer.BadParameter(f"role must be one of {roles}") from None
    if password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = typer.prompt("password", hide_input=True, confirmation_prompt=True)
    settings = get_settings()
    settings.ensure_dirs()
    migrate(settings.database_url)
    try:
        with session_scope(settings.database_url) as session:
            create_user(session, name=name, role=chosen, password=password)
    except AccountError as error:
        typer.echo(str(error), err=True)
        raise typer.Exit(1) from None
    typer.echo(f"user {name} ({chosen.value}) can now sign in", err=True)


@admin_app.command("sign-out")
def sign_out_command(name: str = typer.Option(..., help="User to sign out everywhere.")) -> None:
    """Revoke every sign-in token of a user (API keys: revoke-keys)."""
    from service.auth.accounts import AccountError, revoke_logins
    from service.core.config import get_settings
    from service.core.db import session_scope

    try:
        with session_scope(get_settings().database_url) as session:
            count = revoke_logins(session, name=name)
    except AccountError as error:
        typer.echo(str(error), err=True)
        raise typer.Exit(1) from None
    typer.echo(f"revoked {count} sign-ins", err=True)


@admin_app.command("set-active")
def set_active_command(
    name: str = typer.Option(..., help="User to enable or disable."),
    active: bool = typer.Option(..., "--active/--disabled", help="Enable or disable the account."),
) -> None:
    """Enable or disable an account; a disabled account's keys and sign-ins stop working at once."""
    from service.auth.accounts import AccountError, set_active
    from service.core.config import get_settings
    from service.core.db import session_scope

    try:
        with session_scope(get_settings().database_url) as session:
            set_active(session, name=name, active=active)
    except AccountError as error:
        typer.echo(str(error), err=True)
        raise typer.Exit(1) from None


def register(app: typer.Typer) -> None:
    """Add `serve`, `worker`, `scp` and `admin` to the `radreport` CLI."""
    app.command("serve")(serve)
    app.command("worker")(worker)
    app.command("scp")(scp)
    app.add_typer(admin_app, name="admin")
