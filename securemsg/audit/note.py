"""C2SP signed notes (c2sp.org/signed-note) with Ed25519 keys, and their signer and verifier keys.

A note is UTF-8 text ending in a newline, a blank line, then `— <key name> <base64(key ID || sig)>`
lines.
Opening a note checks every signature by the trusted key, ignores all others, and raises
`CheckpointError` unless at least one verifies.
"""

from __future__ import annotations

import base64
import re
import string
from dataclasses import dataclass
from hashlib import sha256

from securemsg.audit.errors import CheckpointError, NoteKeyError
from securemsg.crypto.errors import InvalidSignature
from securemsg.crypto.signing import PUBLIC_KEY_BYTES, SEED_BYTES, SigningKey, verify_signature

ED25519_TYPE = 0x01
"""The signature type byte of Ed25519 in key IDs and key strings."""

MAX_NOTE_BYTES = 128 * 1024
"""Largest signed note accepted: room for C2SP's required 16 signatures, even post-quantum ones."""

MAX_SIGNATURES = 100

SIGNATURE_PREFIX = "\u2014 "  # em dash, space
_PRIVATE_KEY_PREFIX = "PRIVATE+KEY+"
_FORBIDDEN_IN_NOTE = re.compile(r"[\x00-\x09\x0b-\x1f]")


def key_id(name: str, public_key: bytes) -> int:
    """The 32-bit Ed25519 key ID: SHA-256(name || 0x0A || 0x01 || public key)[:4], big-endian."""
    digest = sha256(name.encode() + b"\n" + bytes([ED25519_TYPE]) + public_key).digest()
    return int.from_bytes(digest[:4], "big")


def check_key_name(name: str) -> None:
    """Raise `NoteKeyError` unless `name` is a valid key name: non-empty, no spaces, no '+'."""
    if not name:
        raise NoteKeyError("key name is empty")
    for char in name:
        if char == "+" or char.isspace() or char < " ":
            raise NoteKeyError(f"key name {name!r} contains {char!r}")


@dataclass(frozen=True, slots=True)
class NoteVerifier:
    """A trusted Ed25519 public key and its name: `<name>+<key ID hex>+<base64(0x01 || key)>`."""

    name: str
    public_key: bytes

    def __post_init__(self) -> None:
        check_key_name(self.name)
        if len(self.public_key) != PUBLIC_KEY_BYTES:
            raise NoteKeyError(
                f"ed25519 public key of {len(self.public_key)} bytes, want {PUBLIC_KEY_BYTES}"
            )

    @property
    def key_id(self) -> int:
        return key_id(self.name, self.public_key)

    @classmethod
    def parse(cls, key_string: str) -> NoteVerifier:
        """Read a verifier key string, checking its key ID against its name and key."""
        # Names and key IDs hold no '+', base64 may: split at the first two only.
        parts = key_string.strip().split("+", 2)
        if len(parts) != 3:
            raise NoteKeyError("verifier key is not <name>+<key id>+<key>")
        name, id_hex, encoded = parts
        key = _decode_key(encoded, PUBLIC_KEY_BYTES)
        verifier = cls(name, key)
        _check_key_id(id_hex, verifier.key_id)
        return verifier

    def key_string(self) -> str:
        encoded = encode_base64(bytes([ED25519_TYPE]) + self.public_key)
        return f"{self.name}+{self.key_id:08x}+{encoded}"


@dataclass(frozen=True, slots=True, repr=False)
class NoteSigner:
    """An Ed25519 signing key under its name; its key string is
    `PRIVATE+KEY+<name>+<key ID hex>+<base64(0x01 || seed)>` as in golang.org/x/mod/sumdb/note."""

    name: str
    signing_key: SigningKey

    def __post_init__(self) -> None:
        check_key_name(self.name)

    @classmethod
    def generate(cls, name: str) -> NoteSigner:
        return cls(name, SigningKey.generate())

    @classmethod
    def parse(cls, key_string: str) -> NoteSigner:
        """Read a signer key string, checking its key ID against its name and public key."""
        text = key_string.strip()
        if not text.startswith(_PRIVATE_KEY_PREFIX):
            raise NoteKeyError("signer key does not start with PRIVATE+KEY+")
        parts = text[len(_PRIVATE_KEY_PREFIX) :].split("+", 2)
        if len(parts) != 3:
            raise NoteKeyError("signer key is not PRIVATE+KEY+<name>+<key id>+<key>")
        name, id_hex, encoded = parts
        signer = cls(name, SigningKey.from_seed(_decode_key(encoded, SEED_BYTES)))
        _check_key_id(id_hex, signer.key_id)
        return signer

    @property
    def key_id(self) -> int:
        return key_id(self.name, self.signing_key.public_key)

    @property
    def verifier(self) -> NoteVerifier:
        return NoteVerifier(self.name, self.signing_key.public_key)

    def key_string(self) -> str:
        """The secret signer key string, for the key file."""
        encoded = encode_base64(bytes([ED25519_TYPE]) + self.signing_key.seed)
        return f"{_PRIVATE_KEY_PREFIX}{self.name}+{self.key_id:08x}+{encoded}"

    def sign(self, text: str) -> NoteSignature:
        _check_text(text)
        return NoteSignature(self.name, self.key_id, self.signing_key.sign(text.encode()))

    def __repr__(self) -> str:
        # Never print the seed.
        return f"NoteSigner({self.verifier.key_string()!r})"


@dataclass(frozen=True, slots=True)
class NoteSignature:
    """One signature line: the signer's key name, key ID, and the signature without the key ID."""

    name: str
    key_id: int
    signature: bytes

    def line(self) -> str:
        encoded = encode_base64(self.key_id.to_bytes(4, "big") + self.signature)
        return f"{SIGNATURE_PREFIX}{self.name} {encoded}\n"


@dataclass(frozen=True, slots=True)
class SignedNote:
    """A parsed note whose signatures have not been checked; see `open_note`."""

    text: str
    signatures: tuple[NoteSignature, ...]

    def format(self) -> str:
        return self.text + "\n" + "".join(signature.line() for signature in self.signatures)


def sign_note(text: str, *signers: NoteSigner) -> str:
    """The signed note of `text` (which must end in a newline) with one line per signer."""
    if not signers:
        raise ValueError("a signed note needs at least one signer")
    return SignedNote(text, tuple(signer.sign(text) for signer in signers)).format()


def parse_note(note: str | bytes) -> SignedNote:
    """Split a signed note into text and signature lines, checking only its syntax."""
    if isinstance(note, str):
        try:
            raw = note.encode()
        except UnicodeEncodeError:
            raise CheckpointError("note is not valid utf-8") from None
    else:
        raw = note
    if len(raw) > MAX_NOTE_BYTES:
        raise CheckpointError(f"note of {len(raw)} bytes exceeds the {MAX_NOTE_BYTES}-byte limit")
    try:
        decoded = raw.decode()
    except UnicodeDecodeError:
        raise CheckpointError("note is not valid utf-8") from None
    if _FORBIDDEN_IN_NOTE.search(decoded):
        raise CheckpointError("note contains a control character other than newline")
    split = decoded.rfind("\n\n")
    if split < 0:
        raise CheckpointError("note has no blank line before its signatures")
    text, block = decoded[: split + 1], decoded[split + 2 :]
    if not block.endswith("\n"):
        raise CheckpointError("note does not end in a signature line and a newline")
    lines = block[:-1].split("\n")
    if len(lines) > MAX_SIGNATURES:
        raise CheckpointError(f"note has {len(lines)} signatures, more than {MAX_SIGNATURES}")
    return SignedNote(text, tuple(_parse_signature_line(line) for line in lines))


def open_note(note: str | bytes, verifier: NoteVerifier) -> str:
    """Return the text of `note` after checking its signatures by `verifier`'s key.

    Signatures by other keys are ignored, even if they share the name or the key ID (not both).
    Every signature by the trusted key must verify, and there must be at least one.
    """
    parsed = parse_note(note)
    message = parsed.text.encode()
    verified = 0
    for signature in parsed.signatures:
        if signature.name != verifier.name or signature.key_id != verifier.key_id:
            continue
        try:
            verify_signature(verifier.public_key, message, signature.signature)
        except InvalidSignature as error:
            raise CheckpointError(
                f"signature by {verifier.name}+{verifier.key_id:08x} does not verify"
            ) from error
        verified += 1
    if not verified:
        raise CheckpointError(f"note has no signature by {verifier.name}+{verifier.key_id:08x}")
    return parsed.text


def _parse_signature_line(line: str) -> NoteSignature:
    if not line.startswith(SIGNATURE_PREFIX):
        raise CheckpointError("signature line does not start with an em dash and a space")
    name, _, encoded = line[len(SIGNATURE_PREFIX) :].partition(" ")
    try:
        check_key_name(name)
    except NoteKeyError as error:
        raise CheckpointError(f"signature line has a bad key name: {error}") from None
    try:
        blob = decode_base64(encoded)
    except ValueError:
        raise CheckpointError(f"signature by {name} is not canonical base64") from None
    if len(blob) < 5:
        raise CheckpointError(f"signature by {name} of {len(blob)} bytes is too short")
    return NoteSignature(name, int.from_bytes(blob[:4], "big"), blob[4:])


def _check_text(text: str) -> None:
    if not text.endswith("\n"):
        raise ValueError("note text must end in a newline")
    if _FORBIDDEN_IN_NOTE.search(text):
        raise ValueError("note text contains a control character other than newline")


def _decode_key(encoded: str, want_bytes: int) -> bytes:
    try:
        blob = decode_base64(encoded)
    except ValueError:
        raise NoteKeyError("key is not canonical base64") from None
    if len(blob) != 1 + want_bytes or blob[0] != ED25519_TYPE:
        raise NoteKeyError(f"key is not 0x01 followed by a {want_bytes}-byte ed25519 key")
    return blob[1:]


def _check_key_id(id_hex: str, computed: int) -> None:
    if len(id_hex) != 8 or not all(char in string.hexdigits for char in id_hex):
        raise NoteKeyError(f"key id {id_hex!r} is not 8 hex digits")
    if int(id_hex, 16) != computed:
        raise NoteKeyError(f"key id {id_hex} does not match the key (want {computed:08x})")


def encode_base64(data: bytes) -> str:
    """Standard padded base64, as every field of a note and checkpoint uses."""
    return base64.b64encode(data).decode("ascii")


def decode_base64(text: str) -> bytes:
    """Strict standard base64: padded, no stray characters, and the one encoding of its bytes."""
    # b64decode raises binascii.Error (a ValueError) on bad input, ValueError on non-ASCII text.
    data = base64.b64decode(text, validate=True)
    if encode_base64(data) != text:
        raise ValueError("non-canonical base64")
    return data
