"""Throw-away OpenPGP keys made with the machine's gpg (Debian's gnupg), each in a GNUPGHOME of its own.

The home is a short folder under the system's temporary folder (gpg-agent's socket path must stay under
the 108 characters a Unix socket name may have, which a pytest tmp_path can pass), never the user's
~/.gnupg, and its agent is stopped when the key is removed. Keys have no passphrase.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

USER_ID = "Export Service Test Partner"


@dataclass(frozen=True)
class PgpKey:
    home: Path  # holds the secret key too, to decrypt what was encrypted to the public one
    fingerprint: str
    public_armored: str

    def gpg(self, *args: str, data: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            ["gpg", "--homedir", str(self.home), "--batch", "--no-tty", *args],
            input=data, capture_output=True, check=True, timeout=60,
        )  # fmt: skip

    def decrypt(self, path: Path) -> bytes:
        return self.gpg("--decrypt", str(path)).stdout


@contextmanager
def pgp_key(
    *, algorithm: str = "default", usage: str = "default", expires: str = "1y", faked_time: str | None = None
) -> Iterator[PgpKey]:
    """A new key (gpg --quick-generate-key ALGORITHM USAGE EXPIRES): "default" makes an ed25519 primary key with
    a cv25519 encryption subkey; `usage="sign"` one that cannot encrypt; `faked_time` (e.g. 20200101T000000)
    the moment it is made at, so `expires="1d"` with a past time gives a key that has already expired."""
    home = Path(tempfile.mkdtemp(prefix="gpg-"))
    home.chmod(0o700)
    fake = [f"--faked-system-time={faked_time}"] if faked_time else []
    try:
        key = PgpKey(home, "", "")
        key.gpg(*fake, "--passphrase", "", "--pinentry-mode", "loopback",
                "--quick-generate-key", USER_ID, algorithm, usage, expires)  # fmt: skip
        listing = key.gpg("--with-colons", "--list-keys", USER_ID).stdout.decode()
        fingerprint = next(line.split(":")[9] for line in listing.splitlines() if line.startswith("fpr:"))
        armored = key.gpg("--armor", "--export", fingerprint).stdout.decode()
        yield PgpKey(home, fingerprint, armored)
    finally:
        subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "all"], capture_output=True, check=False)
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="session", name="pgp_key_pair")
def pgp_key_pair_fixture() -> Iterator[PgpKey]:
    """The session's key that can encrypt (its secret key in its own home: tests only read it); import it into
    a test module, or a conftest, to use it."""
    with pgp_key() as key:
        yield key
