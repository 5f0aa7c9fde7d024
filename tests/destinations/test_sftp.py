"""SFTP deliveries against a real OpenSSH server (tests/sftp_server.py): pinning, login, atomic writes, errors."""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from export_core.destinations import PermanentDeliveryError, RetryableDeliveryError
from export_core.destinations.sftp import (
    RSA,
    HostKeyPin,
    SftpTarget,
    Timeouts,
    check_writable,
    generate_key_pair,
    open_session,
    parse_host_key,
    upload,
)
from tests.sftp_server import SftpAccount, SftpServer, fingerprint_of, running_sftp_server

QUICK = Timeouts(connect=2, banner=1, handshake=2, auth=3, operation=2)


def target_of(server: SftpServer, *, host_key: str | None = None, **login: str) -> SftpTarget:
    if not login:
        login = {"password": server.account.password}
    return SftpTarget(
        host=server.host,
        port=server.port,
        username=server.account.username,
        host_key=host_key if host_key is not None else server.known_hosts_line(),
        **login,
    )


@pytest.fixture
def source(tmp_path: Path) -> Path:
    path = tmp_path / "export.zip"
    path.write_bytes(os.urandom(300_000) + b"end")  # several SFTP writes
    return path


def test_delivered_bytes_equal_the_source_and_no_partial_file_is_left(sftp_server: SftpServer, source: Path) -> None:
    delivered = upload(target_of(sftp_server), source, path="/upload", name="export.zip", allow_private=True)
    assert delivered.remote_path == "/upload/export.zip"
    assert delivered.bytes == source.stat().st_size
    assert delivered.sha256 == hashlib.sha256(source.read_bytes()).hexdigest()
    assert sftp_server.local("/upload/export.zip").read_bytes() == source.read_bytes()
    assert sorted(p.name for p in sftp_server.upload_dir.iterdir()) == ["export.zip"]


def test_re_delivery_overwrites(sftp_server: SftpServer, tmp_path: Path) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    first.write_bytes(b"first delivery, the longer one\n")
    second.write_bytes(b"second\n")
    target = target_of(sftp_server)
    upload(target, first, path="/upload", name="data.csv", allow_private=True)
    upload(target, second, path="/upload", name="data.csv", allow_private=True)
    assert sftp_server.local("/upload/data.csv").read_bytes() == b"second\n"
    assert [p.name for p in sftp_server.upload_dir.iterdir()] == ["data.csv"]


def test_a_server_showing_another_host_key_gets_nothing(sftp_server: SftpServer, source: Path) -> None:
    _, other_key = generate_key_pair()
    with pytest.raises(PermanentDeliveryError) as raised:
        upload(target_of(sftp_server, host_key=other_key), source, path="/upload", name="x.zip", allow_private=True)
    assert str(raised.value) == (
        f"The SFTP server at {sftp_server.address} showed host key {sftp_server.fingerprint()} but the destination"
        f" pins {fingerprint_of(other_key)}; nothing was sent."
    )
    assert list(sftp_server.upload_dir.iterdir()) == []
    assert "Accepted" not in sftp_server.log.read_text() and "Failed password" not in sftp_server.log.read_text()


def test_a_fingerprint_pin_works_and_a_wrong_one_refuses(sftp_server: SftpServer, source: Path) -> None:
    upload(
        target_of(sftp_server, host_key=sftp_server.fingerprint()), source, path="/upload", name="a", allow_private=True
    )
    assert sftp_server.local("/upload/a").read_bytes() == source.read_bytes()
    wrong = "SHA256:" + "A" * 43
    with pytest.raises(PermanentDeliveryError, match=f"pins {wrong}; nothing was sent"):
        upload(target_of(sftp_server, host_key=wrong), source, path="/upload", name="b", allow_private=True)
    assert not sftp_server.local("/upload/b").exists()


def test_the_pinned_type_is_the_one_asked_for(sftp_account: SftpAccount, source: Path) -> None:
    """The server has ed25519 and ECDSA keys; a pin of the ECDSA one (line or fingerprint) must match it."""
    with running_sftp_server(sftp_account, host_key_types=("ed25519", "ecdsa")) as server:
        for pin in (server.known_hosts_line("ecdsa"), server.fingerprint("ecdsa"), server.host_keys["ecdsa"]):
            with open_session(target_of(server, host_key=pin), allow_private=True) as session:
                assert session.host_key_fingerprint == server.fingerprint("ecdsa")


def test_a_server_without_a_key_of_the_pinned_type_gets_nothing(sftp_server: SftpServer, source: Path) -> None:
    ecdsa_key = (
        "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBEmKSENjQEezOmxkZMy7opKgwFB9nkt5YRrY"
        "MjNuG5N87uRgg6CLrbo5wAdT/y6v0mKV0U2w0WZ2YB/++Tpockg="
    )
    with pytest.raises(PermanentDeliveryError) as raised:
        upload(target_of(sftp_server, host_key=ecdsa_key), source, path="/upload", name="x", allow_private=True)
    assert str(raised.value) == (
        f"The SFTP server at {sftp_server.address} has no host key of the types the destination pins; nothing was sent."
    )


@pytest.mark.parametrize(
    "text",
    [
        "",
        "not a key at all",
        "ssh-ed25519 !!!not-base64!!!",
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5",
        "@cert-authority *.example.com ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIE02didjWLsDgfxM2JIANtMTKgczLwFKg7GAWY",
        "ssh-dss AAAAB3NzaC1kc3MAAACBAP",
        "SHA256:tooshort",
    ],
)
def test_unreadable_host_keys_are_refused_with_a_sentence(text: str) -> None:
    with pytest.raises(ValueError, match="^hostKey"):
        parse_host_key(text)


def test_known_hosts_lines_with_and_without_hosts_and_several_keys(sftp_server: SftpServer) -> None:
    key = sftp_server.host_keys["ed25519"]
    pins = [
        key,
        f"sftp.example.com,203.0.113.7 {key} comment words",
        sftp_server.known_hosts_line(),
        f"# from ssh-keyscan\n{generate_key_pair()[1]}\n{key}\n",
    ]
    for pin in pins:
        assert sftp_server.fingerprint() in parse_host_key(pin).fingerprints
    rsa = rsa_public_line()
    assert parse_host_key(f"sftp.example.com {rsa}") == HostKeyPin(frozenset({fingerprint_of(rsa)}), (RSA,))


def rsa_public_line() -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    return key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()


def test_password_login_and_a_wrong_password(sftp_server: SftpServer, source: Path) -> None:
    upload(target_of(sftp_server), source, path="/upload", name="ok", allow_private=True)
    wrong = "not-the-password-" + "x" * 8
    with pytest.raises(PermanentDeliveryError) as raised:
        upload(target_of(sftp_server, password=wrong), source, path="/upload", name="no", allow_private=True)
    assert str(raised.value) == (
        f"The SFTP server at {sftp_server.address} refused the destination's user name and password; nothing was sent."
    )
    assert sftp_server.account.username not in str(raised.value)
    assert [p.name for p in sftp_server.upload_dir.iterdir()] == ["ok"]


def test_a_generated_key_logs_in_once_authorized(sftp_server: SftpServer, source: Path) -> None:
    private, public = generate_key_pair()
    assert public.startswith("ssh-ed25519 AAAA") and public.endswith(" export-service")
    assert private.startswith("-----BEGIN OPENSSH PRIVATE KEY-----")
    target = target_of(sftp_server, private_key=private)
    with pytest.raises(PermanentDeliveryError, match="refused the destination's user name and key"):
        upload(target, source, path="/upload", name="k", allow_private=True)
    sftp_server.authorize(public)
    assert upload(target, source, path="/upload", name="k", allow_private=True).bytes == source.stat().st_size
    assert sftp_server.local("/upload/k").read_bytes() == source.read_bytes()


def test_an_unreadable_private_key_is_a_permanent_error(sftp_server: SftpServer, source: Path) -> None:
    with pytest.raises(PermanentDeliveryError, match="^The destination's private key cannot be read"):
        upload(target_of(sftp_server, private_key="garbage"), source, path="/upload", name="k", allow_private=True)


def test_keyboard_interactive_only_servers_take_the_password(sftp_account: SftpAccount, source: Path) -> None:
    with running_sftp_server(sftp_account, keyboard_interactive=True) as server:
        upload(target_of(server), source, path="/upload", name="kbd", allow_private=True)
        assert server.local("/upload/kbd").read_bytes() == source.read_bytes()


def test_server_down_is_retryable_and_works_once_it_is_back(sftp_server: SftpServer, source: Path) -> None:
    target = target_of(sftp_server)
    sftp_server.stop()
    with pytest.raises(RetryableDeliveryError) as raised:
        upload(target, source, path="/upload", name="later", allow_private=True, timeouts=QUICK)
    assert str(raised.value) == (
        f"Could not connect to the SFTP server at {sftp_server.address}: the connection was refused."
    )
    sftp_server.start()
    upload(target, source, path="/upload", name="later", allow_private=True)
    assert sftp_server.local("/upload/later").read_bytes() == source.read_bytes()


@pytest.fixture
def silent_server() -> Iterator[tuple[str, int]]:
    """Accepts TCP connections and never says a word (a hung server, or a firewall that swallows SSH)."""
    listener = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield listener.getsockname()[:2]
    stop.set()
    thread.join()
    for conn in accepted:
        conn.close()
    listener.close()


def test_a_server_that_never_answers_is_a_retryable_timeout(silent_server: tuple[str, int], source: Path) -> None:
    host, port = silent_server
    _, key = generate_key_pair()
    target = SftpTarget(host=host, port=port, username="u", host_key=key, password="p")
    with pytest.raises(RetryableDeliveryError, match="did not complete the SSH handshake in time"):
        upload(target, source, path="/upload", name="x", allow_private=True, timeouts=QUICK)


def test_permission_denied_and_missing_folders_are_permanent(sftp_server: SftpServer, source: Path) -> None:
    target = target_of(sftp_server)
    with pytest.raises(PermanentDeliveryError) as raised:
        upload(target, source, path="/readonly", name="x", allow_private=True)
    assert str(raised.value) == (
        f"The SFTP server at {sftp_server.address} did not allow the destination to write /readonly/x."
    )
    with pytest.raises(PermanentDeliveryError, match="^The folder /nowhere does not exist on the SFTP server at"):
        upload(target, source, path="/nowhere", name="x", allow_private=True)
    assert list(sftp_server.local("/readonly").iterdir()) == []


def test_direct_writes_use_the_final_name(sftp_server: SftpServer, source: Path) -> None:
    delivered = upload(
        target_of(sftp_server), source, path="/upload", name="drop.csv", atomic=False, allow_private=True
    )
    assert delivered.remote_path == "/upload/drop.csv"
    assert [p.name for p in sftp_server.upload_dir.iterdir()] == ["drop.csv"]
    assert sftp_server.local("/upload/drop.csv").read_bytes() == source.read_bytes()


def test_without_posix_rename_the_file_still_replaces_the_old_one(sftp_account: SftpAccount, tmp_path: Path) -> None:
    old, new = tmp_path / "old", tmp_path / "new"
    old.write_bytes(b"old\n")
    new.write_bytes(b"new\n")
    with running_sftp_server(sftp_account, denied_requests=("posix-rename",)) as server:
        upload(target_of(server), old, path="/upload", name="f.csv", allow_private=True)
        upload(target_of(server), new, path="/upload", name="f.csv", allow_private=True)
        assert server.local("/upload/f.csv").read_bytes() == b"new\n"
        assert [p.name for p in server.upload_dir.iterdir()] == ["f.csv"]


def test_a_failed_rename_removes_the_partial_file(sftp_account: SftpAccount, source: Path) -> None:
    with running_sftp_server(sftp_account, denied_requests=("posix-rename", "rename")) as server:
        with pytest.raises(PermanentDeliveryError, match="did not allow the destination to write /upload/x"):
            upload(target_of(server), source, path="/upload", name="x", allow_private=True)
        assert list(server.upload_dir.iterdir()) == []


def test_check_writable_writes_and_removes_a_file(sftp_server: SftpServer) -> None:
    message = check_writable(target_of(sftp_server), "/upload", allow_private=True)
    assert message == (
        f"Connected to {sftp_server.address}, whose host key {sftp_server.fingerprint()} is the pinned one, and"
        " wrote and removed a test file in /upload."
    )
    assert list(sftp_server.upload_dir.iterdir()) == []
    assert "write check" not in message
    with pytest.raises(PermanentDeliveryError, match="did not allow the destination to write to /readonly"):
        check_writable(target_of(sftp_server), "/readonly", allow_private=True)


def test_hosts_obey_the_webhook_address_rules(sftp_server: SftpServer, source: Path) -> None:
    with pytest.raises(PermanentDeliveryError) as raised:
        upload(target_of(sftp_server), source, path="/upload", name="x", allow_private=False)
    assert str(raised.value) == (
        "The SFTP host 127.0.0.1 resolves to a loopback, private or shared address; only public addresses are"
        " allowed, and nothing was sent."
    )
    assert "Connection from" not in sftp_server.log.read_text()
    metadata = SftpTarget(
        host="169.254.169.254", port=22, username="u", host_key=sftp_server.fingerprint(), password="p"
    )
    with pytest.raises(PermanentDeliveryError, match="link-local address, which is never allowed"):
        upload(metadata, source, path="/", name="x", allow_private=True)
    unknown = SftpTarget(
        host="no-such-host.invalid", port=22, username="u", host_key=sftp_server.fingerprint(), password="p"
    )
    with pytest.raises(RetryableDeliveryError, match="^The SFTP host name no-such-host.invalid could not be resolved"):
        upload(unknown, source, path="/", name="x", allow_private=True)


def test_a_target_needs_exactly_one_way_to_log_in() -> None:
    with pytest.raises(ValueError):
        SftpTarget(host="h", port=22, username="u", host_key="SHA256:" + "A" * 43)
    with pytest.raises(ValueError):
        SftpTarget(host="h", port=22, username="u", host_key="k", password="p", private_key="k")
    assert "secret-password" not in repr(
        SftpTarget(host="h", port=22, username="u", host_key="k", password="secret-password")
    )


def test_no_secret_reaches_a_log_line_even_at_debug(
    sftp_server: SftpServer, source: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """paramiko logs every step at DEBUG; neither it nor we may write the password or the private key."""
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="paramiko")
    private, public = generate_key_pair()
    sftp_server.authorize(public)
    upload(target_of(sftp_server), source, path="/upload", name="ok", allow_private=True)
    upload(target_of(sftp_server, private_key=private), source, path="/upload", name="key", allow_private=True)
    with pytest.raises(PermanentDeliveryError) as refused:
        upload(target_of(sftp_server, password="wrong-" + sftp_server.account.password), source, path="/upload",
               name="no", allow_private=True)  # fmt: skip
    with pytest.raises(PermanentDeliveryError) as denied:
        upload(target_of(sftp_server), source, path="/readonly", name="no", allow_private=True)
    assert any(r.name.startswith("paramiko") and r.levelno == logging.DEBUG for r in caplog.records)
    text = "\n".join([caplog.text, *(str(r.args) for r in caplog.records), str(refused.value), str(denied.value)])
    key_body = "".join(private.splitlines()[1:-1])
    for secret in (sftp_server.account.password, key_body, key_body[:40], key_body[-40:]):
        assert secret not in text
