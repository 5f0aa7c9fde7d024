"""One export delivered to one destination (export_core/destination_delivery.py): the export's object(s) from our
bucket to a real sshd, a partner bucket of the suite's S3 server, or Marketing Cloud's layout; PGP with gpg."""

from __future__ import annotations

import hashlib
import io
import logging
import os
import zipfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from export_core.clients import s3_client
from export_core.destination_delivery import Reach, deliver, outgoing_files, split_name
from export_core.destination_delivery import s3_client as partner_client
from export_core.destination_store import parse_destination
from export_core.destinations import PermanentDeliveryError, RetryableDeliveryError
from export_core.destinations.sftp import generate_key_pair
from export_core.settings import Settings
from tests.partner_bucket import PARTNER_REGION, partner_bucket_fixture  # noqa: F401 (the fixture)
from tests.pgp_keys import PgpKey
from tests.sftp_server import SftpServer

EXPORT_ID = "5f0c2b9e7a1d4c3e8b6a0f1e2d3c4b5a"
FINISHED_AT = datetime(2027, 3, 14, 7, 0, tzinfo=UTC)


def put(s3: Any, settings: Settings, key: str, body: bytes) -> dict[str, Any]:
    s3.put_object(Bucket=settings.exports_bucket, Key=key, Body=body)
    return {"key": key, "bytes": len(body), "sha256": hashlib.sha256(body).hexdigest()}


def record_of(export_type: str, objects: list[dict[str, Any]], *, files: list[str] | None = None) -> dict[str, Any]:
    """A FINISHED record as the finish step writes it (export_pipelines/stages.py finish_fields)."""
    keys = [o["key"] for o in objects]
    meta: dict[str, Any] = {"bucket": "", "objects": objects}
    if files is not None:
        meta["files"] = [{"name": name, "rows": 1} for name in files]
    return {
        "_id": EXPORT_ID,
        "id": EXPORT_ID,
        "campaignId": "camp-1",
        "exportType": export_type,
        "status": "FINISHED",
        "key": keys if export_type == "autoReminderEmail" else keys[0],
        "meta": meta,
        "date": {"finished": FINISHED_AT},
    }


def sftp_destination(server: SftpServer, **change: Any) -> tuple[dict[str, Any], dict[str, str]]:
    body = {
        "type": "sftp", "host": server.host, "port": server.port, "username": server.account.username,
        "path": "/upload", "hostKey": server.known_hosts_line(), "password": server.account.password, **change,
    }  # fmt: skip
    request = parse_destination(body)
    return {"type": request.type, **request.fields}, {"password": server.account.password}


@pytest.fixture
def reach(settings: Settings) -> Reach:
    """WEBHOOK_ALLOW_PRIVATE (the sshd is on 127.0.0.1), partner buckets on the suite's S3 server."""
    return Reach(allow_private=True, s3_endpoint_url=settings.s3_endpoint_url, local_credentials=False)


def send(record: dict[str, Any], destination: dict[str, Any], secrets: dict[str, str], reach: Reach, **kw: Any) -> Any:
    settings = Settings.from_env()  # the test's own (its env fixture), for our bucket
    return deliver(record, destination, secrets, reach, s3=s3_client(settings), bucket=settings.exports_bucket, **kw)


def test_a_single_file_arrives_renamed_into_place_with_the_bytes_of_the_s3_file(
    sftp_server: SftpServer, s3: Any, settings: Settings, reach: Reach, tmp_path: Path
):
    body = os.urandom(200_000) + b"\r\n"
    obj = put(s3, settings, f"codes/camp-1/{EXPORT_ID}/Summer Tour 2024 - Codes.csv", body)
    destination, secrets = sftp_destination(sftp_server)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    (delivered,) = send(record_of("codes", [obj]), destination, secrets, reach, scratch_root=scratch)
    name = f"Summer Tour 2024 - Codes_{EXPORT_ID}.csv"
    assert delivered.remote_path == f"/upload/{name}"
    assert (delivered.bytes, delivered.sha256) == (len(body), obj["sha256"])
    assert sftp_server.local(delivered.remote_path).read_bytes() == body
    assert [p.name for p in sftp_server.upload_dir.iterdir()] == [name], "no partial file left"
    assert list(scratch.iterdir()) == [], "no scratch file left"


def test_a_pgp_destination_gets_the_file_encrypted_to_its_key(
    sftp_server: SftpServer, s3: Any, settings: Settings, reach: Reach, pgp_key_pair: PgpKey
):
    body = b"code,marketId\r\nABC123,m1\r\n" * 1000
    obj = put(s3, settings, f"codes/camp-1/{EXPORT_ID}/Tour - Codes.csv", body)
    destination, secrets = sftp_destination(
        sftp_server, pgpPublicKey=pgp_key_pair.public_armored, fileName="codes-{date}-{exportId}.{ext}"
    )
    (delivered,) = send(record_of("codes", [obj]), destination, secrets, reach)
    assert delivered.remote_path == f"/upload/codes-20270314-{EXPORT_ID}.csv.pgp"
    sent = sftp_server.local(delivered.remote_path)
    assert sent.read_bytes() != body and pgp_key_pair.decrypt(sent) == body
    assert delivered.sha256 == hashlib.sha256(sent.read_bytes()).hexdigest(), "the sha256 of what was sent"


def reminder_zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, content in members.items():
            archive.writestr(name, content)
    return buffer.getvalue()


def test_marketing_cloud_gets_the_reminder_zips_regional_csvs_under_their_region_folders(
    sftp_server: SftpServer, s3: Any, settings: Settings, reach: Reach
):
    members = {"NA/en-us_1.csv": b"email\r\na@x\r\n", "NA/fr-ca_1.csv": b"email\r\nb@x\r\n", "UK/en-gb_1.csv": b"e\r\n"}
    key = f"reminderEmail/camp-1/{EXPORT_ID}/Combined - Tour ASU - Reminder Email Data.zip"
    obj = put(s3, settings, key, reminder_zip(members))
    owner = sftp_server.upload_dir.stat()
    (sftp_server.upload_dir / "NA").mkdir()  # one region folder exists, the other is made
    os.chown(sftp_server.upload_dir / "NA", owner.st_uid, owner.st_gid)
    destination, secrets = sftp_destination(sftp_server, type="sfmc")
    delivered = send(record_of("reminderEmail", [obj], files=sorted(members)), destination, secrets, reach)
    expected = {f"/upload/{m.removesuffix('.csv')}_{EXPORT_ID}.csv": body for m, body in members.items()}
    assert [d.remote_path for d in delivered] == list(expected)
    for sent, (path, body) in zip(delivered, expected.items(), strict=True):
        assert sftp_server.local(path).read_bytes() == body and sent.bytes == len(body)
    assert sorted(p.name for p in (sftp_server.upload_dir / "UK").iterdir()) == [f"en-gb_1_{EXPORT_ID}.csv"]
    assert sorted(p.name for p in sftp_server.upload_dir.iterdir()) == ["NA", "UK"], "not the ZIP"


def test_marketing_cloud_gets_each_auto_reminder_csv_under_its_region(
    sftp_server: SftpServer, s3: Any, settings: Settings, reach: Reach
):
    prefix = "Ticketmaster/7222895/TMDemandMgmt/DM_ArtistPresale_V03"
    objects = [
        put(s3, settings, f"{prefix}_Tour_NA_{EXPORT_ID}.csv", b"email\r\nna@x\r\n"),
        put(s3, settings, f"{prefix.replace('7222895', '1314420')}_Tour_UK_{EXPORT_ID}.csv", b"email\r\nuk@x\r\n"),
    ]
    destination, secrets = sftp_destination(sftp_server, type="sfmc")
    delivered = send(record_of("autoReminderEmail", objects, files=["NA.csv", "UK.csv"]), destination, secrets, reach)
    assert [d.remote_path for d in delivered] == [
        f"/upload/NA/DM_ArtistPresale_V03_Tour_NA_{EXPORT_ID}.csv",
        f"/upload/UK/DM_ArtistPresale_V03_Tour_UK_{EXPORT_ID}.csv",
    ], "the export id once, and the region folder"
    assert sftp_server.local(delivered[1].remote_path).read_bytes() == b"email\r\nuk@x\r\n"
    plain, _ = sftp_destination(sftp_server)
    side_by_side = outgoing_files(record_of("autoReminderEmail", objects, files=["NA.csv", "UK.csv"]), plain)
    assert [f.folder for f in side_by_side] == ["", ""], "an sftp destination gets the files in its folder"


def test_an_s3_destination_gets_the_object_under_its_prefix(
    s3: Any, settings: Settings, reach: Reach, partner_bucket: str
):
    body = b"userId\r\nu1\r\n"
    obj = put(s3, settings, f"entries/camp-1/{EXPORT_ID}/Tour - Entries.csv.gz", body)
    request = parse_destination({"type": "s3", "bucket": partner_bucket, "prefix": "vf/in", "region": PARTNER_REGION})
    (delivered,) = send(record_of("entries", [obj]), {"type": "s3", **request.fields}, {}, reach)
    key = f"vf/in/Tour - Entries_{EXPORT_ID}.csv.gz"
    assert delivered.remote_path == f"s3://{partner_bucket}/{key}" and delivered.sha256 == obj["sha256"]
    partner = partner_client({"type": "s3", **request.fields}, reach)
    assert partner.get_object(Bucket=partner_bucket, Key=key)["Body"].read() == body


def test_a_wrong_host_key_sends_nothing_and_says_so_in_a_sentence(
    sftp_server: SftpServer, s3: Any, settings: Settings, reach: Reach
):
    obj = put(s3, settings, f"codes/camp-1/{EXPORT_ID}/Codes.csv", b"code\r\n")
    other = " ".join(generate_key_pair()[1].split()[:2])
    destination, secrets = sftp_destination(sftp_server, hostKey=other)
    with pytest.raises(PermanentDeliveryError, match=r"^The SFTP server at .* showed host key .*; nothing was sent\.$"):
        send(record_of("codes", [obj]), destination, secrets, reach)
    assert list(sftp_server.upload_dir.iterdir()) == []
    assert "Accepted" not in sftp_server.log.read_text()


def test_server_down_is_retryable_then_delivered(sftp_server: SftpServer, s3: Any, settings: Settings, reach: Reach):
    obj = put(s3, settings, f"codes/camp-1/{EXPORT_ID}/Codes.csv", b"code\r\nA\r\n")
    destination, secrets = sftp_destination(sftp_server)
    sftp_server.stop()
    with pytest.raises(RetryableDeliveryError, match="the connection was refused"):
        send(record_of("codes", [obj]), destination, secrets, reach)
    sftp_server.start()
    (delivered,) = send(record_of("codes", [obj]), destination, secrets, reach)
    assert sftp_server.local(delivered.remote_path).read_bytes() == b"code\r\nA\r\n"


def test_an_object_that_is_gone_or_changed_is_not_sent(
    sftp_server: SftpServer, s3: Any, settings: Settings, reach: Reach, tmp_path: Path
):
    obj = put(s3, settings, f"codes/camp-1/{EXPORT_ID}/Codes.csv", b"code\r\nA\r\n")
    destination, secrets = sftp_destination(sftp_server)
    changed = record_of("codes", [{**obj, "sha256": "0" * 64}])
    with pytest.raises(PermanentDeliveryError, match="not the one it recorded"):
        send(changed, destination, secrets, reach, scratch_root=tmp_path)
    s3.delete_object(Bucket=settings.exports_bucket, Key=obj["key"])
    with pytest.raises(PermanentDeliveryError, match="no longer in storage"):
        send(record_of("codes", [obj]), destination, secrets, reach, scratch_root=tmp_path)
    assert list(sftp_server.upload_dir.iterdir()) == [] and list(tmp_path.iterdir()) == []


def test_the_password_reaches_no_log_line_even_at_debug(
    sftp_server: SftpServer, s3: Any, settings: Settings, reach: Reach, caplog: pytest.LogCaptureFixture
):
    caplog.set_level(logging.DEBUG)
    obj = put(s3, settings, f"codes/camp-1/{EXPORT_ID}/Codes.csv", b"code\r\n")
    destination, secrets = sftp_destination(sftp_server)
    send(record_of("codes", [obj]), destination, secrets, reach)
    wrong = {"password": sftp_server.account.password + "-wrong"}
    with pytest.raises(PermanentDeliveryError) as refused:
        send(record_of("codes", [obj]), destination, wrong, reach)
    for secret in (sftp_server.account.password, wrong["password"]):
        assert secret not in caplog.text and secret not in str(refused.value)
        assert secret not in str([r.args for r in caplog.records])


def test_names_and_extensions():
    assert split_name("Tour - Entries.csv.gz") == ("Tour - Entries", "csv.gz")
    assert split_name("Tour 2.0 - Codes.csv") == ("Tour 2.0 - Codes", "csv")
    assert split_name("README") == ("README", "")
