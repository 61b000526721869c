"""Start and stop a whole local system: Redis (private when REDIS_URL is unset), the API, workers.

Used by `make demo` / `make serve` (through `service.dev.demo`) and by the tests. Each process logs
to `<workdir>/logs/<name>.log`; workers can be supervised (restarted when they die, like a
container restart policy); the private Redis can be stopped and restarted on the same port.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from service.core.config import Settings
from service.core.db import migrate, session_scope
from service.ops.health import live_workers


def free_port() -> int:
    """A TCP port free on loopback right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(predicate, timeout: float, interval: float = 0.1, what: str = "condition") -> None:  # noqa: ANN001
    """Poll `predicate` until true; TimeoutError naming `what` otherwise."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except Exception:
            pass
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")


class PrivateRedis:
    """A redis-server of our own on a free port in a temp dir; never the shared one."""

    def __init__(self, workdir: Path, *, appendonly: bool = False) -> None:
        if shutil.which("redis-server") is None:
            raise RuntimeError("redis-server is not installed; set REDIS_URL or install Redis")
        self.dir = workdir / "redis"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.appendonly = appendonly
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start (or restart) the server on its port and wait until it answers."""
        log = open(self.dir / "redis.log", "ab")  # noqa: SIM115 - handed to the child
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
             "--dir", str(self.dir),
             "--save", "", "--appendonly", "yes" if self.appendonly else "no",
             "--maxmemory-policy", "noeviction"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        wait_for(self.ping, 15, what="private redis-server")

    def ping(self) -> bool:
        import redis

        client = redis.Redis(port=self.port, socket_timeout=0.5, socket_connect_timeout=0.5)
        try:
            return bool(client.ping())
        finally:
            client.close()

    def stop(self) -> None:
        """Stop the server (only the process we started, by its id)."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self.process = None


@dataclass
class ManagedProcess:
    """A child process of the system, its command and its log; `restart` makes it supervised."""

    name: str
    command: list[str]
    env: dict[str, str]
    log_path: Path
    restart: bool = False
    process: subprocess.Popen | None = None
    restarts: int = 0
    pids: list[int] = field(default_factory=list)

    def start(self) -> None:
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        self.process = subprocess.Popen(self.command, env=self.env, stdout=log,
                                        stderr=subprocess.STDOUT, start_new_session=True)
        self.pids.append(self.process.pid)

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def signal(self, signum: int) -> None:
        """Send a signal to this process's group (the worker and any pool children)."""
        if self.alive():
            os.killpg(self.process.pid, signum)

    def stop(self, timeout: float = 20) -> None:
        self.restart = False
        if not self.alive():
            return
        self.signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.signal(signal.SIGKILL)
            self.process.wait(5)


class LocalSystem:
    """Redis + API + workers on this machine, sharing one database and file store."""

    def __init__(
        self,
        workdir: Path,
        *,
        database_url: str | None = None,
        redis_url: str | None = None,
        model_bundle: Path | None = None,
        env: dict[str, str] | None = None,
        redis_appendonly: bool = False,
    ) -> None:
        self.workdir = Path(workdir)
        (self.workdir / "logs").mkdir(parents=True, exist_ok=True)
        self.redis: PrivateRedis | None = None
        # None: REDIS_URL from the environment, else a private server; "": always a private server.
        given_redis = os.environ.get("REDIS_URL") if redis_url is None else redis_url
        if not given_redis:
            self.redis = PrivateRedis(self.workdir, appendonly=redis_appendonly)
        self.redis_url = given_redis or (self.redis.url if self.redis else "")
        self.database_url = database_url or f"sqlite:///{(self.workdir / 'radreport.db').resolve()}"
        self.storage_dir = (self.workdir / "store").resolve()
        self.model_bundle = model_bundle
        self.extra_env = env or {}
        self.processes: list[ManagedProcess] = []
        self.api_url: str | None = None
        self._stop = threading.Event()
        self._supervisor: threading.Thread | None = None

    # -- environment ---------------------------------------------------------------------------

    def environment(self) -> dict[str, str]:
        """The environment every process of the system gets."""
        env = {**os.environ, "DATABASE_URL": self.database_url, "REDIS_URL": self.redis_url,
               "STORAGE_DIR": str(self.storage_dir), "PYTHONUNBUFFERED": "1", **self.extra_env}
        if self.model_bundle is not None:
            env["MODEL_BUNDLE"] = str(Path(self.model_bundle).resolve())
        return env

    def settings(self) -> Settings:
        """Settings equal to what the child processes read."""
        env = self.environment()
        keys = Settings.model_fields.keys()
        return Settings(**{k: env[k.upper()] for k in keys
                           if k.upper() in env and env[k.upper()] != ""})

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self, *, api: bool = True, workers: list[str] | None = None) -> LocalSystem:
        """Start Redis (if private), migrate, then the API and the given workers (queue lists)."""
        if self.redis is not None:
            self.redis.start()
        self.storage_dir.mkdir(parents=True, exist_ok=True)
        migrate(self.database_url)
        if api:
            self.start_api()
        for queues in workers or []:
            self.start_worker(queues)
        self._supervisor = threading.Thread(target=self._supervise, daemon=True,
                                            name="radreport-supervisor")
        self._supervisor.start()
        return self

    def start_api(self, port: int | None = None) -> str:
        """Start `radreport serve` and wait for /healthz; returns the base URL."""
        port = port or free_port()
        command = [sys.executable, "-m", "radreport", "serve", "--host", "127.0.0.1",
                   "--port", str(port)]
        proc = self._spawn("api", command, restart=False)
        self.api_url = f"http://127.0.0.1:{port}"

        def healthy() -> bool:
            if not proc.alive():
                raise RuntimeError(f"the API exited; see {proc.log_path}")
            return httpx.get(self.api_url + "/healthz", timeout=1).status_code == 200

        wait_for(healthy, 60, what="the API /healthz")
        return self.api_url

    def start_scp(self, port: int | None = None, ae_title: str = "RADREPORT") -> int:
        """Start `radreport scp` (supervised) and wait until its DICOM port accepts connections;
        returns the port. Its calling AE titles come from SCP_CALLING_AETS in the environment."""
        port = port or free_port()
        proc = self._spawn("scp", [sys.executable, "-m", "radreport", "scp", "--host", "127.0.0.1",
                                   "--port", str(port), "--ae-title", ae_title], restart=True)

        def listening() -> bool:
            if not proc.alive():
                raise RuntimeError(f"the SCP exited; see {proc.log_path}")
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return True

        wait_for(listening, 60, what="the C-STORE SCP")
        return port

    def start_worker(
        self, queues: str, *, name: str | None = None, restart: bool = True
    ) -> ManagedProcess:
        """Start `radreport worker --queues ...` (supervised unless restart=False)."""
        name = name or f"worker-{queues.replace(',', '-')}-{len(self.processes)}"
        command = [sys.executable, "-m", "radreport", "worker", "--queues", queues]
        return self._spawn(name, command, restart=restart)

    def _spawn(self, name: str, command: list[str], *, restart: bool) -> ManagedProcess:
        log_path = self.workdir / "logs" / f"{name}.log"
        proc = ManagedProcess(name, command, self.environment(), log_path, restart)
        proc.start()
        self.processes.append(proc)
        return proc

    def _supervise(self) -> None:
        while not self._stop.wait(0.3):
            for proc in list(self.processes):
                if proc.restart and not proc.alive() and not self._stop.is_set():
                    proc.restarts += 1
                    proc.start()

    def wait_workers_ready(
        self, queues: tuple[str, ...] = ("ingest", "generate", "score"), timeout: float = 180
    ) -> None:
        """Wait until each queue has a live worker heartbeat (generate workers compile first)."""
        def ready() -> bool:
            with session_scope(self.database_url) as session:
                counts = live_workers(session, 30)
            return all(counts.get(q, 0) > 0 for q in queues)

        wait_for(ready, timeout, interval=0.3, what=f"live workers on {queues}")

    def logs_text(self) -> str:
        """Everything the system's processes logged so far."""
        logs = sorted((self.workdir / "logs").glob("*.log"))
        return "\n".join(p.read_text(errors="replace") for p in logs)

    def stop(self) -> None:
        """Stop workers, the API and the private Redis (only processes this system started)."""
        self._stop.set()
        if self._supervisor is not None:
            self._supervisor.join(2)
        for proc in reversed(self.processes):
            proc.stop()
        if self.redis is not None:
            self.redis.stop()

    def __enter__(self) -> LocalSystem:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
