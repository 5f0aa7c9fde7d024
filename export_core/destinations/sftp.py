"""SFTP destinations (SPEC §13): a pinned host key, password or key login, files renamed into place.

The order of a connection is what makes it safe:
1. The host is resolved once and every address must obey the webhook address rules (SPEC §11, with
   WEBHOOK_ALLOW_PRIVATE also allowing private hosts); the connection goes to those very addresses.
2. The key exchange offers only the host key types the destination pins, and the key the server shows is
   compared with the pin before anything is sent: no password, no public key, no file reaches a server
   that shows another key. A `SHA256:` fingerprint says nothing of its type, so each type is asked for in
   turn (ed25519, ECDSA, RSA), one connection each, until one matches.
3. Only then the login (password, falling back to keyboard-interactive when that is all the server offers,
   or the destination's ed25519 key), then SFTP with a timeout on every request.

paramiko's SSHClient is not used: it puts the pinned key's type first but still accepts the others, so a
server with several host keys could answer with a type that is not pinned; the Transport is driven here
with the pinned types only, and no key is ever added to a store (no AutoAddPolicy, no known_hosts file).

A file is written as `{path}/.{name}.{random}.partial` and renamed over `{path}/{name}` (OpenSSH's
posix-rename, which replaces an earlier delivery in one step; on servers without it, remove then rename),
so the partner never picks up half a file. Marketing Cloud's File Drop automations start on an upload,
not on a rename, so `atomic=False` writes the final name directly.

Errors are RetryableDeliveryError (refused, timed out, dropped) or PermanentDeliveryError (host key, login,
permission, address), each one sentence naming the host and port, never a password, key or user name.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import io
import logging
import posixpath
import re
import secrets
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import paramiko
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from export_core.address_guard import LINK_LOCAL, PRIVATE, UNRESOLVED, AddressRefused, allowed_addresses
from export_core.destinations import Delivered, PermanentDeliveryError, RetryableDeliveryError

logger = logging.getLogger(__name__)

# The host key algorithms of one kind of key, in paramiko's order of preference; known_hosts names RSA keys
# `ssh-rsa`, whose SHA-1 signatures neither paramiko 5 nor current OpenSSH accept, hence the SHA-2 names.
ED25519 = ("ssh-ed25519",)
ECDSA = ("ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521")
RSA = ("rsa-sha2-512", "rsa-sha2-256")
KEY_KINDS = (ED25519, ECDSA, RSA)
KNOWN_HOSTS_TYPES = {"ssh-ed25519": ED25519, "ssh-rsa": RSA, **dict.fromkeys(ECDSA, ECDSA)}
FINGERPRINT = re.compile(r"SHA256:([A-Za-z0-9+/]{43})=?")
MAX_PIN_LINES = 20
BLOCK = 32 * 1024  # the largest SFTP write paramiko sends in one request
PUBLIC_KEY_COMMENT = "export-service"

_REFUSED_ADDRESS = {
    LINK_LOCAL: "The SFTP host {host} resolves to a link-local address, which is never allowed; nothing was sent.",
    PRIVATE: "The SFTP host {host} resolves to a loopback, private or shared address; only public addresses"
    " are allowed, and nothing was sent.",
}
_UNUSABLE_ADDRESS = "The SFTP host {host} resolves to an address that cannot be a destination; nothing was sent."


@dataclass(frozen=True)
class Timeouts:
    """Seconds each step may take: TCP connect, SSH banner, key exchange, login, and each SFTP request."""

    connect: float = 10.0
    banner: float = 15.0
    handshake: float = 15.0
    auth: float = 20.0
    operation: float = 30.0


@dataclass(frozen=True)
class HostKeyPin:
    """The host keys a destination accepts (OpenSSH SHA256 fingerprints) and the key types to ask for."""

    fingerprints: frozenset[str]
    kinds: tuple[tuple[str, ...], ...]  # one connection per kind, in this order, until a pinned key shows

    def __str__(self) -> str:
        return ", ".join(sorted(self.fingerprints))


def parse_host_key(text: str) -> HostKeyPin:
    """The pin of a `hostKey`: known_hosts lines (`host keytype base64` or `keytype base64`) and/or
    `SHA256:<base64>` fingerprints, one a line; ValueError (one sentence naming hostKey) otherwise."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip() and not line.strip().startswith("#")]
    if not lines:
        raise ValueError("hostKey must be a known_hosts line or a SHA256: fingerprint of the server's host key.")
    if len(lines) > MAX_PIN_LINES:
        raise ValueError(f"hostKey may hold at most {MAX_PIN_LINES} keys.")
    fingerprints: set[str] = set()
    kinds: set[tuple[str, ...]] = set()
    for line in lines:
        found = FINGERPRINT.fullmatch(line)
        if found is not None:
            fingerprints.add(f"SHA256:{found.group(1)}")
            kinds.update(KEY_KINDS)
            continue
        fields = line.split()
        if fields[0].startswith("@"):
            raise ValueError(
                "hostKey must be a plain key: markers such as @cert-authority or @revoked are not accepted."
            )
        if fields[0] not in KNOWN_HOSTS_TYPES:
            fields = fields[1:]  # the host names of a known_hosts line; the key is what is pinned
        if len(fields) < 2 or fields[0] not in KNOWN_HOSTS_TYPES:
            raise ValueError(
                "hostKey must be a known_hosts line with an ssh-ed25519, ecdsa-sha2-nistp256/384/521 or ssh-rsa"
                " key, or a SHA256: fingerprint."
            )
        try:
            key = paramiko.PKey.from_type_string(fields[0], base64.b64decode(fields[1], validate=True))
        except (binascii.Error, paramiko.SSHException, ValueError, TypeError):
            raise ValueError(f"hostKey holds a {fields[0]} key that cannot be read.") from None
        fingerprints.add(key.fingerprint)
        kinds.add(KNOWN_HOSTS_TYPES[fields[0]])
    return HostKeyPin(frozenset(fingerprints), tuple(kind for kind in KEY_KINDS if kind in kinds))


@dataclass(frozen=True)
class SftpTarget:
    """Where and as whom to log in: `password` or `private_key` (OpenSSH PEM text of an ed25519 key)."""

    host: str
    port: int
    username: str
    host_key: str  # the pin as the destination holds it (parse_host_key)
    password: str | None = field(default=None, repr=False)
    private_key: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if (self.password is None) == (self.private_key is None):
            raise ValueError("An SFTP destination logs in with either a password or a private key.")

    @property
    def where(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def generate_key_pair() -> tuple[str, str]:
    """A new ed25519 key pair: (private key as OpenSSH PEM text, public `ssh-ed25519 AAAA… export-service`)."""
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    ).decode()
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return private, f"{public.decode()} {PUBLIC_KEY_COMMENT}"


# -- connecting ----------------------------------------------------------------------------------


def checked_addresses(host: str, port: int, *, allow_private: bool) -> list[str]:
    """The host's addresses, each allowed by the address rules (export_core/address_guard.py); a
    DeliveryError otherwise."""
    try:
        return allowed_addresses(host, port, allow_private=allow_private)
    except AddressRefused as refused:
        if refused.reason == UNRESOLVED:
            raise RetryableDeliveryError(f"The SFTP host name {host} could not be resolved.") from None
        raise PermanentDeliveryError(
            _REFUSED_ADDRESS.get(refused.reason, _UNUSABLE_ADDRESS).format(host=host)
        ) from None


def _open_socket(target: SftpTarget, addresses: list[str], timeout: float) -> socket.socket:
    failure: OSError | None = None
    for address in addresses:
        try:
            return socket.create_connection((address, target.port), timeout=timeout)
        except OSError as exc:
            failure = exc
    if isinstance(failure, TimeoutError):
        reason = "the connection timed out"
    elif isinstance(failure, ConnectionRefusedError):
        reason = "the connection was refused"
    else:
        reason = "the server could not be reached"
    raise RetryableDeliveryError(f"Could not connect to the SFTP server at {target.where}: {reason}.")


def _handshake(
    target: SftpTarget, addresses: list[str], key_types: tuple[str, ...], timeouts: Timeouts
) -> paramiko.Transport | None:
    """A transport whose key exchange offered only `key_types`; None when the server has no such key."""
    transport = paramiko.Transport(_open_socket(target, addresses, timeouts.connect))
    transport.banner_timeout = timeouts.banner
    transport.handshake_timeout = timeouts.handshake
    transport.auth_timeout = timeouts.auth
    transport.channel_timeout = timeouts.operation
    transport.get_security_options().key_types = key_types
    try:
        transport.start_client(timeout=timeouts.handshake)
    except paramiko.IncompatiblePeer as exc:
        transport.close()
        if "host key" in str(exc):  # paramiko's only sign of which algorithm found no match
            return None
        raise PermanentDeliveryError(
            f"The SFTP server at {target.where} offers no encryption that both sides support; nothing was sent."
        ) from exc
    except (paramiko.SSHException, EOFError, OSError) as exc:
        transport.close()
        raise RetryableDeliveryError(
            f"The SFTP server at {target.where} did not complete the SSH handshake in time or closed the connection."
        ) from exc
    return transport


def _verified_transport(
    target: SftpTarget, pin: HostKeyPin, addresses: list[str], timeouts: Timeouts
) -> paramiko.Transport:
    """A transport whose server showed a pinned host key; PermanentDeliveryError (nothing sent) otherwise."""
    shown: list[str] = []
    for key_types in pin.kinds:
        transport = _handshake(target, addresses, key_types, timeouts)
        if transport is None:
            continue
        fingerprint = transport.get_remote_server_key().fingerprint
        if fingerprint in pin.fingerprints:
            return transport
        shown.append(fingerprint)
        transport.close()
    if not shown:
        raise PermanentDeliveryError(
            f"The SFTP server at {target.where} has no host key of the types the destination pins; nothing was sent."
        )
    raise PermanentDeliveryError(
        f"The SFTP server at {target.where} showed host key {', '.join(shown)} but the destination pins {pin};"
        " nothing was sent."
    )


def _private_key(text: str) -> paramiko.PKey:
    try:
        return paramiko.Ed25519Key.from_private_key(io.StringIO(text))
    except (paramiko.SSHException, ValueError, TypeError):
        raise PermanentDeliveryError("The destination's private key cannot be read; nothing was sent.") from None


def _log_in(transport: paramiko.Transport, target: SftpTarget) -> None:
    what = "password" if target.password is not None else "key"
    try:
        if target.password is not None:
            password = target.password
            try:
                transport.auth_password(target.username, password)
            except paramiko.BadAuthenticationType as exc:
                if "keyboard-interactive" not in exc.allowed_types:
                    raise
                transport.auth_interactive(target.username, lambda _title, _text, prompts: [password for _ in prompts])
        else:
            transport.auth_publickey(target.username, _private_key(target.private_key or ""))
    except paramiko.AuthenticationException:
        raise PermanentDeliveryError(
            f"The SFTP server at {target.where} refused the destination's user name and {what}; nothing was sent."
        ) from None
    except (paramiko.SSHException, EOFError, OSError) as exc:
        raise RetryableDeliveryError(f"The SFTP server at {target.where} closed the connection at login.") from exc
    if not transport.is_authenticated():
        raise PermanentDeliveryError(
            f"The SFTP server at {target.where} asks for more than a {what} to log in; nothing was sent."
        )


# -- the session -----------------------------------------------------------------------------------


class SftpSession:
    """A logged-in SFTP connection whose server showed a pinned host key; see `open_session`."""

    def __init__(self, target: SftpTarget, transport: paramiko.Transport, timeouts: Timeouts) -> None:
        self.target = target
        self.host_key_fingerprint = transport.get_remote_server_key().fingerprint
        self._transport = transport
        try:
            sftp = paramiko.SFTPClient.from_transport(transport)
        except (paramiko.SSHException, EOFError, OSError) as exc:
            raise RetryableDeliveryError(f"The SFTP server at {target.where} did not start SFTP.") from exc
        channel = sftp.get_channel() if sftp is not None else None
        if sftp is None or channel is None:
            raise RetryableDeliveryError(f"The SFTP server at {target.where} did not start SFTP.")
        channel.settimeout(timeouts.operation)  # every SFTP request waits at most this long for its answer
        self._sftp = sftp

    def upload(
        self,
        local: Path,
        *,
        path: str,
        name: str,
        atomic: bool = True,
        deadline: float | None = None,
        partial_key: str | None = None,
    ) -> Delivered:
        """Send `local` to `{path}/{name}`, replacing what is there; bytes and sha256 of what was sent.

        `atomic` (the default) writes `.{name}.{partial_key or random}.partial` in the same folder and renames
        it into place; a failed upload removes what it wrote (the partial file, or the final name of a direct
        write) when the connection still allows it. A delivery's own `partial_key` makes its next attempt
        write over (and so remove) the partial file of an attempt whose process died. Past `deadline`
        (time.monotonic()) the upload stops, a RetryableDeliveryError.
        """
        if not name or "/" in name or name in (".", ".."):
            raise ValueError("A delivered file's name must be a plain file name.")
        final = posixpath.join(path, name)
        written = posixpath.join(path, f".{name}.{partial_key or secrets.token_hex(8)}.partial") if atomic else final
        digest, size = hashlib.sha256(), 0
        with local.open("rb") as source:
            try:
                with self._sftp.open(written, "wb") as remote:
                    remote.set_pipelined(True)
                    for block in iter(lambda: source.read(BLOCK), b""):
                        if deadline is not None and time.monotonic() > deadline:
                            raise RetryableDeliveryError(
                                f"The SFTP server at {self.target.where} did not take {final} within the time"
                                " one delivery attempt has."
                            )
                        remote.write(block)
                        digest.update(block)
                        size += len(block)
                stored = self._sftp.stat(written).st_size
                if stored != size:
                    raise RetryableDeliveryError(
                        f"The SFTP server at {self.target.where} stored {stored} of {size} bytes of {final}."
                    )
                if atomic:
                    self._rename(written, final)
            except (OSError, EOFError, paramiko.SSHException, RetryableDeliveryError) as exc:
                self._remove_quietly(written, exc)  # a partner never keeps half a file, under any name
                if isinstance(exc, RetryableDeliveryError):
                    raise
                raise self._error(exc, f"write {final}", path) from exc
        logger.info("SFTP delivery to %s wrote %d bytes to %s", self.target.where, size, final)
        return Delivered(remote_path=final, bytes=size, sha256=digest.hexdigest())

    def make_folder(self, path: str) -> None:
        """Create the folder `path` unless it exists (the folder that holds it must): sfmc's region folders."""
        try:
            self._sftp.stat(path)
            return
        except FileNotFoundError:
            pass
        except (OSError, EOFError, paramiko.SSHException) as exc:
            raise self._error(exc, f"look for the folder {path}", path) from exc
        try:
            self._sftp.mkdir(path)
        except (OSError, EOFError, paramiko.SSHException) as exc:
            if isinstance(exc, OSError) and not isinstance(exc, TimeoutError) and self._exists(path):
                return  # made meanwhile (a concurrent delivery): what was wanted
            raise self._error(exc, f"create the folder {path}", posixpath.dirname(path)) from exc

    def _exists(self, path: str) -> bool:
        try:
            self._sftp.stat(path)
        except (OSError, EOFError, paramiko.SSHException):
            return False
        return True

    def check_writable(self, path: str) -> str:
        """Write a small file into `path` and remove it; a sentence saying what was checked."""
        probe = posixpath.join(path, f".export-service-check-{secrets.token_hex(8)}")
        try:
            with self._sftp.open(probe, "wb") as remote:
                remote.write(b"export-service write check\n")
            self._sftp.remove(probe)
        except (OSError, EOFError, paramiko.SSHException) as exc:
            raise self._error(exc, f"write to {path or 'the login folder'}", path) from exc
        return (
            f"Connected to {self.target.where}, whose host key {self.host_key_fingerprint} is the pinned one, and"
            f" wrote and removed a test file in {path or 'the login folder'}."
        )

    def _rename(self, source: str, final: str) -> None:
        try:
            self._sftp.posix_rename(source, final)
        except OSError as exc:
            if isinstance(exc, TimeoutError):
                raise
            # No posix-rename (or denied): SFTP's own rename, which never replaces an existing file.
            with contextlib.suppress(FileNotFoundError):
                self._sftp.remove(final)
            self._sftp.rename(source, final)

    def _remove_quietly(self, remote: str, cause: BaseException) -> None:
        if isinstance(cause, TimeoutError) or not self._transport.is_active():
            return  # the connection is gone or stalled: the partial file stays, under a name nobody picks up
        with contextlib.suppress(OSError, EOFError, paramiko.SSHException):
            self._sftp.remove(remote)

    def _error(self, exc: BaseException, action: str, folder: str) -> RetryableDeliveryError | PermanentDeliveryError:
        where = self.target.where
        if isinstance(exc, PermissionError):
            return PermanentDeliveryError(f"The SFTP server at {where} did not allow the destination to {action}.")
        if isinstance(exc, FileNotFoundError):
            return PermanentDeliveryError(f"The folder {folder or '.'} does not exist on the SFTP server at {where}.")
        if isinstance(exc, TimeoutError):
            return RetryableDeliveryError(f"The SFTP server at {where} did not answer in time to {action}.")
        if isinstance(exc, EOFError | paramiko.SSHException | ConnectionError):
            return RetryableDeliveryError(f"The connection to the SFTP server at {where} was lost trying to {action}.")
        return RetryableDeliveryError(f"The SFTP server at {where} failed to {action}.")

    def close(self) -> None:
        self._sftp.close()
        self._transport.close()


@contextlib.contextmanager
def open_session(target: SftpTarget, *, allow_private: bool, timeouts: Timeouts | None = None) -> Iterator[SftpSession]:
    """A logged-in session (address rules, pinned host key, login: see the module docstring), closed after.

    ValueError when the destination's hostKey cannot be read; otherwise each failure is a DeliveryError.
    """
    timeouts = timeouts or Timeouts()
    pin = parse_host_key(target.host_key)
    addresses = checked_addresses(target.host, target.port, allow_private=allow_private)
    transport = _verified_transport(target, pin, addresses, timeouts)
    try:
        _log_in(transport, target)
        session = SftpSession(target, transport, timeouts)
    except BaseException:
        transport.close()
        raise
    try:
        yield session
    finally:
        session.close()


def upload(
    target: SftpTarget,
    local: Path,
    *,
    path: str,
    name: str,
    atomic: bool = True,
    allow_private: bool,
    timeouts: Timeouts | None = None,
) -> Delivered:
    """One file over one connection: `open_session` then `SftpSession.upload`."""
    with open_session(target, allow_private=allow_private, timeouts=timeouts) as session:
        return session.upload(local, path=path, name=name, atomic=atomic)


def check_writable(target: SftpTarget, path: str, *, allow_private: bool, timeouts: Timeouts | None = None) -> str:
    """The destination test (SPEC §13): connect, check the host key, log in, write and remove a small file."""
    with open_session(target, allow_private=allow_private, timeouts=timeouts) as session:
        return session.check_writable(path)
