"""Run the real `securemsg serve` process for tests, and talk to it over real sockets."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
import uuid
from collections.abc import Coroutine, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import httpx

from securemsg.server.admin import AdminService
from securemsg.server.passwords import PasswordHashing
from securemsg.settings import Settings
from securemsg.storage.accounts import Role
from securemsg.storage.database import Database

# Cheap Argon2 parameters for tests that are not about hashing cost; tests that are override them.
FAST_ARGON2 = {"argon2_time_cost": 1, "argon2_memory_kib": 1024}
FAST_HASHING = {"SECUREMSG_" + name.upper(): str(value) for name, value in FAST_ARGON2.items()}
PASSWORD = "correct horse battery"

T = TypeVar("T")


def run_blocking(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run `coroutine` on its own event loop in a helper thread: callable from synchronous
    fixtures and from inside a test's running loop alike."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


async def provision(
    database_url: str,
    accounts: Mapping[str, str],
    conversations: Sequence[tuple[str, str]] = (),
    *,
    password: str = PASSWORD,
    argon2: Mapping[str, int] = FAST_ARGON2,
) -> tuple[dict[str, uuid.UUID], list[uuid.UUID]]:
    """Create accounts (username -> role) and (therapist, client) conversations on the server's
    database through `AdminService`, the code behind `securemsg account create` and
    `conversation create`, without a process start per call (tests/e2e/test_admin_cli.py runs
    the commands themselves). Returns the account ids by username and the conversation ids."""
    database = Database.open(database_url)
    hashing = PasswordHashing(Settings(**argon2))  # type: ignore[arg-type]
    try:
        admin = AdminService(database, hashing, max_password_bytes=1024)
        now_ms = int(time.time() * 1000)
        ids = {
            username: (await admin.create_account(username, Role(role), password, now_ms=now_ms)).id
            for username, role in accounts.items()
        }
        made = [
            await admin.create_conversation(therapist, client, now_ms=now_ms)
            for therapist, client in conversations
        ]
        return ids, made
    finally:
        hashing.close()
        await database.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclasses.dataclass
class ServerProcess:
    data_dir: Path
    database_url: str
    env: dict[str, str]
    port: int = 0
    process: subprocess.Popen[bytes] | None = None
    exit_code: int | None = None
    tls_ca: str | None = None  # the certificate it serves (start(tls_cert=...)): https, wss
    log_path: Path = dataclasses.field(init=False)

    def __post_init__(self) -> None:
        self.log_path = self.data_dir / "server.log"

    @property
    def http_url(self) -> str:
        return f"{'https' if self.tls_ca else 'http'}://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"{'wss' if self.tls_ca else 'ws'}://127.0.0.1:{self.port}/v1/ws"

    def cli(
        self, *args: str, stdin: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "securemsg",
                *args,
                "--data-dir",
                str(self.data_dir),
                "--database-url",
                self.database_url,
            ],
            input=stdin,
            capture_output=True,
            text=True,
            env=self.env,
            timeout=60,
            check=False,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"securemsg {' '.join(args)} failed: {result.stderr}")
        return result

    def create_account(self, username: str, role: str, password: str = PASSWORD) -> str:
        ids, _ = run_blocking(provision(self.database_url, {username: role}, password=password))
        return str(ids[username])

    def create_conversation(self, therapist: str, client: str) -> str:
        _, (conversation,) = run_blocking(provision(self.database_url, {}, [(therapist, client)]))
        return str(conversation)

    def start(self, **settings: Any) -> None:
        self.port = free_port()
        env = dict(self.env)
        for key, value in settings.items():
            env["SECUREMSG_" + key.upper()] = str(value)
        self.tls_ca = str(settings["tls_cert"]) if settings.get("tls_cert") else None
        verify = ssl.create_default_context(cafile=self.tls_ca) if self.tls_ca else True
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "securemsg",
                    "serve",
                    "--port",
                    str(self.port),
                    "--data-dir",
                    str(self.data_dir),
                    "--database-url",
                    self.database_url,
                    "--keys-dir",
                    str(self.data_dir / "keys"),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"server exited early:\n{self.log()}")
            with contextlib.suppress(httpx.HTTPError):
                health = httpx.get(self.http_url + "/healthz", timeout=1, verify=verify)
                if health.status_code == 200:
                    return
            time.sleep(0.05)
        raise AssertionError(f"server did not become healthy:\n{self.log()}")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.exit_code = self.process.returncode
        self.process = None

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def login(self, username: str, password: str = PASSWORD, **headers: str) -> str:
        response = httpx.post(
            self.http_url + "/v1/login",
            json={"username": username, "password": password},
            headers=headers,
            timeout=10,
        )
        assert response.status_code == 200, response.text
        return str(response.json()["token"])


@contextlib.contextmanager
def running_server(data_dir: Path, database_url: str, **settings: Any) -> Iterator[ServerProcess]:
    """The real server on `data_dir` (made if missing) and `database_url`, with these settings
    (SECUREMSG_* in its environment); stopped on exit."""
    data_dir.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SECUREMSG_")}
    env.update(FAST_HASHING)
    server = ServerProcess(data_dir=data_dir, database_url=database_url, env=env)
    server.start(**settings)
    try:
        yield server
    finally:
        server.stop()
