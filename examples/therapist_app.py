"""A therapist app in a page: answer every message, and show what the SDK noticed.

Run a server and two accounts first (see docs/sdk.md, "Tutorial"), then:

    APP_PASSWORD=... APP_PASSPHRASE=... python examples/therapist_app.py --username dr-tess

It prints each conversation's safety number (compare it with the client's screen), then every
message as it arrives, and replies to each one. Dropped, reordered or duplicated messages and
envelopes that could not be opened are printed too: the SDK reports them, it never hides them.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os
import sys

from securemsg.client import (
    Anomaly,
    Client,
    ClientError,
    DeviceChanged,
    IdentityChanged,
    Message,
    Undecryptable,
)


def secret(variable: str, prompt: str) -> str:
    return os.environ.get(variable) or getpass.getpass(prompt)


async def run(args: argparse.Namespace) -> int:
    password = secret("APP_PASSWORD", f"password for {args.username}: ")
    passphrase = secret("APP_PASSPHRASE", f"passphrase for {args.keystore}: ")
    async with Client.connect(args.server, keystore=args.keystore, passphrase=passphrase) as client:
        await client.login(args.username, password)
        for conversation in client.conversations():
            print(f"conversation with {conversation.peer.username} ({conversation.id})")
            try:
                print(f"  safety number: {client.safety_number(conversation.peer.account)}")
            except ClientError:
                print("  (the client has not registered a device yet)")
        answered = 0
        async for event in client.events():
            if isinstance(event, Message) and not event.outgoing:
                shown = event.content if isinstance(event.content, str) else repr(event.content)
                print(f"<- {shown}")
                await client.send(event.conversation, f"Thank you, I read: {event.content!r}")
                answered += 1
                if args.max_messages and answered >= args.max_messages:
                    return 0
            elif isinstance(event, Anomaly):
                print(f"!! {event.kind}: messages {event.first}..{event.last} ({event.detail})")
            elif isinstance(event, Undecryptable):
                print(f"!! could not open delivery {event.seq}: {event.reason}")
            elif isinstance(event, IdentityChanged | DeviceChanged):
                print(f"!! {event}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", default="http://127.0.0.1:8443")
    parser.add_argument("--username", required=True)
    parser.add_argument("--keystore", help="keystore file (default: <username>.keys)")
    parser.add_argument("--max-messages", type=int, default=0, help="exit after answering N")
    args = parser.parse_args()
    args.keystore = args.keystore or f"{args.username}.keys"
    try:
        return asyncio.run(run(args))
    except ClientError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
