"""Run the real `securemsg serve` process for tests, and talk to it over real sockets."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

# Cheap Argon2 parameters for tests that are not about hashing cost; tests that are override them.
FAST_HASHING = {
    "SECUREMSG_ARGON2_TIME_COST": "1",
    "SECUREMSG_ARGON2_MEMORY_KIB": "1024",
}
PASSWORD = "correct horse battery"


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
    log_path: Path = dataclasses.field(init=False)

    def __post_init__(self) -> None:
        self.log_path = self.data_dir / "server.log"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/v1/ws"

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
        out = self.cli("account", "create", "--role", role, username, stdin=password + "\n").stdout
        return out.strip().rsplit("(", 1)[1].rstrip(")")

    def create_conversation(self, therapist: str, client: str) -> str:
        return (
            self.cli("conversation", "create", therapist, client).stdout.strip().rsplit(" ", 1)[1]
        )

    def start(self, **settings: Any) -> None:
        self.port = free_port()
        env = dict(self.env)
        for key, value in settings.items():
            env["SECUREMSG_" + key.upper()] = str(value)
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
                if httpx.get(self.http_url + "/healthz", timeout=1).status_code == 200:
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
    env = {k: v for k, v in os.environ.items() if not k.startswith("SECUREMSG_")}
    env.update(FAST_HASHING)
    server = ServerProcess(data_dir=data_dir, database_url=database_url, env=env)
    server.start(**settings)
    try:
        yield server
    finally:
        server.stop()
