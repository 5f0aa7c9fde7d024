"""Secrets stored encrypted at rest (SPEC §8): webhook secrets, destination passwords and generated private keys.

SECRETS_KEY holds one or more Fernet keys, comma-separated (cryptography's MultiFernet): the first
encrypts, every one decrypts. A key is rotated by putting a new one first, re-encrypting what is stored
with it (`python -m export_pipelines.indexes` does), then removing the old one. A stored secret is a
Fernet token (AES-128-CBC and HMAC-SHA256): a token that was changed, or that no key of SECRETS_KEY
made, is refused rather than decrypted into something else. Nothing here logs or raises a secret or a key.
"""

from __future__ import annotations

from collections.abc import Sequence

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from export_core.settings import Settings

MISSING_KEY = "SECRETS_KEY is not set; outside DEV_MODE the service needs it to encrypt and decrypt stored secrets."


class SecretsKeyMissing(RuntimeError):
    """Outside DEV_MODE without SECRETS_KEY: the process must not start."""


class UnreadableSecret(Exception):
    """A stored secret that no key of SECRETS_KEY decrypts (made with a key since removed, or changed)."""

    def __init__(self) -> None:
        super().__init__("The stored secret cannot be decrypted with any key of SECRETS_KEY.")


class SecretBox:
    """Encrypts with the first key, decrypts with any (rotation)."""

    def __init__(self, keys: Sequence[str]) -> None:
        self._first = Fernet(keys[0])
        self._any = MultiFernet([Fernet(key) for key in keys])
        self.key_count = len(keys)

    @classmethod
    def from_settings(cls, settings: Settings) -> SecretBox:
        """The box of SECRETS_KEY (in dev mode, of the dev key file); SecretsKeyMissing without one."""
        if not settings.secrets_key:
            raise SecretsKeyMissing(MISSING_KEY)
        return cls(settings.secrets_key.split(","))

    def __repr__(self) -> str:
        return f"SecretBox({self.key_count} key(s))"

    def encrypt(self, plain: str) -> str:
        """A token of `plain`, made with the first key (a new one each call)."""
        return self._first.encrypt(plain.encode("utf-8")).decode("ascii")

    def decrypt(self, token: str) -> str:
        """What `encrypt` was given, whichever key of SECRETS_KEY made the token; UnreadableSecret otherwise."""
        try:
            return self._any.decrypt(token.encode("ascii")).decode("utf-8")
        except (InvalidToken, UnicodeError):
            raise UnreadableSecret from None

    def rotated(self, token: str) -> str | None:
        """The token made anew with the first key, or None when the first key made it (nothing to do);
        UnreadableSecret when no key did."""
        try:
            self._first.decrypt(token.encode("ascii"))
            return None
        except (InvalidToken, UnicodeError):
            pass
        try:
            return self._any.rotate(token.encode("ascii")).decode("ascii")
        except (InvalidToken, UnicodeError):
            raise UnreadableSecret from None
