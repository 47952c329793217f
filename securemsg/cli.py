"""The `securemsg` command: run the server and administer accounts, conversations and the schema.

Every subcommand takes the same --data-dir / --database-url options as `serve`; settings can also
come from SECUREMSG_* environment variables. Passwords are read from a prompt or standard input,
never from the command line.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import logging
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from securemsg import __version__, cli_audit
from securemsg.clock import SystemClock
from securemsg.server.admin import AdminError, AdminService
from securemsg.server.passwords import PasswordHashing
from securemsg.settings import Settings
from securemsg.storage import migrate
from securemsg.storage.accounts import Role
from securemsg.storage.database import Database
from securemsg.storage.errors import Conflict, NotFound, StorageError


def _storage_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", help="data directory (default: ./data)")
    parser.add_argument(
        "--database-url",
        help="SQLAlchemy URL, e.g. postgresql+asyncpg://user@host/db (default: SQLite in data dir)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="securemsg", description=__doc__)
    parser.add_argument("--version", action="version", version=f"securemsg {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the server")
    _storage_options(serve)
    serve.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default 8443)")
    serve.add_argument("--tls-cert", help="TLS certificate file (PEM)")
    serve.add_argument("--tls-key", help="TLS private key file (PEM)")
    serve.add_argument("--keys-dir", help="server key directory (default ./keys)")
    serve.add_argument("--redis-url", help="Redis URL for cross-node fan-out")

    account = commands.add_parser("account", help="manage accounts").add_subparsers(
        dest="action", required=True
    )
    create = account.add_parser("create", help="create an account (password from prompt/stdin)")
    _storage_options(create)
    create.add_argument("--role", required=True, choices=[r.value for r in Role])
    create.add_argument("username")
    for name, help_text in (
        ("disable", "disable an account and close its sessions"),
        ("enable", "re-enable a disabled account"),
        ("revoke-sessions", "log an account out everywhere"),
        ("delete", "delete an account (refused while a legal hold covers it)"),
    ):
        sub = account.add_parser(name, help=help_text)
        _storage_options(sub)
        sub.add_argument("username")

    conversation = commands.add_parser("conversation", help="manage conversations").add_subparsers(
        dest="action", required=True
    )
    conv_create = conversation.add_parser("create", help="pair a therapist with a client")
    _storage_options(conv_create)
    conv_create.add_argument("therapist")
    conv_create.add_argument("client")

    db = commands.add_parser("db", help="database schema").add_subparsers(
        dest="action", required=True
    )
    upgrade = db.add_parser("upgrade", help="apply schema migrations")
    _storage_options(upgrade)
    cli_audit.add_parser(commands)
    # `demo` is imported only to run: it loads the SDK, which `serve` and the rest never need.
    demo = commands.add_parser("demo", help="run a server and two SDK clients; show what each saw")
    demo.add_argument("--message", help="a message the client sends (default: a sample text)")
    demo.add_argument("--data-dir", help="where to put the demo's data (default: a new temp dir)")
    return parser


def load_settings(args: argparse.Namespace) -> Settings:
    overrides = {
        key: getattr(args, key)
        for key in (
            "data_dir",
            "database_url",
            "host",
            "port",
            "tls_cert",
            "tls_key",
            "keys_dir",
            "redis_url",
        )
        if getattr(args, key, None) is not None
    }
    return Settings.load(**overrides)


def read_password(prompt: str = "Password: ") -> str:
    if sys.stdin.isatty():
        first = getpass.getpass(prompt)
        if getpass.getpass("Repeat password: ") != first:
            raise AdminError("passwords do not match")
        return first
    return sys.stdin.readline().rstrip("\r\n")


def serve(settings: Settings) -> int:
    import uvicorn

    from securemsg.server.app import create_app
    from securemsg.server.protocols import protocols

    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    settings.keys_dir.mkdir(parents=True, exist_ok=True)
    config: dict[str, Any] = {}
    if settings.tls_cert:
        config.update(ssl_certfile=settings.tls_cert, ssl_keyfile=settings.tls_key or None)
    http_protocol, ws_protocol = protocols(settings.request_timeout_seconds)
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        http=http_protocol,
        ws=ws_protocol,
        ws_per_message_deflate=False,
        ws_max_size=settings.max_frame_bytes,
        ws_ping_interval=settings.ping_interval_seconds,
        ws_ping_timeout=settings.ping_interval_seconds,
        server_header=False,
        log_level=settings.log_level,
        timeout_graceful_shutdown=10,
        **config,
    )
    return 0


async def _with_admin(settings: Settings, work: Callable[[AdminService], Awaitable[str]]) -> str:
    database = Database.open(settings.effective_database_url)
    hashing = PasswordHashing(settings)
    try:
        await migrate.upgrade(database)
        return await work(
            AdminService(
                database,
                hashing,
                max_password_bytes=settings.max_password_bytes,
                actor=cli_audit.operator(),
            )
        )
    finally:
        hashing.close()
        await database.close()


def run_command(args: argparse.Namespace) -> int:
    if args.command == "demo":
        from securemsg import demo

        return demo.main(args)
    settings = load_settings(args)
    if args.command == "serve":
        return serve(settings)
    if args.command == "audit":
        return cli_audit.run(args, settings)
    now_ms = SystemClock().now_ms

    async def work(admin: AdminService) -> str:
        if args.command == "account" and args.action == "create":
            account = await admin.create_account(
                args.username, Role(args.role), read_password(), now_ms=now_ms()
            )
            return f"created {account.role} {account.username} ({account.id})"
        if args.command == "account" and args.action == "disable":
            account = await admin.disable_account(args.username, now_ms=now_ms())
            return f"disabled {account.username}; its sessions are revoked"
        if args.command == "account" and args.action == "enable":
            account = await admin.enable_account(args.username, now_ms=now_ms())
            return f"enabled {account.username}"
        if args.command == "account" and args.action == "revoke-sessions":
            count = await admin.revoke_sessions(args.username, now_ms=now_ms())
            return f"revoked {count} session(s) of {args.username}"
        if args.command == "account" and args.action == "delete":
            erased = await admin.delete_account(args.username, now_ms=now_ms())
            row = "deleted" if erased.row_deleted else "disabled and scrubbed (still referenced)"
            return (
                f"deleted {args.username}: {erased.sessions} session(s), {erased.devices} "
                f"device(s), {erased.deliveries} undelivered message(s), {erased.memberships} "
                f"conversation membership(s); account row {row}"
            )
        if args.command == "conversation":
            conversation_id = await admin.create_conversation(
                args.therapist, args.client, now_ms=now_ms()
            )
            return f"created conversation {conversation_id}"
        if args.command == "db":
            return "schema is at the newest revision"
        raise AssertionError(args)

    print(asyncio.run(_with_admin(settings, work)))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return run_command(args)
    except (AdminError, Conflict, NotFound, ValueError) as exc:
        print(f"securemsg: error: {exc}", file=sys.stderr)
        return 2
    except StorageError as exc:
        print(f"securemsg: error: {exc}", file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
