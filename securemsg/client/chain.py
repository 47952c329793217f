"""Per-sender-device message chains: how a receiver notices what the server did to the stream.

Every payload carries its sender device's counter in the conversation and the hash of that
device's previous payload (see `payload.py`). `ReceiveChain.check` compares an arriving message
with what came before and answers with the anomalies to report and whether to deliver it. It
remembers a bounded window of recent messages and of missing counters; its state is plain JSON
so the keystore can persist it. Pure: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from securemsg.client.events import AnomalyKind

WINDOW = 32  # recent messages remembered per sender device (duplicates, hash links)
MAX_MISSING_RANGES = 64


DUPLICATE = AnomalyKind.DUPLICATE
BROKEN = AnomalyKind.CHAIN_BROKEN


@dataclass(frozen=True, slots=True)
class Link:
    hash: bytes
    previous: bytes
    message_id: bytes


@dataclass(frozen=True, slots=True)
class Finding:
    kind: AnomalyKind
    first: int
    last: int
    detail: str


@dataclass(frozen=True, slots=True)
class Verdict:
    findings: tuple[Finding, ...]
    deliver: bool


@dataclass
class ReceiveChain:
    """What one receiving device knows of one sender device's messages in one conversation."""

    highest: int = 0  # highest counter seen; 0: nothing yet
    recent: dict[int, Link] = field(default_factory=dict)
    missing: list[tuple[int, int]] = field(default_factory=list)  # inclusive ranges, ascending

    def check(self, counter: int, previous: bytes, digest: bytes, message_id: bytes) -> Verdict:
        """Judge a message and record it. `digest` is its own chain hash."""

        def one(kind: AnomalyKind, detail: str) -> Finding:
            return Finding(kind, counter, counter, detail)

        seen = self.recent.get(counter)
        if seen is not None:
            if seen.message_id == message_id and seen.hash == digest:
                return Verdict((one(DUPLICATE, "message delivered again"),), deliver=False)
            self._record(counter, Link(digest, previous, message_id))
            return Verdict((one(BROKEN, "a different message reuses this counter"),), True)

        findings: list[Finding] = []
        if counter > self.highest + 1:
            first = self.highest + 1
            detail = (
                "earlier messages from this device never arrived"
                if self.highest
                else "the first message seen from this device is not its first"
            )
            findings.append(Finding(AnomalyKind.MISSING, first, counter - 1, detail))
            self._add_missing(first, counter - 1)
        elif counter <= self.highest:
            if not self._take_missing(counter):
                replayed = one(DUPLICATE, "counter already seen: message replayed")
                return Verdict((replayed,), deliver=False)
            findings.append(one(AnomalyKind.LATE, "arrived after later messages from this device"))
        if self._links_broken(counter, previous, digest):
            findings.append(one(BROKEN, "previous-message hash does not match its neighbours"))
        self._record(counter, Link(digest, previous, message_id))
        return Verdict(tuple(findings), deliver=True)

    def _links_broken(self, counter: int, previous: bytes, digest: bytes) -> bool:
        before = self.recent.get(counter - 1)
        after = self.recent.get(counter + 1)
        return (before is not None and before.hash != previous) or (
            after is not None and after.previous != digest
        )

    def _record(self, counter: int, link: Link) -> None:
        self.recent[counter] = link
        self.highest = max(self.highest, counter)
        if len(self.recent) > WINDOW:
            for old in sorted(self.recent)[: len(self.recent) - WINDOW]:
                del self.recent[old]

    def _add_missing(self, first: int, last: int) -> None:
        self.missing.append((first, last))
        del self.missing[:-MAX_MISSING_RANGES]

    def _take_missing(self, counter: int) -> bool:
        for index, (first, last) in enumerate(self.missing):
            if first <= counter <= last:
                pieces = [(a, b) for a, b in ((first, counter - 1), (counter + 1, last)) if a <= b]
                self.missing[index : index + 1] = pieces
                return True
        return False

    # -- persistence ------------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        return {
            "highest": self.highest,
            "recent": [
                [c, link.hash.hex(), link.previous.hex(), link.message_id.hex()]
                for c, link in sorted(self.recent.items())
            ],
            "missing": [list(r) for r in self.missing],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ReceiveChain:
        return cls(
            highest=int(data["highest"]),
            recent={
                int(c): Link(bytes.fromhex(h), bytes.fromhex(p), bytes.fromhex(m))
                for c, h, p, m in data["recent"]
            },
            missing=[(int(a), int(b)) for a, b in data["missing"]],
        )

    def copy(self) -> ReceiveChain:
        return ReceiveChain(self.highest, dict(self.recent), list(self.missing))


@dataclass
class SendChain:
    """This device's own chain in one conversation: the last counter used and its hash."""

    counter: int = 0
    last_hash: bytes = bytes(32)

    def to_json(self) -> dict[str, Any]:
        return {"counter": self.counter, "last_hash": self.last_hash.hex()}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SendChain:
        return cls(int(data["counter"]), bytes.fromhex(data["last_hash"]))
