"""Device certificate and device list layouts without keys."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from securemsg.protocol.devices import (
    CERTIFICATE_BYTES,
    DeviceEntry,
    DeviceError,
    DeviceListLimits,
    DevicePublicKeys,
    StaleDeviceList,
    check_not_rollback,
    encode_certificate_body,
    encode_device_list_body,
    parse_device_certificate,
    parse_device_list,
)
from securemsg.protocol.errors import ErrorCode, ProtocolError

ACCOUNT = bytes(range(16))
SIGNATURE = b"\x5a" * 64


def device(n: int) -> bytes:
    return n.to_bytes(16, "big")


def entry(n: int) -> DeviceEntry:
    return DeviceEntry(device(n), bytes([n]) * 32, bytes([0x80 | n]) * 32)


def device_list(*numbers: int, list_version: int = 1) -> bytes:
    body = encode_device_list_body(
        account_id=ACCOUNT,
        list_version=list_version,
        created_ms=1_700_000_000_000,
        entries=[entry(n) for n in numbers],
    )
    return body + SIGNATURE


def list_rejection(data: bytes, limits: DeviceListLimits | None = None) -> DeviceError:
    with pytest.raises(DeviceError) as caught:
        parse_device_list(data, limits)
    assert caught.value.code is ErrorCode.BAD_DEVICE
    return caught.value


# -- certificates -------------------------------------------------------------------------------


def test_certificate_fields_sit_at_their_documented_offsets() -> None:
    raw = (
        b"\x01"
        + ACCOUNT
        + device(7)
        + b"\x11" * 32
        + b"\x22" * 32
        + struct.pack(">Q", 1234)
        + SIGNATURE
    )
    certificate = parse_device_certificate(raw)
    assert certificate.version == 1
    assert certificate.account_id == ACCOUNT
    assert certificate.device_id == device(7)
    assert certificate.public_keys == DevicePublicKeys(b"\x11" * 32, b"\x22" * 32)
    assert certificate.created_ms == 1234
    assert certificate.signature == SIGNATURE
    assert certificate.signed_part == raw[:-64]
    assert len(raw) == CERTIFICATE_BYTES == 169


def test_certificate_encoding_round_trips() -> None:
    keys = DevicePublicKeys(b"\x01" * 32, b"\x02" * 32)
    body = encode_certificate_body(
        account_id=ACCOUNT, device_id=device(3), keys=keys, created_ms=2**64 - 1
    )
    certificate = parse_device_certificate(body + SIGNATURE)
    assert (certificate.device_id, certificate.public_keys) == (device(3), keys)
    assert certificate.created_ms == 2**64 - 1


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "device certificate is empty"),
        (b"\x02" + bytes(168), "device certificate version 2 is not supported"),
        (b"\x01" + bytes(167), "device certificate of 168 bytes should be 169 bytes"),
        (b"\x01" + bytes(169), "device certificate of 170 bytes should be 169 bytes"),
    ],
)
def test_malformed_certificates_are_bad_device(data: bytes, message: str) -> None:
    with pytest.raises(DeviceError) as caught:
        parse_device_certificate(data)
    assert (caught.value.code, caught.value.message) == (ErrorCode.BAD_DEVICE, message)


def test_certificate_encoding_rejects_wrong_key_sizes() -> None:
    with pytest.raises(ValueError, match="signing_key"):
        encode_certificate_body(
            account_id=ACCOUNT,
            device_id=device(1),
            keys=DevicePublicKeys(b"\x01" * 31, b"\x02" * 32),
            created_ms=0,
        )


# -- device lists -------------------------------------------------------------------------------


def test_device_list_fields_sit_at_their_documented_offsets() -> None:
    raw = (
        b"\x01"
        + ACCOUNT
        + struct.pack(">QQH", 5, 1234, 2)
        + device(1)
        + b"\x01" * 32
        + b"\x81" * 32
        + device(2)
        + b"\x02" * 32
        + b"\x82" * 32
        + SIGNATURE
    )
    parsed = parse_device_list(raw)
    assert (parsed.version, parsed.account_id, parsed.list_version, parsed.created_ms) == (
        1,
        ACCOUNT,
        5,
        1234,
    )
    assert parsed.entries == (entry(1), entry(2))
    assert parsed.signed_part == raw[:-64]
    assert len(raw) == 35 + 2 * 80 + 64


def test_device_list_encoding_sorts_entries_by_device_id() -> None:
    parsed = parse_device_list(device_list(9, 2, 5))
    assert parsed.device_ids == (device(2), device(5), device(9))
    assert parsed.encryption_keys == {device(n): entry(n).encryption_key for n in (2, 5, 9)}
    assert parsed.entry(device(5)) == entry(5)
    assert parsed.entry(device(4)) is None
    assert entry(5).public_keys == DevicePublicKeys(entry(5).signing_key, entry(5).encryption_key)


def test_empty_device_list_is_allowed() -> None:
    assert parse_device_list(device_list()).entries == ()


def test_device_list_of_the_maximum_size_parses() -> None:
    assert len(parse_device_list(device_list(*range(16))).entries) == 16


def test_device_list_with_more_devices_than_the_limit_is_rejected() -> None:
    raw = device_list(*range(4))
    error = list_rejection(raw, DeviceListLimits(max_devices=3))
    assert error.message == f"device list of {len(raw)} bytes exceeds the 339-byte limit"
    header_only = bytearray(device_list(1, 2, 3))
    header_only[33:35] = struct.pack(">H", 4)
    error = list_rejection(bytes(header_only), DeviceListLimits(max_devices=3))
    assert error.message == "device list has 4 devices; the limit is 3"


def test_unsorted_or_duplicate_entries_are_rejected() -> None:
    raw = bytearray(device_list(1, 2))
    first, second = raw[35:115], raw[115:195]
    raw[35:195] = second + first
    assert "ascending" in list_rejection(bytes(raw)).message
    raw[35:195] = first + first
    assert "ascending" in list_rejection(bytes(raw)).message


def test_version_zero_is_rejected() -> None:
    raw = bytearray(device_list(1))
    raw[17:25] = bytes(8)
    assert list_rejection(bytes(raw)).message.startswith("device list version 0 is not allowed")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "device list is empty"),
        (b"\x07" + bytes(98), "device list version 7 is not supported"),
        (b"\x01" + bytes(20), "device list of 21 bytes is truncated"),
    ],
)
def test_malformed_device_lists_are_bad_device(data: bytes, message: str) -> None:
    assert list_rejection(data).message == message


def test_every_truncation_or_extension_of_a_list_is_rejected() -> None:
    raw = device_list(1, 2, 3)
    for size in range(len(raw)):
        list_rejection(raw[:size])
    list_rejection(raw + b"\x00")


@pytest.mark.parametrize(
    "kwargs",
    [
        {"list_version": 0},
        {"entries": [entry(1), entry(1)]},
        {"entries": [entry(n) for n in range(17)]},
        {"account_id": b"short"},
        {"created_ms": -1},
    ],
)
def test_device_list_encoding_rejects_malformed_input(kwargs: dict[str, object]) -> None:
    fields: dict[str, object] = {
        "account_id": ACCOUNT,
        "list_version": 1,
        "created_ms": 0,
        "entries": [entry(1)],
    }
    fields.update(kwargs)
    with pytest.raises(ValueError):
        encode_device_list_body(**fields)  # type: ignore[arg-type]


def test_limits_outside_the_u16_count_are_refused() -> None:
    with pytest.raises(ValueError):
        DeviceListLimits(max_devices=0)
    with pytest.raises(ValueError):
        DeviceListLimits(max_devices=70_000)


# -- rollback -----------------------------------------------------------------------------------


def test_a_newer_list_passes_the_rollback_check() -> None:
    check_not_rollback(
        parse_device_list(device_list(1, list_version=3)), min_version=2, current=None
    )


def test_the_same_list_again_passes_the_rollback_check() -> None:
    raw = device_list(1, list_version=3)
    check_not_rollback(parse_device_list(raw), min_version=3, current=raw)


def test_an_older_list_is_stale() -> None:
    with pytest.raises(StaleDeviceList) as caught:
        check_not_rollback(
            parse_device_list(device_list(1, list_version=2)), min_version=3, current=None
        )
    assert caught.value.code is ErrorCode.STALE_DEVICE_LIST
    assert caught.value.message == "device list version 2 is older than the trusted version 3"


@pytest.mark.parametrize("current", [None, b"another list"])
def test_a_different_list_with_the_trusted_version_is_stale(current: bytes | None) -> None:
    with pytest.raises(StaleDeviceList, match="differs from the trusted list"):
        check_not_rollback(
            parse_device_list(device_list(1, 2, list_version=3)), min_version=3, current=current
        )


# -- fuzz -------------------------------------------------------------------------------------


@settings(max_examples=300)
@given(st.binary(max_size=2000))
def test_random_bytes_raise_only_device_errors(data: bytes) -> None:
    for parse in (parse_device_certificate, parse_device_list):
        try:
            parse(data)
        except DeviceError as error:
            assert isinstance(error, ProtocolError)
            assert error.code is ErrorCode.BAD_DEVICE


@settings(max_examples=300)
@given(
    st.sampled_from([device_list(1, 2, 3), device_list(), device_list(*range(16))]),
    st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), min_size=1, max_size=4),
    st.integers(-3, 3),
)
def test_mutated_device_lists_parse_or_raise_device_error(
    raw: bytes, flips: list[tuple[int, int]], resize: int
) -> None:
    data = bytearray(raw)
    for at, value in flips:
        data[at % len(data)] = value
    data = data[: len(data) + resize] if resize < 0 else data + bytes(resize)
    try:
        parsed = parse_device_list(bytes(data))
    except DeviceError:
        return
    assert parsed.raw == bytes(data)
