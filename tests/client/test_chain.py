"""Receive chains: what a receiver concludes from counters and previous-message hashes."""

from __future__ import annotations

import hashlib

from hypothesis import given
from hypothesis import strategies as st

from securemsg.client.chain import WINDOW, ReceiveChain
from securemsg.client.events import AnomalyKind


def _message(counter: int, branch: bytes = b"") -> tuple[int, bytes, bytes, bytes]:
    """(counter, previous hash, own hash, message id) of an honest chain."""

    def digest(c: int) -> bytes:
        return bytes(32) if c == 0 else hashlib.sha256(branch + c.to_bytes(8, "big")).digest()

    return (
        counter,
        digest(counter - 1),
        digest(counter),
        hashlib.blake2b(branch + counter.to_bytes(8, "big"), digest_size=16).digest(),
    )


def _feed(counters: list[int]) -> tuple[list[int], list[tuple[AnomalyKind, int, int]]]:
    chain = ReceiveChain()
    delivered: list[int] = []
    findings: list[tuple[AnomalyKind, int, int]] = []
    for counter in counters:
        verdict = chain.check(*_message(counter))
        findings += [(f.kind, f.first, f.last) for f in verdict.findings]
        if verdict.deliver:
            delivered.append(counter)
    return delivered, findings


def test_an_honest_stream_has_no_findings() -> None:
    assert _feed([1, 2, 3, 4]) == ([1, 2, 3, 4], [])


def test_a_dropped_message_is_missing() -> None:
    assert _feed([1, 2, 4]) == ([1, 2, 4], [(AnomalyKind.MISSING, 3, 3)])


def test_a_first_message_that_is_not_the_first_reports_the_ones_before() -> None:
    assert _feed([3, 4]) == ([3, 4], [(AnomalyKind.MISSING, 1, 2)])


def test_a_duplicate_is_reported_and_not_delivered_again() -> None:
    assert _feed([1, 2, 2, 3]) == ([1, 2, 3], [(AnomalyKind.DUPLICATE, 2, 2)])


def test_an_old_message_replayed_beyond_the_window_is_a_duplicate() -> None:
    counters = [*range(1, WINDOW + 10), 1]
    delivered, findings = _feed(counters)
    assert delivered == counters[:-1]
    assert findings == [(AnomalyKind.DUPLICATE, 1, 1)]


def test_a_reordered_message_is_missing_then_late() -> None:
    assert _feed([1, 3, 2, 4]) == (
        [1, 3, 2, 4],
        [(AnomalyKind.MISSING, 2, 2), (AnomalyKind.LATE, 2, 2)],
    )


def test_a_message_from_another_branch_breaks_the_chain() -> None:
    chain = ReceiveChain()
    chain.check(*_message(1))
    verdict = chain.check(*_message(2, branch=b"forked"))
    assert [f.kind for f in verdict.findings] == [AnomalyKind.CHAIN_BROKEN]
    assert verdict.deliver


def test_a_different_message_reusing_a_counter_breaks_the_chain() -> None:
    chain = ReceiveChain()
    chain.check(*_message(1))
    chain.check(*_message(2))
    verdict = chain.check(*_message(2, branch=b"other"))
    assert [f.kind for f in verdict.findings] == [AnomalyKind.CHAIN_BROKEN]


def test_chain_state_survives_a_json_round_trip() -> None:
    chain = ReceiveChain()
    for counter in (1, 2, 5):
        chain.check(*_message(counter))
    again = ReceiveChain.from_json(chain.to_json())
    assert again == chain
    assert [f.kind for f in again.check(*_message(3)).findings] == [AnomalyKind.LATE]


@given(st.lists(st.integers(min_value=1, max_value=30), max_size=60))
def test_any_tampered_stream_is_reported_and_nothing_is_delivered_twice(
    counters: list[int],
) -> None:
    delivered, findings = _feed(counters)
    assert len(delivered) == len(set(delivered))
    assert sorted(delivered) == sorted(set(counters))
    honest = counters == list(range(1, len(counters) + 1))
    assert (findings == []) == honest
