"""A client (patient) app in a page: send lines to your therapist and print the answers.

With the server running and `examples/therapist_app.py` answering (see docs/sdk.md):

    APP_PASSWORD=... APP_PASSPHRASE=... python examples/client_app.py --username carl \
        --say "Hello" --say "I slept better this week"

Without --say it sends each line typed on standard input. Every message is encrypted on this
device to the therapist's verified devices (and this account's other devices) only.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os
import sys

from securemsg.client import CaughtUp, Client, ClientError, Message, PeerKeyChanged


def secret(variable: str, prompt: str) -> str:
    return os.environ.get(variable) or getpass.getpass(prompt)


async def run(args: argparse.Namespace) -> int:
    password = secret("APP_PASSWORD", f"password for {args.username}: ")
    passphrase = secret("APP_PASSPHRASE", f"passphrase for {args.keystore}: ")
    async with Client.connect(args.server, keystore=args.keystore, passphrase=passphrase) as client:
        await client.login(args.username, password)
        conversations = client.conversations()
        if not conversations:
            print("no conversation yet: ask the platform to pair you with a therapist")
            return 1
        conversation = conversations[0]
        print(f"talking to {conversation.peer.username}")
        lines = args.say or (line.rstrip("\n") for line in sys.stdin)
        for line in lines:
            try:
                await client.send(conversation.id, line)
            except PeerKeyChanged:
                print("your therapist's key changed: compare safety numbers before continuing")
                return 1
            print(f"-> {line}")
            async with asyncio.timeout(args.reply_timeout):
                while True:
                    event = await client.next_event()
                    if isinstance(event, Message) and event.sender == conversation.peer.account:
                        print(f"<- {event.content!r}")
                        break
                    if not isinstance(event, Message | CaughtUp):
                        print(f"!! {event}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", default="http://127.0.0.1:8443")
    parser.add_argument("--username", required=True)
    parser.add_argument("--keystore", help="keystore file (default: <username>.keys)")
    parser.add_argument("--say", action="append", help="a message to send (repeatable)")
    parser.add_argument("--reply-timeout", type=float, default=30.0)
    args = parser.parse_args()
    args.keystore = args.keystore or f"{args.username}.keys"
    try:
        return asyncio.run(run(args))
    except (ClientError, TimeoutError) as error:
        print(f"error: {error or 'no reply in time'}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
