"""The example apps in examples/ talk to each other through a real `securemsg serve`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.client.conftest import Pair
from tests.support.server import PASSWORD

EXAMPLES = Path(__file__).parents[2] / "examples"


@pytest.mark.slow
def test_client_app_and_therapist_app_exchange_messages(pair: Pair) -> None:
    env = {**os.environ, "APP_PASSWORD": PASSWORD, "APP_PASSPHRASE": "example passphrase"}
    common = ["--server", pair.server.http_url]
    therapist = subprocess.Popen(
        [
            sys.executable,
            "-u",
            str(EXAMPLES / "therapist_app.py"),
            *common,
            "--username",
            "tess",
            "--keystore",
            str(pair.keystore("tess")),
            "--max-messages",
            "2",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    try:
        assert therapist.stdout is not None
        first = therapist.stdout.readline()
        assert first.startswith("conversation with carl"), first
        client = subprocess.run(
            [
                sys.executable,
                str(EXAMPLES / "client_app.py"),
                *common,
                "--username",
                "carl",
                "--keystore",
                str(pair.keystore("carl")),
                "--say",
                "Hello",
                "--say",
                "Bye for now",
            ],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
            check=False,
        )
        assert client.returncode == 0, client.stdout + client.stderr
        assert "<- \"Thank you, I read: 'Hello'\"" in client.stdout
        assert "<- \"Thank you, I read: 'Bye for now'\"" in client.stdout
        assert therapist.wait(timeout=30) == 0
        out = therapist.stdout.read()
        assert "<- Hello" in out and "<- Bye for now" in out and "!!" not in out
    finally:
        if therapist.poll() is None:
            therapist.kill()
            therapist.wait()
        if therapist.stdout is not None:
            therapist.stdout.close()
