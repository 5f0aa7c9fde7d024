"""A real SFTP server for the destination tests: OpenSSH's sshd, started by the test on a free loopback port.

Nothing of the machine's own sshd is used or changed: the server reads only the configuration written here
(`sshd -D -e -f <ours>`: foreground, its log in `log`), with a host key of its own (ssh-keygen, ed25519 unless
asked for more), its own authorized_keys file and its own pid file. It serves SFTP only (internal-sftp as a
forced command, no forwarding), chrooted into a fresh folder: the remote `/upload` is the local
`chroot/upload`, the one folder the test user may write; `/readonly` is a folder it may not.

The account (`sftp_account`): sshd authenticates passwords against the system's accounts and refuses root by
default, so each test session creates an unprivileged user of its own (`useradd`: no home, nologin shell,
its own group) with a random password (`chpasswd`) and deletes it at the end (`userdel`). Concurrent
sessions never share or change one another's account, and no account with a known password is left on the
machine. sshd checks the password itself (`UsePAM no`, against the shadow file) unless a test asks for
keyboard-interactive, which goes through PAM as servers that offer only that do.

Why root, and why /run: only root can create the account, check a password and chroot; sshd accepts a
chroot only when every folder of its path is root's and writable by no one else, which rules out /tmp
(world-writable), so each server's folders are a fresh `/run/sftp-test-*` removed when it stops for good.
sshd also needs its compiled-in privilege separation folder, /run/sshd, which is created when missing.

`stop()` and `start()` take the server down and up again on the same port with the same key, so a test can
show what a delivery does while it is down.
"""

from __future__ import annotations

import base64
import hashlib
import os
import pwd
import re
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from export_core.settings import REPO_ROOT

SSHD = Path(os.environ.get("SSHD", "/usr/sbin/sshd"))
PRIVSEP_DIR = Path("/run/sshd")
HOST = "127.0.0.1"
START_TIMEOUT_SECONDS = 10.0


def sshd() -> Path:
    """The sshd binary; installs Debian's openssh-server when it is missing (devstack/ensure_openssh.sh)."""
    if not SSHD.exists():
        subprocess.run(["sh", str(REPO_ROOT / "devstack" / "ensure_openssh.sh")], check=True, timeout=900)
    return SSHD


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class SftpAccount:
    username: str
    password: str


@contextmanager
def temporary_account() -> Iterator[SftpAccount]:
    """An unprivileged user with a random password, deleted afterwards (see the module docstring)."""
    if os.geteuid() != 0:
        raise RuntimeError("the SFTP tests run sshd with password login and a chroot, which needs root")
    account = SftpAccount(f"sftp-test-{secrets.token_hex(4)}", secrets.token_urlsafe(18))
    subprocess.run(
        ["useradd", "--no-create-home", "--home-dir", "/", "--shell", "/usr/sbin/nologin", "--user-group",
         account.username],
        check=True, capture_output=True,
    )  # fmt: skip
    try:
        subprocess.run(
            ["chpasswd"], input=f"{account.username}:{account.password}\n", text=True, check=True, capture_output=True
        )
        yield account
    finally:
        subprocess.run(["userdel", account.username], check=False, capture_output=True)


def openssh_version() -> tuple[int, int]:
    found = re.search(r"OpenSSH_(\d+)\.(\d+)", subprocess.run([sshd(), "-V"], capture_output=True, text=True).stderr)
    if found is None:
        raise RuntimeError(f"cannot tell the version of {SSHD}")
    return int(found.group(1)), int(found.group(2))


def fingerprint_of(public_line: str) -> str:
    """OpenSSH's SHA256 fingerprint of a public key line `type base64 [comment]`."""
    digest = hashlib.sha256(base64.b64decode(public_line.split()[1])).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


class SftpServer:
    """One sshd serving SFTP to `account` (password, or the keys given to `authorize`)."""

    def __init__(
        self,
        account: SftpAccount,
        *,
        host_key_types: tuple[str, ...] = ("ed25519",),
        keyboard_interactive: bool = False,
        denied_requests: tuple[str, ...] = (),
    ) -> None:
        self.account = account
        self.host, self.port = HOST, free_port()
        self.base = Path(tempfile.mkdtemp(prefix="sftp-test-", dir="/run"))
        self.base.chmod(0o755)
        self.etc, self.chroot = self.base / "etc", self.base / "chroot"
        self.etc.mkdir(mode=0o755)
        self.chroot.mkdir(mode=0o755)
        owner = pwd.getpwnam(account.username)
        self.upload_dir = self.chroot / "upload"
        self.upload_dir.mkdir()
        os.chown(self.upload_dir, owner.pw_uid, owner.pw_gid)
        (self.chroot / "readonly").mkdir(mode=0o755)
        self.authorized_keys = self.etc / "authorized_keys"
        self.authorized_keys.write_text("")
        self.authorized_keys.chmod(0o644)
        self.host_keys: dict[str, str] = {}  # type → public line `type base64`
        for key_type in host_key_types:
            key_file = self.etc / f"host_{key_type}"
            subprocess.run(
                ["ssh-keygen", "-q", "-t", key_type, "-N", "", "-C", "", "-f", str(key_file)],
                check=True, capture_output=True,
            )  # fmt: skip
            self.host_keys[key_type] = " ".join(Path(f"{key_file}.pub").read_text().split()[:2])
        self.config = self.etc / "sshd_config"
        self.config.write_text(self._config(keyboard_interactive, denied_requests))
        self.log = self.base / "sshd.log"
        self.process: subprocess.Popen[bytes] | None = None

    def _config(self, keyboard_interactive: bool, denied_requests: tuple[str, ...]) -> str:
        sftp = "internal-sftp" + (f" -P {','.join(denied_requests)}" if denied_requests else "")
        lines = [
            f"ListenAddress {self.host}:{self.port}",
            *(f"HostKey {self.etc / f'host_{key_type}'}" for key_type in self.host_keys),
            f"PidFile {self.base / 'sshd.pid'}",
            f"AuthorizedKeysFile {self.authorized_keys}",
            f"AllowUsers {self.account.username}",
            "PermitRootLogin no",
            "PubkeyAuthentication yes",
            f"PasswordAuthentication {'no' if keyboard_interactive else 'yes'}",
            f"KbdInteractiveAuthentication {'yes' if keyboard_interactive else 'no'}",
            f"UsePAM {'yes' if keyboard_interactive else 'no'}",
            f"ChrootDirectory {self.chroot}",
            f"ForceCommand {sftp}",
            f"Subsystem sftp {sftp}",
            "AllowTcpForwarding no",
            "AllowAgentForwarding no",
            "X11Forwarding no",
            "PermitTunnel no",
            "LogLevel VERBOSE",
        ]
        if openssh_version() >= (9, 8):  # else repeated failed logins from 127.0.0.1 get it refused for a while
            lines.append("PerSourcePenalties no")
        return "\n".join(lines) + "\n"

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def known_hosts_line(self, key_type: str = "ed25519") -> str:
        """The host key as a known_hosts line: `[127.0.0.1]:port type base64`."""
        return f"[{self.host}]:{self.port} {self.host_keys[key_type]}"

    def fingerprint(self, key_type: str = "ed25519") -> str:
        return fingerprint_of(self.host_keys[key_type])

    def local(self, remote_path: str) -> Path:
        """Where a path of the server (absolute, inside the chroot) is on this machine."""
        return self.chroot / remote_path.lstrip("/")

    def authorize(self, public_line: str) -> None:
        """Let `public_line` (`ssh-ed25519 AAAA… comment`) log in as the account."""
        with self.authorized_keys.open("a") as handle:
            handle.write(public_line.strip() + "\n")

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> None:
        PRIVSEP_DIR.mkdir(mode=0o755, exist_ok=True)
        offset = self.log.stat().st_size if self.log.exists() else 0
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [str(sshd()), "-D", "-e", "-f", str(self.config)], stdout=log, stderr=subprocess.STDOUT
            )
        ready = f"Server listening on {self.host} port {self.port}".encode()
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while ready not in self.log.read_bytes()[offset:]:
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"sshd did not start:\n{self.log.read_bytes()[offset:].decode(errors='replace')}")
            time.sleep(0.02)

    def stop(self) -> None:
        """Stop listening (sessions already open end when their clients close them)."""
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.base, ignore_errors=True)


@contextmanager
def running_sftp_server(
    account: SftpAccount,
    *,
    host_key_types: tuple[str, ...] = ("ed25519",),
    keyboard_interactive: bool = False,
    denied_requests: tuple[str, ...] = (),
) -> Iterator[SftpServer]:
    """A started SftpServer, removed with its folders afterwards (options: see SftpServer)."""
    server = SftpServer(
        account, host_key_types=host_key_types, keyboard_interactive=keyboard_interactive,
        denied_requests=denied_requests,
    )  # fmt: skip
    try:
        server.start()
        yield server
    finally:
        server.remove()


@pytest.fixture(scope="session", name="sftp_account")
def sftp_account_fixture() -> Iterator[SftpAccount]:
    """The session's SFTP user (created, then deleted)."""
    with temporary_account() as account:
        yield account


@pytest.fixture(name="sftp_server")
def sftp_server_fixture(sftp_account: SftpAccount) -> Iterator[SftpServer]:
    """A running SFTP server of the test's own (folders, host key, port); import both fixtures to use it."""
    with running_sftp_server(sftp_account) as server:
        yield server
