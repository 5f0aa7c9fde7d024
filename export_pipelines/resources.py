"""Dagster resources: the external systems an export run talks to, each behind a narrow interface."""

from __future__ import annotations

from functools import cached_property
from typing import Any

from dagster import ConfigurableResource
from pydantic import PrivateAttr
from pymongo import MongoClient
from pymongo.database import Database

from export_pipelines.domain.clients import s3_client
from export_pipelines.domain.records import ExportStore
from export_pipelines.domain.settings import Settings


class ExportServiceResource(ConfigurableResource):
    """MongoDB (campaign data + export records) and S3, configured from the environment (SPEC §8).

    The settings are read when the resource is first used in a process, so the daemon, the
    webserver and each run worker pick up the same variables without baking them into the
    code location (where the UI would show a MONGODB_URI with credentials).
    """

    _client: Any = PrivateAttr(default=None)

    @cached_property
    def settings(self) -> Settings:
        return Settings.from_env()

    def db(self) -> Database:
        if self._client is None:
            self._client = MongoClient(self.settings.mongodb_uri, tz_aware=True)
        return self._client[self.settings.mongodb_db]

    def store(self) -> ExportStore:
        return ExportStore(self.db())

    def s3(self) -> Any:
        return s3_client(self.settings)

    def teardown_after_execution(self, context: Any) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
