"""`securemsg serve --tls-cert --tls-key` (settings tls_cert, tls_key): HTTPS and WSS on the port,
against the real server process with a self-signed certificate made by the `openssl` command."""

from __future__ import annotations

import json
import shutil
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.server import PASSWORD, ServerProcess, running_server
from tests.support.ws import open_socket, recv_json


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key (PEM files)."""
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command on PATH to make a self-signed certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1"),
            *("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"),
            *("-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return cert, key


@pytest.fixture
def tls_server(
    tmp_path: Path, sqlite_url: str, certificate: tuple[Path, Path]
) -> Iterator[ServerProcess]:
    cert, key = certificate
    with running_server(tmp_path / "data", sqlite_url, tls_cert=cert, tls_key=key) as server:
        yield server


async def test_tls_settings_serve_https_and_wss_and_refuse_plain_http(
    tls_server: ServerProcess, certificate: tuple[Path, Path]
) -> None:
    cert, _ = certificate
    trusting = ssl.create_default_context(cafile=str(cert))
    health = httpx.get(tls_server.http_url + "/healthz", verify=trusting, timeout=10)
    assert health.status_code == 200 and health.json()["status"] == "ok"
    # The server presents that very certificate: a client with only the public CAs refuses it.
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        httpx.get(tls_server.http_url + "/healthz", trust_env=False, timeout=10)
    # Plain HTTP to the TLS port gets no answer.
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://127.0.0.1:{tls_server.port}/healthz", timeout=10)

    tls_server.create_account("carl", "client")
    login = httpx.post(
        tls_server.http_url + "/v1/login",
        json={"username": "carl", "password": PASSWORD},
        verify=trusting,
        timeout=10,
    )
    assert login.status_code == 200, login.text
    ws = await open_socket(tls_server.ws_url, token=login.json()["token"], ssl=trusting)
    assert (await recv_json(ws))["type"] == "ready"
    await ws.send(json.dumps({"type": "ping"}))
    assert await recv_json(ws) == {"type": "pong"}
    await ws.close()
