"""OpenPGP encryption of delivered files (SPEC §13: a destination's `pgpPublicKey`), with Debian's gpg.

python-gnupg runs `gpg`; every call works in a GNUPGHOME made for it and removed after it, never a user's
keyring, so keys of different destinations never meet and nothing is left behind. The key is trusted as
given (`always_trust`): whoever saved the destination vouched for it, and there is no web of trust to ask.

A key is usable when the armour holds exactly one public key, neither expired nor revoked, with a subkey
(or primary key) that may encrypt now — what gpg itself says of it (the capital `E` of its capabilities).
A private key is refused before it reaches gpg, so no secret is ever imported or logged (python-gnupg logs
the start of what it imports at DEBUG). The caller appends `.pgp` to the delivered name.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from export_core.destinations import PermanentDeliveryError, RetryableDeliveryError

PUBLIC_BLOCK = "-----BEGIN PGP PUBLIC KEY BLOCK-----"
PRIVATE_BLOCK = "-----BEGIN PGP PRIVATE KEY BLOCK-----"
MAX_ARMORED_LENGTH = 256 * 1024
GPG = "gpg"


@contextmanager
def _keyring() -> Iterator[Any]:
    """A gnupg.GPG on an empty GNUPGHOME of its own, removed (its agent stopped, if one started) afterwards."""
    import gnupg

    home = tempfile.mkdtemp(prefix="gpg-")  # short: an agent's socket path must fit 108 characters
    try:
        yield gnupg.GPG(gpgbinary=GPG, gnupghome=home, encoding="utf-8")
    finally:
        subprocess.run(["gpgconf", "--homedir", home, "--kill", "all"], capture_output=True, check=False, timeout=30)
        shutil.rmtree(home, ignore_errors=True)


def _import_usable_key(gpg: Any, armored: str) -> str:
    """Import `armored` into `gpg`'s keyring and return its fingerprint; ValueError naming pgpPublicKey otherwise."""
    if not isinstance(armored, str) or PRIVATE_BLOCK in armored:
        raise ValueError("pgpPublicKey must be a public key; a private key is never accepted.")
    if PUBLIC_BLOCK not in armored or len(armored) > MAX_ARMORED_LENGTH:
        raise ValueError(f"pgpPublicKey must be an ASCII-armoured OpenPGP public key ({PUBLIC_BLOCK}).")
    gpg.import_keys(armored)
    keys = gpg.list_keys()
    if not keys:
        raise ValueError("pgpPublicKey holds no OpenPGP key that gpg can read.")
    if len(keys) > 1:
        raise ValueError("pgpPublicKey must hold exactly one key.")
    key = keys[0]
    if key.get("trust") == "r":
        raise ValueError("pgpPublicKey has been revoked.")
    if key.get("trust") == "e":
        raise ValueError("pgpPublicKey has expired.")
    if "E" not in str(key.get("cap", "")):
        raise ValueError(
            "pgpPublicKey has no key that may encrypt now (only signing keys, or expired or revoked ones)."
        )
    return str(key["fingerprint"])


def check_public_key(armored: str) -> str:
    """The fingerprint of a usable `pgpPublicKey` (see the module docstring); ValueError (one sentence) otherwise."""
    with _keyring() as gpg:
        return _import_usable_key(gpg, armored)


def encrypt_file(src: Path, dst: Path, armored: str) -> str:
    """Encrypt `src` to the key into `dst` (binary OpenPGP); returns the key's fingerprint.

    PermanentDeliveryError when the key is no longer usable (it expired since it was saved, say);
    RetryableDeliveryError when gpg fails otherwise (a full disk, say). `dst` is not left half-written.
    """
    with _keyring() as gpg:
        try:
            fingerprint = _import_usable_key(gpg, armored)
        except ValueError as exc:
            raise PermanentDeliveryError(f"{exc} Nothing was encrypted or sent.") from None
        with src.open("rb") as handle:
            result = gpg.encrypt_file(handle, [fingerprint], always_trust=True, armor=False, output=str(dst))
        if not result.ok:
            dst.unlink(missing_ok=True)
            raise RetryableDeliveryError(f"gpg could not encrypt the file ({result.status or 'no status'}).")
    return fingerprint
