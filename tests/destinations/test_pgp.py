"""PGP encryption with the machine's gpg: what is encrypted decrypts to the original; unusable keys are refused."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from export_core.destinations import PermanentDeliveryError
from export_core.destinations.pgp import check_public_key, encrypt_file
from tests.pgp_keys import PgpKey, pgp_key


def test_encrypted_files_decrypt_to_the_original_bytes(pgp_key_pair: PgpKey, tmp_path: Path) -> None:
    source, encrypted = tmp_path / "export.zip", tmp_path / "export.zip.pgp"
    source.write_bytes(os.urandom(500_000) + "données, 数据\n".encode())
    assert encrypt_file(source, encrypted, pgp_key_pair.public_armored) == pgp_key_pair.fingerprint
    assert encrypted.read_bytes()[:1] != b"-"  # binary OpenPGP, not armour
    assert source.read_bytes() not in encrypted.read_bytes()
    assert pgp_key_pair.decrypt(encrypted) == source.read_bytes()


def test_a_usable_key_gives_its_fingerprint(pgp_key_pair: PgpKey) -> None:
    assert check_public_key(pgp_key_pair.public_armored) == pgp_key_pair.fingerprint
    # Armour pasted with text around it (an e-mail, a web page) is still one key.
    assert check_public_key(f"Our key:\n\n{pgp_key_pair.public_armored}\nThanks\n") == pgp_key_pair.fingerprint


def test_an_expired_key_is_refused_and_nothing_is_written(tmp_path: Path) -> None:
    source, encrypted = tmp_path / "f", tmp_path / "f.pgp"
    source.write_bytes(b"secret rows\n")
    with pgp_key(expires="1d", faked_time="20200101T000000") as expired:
        with pytest.raises(ValueError, match=r"^pgpPublicKey has expired\.$"):
            check_public_key(expired.public_armored)
        with pytest.raises(PermanentDeliveryError) as raised:
            encrypt_file(source, encrypted, expired.public_armored)
    assert str(raised.value) == "pgpPublicKey has expired. Nothing was encrypted or sent."
    assert not encrypted.exists()


def test_a_key_that_cannot_encrypt_is_refused() -> None:
    with (
        pgp_key(algorithm="ed25519", usage="sign", expires="never") as signing_only,
        pytest.raises(ValueError, match="^pgpPublicKey has no key that may encrypt now"),
    ):
        check_public_key(signing_only.public_armored)


def test_two_keys_are_refused(pgp_key_pair: PgpKey) -> None:
    with pgp_key() as other, pytest.raises(ValueError, match=r"^pgpPublicKey must hold exactly one key\.$"):
        check_public_key(pgp_key_pair.public_armored + other.public_armored)


def test_a_private_key_is_refused_before_gpg_sees_it(pgp_key_pair: PgpKey, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("DEBUG")
    private = pgp_key_pair.gpg("--armor", "--pinentry-mode", "loopback", "--passphrase", "",
                               "--export-secret-keys", pgp_key_pair.fingerprint).stdout.decode()  # fmt: skip
    with pytest.raises(ValueError, match="^pgpPublicKey must be a public key; a private key is never accepted"):
        check_public_key(private)
    body = private.splitlines()[3]
    assert body not in caplog.text


@pytest.mark.parametrize(
    "armored",
    [
        "",
        "not a key",
        "-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nbm90IGEga2V5\n=AAAA\n-----END PGP PUBLIC KEY BLOCK-----\n",
        "-----BEGIN PGP PUBLIC KEY BLOCK-----\n" + "A" * 300_000,
    ],
)
def test_garbage_is_refused_with_a_sentence(armored: str) -> None:
    with pytest.raises(ValueError, match="^pgpPublicKey "):
        check_public_key(armored)


def test_the_users_keyring_is_never_used(pgp_key_pair: PgpKey, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home, gnupghome = tmp_path / "home", tmp_path / "gnupghome"
    home.mkdir()
    gnupghome.mkdir(mode=0o700)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("GNUPGHOME", str(gnupghome))
    source = tmp_path / "f"
    source.write_bytes(b"rows\n")
    check_public_key(pgp_key_pair.public_armored)
    encrypt_file(source, tmp_path / "f.pgp", pgp_key_pair.public_armored)
    assert list(home.iterdir()) == [] and list(gnupghome.iterdir()) == []
