"""The destinations collection (SPEC §13): checking a POST body per type, the limit, secrets kept out of views."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from cryptography.fernet import Fernet
from pymongo.database import Database

from export_core.destination_store import (
    MAX_PER_CAMPAIGN,
    DestinationInvalid,
    DestinationRequest,
    DestinationStore,
    TooManyDestinations,
    check_host,
    destination_view,
    parse_destination,
)
from export_core.destinations.sftp import generate_key_pair
from export_core.secrets import SecretBox, UnreadableSecret
from export_core.settings import Settings
from tests.pgp_keys import PgpKey, pgp_key, pgp_key_pair_fixture  # noqa: F401 (the fixture)

CAMPAIGN = "camp-1"
HOST_KEY = " ".join(generate_key_pair()[1].split()[:2])  # `ssh-ed25519 AAAA…`, as a known_hosts line without host
SFTP = {
    "type": "sftp",
    "host": "sftp.partner.example",
    "username": "vf",
    "path": "/incoming/",
    "hostKey": HOST_KEY,
    "password": "correct horse battery staple",
}
S3 = {"type": "s3", "bucket": "partner-drop", "prefix": "/vf/exports/", "region": "eu-west-1"}


@pytest.fixture
def store(db: Database) -> DestinationStore:
    destinations = DestinationStore(db)
    destinations.ensure_indexes()
    return destinations


def add(
    store: DestinationStore, box: SecretBox, request: DestinationRequest, campaign: str = CAMPAIGN
) -> dict[str, Any]:
    return store.create(campaign_id=campaign, request=request, created_by="user-1", secret_box=box)


def refusal(body: dict[str, Any]) -> DestinationInvalid:
    with pytest.raises(DestinationInvalid) as caught:
        parse_destination(body)
    return caught.value


def test_an_sftp_destination_with_a_password_keeps_the_password_out_of_every_view(
    store: DestinationStore, secret_box: SecretBox
):
    request = parse_destination(SFTP)
    assert request.password == SFTP["password"] and SFTP["password"] not in str(request.fields)
    created = add(store, secret_box, request)
    view = destination_view(created)
    assert view == {
        "id": created["id"],
        "campaignId": CAMPAIGN,
        "type": "sftp",
        "name": "sftp.partner.example:/incoming",
        "host": "sftp.partner.example",
        "port": 22,
        "username": "vf",
        "path": "/incoming",
        "hostKey": HOST_KEY,
        "auth": "password",
        "createdBy": "user-1",
        "createdAt": view["createdAt"],
    }
    listed = store.for_campaign(CAMPAIGN)
    assert [destination_view(d) for d in listed] == [view]
    assert "secrets" not in store.get(CAMPAIGN, created["id"])  # type: ignore[operator]
    assert store.login_secrets(created["id"], secret_box) == {"password": SFTP["password"]}
    assert store.get("another-campaign", created["id"]) is None


def test_secrets_are_stored_encrypted_and_rotate_to_the_first_key(
    store: DestinationStore, db: Database, settings: Settings
):
    old_key, new_key = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    created = store.create(
        campaign_id=CAMPAIGN, request=parse_destination(SFTP), created_by="user-1", secret_box=SecretBox([old_key])
    )
    raw = db.destinations.find_one({"_id": created["id"]}) or {}
    assert SFTP["password"] not in str(raw) and set(raw) >= {"encryptedSecrets"} and "secrets" not in raw
    rotating = SecretBox([new_key, old_key])
    assert store.rotate_secrets(rotating) == (1, [])
    assert store.rotate_secrets(rotating) == (0, []), "already made with the first key"
    assert store.login_secrets(created["id"], SecretBox([new_key])) == {"password": SFTP["password"]}
    with pytest.raises(UnreadableSecret):
        store.login_secrets(created["id"], SecretBox([old_key]))
    assert store.rotate_secrets(SecretBox([old_key])) == (0, [created["id"]]), "no key decrypts it: left as it is"
    assert store.login_secrets("gone", SecretBox([new_key])) == {}


def test_generate_key_stores_the_private_key_and_shows_the_public_one(store: DestinationStore, secret_box: SecretBox):
    body = {**{k: v for k, v in SFTP.items() if k != "password"}, "type": "sfmc", "generateKey": True, "port": 2222}
    created = add(store, secret_box, parse_destination(body))
    public = created["publicKey"]
    assert public.startswith("ssh-ed25519 AAAA") and public.endswith(" export-service")
    view = destination_view(created)
    assert view["publicKey"] == public and view["auth"] == "key" and view["port"] == 2222
    private = store.login_secrets(created["id"], secret_box)["privateKey"]
    assert private.startswith("-----BEGIN OPENSSH PRIVATE KEY-----") and private not in str(view)


def test_an_s3_destination(store: DestinationStore, secret_box: SecretBox):
    role = {"roleArn": "arn:aws:iam::123456789012:role/vf-delivery", "externalId": "vf-7f3a91", "acl": "none"}
    request = parse_destination({**S3, **role, "name": "Partner bucket", "fileName": "{exportType}-{date}.{ext}"})
    view = destination_view(add(store, secret_box, request))
    assert {k: view[k] for k in ("name", "bucket", "prefix", "region", "roleArn", "externalId", "acl", "fileName")} == {
        "name": "Partner bucket",
        "bucket": "partner-drop",
        "prefix": "vf/exports",
        "region": "eu-west-1",
        **role,
        "fileName": "{exportType}-{date}.{ext}",
    }
    assert parse_destination(S3).fields["acl"] == "bucket-owner-full-control"
    assert parse_destination(S3).fields["name"] == "s3://partner-drop/vf/exports"


def test_a_pgp_key_is_checked_and_its_fingerprint_kept(pgp_key_pair: PgpKey):
    fields = parse_destination({**S3, "pgpPublicKey": pgp_key_pair.public_armored}).fields
    assert fields["pgpFingerprint"] == pgp_key_pair.fingerprint
    assert fields["pgpPublicKey"] == pgp_key_pair.public_armored.strip()


def test_an_expired_or_unreadable_pgp_key_is_refused_naming_the_field():
    with pgp_key(expires="1d", faked_time="20200101T000000") as expired:
        refused = refusal({**S3, "pgpPublicKey": expired.public_armored})
    assert refused.field == "pgpPublicKey" and "expired" in str(refused)
    assert refusal({**S3, "pgpPublicKey": "hello"}).field == "pgpPublicKey"


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"type": "ftp"}, "type"),
        ({"hostKey": None}, "hostKey"),
        ({"hostKey": "ssh-ed25519 not-base64!"}, "hostKey"),
        ({"hostKey": "SHA256:short"}, "hostKey"),
        ({"generateKey": True}, "generateKey"),
        ({"password": ""}, "password"),
        ({"port": 0}, "port"),
        ({"port": "22"}, "port"),
        ({"host": "user@sftp.partner.example"}, "host"),
        ({"host": "sftp.partner.example:22"}, "host"),
        ({"username": ""}, "username"),
        ({"path": "/in\ncoming"}, "path"),
        ({"fileName": "{name}/{exportId}.csv"}, "fileName"),
        ({"fileName": "{secret}.csv"}, "fileName"),
        ({"fileName": "{name"}, "fileName"),
        ({"bucket": "x"}, "bucket"),
        ({"name": ""}, "name"),
    ],
)
def test_sftp_refusals_name_their_field(change: dict[str, Any], field: str):
    body = {k: v for k, v in {**SFTP, **change}.items() if v is not None}
    assert refusal(body).field == field


def test_a_host_key_may_be_what_ssh_keyscan_prints():
    second = " ".join(generate_key_pair()[1].split()[:2])
    banner = "# sftp.partner.example:22 SSH-2.0-OpenSSH_9.2"
    scanned = f"{banner}\r\nsftp.partner.example {HOST_KEY}\nsftp.partner.example {second}\n"
    assert parse_destination({**SFTP, "hostKey": scanned}).fields["hostKey"] == scanned.strip()
    assert refusal({**SFTP, "hostKey": f"{HOST_KEY}\x00"}).field == "hostKey"


def test_password_or_generate_key_and_the_types_own_fields():
    without = {k: v for k, v in SFTP.items() if k != "password"}
    assert refusal(without).field == "password"
    assert refusal({**SFTP, "hostKey": "ssh-ed25519"}).field == "hostKey"
    assert refusal({k: v for k, v in SFTP.items() if k != "hostKey"}).field == "hostKey", "never trust on first use"
    assert refusal({**S3, "host": "sftp.partner.example"}).field == "host", "not a field of an s3 destination"
    assert refusal({**S3, "externalId": "abc"}).field == "externalId", "an external id needs a role"
    assert refusal({**S3, "roleArn": "role/vf"}).field == "roleArn"
    assert refusal({**S3, "acl": "public-read"}).field == "acl"
    assert refusal({**S3, "region": "Europe"}).field == "region"
    assert refusal({**S3, "bucket": "Partner_Drop"}).field == "bucket"
    assert refusal({**SFTP, "type": "sfmc", "fileName": "{name}.csv"}).field == "fileName", "no export id"
    assert parse_destination({**SFTP, "type": "sfmc", "fileName": "{name}-{exportId}.{ext}"}).type == "sfmc"
    assert refusal(["not", "an", "object"]).field == "body"  # type: ignore[arg-type]


def test_host_addresses_obey_the_webhook_rules():
    loopback = parse_destination({**SFTP, "host": "127.0.0.1"})
    with pytest.raises(DestinationInvalid) as refused:
        check_host(loopback, allow_private=False)
    assert refused.value.field == "host" and "only public addresses" in str(refused.value)
    check_host(loopback, allow_private=True)
    metadata = parse_destination({**SFTP, "host": "169.254.169.254"})
    with pytest.raises(DestinationInvalid, match="link-local"):
        check_host(metadata, allow_private=True)
    check_host(parse_destination(S3), allow_private=False)  # an S3 destination has no host of its own


def test_concurrent_creates_never_pass_the_limit(store: DestinationStore, secret_box: SecretBox):
    request = parse_destination(S3)

    def create(_: int) -> bool:
        try:
            add(store, secret_box, request)
            return True
        except TooManyDestinations:
            return False

    with ThreadPoolExecutor(8) as pool:
        created = list(pool.map(create, range(MAX_PER_CAMPAIGN + 6)))
    assert created.count(True) == MAX_PER_CAMPAIGN
    assert len(store.for_campaign(CAMPAIGN)) == MAX_PER_CAMPAIGN
    add(store, secret_box, request, "camp-2")  # the limit is per campaign


def test_delete_takes_the_destination_out_of_the_campaigns_schedules(
    store: DestinationStore, db: Database, secret_box: SecretBox
):
    kept, removed = (add(store, secret_box, parse_destination(S3))["id"] for _ in range(2))
    db.schedules.insert_one({"_id": "s1", "campaignId": CAMPAIGN, "destinations": [kept, removed]})
    assert store.unknown_ids(CAMPAIGN, [removed, "nope", kept]) == ["nope"]
    assert store.unknown_ids("camp-2", [kept]) == [kept]
    assert store.delete("camp-2", removed) is False, "another campaign's destination"
    assert store.delete(CAMPAIGN, removed) is True
    assert store.delete(CAMPAIGN, removed) is False
    assert db.schedules.find_one({"_id": "s1"})["destinations"] == [kept]  # type: ignore[index]
    assert store.unknown_ids(CAMPAIGN, [removed]) == [removed]
