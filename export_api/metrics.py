"""Prometheus metrics (SPEC §6) in a per-app registry, so many apps can live in one process.

Request labels use the route *template* (`/campaigns/{campaignId}/exports`), never the
raw path, so no campaign or export id — user data — ends up in a label, and label
cardinality stays bounded. Export counts are read from MongoDB at most every
COUNTS_TTL_SECONDS, each read bounded by COUNTS_TIMEOUT_SECONDS, and only one scrape at a time
reads (others serve the last counts), so scrapes never pile threads up on a slow database.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

import pymongo
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from export_api.errors import route_template
from export_core.export_types import EXPORT_TYPES
from export_core.records import PENDING, ExportStore
from export_core.vocabulary import STATUSES

logger = logging.getLogger("export_api.metrics")

_METHODS = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"}
_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
COUNTS_TTL_SECONDS = 5.0
COUNTS_TIMEOUT_SECONDS = 1.0


class ExportsCollector(Collector):
    """Exports by type and status, and the queue depth, counted when Prometheus scrapes."""

    def __init__(self, ttl_seconds: float = COUNTS_TTL_SECONDS) -> None:
        self.store: ExportStore | None = None  # attached by the app's lifespan
        self.ttl_seconds = ttl_seconds
        self._lock = threading.Lock()
        self._read_at = -float("inf")
        self._counts: dict[tuple[str, str], int] | None = None  # None: the last read failed
        self.reads = 0  # MongoDB reads so far (tests check the cache)

    def describe(self) -> Iterator[Metric]:
        yield from self._families()

    def _read(self) -> dict[tuple[str, str], int] | None:
        store = self.store
        if store is None:
            return None
        counts: dict[tuple[str, str], int] = {(t, s): 0 for t in EXPORT_TYPES for s in STATUSES}
        try:
            with pymongo.timeout(COUNTS_TIMEOUT_SECONDS):
                rows: list[dict[str, Any]] = store.count_by_type_and_status()
        except Exception as exc:
            logger.warning("could not count exports for /metrics (%s)", type(exc).__name__)
            return None
        for row in rows:
            group = row["_id"]
            counts[(str(group.get("exportType")), str(group.get("status")))] = int(row["n"])
        return counts

    def counts(self) -> dict[tuple[str, str], int] | None:
        """The cached counts, refreshed when older than the TTL by one caller while others use the old ones."""
        if time.monotonic() - self._read_at >= self.ttl_seconds and self._lock.acquire(blocking=False):
            try:
                self._counts = self._read()
                self.reads += 1
                self._read_at = time.monotonic()
            finally:
                self._lock.release()
        return self._counts

    def collect(self) -> Iterator[Metric]:
        cached = self.counts()
        ok = cached is not None
        counts = cached or {}
        exports, queue, up = self._families()
        if ok:
            for (export_type, status), n in sorted(counts.items()):
                exports.add_metric([export_type, status], n)
            queue.add_metric([], sum(n for (_, status), n in counts.items() if status == PENDING))
        up.add_metric([], 1 if ok else 0)
        yield from (exports, queue, up)

    @staticmethod
    def _families() -> tuple[GaugeMetricFamily, GaugeMetricFamily, GaugeMetricFamily]:
        return (
            GaugeMetricFamily(
                "export_service_exports", "Export records by type and status.", labels=["export_type", "status"]
            ),
            GaugeMetricFamily("export_service_queue_depth", "PENDING exports waiting to start."),
            GaugeMetricFamily("export_service_store_up", "1 when export counts could be read from MongoDB."),
        )


class ApiMetrics:
    """The registry and instruments of one app."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "export_api_requests",
            "HTTP requests by method, route template and status.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "export_api_request_duration_seconds",
            "HTTP request duration by method, route template and status.",
            ["method", "route", "status"],
            buckets=_BUCKETS,
            registry=self.registry,
        )
        self.exports = ExportsCollector()
        self.registry.register(self.exports)

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        labels = (method if method in _METHODS else "OTHER", route, str(status))
        self.requests.labels(*labels).inc()
        self.duration.labels(*labels).observe(seconds)

    def render(self) -> tuple[bytes, str]:
        """The exposition text and its content type (blocking: reads MongoDB)."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class RequestMetricsMiddleware:
    """Pure ASGI middleware: counts and times every HTTP request, errors included."""

    def __init__(self, app: ASGIApp, metrics: ApiMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # an exception before the response starts ends as a 500

        async def send_and_record_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_and_record_status)
        except Exception:
            status = 500
            raise
        finally:
            # The router has stored the matched route in the scope by now.
            self.metrics.observe(scope["method"], route_template(scope), status, time.perf_counter() - started)
