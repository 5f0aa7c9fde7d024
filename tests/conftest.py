"""Real servers for the whole suite: one MongoDB-protocol server and one S3 server per session.

Each test gets its own database name and its own environment, so tests never see each
other's records, and everything connects over TCP exactly as production would.
"""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import Fernet
from pymongo import MongoClient
from pymongo.database import Database

from devstack.supervisor import rsa_pem_pair
from export_core.clients import ensure_buckets, s3_client
from export_core.secrets import SecretBox
from export_core.settings import Settings


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def mongo_uri() -> Iterator[str]:
    from secantus import SecantusDBServer

    server = SecantusDBServer(host="127.0.0.1", port=0, storage_path=":memory:")
    server.start()
    host, port = server.address
    yield f"mongodb://{host}:{port}/?directConnection=true"
    server.stop()


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture(scope="session")
def jwt_keys() -> tuple[str, str]:
    """(private PEM, public PEM) of the key pair the tests sign tokens with."""
    return rsa_pem_pair()


@pytest.fixture(scope="session")
def secrets_key() -> str:
    """The SECRETS_KEY of the tests' processes (as production sets it: dev mode would generate one)."""
    return Fernet.generate_key().decode()


def server_env(mongo_uri: str, s3_endpoint: str, data_dir: Path) -> dict[str, str]:
    """The variables that point a process at the suite's servers, with a fresh database name."""
    return {
        "MONGODB_URI": mongo_uri,
        "MONGODB_DB": f"t_{uuid.uuid4().hex[:12]}",
        "S3_ENDPOINT_URL": s3_endpoint,
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_DEFAULT_REGION": "us-east-1",
        "DATA_DIR": str(data_dir),
    }


@pytest.fixture
def env(
    mongo_uri: str,
    s3_endpoint: str,
    jwt_keys: tuple[str, str],
    secrets_key: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> dict[str, str]:
    """Environment of one test: its own database, the shared servers, a scratch DATA_DIR."""
    values = {
        **server_env(mongo_uri, s3_endpoint, tmp_path / "data"),
        "JWT_PRIVATE_KEY": jwt_keys[0],
        "JWT_PUBLIC_KEY": jwt_keys[1],
        "SECRETS_KEY": secrets_key,
        "DEV_MODE": "1",
        # Nothing listens here: the API must degrade to the record's own status.
        "DAGSTER_GRAPHQL_URL": f"http://127.0.0.1:{free_port()}/graphql",
    }
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    return values


@pytest.fixture
def settings(env: dict[str, str]) -> Settings:
    settings = Settings.from_env()
    ensure_buckets(settings)
    return settings


@pytest.fixture
def secret_box(settings: Settings) -> SecretBox:
    return SecretBox.from_settings(settings)


@pytest.fixture
def db(settings: Settings, mongo_uri: str) -> Iterator[Database]:
    """The test's database, through a client of its own that failpoints never target."""
    client: MongoClient = MongoClient(mongo_uri, tz_aware=True)
    yield client[settings.mongodb_db]
    client.drop_database(settings.mongodb_db)
    client.close()


@pytest.fixture
def s3(settings: Settings) -> Any:
    return s3_client(settings)


class FailPoints:
    """Server-side fault injection (MongoDB's `failCommand`), always switched off after the test.

    A failpoint is server-wide, so it is scoped to one application name: only clients that
    connect with `client_uri` (this test's code, in process or in the processes it starts) are
    hit, never a leftover process of an earlier test nor the test's own assertions.
    """

    def __init__(self, client: MongoClient, mongo_uri: str) -> None:
        self.client = client
        self.app_name = f"failpoints-{uuid.uuid4().hex[:8]}"
        self.client_uri = f"{mongo_uri}&appName={self.app_name}"

    def set(self, mode: Any, **data: Any) -> None:
        data = {**data, "appName": self.app_name}
        self.client.admin.command({"configureFailPoint": "failCommand", "mode": mode, "data": data})

    def off(self) -> None:
        self.client.admin.command({"configureFailPoint": "failCommand", "mode": "off"})


@pytest.fixture
def failpoints(mongo_uri: str) -> Iterator[FailPoints]:
    """Failpoints aimed at clients of `client_uri` only (a run's resources, a started process's env)."""
    client: MongoClient = MongoClient(mongo_uri)
    points = FailPoints(client, mongo_uri)
    yield points
    points.off()
    client.close()
