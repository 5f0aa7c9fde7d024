"""Destinations through the API (SPEC §13): add, list, remove, test against a real sshd and a partner bucket;
exports and schedules naming them; an export's deliveries."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest
from pymongo.database import Database
from starlette.testclient import TestClient

from export_api.app import create_app
from export_core.destination_store import DestinationStore
from export_core.destinations.sftp import generate_key_pair
from export_core.records import ExportStore, RequestOptions
from export_core.secrets import SecretBox
from export_core.settings import Settings
from tests.api.conftest import CAMPAIGN, EXPORTS, OTHER_CAMPAIGN, TokenFactory, assert_error
from tests.partner_bucket import PARTNER_REGION, partner_bucket_fixture  # noqa: F401 (the fixture)
from tests.pgp_keys import PgpKey, pgp_key_pair_fixture  # noqa: F401 (the fixture)
from tests.sftp_server import SftpServer, sftp_account_fixture, sftp_server_fixture  # noqa: F401 (the fixtures)

DESTINATIONS = f"/campaigns/{CAMPAIGN}/destinations"
S3_BODY = {"type": "s3", "bucket": "partner-drop", "prefix": "vf", "region": PARTNER_REGION}
NOT_FOUND = "Destination not found."


@pytest.fixture
def private_client(settings: Settings, campaigns: None) -> Iterator[TestClient]:
    """The API with WEBHOOK_ALLOW_PRIVATE=1: the test sshd listens on 127.0.0.1."""
    with TestClient(create_app(settings.model_copy(update={"webhook_allow_private": True}))) as test_client:
        yield test_client


def sftp_body(server: SftpServer, **change: Any) -> dict[str, Any]:
    body = {
        "type": "sftp",
        "host": server.host,
        "port": server.port,
        "username": server.account.username,
        "path": "/upload",
        "hostKey": server.known_hosts_line(),
        "password": server.account.password,
    }
    return {**body, **change}


def add(client: TestClient, headers: dict[str, str], body: dict[str, Any]) -> dict[str, Any]:
    response = client.post(DESTINATIONS, json=body, headers=headers)
    assert response.status_code == 201, response.text
    assert response.headers["cache-control"] == "no-store"
    return dict(response.json())


def test_add_list_get_and_remove_never_show_the_password(
    private_client: TestClient, headers: dict[str, str], sftp_server: SftpServer, caplog: pytest.LogCaptureFixture
):
    caplog.set_level(logging.DEBUG)  # every logger: pymongo's commands (the stored secret is encrypted), paramiko's
    password = sftp_server.account.password
    created = add(private_client, headers, sftp_body(sftp_server, name="Partner SFTP"))
    assert set(created) == {
        "id", "campaignId", "type", "name", "host", "port", "username", "path", "hostKey", "auth", "createdBy",
        "createdAt",
    }  # fmt: skip
    assert (created["type"], created["name"], created["auth"], created["port"]) == (
        "sftp", "Partner SFTP", "password", sftp_server.port,
    )  # fmt: skip
    listed = private_client.get(DESTINATIONS, headers=headers)
    assert listed.status_code == 200 and listed.json() == {"destinations": [created]}
    one = private_client.get(f"{DESTINATIONS}/{created['id']}", headers=headers)
    assert one.status_code == 200 and one.json() == created
    tested = private_client.post(f"{DESTINATIONS}/{created['id']}/test", headers=headers)
    assert tested.status_code == 200 and tested.json()["ok"] is True, tested.text
    assert list(sftp_server.upload_dir.iterdir()) == [], "the test file is removed"
    for response in (listed, one, tested):
        assert password not in response.text
    assert password not in caplog.text and password not in str([r.args for r in caplog.records])

    assert private_client.delete(f"{DESTINATIONS}/{created['id']}", headers=headers).status_code == 204
    assert_error(private_client.get(f"{DESTINATIONS}/{created['id']}", headers=headers), 404, NOT_FOUND)
    assert_error(private_client.delete(f"{DESTINATIONS}/{created['id']}", headers=headers), 404, NOT_FOUND)
    assert private_client.get(DESTINATIONS, headers=headers).json() == {"destinations": []}


def test_a_generated_key_is_answered_for_the_partner_to_authorize_and_then_logs_in(
    private_client: TestClient, headers: dict[str, str], sftp_server: SftpServer, db: Database, secret_box: SecretBox
):
    body = {k: v for k, v in sftp_body(sftp_server, type="sfmc", generateKey=True).items() if k != "password"}
    created = add(private_client, headers, body)
    assert created["auth"] == "key" and created["publicKey"].startswith("ssh-ed25519 AAAA")
    path = f"{DESTINATIONS}/{created['id']}/test"
    refused = private_client.post(path, headers=headers).json()
    assert refused["ok"] is False and "refused the destination's user name and key" in refused["message"]
    sftp_server.authorize(created["publicKey"])
    assert private_client.post(path, headers=headers).json()["ok"] is True
    private_key = DestinationStore(db).login_secrets(created["id"], secret_box)["privateKey"]
    assert private_key not in private_client.get(DESTINATIONS, headers=headers).text


def test_a_test_against_a_server_showing_another_host_key_sends_nothing(
    private_client: TestClient, headers: dict[str, str], sftp_server: SftpServer
):
    pinned = " ".join(generate_key_pair()[1].split()[:2])
    created = add(private_client, headers, sftp_body(sftp_server, hostKey=pinned))
    answer = private_client.post(f"{DESTINATIONS}/{created['id']}/test", headers=headers).json()
    assert answer["ok"] is False
    assert answer["message"].startswith(f"The SFTP server at {sftp_server.address} showed host key")
    assert answer["message"].endswith("nothing was sent.")
    assert "Failed password" not in sftp_server.log.read_text() and "Accepted" not in sftp_server.log.read_text()


def test_an_s3_destination_tests_its_bucket(client: TestClient, headers: dict[str, str], partner_bucket: str):
    created = add(client, headers, {**S3_BODY, "bucket": partner_bucket, "acl": "none"})
    assert (created["bucket"], created["prefix"], created["acl"]) == (partner_bucket, "vf", "none")
    answer = client.post(f"{DESTINATIONS}/{created['id']}/test", headers=headers).json()
    assert answer == {"ok": True, "message": f"Wrote and removed a test object under s3://{partner_bucket}/vf/."}
    missing = add(client, headers, {**S3_BODY, "bucket": "no-such-partner-bucket"})
    answer = client.post(f"{DESTINATIONS}/{missing['id']}/test", headers=headers).json()
    assert answer["ok"] is False and "no-such-partner-bucket" in answer["message"]


def test_refusals_name_their_field(
    client: TestClient, headers: dict[str, str], sftp_server: SftpServer, pgp_key_pair: PgpKey
):
    for body, field in [
        (sftp_body(sftp_server), "host"),  # 127.0.0.1 without WEBHOOK_ALLOW_PRIVATE
        (sftp_body(sftp_server, hostKey="trust me"), "hostKey"),
        (sftp_body(sftp_server, generateKey=True), "generateKey"),
        ({**S3_BODY, "pgpPublicKey": pgp_key_pair.public_armored.replace("PUBLIC", "PRIVATE")}, "pgpPublicKey"),
        ({**S3_BODY, "acl": "public-read"}, "acl"),
        ({**S3_BODY, "password": "x"}, "password"),
        ({"type": "ftp"}, "type"),
        ([], "body"),
    ]:
        error = assert_error(client.post(DESTINATIONS, json=body, headers=headers), 400)
        assert error["payload"] == field, (body, error)
    assert_error(client.post(DESTINATIONS, content=b"{", headers=headers), 400, "Request body must be valid JSON.")
    unknown = client.post("/campaigns/nope/destinations", json=S3_BODY, headers=headers)
    assert_error(unknown, 401)  # the token has no REPORT on it
    assert client.get(DESTINATIONS, headers=headers).json() == {"destinations": []}
    with_key = add(client, headers, {**S3_BODY, "pgpPublicKey": pgp_key_pair.public_armored})
    assert with_key["pgpFingerprint"] == pgp_key_pair.fingerprint


def test_past_ten_per_campaign_is_409(client: TestClient, headers: dict[str, str]):
    for _ in range(10):
        add(client, headers, S3_BODY)
    error = assert_error(client.post(DESTINATIONS, json=S3_BODY, headers=headers), 409)
    assert error["message"] == "This campaign already has 10 destinations; remove one before adding another."
    other = client.post(f"/campaigns/{OTHER_CAMPAIGN}/destinations", json=S3_BODY, headers=headers)
    assert other.status_code == 201, "the limit is per campaign"


def test_a_caller_without_report_learns_nothing_of_the_body(client: TestClient, make_token: TokenFactory):
    read_only = {"Authorization": f"Bearer {make_token(campaigns={CAMPAIGN: ['READ']})}"}
    for auth in ({}, read_only):
        for body in ({"json": []}, {"json": {"type": "ftp"}}, {"content": b"{"}):
            assert_error(client.post(DESTINATIONS, headers=auth, **body), 401)


def test_the_document_describes_each_type_and_no_answer_carries_a_secret(client: TestClient):
    from jsonschema import ValidationError, validate

    schemas = client.get("/openapi.json").json()["components"]["schemas"]
    request = schemas["DestinationRequest"]
    shapes = [schemas[ref["$ref"].rsplit("/", 1)[1]] for ref in request["oneOf"]]
    logins = sorted((s["properties"]["type"]["const"], "password" in s["required"]) for s in shapes)
    assert logins == [("s3", False), ("sfmc", False), ("sfmc", True), ("sftp", False), ("sftp", True)]
    for shape in shapes:
        assert shape["additionalProperties"] is False
        assert {"password", "generateKey"} & set(shape["properties"]) <= set(shape["required"])
        assert shape["properties"].get("password", {"writeOnly": True})["writeOnly"] is True
    assert not {"password", "privateKey", "encryptedSecrets"} & set(schemas["Destination"]["properties"])
    document = {"components": {"schemas": schemas}}
    validate(S3_BODY, {**request, **document})
    for refused in ({**S3_BODY, "password": "x"}, {**S3_BODY, "acl": "public-read"}, {"type": "ftp"}):
        with pytest.raises(ValidationError):
            validate(refused, {**request, **document})


def test_every_operation_needs_report_and_another_campaigns_destination_is_not_found(
    client: TestClient, headers: dict[str, str], make_token: TokenFactory
):
    created = add(client, headers, S3_BODY)
    path = f"{DESTINATIONS}/{created['id']}"
    elsewhere = {"Authorization": f"Bearer {make_token(campaigns={OTHER_CAMPAIGN: ['REPORT']})}"}
    read_only = {"Authorization": f"Bearer {make_token(campaigns={CAMPAIGN: ['READ']})}"}
    calls = [
        ("POST", DESTINATIONS, S3_BODY),
        ("GET", DESTINATIONS, None),
        ("GET", path, None),
        ("DELETE", path, None),
        ("POST", f"{path}/test", None),
        ("GET", f"{EXPORTS}/x/deliveries", None),
    ]
    for method, target, body in calls:
        for auth in ({}, elsewhere, read_only):
            assert_error(client.request(method, target, json=body, headers=auth), 401)
    other_path = f"/campaigns/{OTHER_CAMPAIGN}/destinations/{created['id']}"
    for method in ("GET", "DELETE"):
        assert_error(client.request(method, other_path, headers=headers), 404, NOT_FOUND)
    assert_error(client.post(f"{other_path}/test", headers=headers), 404, NOT_FOUND)
    assert client.get(path, headers=headers).status_code == 200, "still there"


# -- exports and schedules naming destinations ------------------------------------------------------


def test_an_export_names_its_destinations_and_a_duplicate_request_adds_its_own(
    client: TestClient, headers: dict[str, str]
):
    first, second = (add(client, headers, S3_BODY)["id"] for _ in range(2))
    created = client.post(EXPORTS, json={"exportType": "entries", "destinations": [first]}, headers=headers)
    assert created.status_code == 201 and created.json()["destinations"] == [first]
    again = client.post(EXPORTS, json={"exportType": "entries", "destinations": [second, first]}, headers=headers)
    assert again.status_code == 200 and again.json()["id"] == created.json()["id"]
    assert again.json()["destinations"] == [first, second]
    plain = client.post(EXPORTS, json={"exportType": "entries"}, headers=headers)
    assert plain.status_code == 200 and plain.json()["destinations"] == [first, second]
    for destinations in (["nope"], [first, first], "x", [first, ""]):
        body = {"exportType": "codes", "destinations": destinations}
        error = assert_error(client.post(EXPORTS, json=body, headers=headers), 400)
        assert error["payload"] == "destinations", error
    elsewhere = add(client, headers, S3_BODY)["id"]
    client.delete(f"{DESTINATIONS}/{elsewhere}", headers=headers)
    error = assert_error(
        client.post(EXPORTS, json={"exportType": "codes", "destinations": [elsewhere]}, headers=headers), 400
    )
    assert error["message"] == f"'{elsewhere}' is not a destination of this campaign."


def test_schedules_name_only_the_campaigns_destinations(client: TestClient, headers: dict[str, str]):
    mine = add(client, headers, S3_BODY)["id"]
    theirs = client.post(f"/campaigns/{OTHER_CAMPAIGN}/destinations", json=S3_BODY, headers=headers).json()["id"]
    schedules = f"/campaigns/{CAMPAIGN}/schedules"
    body = {"exportType": "entries", "cron": "0 6 * * *"}
    error = assert_error(client.post(schedules, json={**body, "destinations": [theirs]}, headers=headers), 400)
    assert error["payload"] == "destinations"
    schedule = client.post(schedules, json={**body, "destinations": [mine]}, headers=headers).json()
    assert schedule["destinations"] == [mine]
    path = f"{schedules}/{schedule['id']}"
    assert assert_error(client.patch(path, json={"destinations": [theirs]}, headers=headers), 400)["payload"] == (
        "destinations"
    )
    client.delete(f"{DESTINATIONS}/{mine}", headers=headers)
    assert client.get(path, headers=headers).json()["destinations"] == [], "a removed destination leaves its schedules"


# -- an export's deliveries -------------------------------------------------------------------------


def finish(db: Database, campaign: str, destinations: list[str], **fields: Any) -> str:
    store = ExportStore(db)
    record = store.create(
        campaign_id=campaign, campaign_name="Summer Tour 2024", export_type="codes", requester_user_id="user-1",
        options=RequestOptions(destinations=tuple(destinations)),
    ).record  # fmt: skip
    store.mark_triggered(record["id"], run_id="r1", preliminary_count=None)
    store.mark_finished(record["id"], **{"key": "codes/k.csv", "count": 3, "meta": {}, **fields})
    return str(record["id"])


def test_a_finished_export_has_one_pending_delivery_per_destination(
    client: TestClient, headers: dict[str, str], db: Database
):
    first, second = (add(client, headers, S3_BODY)["id"] for _ in range(2))
    export_id = finish(db, CAMPAIGN, [second, first])
    answer = client.get(f"{EXPORTS}/{export_id}/deliveries", headers=headers)
    assert answer.status_code == 200
    deliveries = answer.json()["deliveries"]
    assert [d["destinationId"] for d in deliveries] == [second, first]
    for delivery in deliveries:
        assert delivery["status"] == "pending" and delivery["attempts"] == [] and delivery["files"] == []
        assert (delivery["remotePath"], delivery["bytes"], delivery["sha256"]) == (None, None, None)
    record = client.get(f"{EXPORTS}/{export_id}", headers=headers).json()
    assert record["status"] == "FINISHED" and "deliver" not in record, "the outbox is a storage detail"


def test_no_delivery_before_the_end_for_a_run_skipped_empty_or_another_campaigns_export(
    client: TestClient, headers: dict[str, str], db: Database
):
    destination = add(client, headers, S3_BODY)["id"]
    skipped = finish(db, CAMPAIGN, [destination], key=None, count=0, meta={"skipped": "empty"})
    assert client.get(f"{EXPORTS}/{skipped}/deliveries", headers=headers).json() == {"deliveries": []}
    queued = client.post(EXPORTS, json={"exportType": "fanlist", "destinations": [destination]}, headers=headers)
    assert client.get(f"{EXPORTS}/{queued.json()['id']}/deliveries", headers=headers).json() == {"deliveries": []}
    elsewhere = finish(db, OTHER_CAMPAIGN, [])
    assert_error(client.get(f"{EXPORTS}/{elsewhere}/deliveries", headers=headers), 404, "Export not found.")


def test_a_destination_added_to_a_running_export_is_delivered_too(db: Database):
    """A duplicate request's destination joins the record up to the very update that ends it (SPEC §13)."""
    store = ExportStore(db)
    record = store.create(campaign_id=CAMPAIGN, campaign_name="T", export_type="codes", requester_user_id="u").record
    store.mark_triggered(record["id"], run_id="r1", preliminary_count=None)
    real_get = store.get
    joined: list[str] = []

    def get_then_join(export_id: str) -> dict[str, Any] | None:
        current = real_get(export_id)
        if not joined:  # a duplicate request joins between mark_finished's read and its update
            joined.append("d1")
            store.add_destinations(export_id, ("d1",))
        return current

    store.get = get_then_join  # type: ignore[method-assign]
    finished = store.mark_finished(record["id"], key="codes/k.csv", count=1, meta={})
    assert [e["destinationId"] for e in finished["deliver"]] == ["d1"]
    assert store.add_destinations(record["id"], ("d2",)) is None, "an ended record takes no destination"


def test_deliveries_answer_is_documented(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()["components"]["schemas"]["Delivery"]
    assert {"destinationId", "status", "remotePath", "bytes", "sha256", "attempts"} <= set(schema["required"])
