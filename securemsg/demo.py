"""`securemsg demo`: the whole system in one command, on a real server with a fresh data directory.

It starts `securemsg serve` on a free port, creates a therapist, a client, a supervisor and a
compliance officer with the CLI, lets the client and the therapist exchange end-to-end encrypted
messages through the SDK (the `--message` text included), then lets the therapist grant the
supervisor access: the client's app shows the grant, the supervisor reads the shared history and a
live message, and the grant ends, seen by both participants. It prints what each person saw next to
what the server stored: sizes and routing metadata, never content. The data directory is left
for inspection; the keystores in it are encrypted and no message text is written anywhere in it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx

from securemsg.client import (
    Client,
    ClientError,
    GrantEnded,
    GrantRejected,
    Message,
    RequestFailed,
    SupervisorGranted,
)

THERAPIST, CLIENT, SUPERVISOR = "dr-tess", "carl", "sam"
COMPLIANCE, APPROVER = "cora", "cole"  # two compliance officers: legal requests need both
DEFAULT_MESSAGE = "I slept better this week."
GRANT_SECONDS = 3600
E = TypeVar("E")


@dataclass(frozen=True)
class StoredEnvelope:
    sender: str  # the server knows which account a device belongs to
    sender_device: uuid.UUID
    recipients: int
    size_bytes: int
    sent_ms: int


def main(args: argparse.Namespace) -> int:
    data_dir = Path(args.data_dir) if args.data_dir else None
    return asyncio.run(run_demo(args.message, data_dir))


async def run_demo(message: str | None, data_dir: Path | None) -> int:
    """Run the demo; return the process exit code (0 on success)."""
    text = message or DEFAULT_MESSAGE
    directory = data_dir or Path(tempfile.mkdtemp(prefix="securemsg-demo-"))
    directory.mkdir(parents=True, exist_ok=True)
    if any(directory.iterdir()):
        print(f"securemsg demo: {directory} is not empty; give a fresh --data-dir", file=sys.stderr)
        return 2
    try:
        with _server(directory) as url:
            return await _exchange(url, directory, text)
    except (ClientError, OSError, subprocess.SubprocessError, RuntimeError) as error:
        print(f"securemsg demo: failed: {error}", file=sys.stderr)
        print(f"(data directory: {directory}; server log: {directory / 'server.log'})")
        return 1


async def _exchange(url: str, directory: Path, text: str) -> int:
    roles = {
        THERAPIST: "therapist",
        CLIENT: "client",
        SUPERVISOR: "supervisor",
        COMPLIANCE: "compliance",
        APPROVER: "compliance",
    }
    passwords = {name: secrets.token_urlsafe(12) for name in roles}
    for name, role in roles.items():
        _cli(directory, "account", "create", "--role", role, name, stdin=passwords[name])
    conversation = uuid.UUID(
        _cli(directory, "conversation", "create", THERAPIST, CLIENT).split()[-1]
    )
    print("securemsg demo")
    print(f"  server      {url}  (data directory {directory})")
    print(
        f"  accounts    therapist {THERAPIST}, client {CLIENT}, supervisor {SUPERVISOR},"
        f" compliance officers {COMPLIANCE} and {APPROVER}"
    )
    print(f"  paired      {THERAPIST} <-> {CLIENT} in conversation {conversation}\n")

    keystores = directory / "keystores"
    keystores.mkdir()

    def connect(name: str) -> Any:
        return Client.connect(
            url, keystore=keystores / f"{name}.keys", passphrase=passwords[name] + "-keystore"
        )

    script = [
        (CLIENT, "Hi, is now a good time to talk?"),
        (THERAPIST, "Yes. How has the week been?"),
        (CLIENT, text),
        (THERAPIST, "Thank you for telling me. Let's pick that up on Thursday."),
    ]
    views: dict[str, list[str]] = {THERAPIST: [], CLIENT: []}
    async with connect(THERAPIST) as tess, connect(CLIENT) as carl:
        await tess.login(THERAPIST, passwords[THERAPIST])
        await carl.login(CLIENT, passwords[CLIENT])
        people = {THERAPIST: tess, CLIENT: carl}
        for sender, line in script:
            receiver = CLIENT if sender == THERAPIST else THERAPIST
            sent = await people[sender].send(conversation, line)
            views[sender].append(f"  {_clock(sent.received_ms)}  me          {line}")
            got = await _next_message(people[receiver])
            views[receiver].append(
                f"  {_clock(got.sent_ms)}  {sender:<10}  {got.text}"
                f"   [signature verified, message #{got.counter} of that device]"
            )
        assert tess.account is not None and carl.account is not None
        number = carl.safety_number(tess.account)
        same = number == tess.safety_number(carl.account)
        async with connect(SUPERVISOR) as sam:
            await sam.login(SUPERVISOR, passwords[SUPERVISOR])
            supervisor_conversations = len(sam.conversations())
            supervision = await _supervise(tess, carl, sam, conversation)
        legal = await _legal_request(url, directory, passwords, conversation, carl)
    audit = _cli(directory, "audit", "verify", "--quiet", "--keys-dir", str(directory / "keys"))

    verdict = "the same on both devices" if same else "MISMATCH"
    print(f"  safety number {CLIENT} <-> {THERAPIST}:\n    {number}  ({verdict})\n")
    for person in (CLIENT, THERAPIST):
        print(f"What {person} saw (decrypted on {person}'s own device):")
        print("\n".join(views[person]), end="\n\n")
    print("What the server stored (ciphertext and routing metadata; it holds no key to read it):")
    for envelope in _stored(directory):
        print(
            f"  {_clock(envelope.sent_ms)}  from {envelope.sender:<8} (device"
            f" {str(envelope.sender_device)[:8]})"
            f"  {envelope.size_bytes:>5} bytes  wrapped for {envelope.recipients} device(s)"
        )
    print()
    print(
        f"Supervisor {SUPERVISOR} sees {supervisor_conversations} conversation(s):"
        " without a grant signed by the therapist there is no access.\n"
    )
    print("Supervision (a visible participant, for a bounded time, every read audited):")
    print("\n".join(supervision), end="\n\n")
    print("A legal request (dual control, every step audited, the export verifiable offline):")
    print("\n".join(legal), end="\n\n")
    print(f"The whole audit log, verified: {audit}")
    print(f"\nData directory left for inspection: {directory}")
    return 0


async def _supervise(tess: Client, carl: Client, sam: Client, conversation: uuid.UUID) -> list[str]:
    """The therapist grants the supervisor access; both read; the grant ends. What each saw."""
    assert sam.account is not None
    until_ms = int(time.time() * 1000) + GRANT_SECONDS * 1000
    grant = await tess.grant_supervisor(
        conversation, sam.account, until_ms=until_ms, include_history=True
    )
    lines = [
        f"  {_clock(grant.from_ms)}  {THERAPIST} granted {SUPERVISOR} access until"
        f" {_clock(grant.until_ms)}, history included   [signed by {THERAPIST}'s device]"
    ]
    shown = await _next_of(carl, SupervisorGranted)
    lines.append(
        f"  {_clock(shown.grant.from_ms)}  {CLIENT}'s app shows: {SUPERVISOR} can read this"
        f" conversation until {_clock(shown.grant.until_ms)}"
        f"   [grant signature verified on {CLIENT}'s device]"
    )
    await _next_of(tess, SupervisorGranted)
    verdict = await _grant_verdict(sam)
    if isinstance(verdict, GrantRejected):
        raise RuntimeError(f"{SUPERVISOR}'s device rejected the grant: {verdict.reason}")
    lines.extend(await _supervisor_reads(tess, carl, sam, conversation, grant.id))
    await tess.revoke_grant(grant.id)
    ended = [await _next_of(person, GrantEnded) for person in (carl, tess)]
    lines.append(
        f"  {_clock(ended[0].ended_ms)}  {THERAPIST} ended the grant ({ended[0].reason});"
        f" {CLIENT}'s and {THERAPIST}'s apps both show it ended"
    )
    try:
        await sam.history(conversation)
    except RequestFailed as refused:
        lines.append(
            f"  {SUPERVISOR} asks for the history again: refused by the server ({refused.code}),"
            " and the attempt is in the audit log"
        )
    else:
        raise RuntimeError("the server still gave the supervisor the history after the grant ended")
    return lines


async def _legal_request(
    url: str, directory: Path, passwords: dict[str, str], conversation: uuid.UUID, carl: Client
) -> list[str]:
    """Cora files a court order for the conversation, cole approves it, cora exports it; the
    bundle is verified offline and carl's accounting of disclosures lists it."""
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        tokens = {}
        for officer in (COMPLIANCE, APPROVER):
            login = await http.post(
                "/v1/login", json={"username": officer, "password": passwords[officer]}
            )
            tokens[officer] = {"Authorization": f"Bearer {_ok(login)['token']}"}
        filed = _ok(
            await http.post(
                "/v1/legal/requests",
                headers=tokens[COMPLIANCE],
                json={
                    "authority": "County Court",
                    "reference": "2026-CV-0142",
                    "legal_basis": "court order for records of the conversation",
                    "scope": {"conversation": str(conversation)},
                },
            )
        )
        path = f"/v1/legal/requests/{filed['id']}"
        lines = [
            f"  {_clock(filed['filed_ms'])}  {COMPLIANCE} filed request {filed['id'][:8]}"
            f" ({filed['authority']}, {filed['reference']})"
        ]
        own = await http.post(path + "/approve", headers=tokens[COMPLIANCE])
        lines.append(
            f"  {COMPLIANCE} tries to approve it herself: refused ({own.json()['error']['code']}),"
            " a second officer must decide"
        )
        approved = _ok(await http.post(path + "/approve", headers=tokens[APPROVER]))
        lines.append(f"  {_clock(approved['decided_ms'])}  {APPROVER} approved it")
        exported = _ok(await http.post(path + "/export", headers=tokens[COMPLIANCE]))
        bundle = _checked(await http.get(path + "/bundle", headers=tokens[COMPLIANCE]))
    bundle_path = directory / f"legal-export-{filed['id']}.json"
    bundle_path.write_bytes(bundle.content)
    lines.append(
        f"  {_clock(exported['exported_ms'])}  {COMPLIANCE} exported and downloaded it:"
        f" {bundle_path.name}, {len(bundle.content)} bytes of ciphertext, metadata and proofs"
    )
    verified = _cli(
        directory, "audit", "verify", "--quiet", "--export", str(bundle_path),
        "--keys-dir", str(directory / "keys"),
    )  # fmt: skip
    lines.append(f"  verified offline: {verified}")
    for entry in await carl.disclosures():
        lines.append(
            f"  {CLIENT}'s accounting of disclosures: {_clock(entry.date_ms)}  to"
            f" {entry.recipient}, for {entry.purpose}: {entry.description}"
        )
    return lines


def _checked(response: httpx.Response) -> httpx.Response:
    if response.status_code not in (200, 201):
        raise RuntimeError(f"{response.request.url.path}: HTTP {response.status_code}")
    return response


def _ok(response: httpx.Response) -> Any:
    """The JSON body of a successful answer."""
    return _checked(response).json()


async def _supervisor_reads(
    tess: Client, carl: Client, sam: Client, conversation: uuid.UUID, grant_id: uuid.UUID
) -> list[str]:
    shared = await tess.share_history(grant_id)
    history = await sam.history(conversation)
    lines = [
        f"  {SUPERVISOR} reads the history: {len(history)} message(s) that {THERAPIST}'s device"
        f" re-wrapped to {SUPERVISOR} ({shared} shared), each checked against its sender's"
        " signature:"
    ]
    names = {tess.account: THERAPIST, carl.account: CLIENT}
    for message in history:
        lines.append(
            f"    {_clock(message.sent_ms)}  {names.get(message.sender, '?'):<10}  {message.text}"
        )
    await carl.send(conversation, "Thank you. See you on Thursday.")
    live = await _next_message(sam)
    await _next_message(tess)
    lines.append(
        f"  {SUPERVISOR} reads live: {_clock(live.sent_ms)}  {names.get(live.sender, '?')}:"
        f" {live.text}   [encrypted by {CLIENT}'s app to {SUPERVISOR}'s device too]"
    )
    return lines


async def _grant_verdict(client: Client) -> SupervisorGranted | GrantRejected:
    async with asyncio.timeout(30):
        while True:
            event = await client.next_event()
            if isinstance(event, SupervisorGranted | GrantRejected):
                return event


async def _next_message(client: Client) -> Message:
    return await _next_of(client, Message)


async def _next_of(client: Client, kind: type[E]) -> E:
    async with asyncio.timeout(30):
        while True:
            event = await client.next_event()
            if isinstance(event, kind):
                return event


def _stored(directory: Path) -> list[StoredEnvelope]:
    """What the server's database holds for the exchange, read the way an operator could."""
    from securemsg.protocol.envelope import EnvelopeLimits, parse_envelope

    database = directory / "securemsg.db"
    with contextlib.closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as conn:
        rows = conn.execute(
            "SELECT a.username, e.sender_device, e.sent_ms, e.data FROM envelopes e"
            " JOIN devices d ON d.id = e.sender_device JOIN accounts a ON a.id = d.account_id"
            " WHERE e.kind = 'message' ORDER BY e.id"
        ).fetchall()
    return [
        StoredEnvelope(
            sender=str(sender),
            sender_device=uuid.UUID(str(device)),
            recipients=len(parse_envelope(bytes(data), EnvelopeLimits()).wraps),
            size_bytes=len(data),
            sent_ms=int(sent_ms),
        )
        for sender, device, sent_ms, data in rows
    ]


def _clock(ms: int) -> str:
    return time.strftime("%H:%M:%S", time.localtime(ms / 1000))


def _environment() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SECUREMSG_")}
    env["SECUREMSG_LOG_LEVEL"] = "warning"
    return env


def _cli(directory: Path, *args: str, stdin: str | None = None) -> str:
    result = subprocess.run(  # noqa: S603 - our own CLI, fixed arguments
        [sys.executable, "-m", "securemsg", *args, "--data-dir", str(directory)],
        input=None if stdin is None else stdin + "\n",
        capture_output=True,
        text=True,
        env=_environment(),
        timeout=120,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"securemsg {' '.join(args)}: {result.stderr.strip()}")
    return result.stdout.strip()


@contextlib.contextmanager
def _server(directory: Path) -> Iterator[str]:
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    with (directory / "server.log").open("ab") as log:
        process = subprocess.Popen(  # noqa: S603 - our own CLI, fixed arguments
            [
                sys.executable,
                "-m",
                "securemsg",
                "serve",
                "--port",
                str(port),
                "--data-dir",
                str(directory),
                "--keys-dir",
                str(directory / "keys"),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=_environment(),
        )
    try:
        _wait_healthy(process, url)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_healthy(process: subprocess.Popen[bytes], url: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with code {process.returncode}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                return
        time.sleep(0.1)
    raise RuntimeError("the server did not become healthy within 60 s")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
