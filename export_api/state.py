"""What every endpoint shares: the state the app's lifespan builds, the caller's principal, the page limits."""

from __future__ import annotations

import time
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar, cast

import httpx
from pymongo.database import Database
from starlette.requests import Request

from export_api import auth
from export_api.dagster_status import RunStatusReader
from export_api.errors import ApiError
from export_api.metrics import ApiMetrics
from export_core.records import ExportStore
from export_core.secrets import SecretBox
from export_core.settings import Settings

NO_STORE = {"Cache-Control": "no-store"}  # signed URLs and tokens must not sit in shared caches
CAMPAIGN_CACHE_SECONDS = 30.0  # a campaign's name changes rarely; a renamed one shows within this
CAMPAIGN_CACHE_SIZE = 10_000
SIGNED_URL_REUSE_MAX_SECONDS = 60.0  # a reused URL keeps at least TTL - this (and 90 % of the TTL)
SIGNED_URL_CACHE_SIZE = 10_000


K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class ExpiringCache(Generic[K, V]):
    """Values kept for `seconds` after they were put; emptied when it reaches `size` entries."""

    def __init__(self, seconds: float, size: int) -> None:
        self.seconds, self.size = seconds, size
        self._kept: dict[K, tuple[float, V]] = {}

    def get(self, key: K) -> V | None:
        kept = self._kept.get(key)
        return kept[1] if kept is not None and time.monotonic() - kept[0] < self.seconds else None

    def put(self, key: K, value: V) -> None:
        if len(self._kept) >= self.size:
            self._kept.clear()
        self._kept[key] = (time.monotonic(), value)


class CampaignNames:
    """Campaign id → name, read from `campaigns` and kept for CAMPAIGN_CACHE_SECONDS.

    Every POST and list needs the campaign (SPEC §6: unknown → 400); asking MongoDB each time
    doubled their round trips. Only campaigns that exist are kept, so a new campaign is usable
    at once; one deleted in the last CAMPAIGN_CACHE_SECONDS is still accepted (its exports
    then run on what is left of its data).
    """

    def __init__(self, db: Database) -> None:
        self.collection = db["campaigns"]
        self._found: ExpiringCache[str, str] = ExpiringCache(CAMPAIGN_CACHE_SECONDS, CAMPAIGN_CACHE_SIZE)

    def name(self, campaign_id: str) -> str:
        """The campaign's name ("" when it has none); ApiError 400 when there is no such campaign."""
        kept = self._found.get(campaign_id)
        if kept is not None:
            return kept
        campaign = self.collection.find_one({"_id": campaign_id}, {"name": 1})
        if campaign is None:
            raise ApiError(400, "Campaign not found.", campaign_id[:100])
        name = str(campaign.get("name") or "")
        self._found.put(campaign_id, name)
        return name


class DownloadSigner:
    """Signed GET URLs of export objects, each reused for a short while.

    The client signs with Signature Version 4 against the bucket region's endpoint
    (clients.s3_config); the objects carry their Content-Disposition from the upload.

    botocore spends ~0.5 ms of CPU per signature (endpoint rules, event hooks), about half of a
    GET's CPU in the API, and clients poll a finished export again and again. A URL is handed
    out again for at most min(60 s, TTL / 10) after it was signed, so every URL given out is
    valid for at least 90 % of SIGNED_URL_TTL_SECONDS.
    """

    def __init__(self, s3: Any, ttl_seconds: int) -> None:
        self.s3, self.ttl_seconds = s3, ttl_seconds
        reuse_seconds = min(SIGNED_URL_REUSE_MAX_SECONDS, ttl_seconds / 10)
        self._signed: ExpiringCache[tuple[str, str], str] = ExpiringCache(reuse_seconds, SIGNED_URL_CACHE_SIZE)

    def url(self, bucket: str, key: str) -> str:
        kept = self._signed.get((bucket, key))
        if kept is not None:
            return kept
        url = cast(
            str,
            self.s3.generate_presigned_url(
                "get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=self.ttl_seconds
            ),
        )
        self._signed.put((bucket, key), url)
        return url


@dataclass(frozen=True)
class ApiState:
    """Everything endpoints need; built once by the app's lifespan (`app.state.api`)."""

    settings: Settings
    verifier: auth.TokenVerifier
    metrics: ApiMetrics
    db: Database
    store: ExportStore
    s3: Any
    http: httpx.AsyncClient
    runs: RunStatusReader
    campaigns: CampaignNames
    signer: DownloadSigner
    secret_box: SecretBox  # SECRETS_KEY: encrypts the secrets stored (webhooks')


def api_state(request: Request) -> ApiState:
    return cast(ApiState, request.app.state.api)


def authenticate(request: Request) -> auth.Principal:
    """The caller's principal, or 401 (for routes that are not tied to a campaign, e.g. CCPA)."""
    return api_state(request).verifier.authenticate(request.headers.get("authorization"))


def authorize_report(request: Request, campaign_id: str) -> auth.Principal:
    return auth.require_report(authenticate(request), campaign_id)
