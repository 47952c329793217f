"""The keystore opens only with its passphrase, shows any change, and never holds plaintext."""

from __future__ import annotations

import stat
import uuid
from pathlib import Path

import pytest

from securemsg.client import KeystoreError, KeystoreTampered, WrongPassphrase
from securemsg.client.keystore import Keystore
from securemsg.crypto.keys import IdentityKey
from securemsg.crypto.keystore import HEADER_BYTES, KdfParams, PassphraseKey, open_sealed
from tests.client.conftest import FAST_KDF

PASSPHRASE = "correct passphrase"


def _saved(path: Path) -> Keystore:
    store = Keystore.open(path, PASSPHRASE, kdf=FAST_KDF)
    store.state.account = uuid.uuid4()
    store.state.username = "alice-marker"
    store.state.identity = IdentityKey.from_seed(b"\x07" * 32)
    store.save()
    store.close()
    return store


def test_keystore_reopens_with_the_right_passphrase(tmp_path: Path) -> None:
    path = tmp_path / "alice.keys"
    saved = _saved(path)
    store = Keystore.open(path, PASSPHRASE)
    try:
        assert store.state.account == saved.state.account
        assert store.state.device_id == saved.state.device_id
        assert store.state.device_keys.signing_key == saved.state.device_keys.signing_key
        assert store.state.identity is not None
        assert store.state.identity.public_key == IdentityKey.from_seed(b"\x07" * 32).public_key
    finally:
        store.close()


def test_wrong_passphrase_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "alice.keys"
    _saved(path)
    with pytest.raises(WrongPassphrase, match="wrong passphrase"):
        Keystore.open(path, "not the passphrase")


@pytest.mark.parametrize("offset", [HEADER_BYTES - 1, HEADER_BYTES + 5, -1])
def test_any_changed_byte_is_detected(tmp_path: Path, offset: int) -> None:
    path = tmp_path / "alice.keys"
    _saved(path)
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(KeystoreTampered, match="cannot be trusted"):
        Keystore.open(path, PASSPHRASE)


def test_truncated_or_foreign_file_is_detected(tmp_path: Path) -> None:
    path = tmp_path / "alice.keys"
    _saved(path)
    path.write_bytes(path.read_bytes()[:-20])
    with pytest.raises(KeystoreTampered):
        Keystore.open(path, PASSPHRASE)
    path.write_bytes(b"{}" * 100)
    with pytest.raises(KeystoreTampered, match="not a securemsg keystore"):
        Keystore.open(path, PASSPHRASE)


def test_changed_cost_parameters_do_not_open_the_keystore(tmp_path: Path) -> None:
    path = tmp_path / "alice.keys"
    _saved(path)
    data = bytearray(path.read_bytes())
    data[9] ^= 0x02  # time_cost 1 -> 3: another key is derived, so the passphrase check fails
    path.write_bytes(bytes(data))
    with pytest.raises(WrongPassphrase):
        Keystore.open(path, PASSPHRASE)


def test_keystore_file_is_private_and_holds_no_plaintext(tmp_path: Path) -> None:
    path = tmp_path / "alice.keys"
    _saved(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    data = path.read_bytes()
    assert b"alice-marker" not in data
    assert IdentityKey.from_seed(b"\x07" * 32).to_bytes()[1:] not in data
    assert sorted(p.name for p in tmp_path.iterdir()) == ["alice.keys", "alice.keys.lock"]


def test_a_keystore_in_use_cannot_be_opened_twice(tmp_path: Path) -> None:
    path = tmp_path / "alice.keys"
    _saved(path)
    first = Keystore.open(path, PASSPHRASE)
    try:
        with pytest.raises(KeystoreError, match="in use"):
            Keystore.open(path, PASSPHRASE)
    finally:
        first.close()
    Keystore.open(path, PASSPHRASE).close()


def test_sealing_uses_a_fresh_nonce_and_keeps_the_salt() -> None:
    key = PassphraseKey.derive(b"pw", KdfParams(1, 1024, 1))
    one, two = key.seal(b"same"), key.seal(b"same")
    assert one != two and one[18:34] == two[18:34]
    assert open_sealed(one, b"pw")[0] == open_sealed(two, b"pw")[0] == b"same"


def test_unreasonable_cost_parameters_are_refused() -> None:
    with pytest.raises(ValueError, match="exceed"):
        PassphraseKey.derive(b"pw", KdfParams(1, 64 * 1024 * 1024, 1))
