"""`export-service destinations add|list|test|remove|deliveries` and `request --destination` against a real API
over HTTP (SPEC §9, §13), with a real sshd."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from pymongo.database import Database

from export_api.app import create_app
from export_cli import cli, destinations
from export_cli.api import fields_of
from export_core.destination_store import DestinationStore
from export_core.secrets import SecretBox
from export_core.settings import Settings
from export_core.vocabulary import COMMON_FIELDS, DESTINATION_FIELDS
from tests.api.conftest import CAMPAIGN, LiveServer, TokenFactory
from tests.api.test_cli import one_line_error, run_cli
from tests.sftp_server import SftpServer, sftp_account_fixture, sftp_server_fixture  # noqa: F401 (the fixtures)


@pytest.fixture
def private_api(settings: Settings, campaigns: None) -> Iterator[LiveServer]:
    """The API with WEBHOOK_ALLOW_PRIVATE=1: the test sshd listens on 127.0.0.1."""
    with LiveServer(create_app(settings.model_copy(update={"webhook_allow_private": True}))) as server:
        yield server


def test_add_with_a_password_from_stdin_test_list_and_remove(
    private_api: LiveServer,
    make_token: TokenFactory,
    sftp_server: SftpServer,
    tmp_path: Path,
    db: Database,
    secret_box: SecretBox,
):
    token = make_token()
    host_keys = tmp_path / "partner.pub"
    host_keys.write_text(sftp_server.known_hosts_line() + "\n")  # what `ssh-keyscan -p PORT host` prints
    added = run_cli(
        private_api, "destinations", "add", CAMPAIGN, "--type", "sftp", "--host", sftp_server.host,
        "--port", str(sftp_server.port), "--username", sftp_server.account.username, "--path", "/upload",
        "--host-key-file", str(host_keys), "--password-stdin", "--name", "Partner", token=token,
        input=sftp_server.account.password + "\n",
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    destination_id = added.stdout.split()[1]
    where = f"{sftp_server.account.username}@{sftp_server.host}:{sftp_server.port}/upload"
    assert added.stdout.strip() == f"destination {destination_id}  sftp  {where}  Partner"
    stored = db.destinations.find_one({"_id": destination_id}) or {}
    assert sftp_server.account.password not in str(stored), "stored encrypted"
    assert DestinationStore(db).login_secrets(destination_id, secret_box) == {"password": sftp_server.account.password}

    tested = run_cli(private_api, "destinations", "test", CAMPAIGN, destination_id, token=token)
    assert tested.returncode == 0, tested.stderr
    assert tested.stdout.startswith(f"ok  Connected to {sftp_server.address}, whose host key")

    listed = run_cli(private_api, "destinations", "list", CAMPAIGN, token=token)
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.splitlines() == [
        "id\ttype\twhere\tlogin\tencrypted\tname",
        f"{destination_id}\tsftp\t{where}\tpassword\t\tPartner",
        "1 destination(s)",
    ]
    for result in (added, tested, listed):
        assert sftp_server.account.password not in result.stdout + result.stderr

    removed = run_cli(private_api, "destinations", "remove", CAMPAIGN, destination_id, token=token)
    assert removed.returncode == 0 and removed.stdout.strip() == f"removed destination {destination_id}"
    again = run_cli(private_api, "destinations", "remove", CAMPAIGN, destination_id, token=token)
    assert one_line_error(again, 3).startswith("export-service: Destination not found. (HTTP 404")


def test_a_generated_key_is_printed_and_a_failed_test_exits_1_with_one_line(
    private_api: LiveServer, make_token: TokenFactory, sftp_server: SftpServer
):
    token = make_token()
    added = run_cli(
        private_api, "destinations", "add", CAMPAIGN, "--type", "sfmc", "--host", sftp_server.host,
        "--port", str(sftp_server.port), "--username", sftp_server.account.username, "--path", "/upload",
        "--host-key", sftp_server.fingerprint(), "--generate-key", token=token,
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    destination_id, public = added.stdout.split()[1], added.stdout.splitlines()[1]
    assert public.startswith("public key ssh-ed25519 AAAA") and public.endswith(" export-service")
    assert "authorizes this key" in added.stderr
    failed = run_cli(private_api, "destinations", "test", CAMPAIGN, destination_id, token=token)
    assert "refused the destination's user name and key" in one_line_error(failed, 1)
    sftp_server.authorize(public.removeprefix("public key "))
    assert run_cli(private_api, "destinations", "test", CAMPAIGN, destination_id, token=token).returncode == 0


def test_an_s3_destination_a_request_naming_it_and_its_deliveries(
    live_api: LiveServer, make_token: TokenFactory, db: Database
):
    token = make_token()
    added = run_cli(
        live_api, "destinations", "add", CAMPAIGN, "--type", "s3", "--bucket", "partner-drop", "--prefix", "vf",
        "--region", "eu-west-1", "--acl", "none", "--json", token=token,
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    destination = json.loads(added.stdout)
    assert (destination["bucket"], destination["prefix"], destination["acl"]) == ("partner-drop", "vf", "none")

    requested = run_cli(live_api, "request", CAMPAIGN, "codes", "--destination", destination["id"], token=token)
    assert requested.returncode == 0, requested.stderr
    export_id = requested.stdout.split()[1]
    assert (db.exports.find_one({"_id": export_id}) or {})["destinations"] == [destination["id"]]
    refused = run_cli(live_api, "request", CAMPAIGN, "codes", "--destination", "nope", token=token)
    assert one_line_error(refused, 3).startswith("export-service: 'nope' is not a destination of this campaign.")

    deliveries = run_cli(live_api, "destinations", "deliveries", CAMPAIGN, export_id, token=token)
    assert deliveries.returncode == 0, deliveries.stderr
    assert deliveries.stdout.splitlines() == [
        "destination\tstatus\tremote path\tbytes\tattempts\tlast error",
        "0 delivery(ies)",
    ], "none before the export FINISHED"
    missing = run_cli(
        live_api, "destinations", "add", CAMPAIGN, "--type", "s3", "--bucket", "partner-drop", token=token
    )
    assert "'region' must be a non-empty string" in one_line_error(missing, 3)


def test_add_has_a_flag_for_every_field_the_service_takes() -> None:
    """Each flag stores under the field it fills; a field renamed in the service would be missing here."""
    args = cli.parser().parse_args(
        ["destinations", "add", CAMPAIGN, "--type", "s3", "--name", "n", "--host", "h", "--port", "2222",
         "--username", "u", "--path", "/in", "--host-key", "SHA256:x", "--generate-key", "--bucket", "b",
         "--prefix", "p", "--region", "r", "--role-arn", "arn", "--external-id", "e", "--acl", "none",
         "--file-name", "{name}_{exportId}.{ext}"]
    )  # fmt: skip
    sent = set(fields_of(vars(args), destinations.ALL_FIELDS))
    # From a file or stdin, not the command line: --pgp-key-file and --password-stdin (see the tests above).
    read_by_the_command = {"pgpPublicKey", "password"}
    all_fields = set(COMMON_FIELDS).union(*DESTINATION_FIELDS.values())
    assert sent == all_fields - read_by_the_command
