"""The one place environment variables are read (SPEC §8); both processes import it."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def _int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise ValueError(f"{name} must be an integer, got {raw!r}") from exc


def _bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    return raw.strip().lower() in {"1", "true", "yes", "on"}


S3_OBJECT_ACL_MODES = ("per-type", "none")
S3_SSE_MODES = ("aws:kms", "AES256")


def _choice(name: str, default: str | None, allowed: tuple[str, ...]) -> str | None:
    raw = (os.environ.get(name) or "").strip()
    if not raw:
        return default
    if raw not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(allowed)}; got {raw!r}")
    return raw


def _retention_days() -> int | None:
    """EXPORT_RETENTION_DAYS: unset keeps every file; otherwise a whole number of days, at least 1."""
    if not (os.environ.get("EXPORT_RETENTION_DAYS") or "").strip():
        return None
    days = _int("EXPORT_RETENTION_DAYS", 0)
    if days < 1:
        raise ValueError(f"EXPORT_RETENTION_DAYS must be at least 1 (or unset to keep files), got {days}")
    return days


def _postgres_url() -> str | None:
    raw = (os.environ.get("DAGSTER_POSTGRES_URL") or "").strip()
    if raw and not raw.startswith(("postgresql://", "postgres://")):
        # Never echo the value: it carries the password.
        raise ValueError("DAGSTER_POSTGRES_URL must look like postgresql://user:password@host:port/database")
    return raw or None


@dataclass(frozen=True)
class Settings:
    mongodb_uri: str
    mongodb_db: str
    s3_endpoint_url: str | None
    exports_bucket: str
    scoring_bucket: str
    vf_scoring_bucket: str
    sfmc_bucket: str
    api_port: int
    dagster_port: int
    data_dir: Path
    polling_interval_ms: int
    timeout_millis: int
    max_rows_per_exported_file: int
    signed_url_ttl_seconds: int
    jwt_public_key: str | None
    jwt_private_key: str | None = field(repr=False)  # never printed, e.g. in a failing test
    dev_mode: bool
    dagster_graphql_url: str
    aws_region: str = "us-east-1"
    # SFMC tables override (reminder e-mails): a JSON file path or inline JSON; see domain/sfmc.py.
    sfmc_config: str | None = None
    # Token checks (SPEC §6): when set, `aud` / `iss` must match; leeway for exp/nbf/iat.
    jwt_audience: str | None = None
    jwt_issuer: str | None = None
    jwt_leeway_seconds: int = 30
    # PENDING exports a campaign may have before POST answers 429.
    max_pending_per_campaign: int = 20
    # Where processes write their JSON log lines (the API: api.jsonl); unset: no log file.
    log_dir: Path | None = None
    # Uploads (domain/storage.py): "per-type" sends each type's ACL, "none" sends no ACL (buckets with
    # ACLs disabled, "bucket owner enforced", refuse any ACL header).
    s3_object_acl: str = "per-type"
    s3_sse: str | None = None  # "aws:kms" or "AES256"; None leaves encryption to the bucket default
    s3_sse_kms_key_id: str | None = None  # only with aws:kms; None means the AWS-managed key
    export_retention_days: int | None = None  # None keeps files forever (domain/retention.py)
    dagster_postgres_url: str | None = field(default=None, repr=False)  # carries a password

    @classmethod
    def from_env(cls) -> Settings:
        data_dir = Path(os.environ.get("DATA_DIR") or REPO_ROOT / ".local").resolve()
        dagster_port = _int("DAGSTER_PORT", 3000)
        dev_mode = _bool("DEV_MODE", False)
        keys = data_dir / "keys"
        log_dir = os.environ.get("LOG_DIR")
        s3_sse = _choice("S3_SSE", None, S3_SSE_MODES)
        kms_key_id = (os.environ.get("S3_SSE_KMS_KEY_ID") or "").strip() or None
        if kms_key_id and s3_sse != "aws:kms":
            raise ValueError("S3_SSE_KMS_KEY_ID is set but S3_SSE is not aws:kms; set S3_SSE=aws:kms or unset it")
        return cls(
            mongodb_uri=os.environ.get("MONGODB_URI") or "mongodb://127.0.0.1:27017/?directConnection=true",
            mongodb_db=os.environ.get("MONGODB_DB") or "verifiedfan",
            s3_endpoint_url=os.environ.get("S3_ENDPOINT_URL") or None,
            exports_bucket=os.environ.get("EXPORTS_S3_BUCKET") or "exports",
            scoring_bucket=os.environ.get("SCORING_S3_BUCKET") or "scoring",
            vf_scoring_bucket=os.environ.get("VF_SCORING_S3_BUCKET") or "vf-scoring",
            sfmc_bucket=os.environ.get("SFMC_S3_BUCKET") or "sfmc",
            api_port=_int("API_PORT", 8000),
            dagster_port=dagster_port,
            data_dir=data_dir,
            polling_interval_ms=_int("POLLING_INTERVAL_MS", 1000),
            timeout_millis=_int("TIMEOUT_MILLIS", 3_600_000),
            max_rows_per_exported_file=_int("MAX_ROWS_PER_EXPORTED_FILE", 100_000),
            signed_url_ttl_seconds=_int("SIGNED_URL_TTL_SECONDS", 3600),
            # The generated key files are a dev-mode convenience only (SPEC §8): outside DEV_MODE a
            # missing JWT_PUBLIC_KEY stays missing, and the API refuses to start.
            jwt_public_key=_read_key("JWT_PUBLIC_KEY", keys / "dev_public.pem" if dev_mode else None),
            jwt_private_key=_read_key("JWT_PRIVATE_KEY", keys / "dev_private.pem" if dev_mode else None),
            dev_mode=dev_mode,
            dagster_graphql_url=os.environ.get("DAGSTER_GRAPHQL_URL") or f"http://127.0.0.1:{dagster_port}/graphql",
            sfmc_config=os.environ.get("SFMC_CONFIG") or None,
            aws_region=os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1",
            jwt_audience=os.environ.get("JWT_AUDIENCE") or None,
            jwt_issuer=os.environ.get("JWT_ISSUER") or None,
            jwt_leeway_seconds=_int("JWT_LEEWAY_SECONDS", 30),
            max_pending_per_campaign=_int("MAX_PENDING_PER_CAMPAIGN", 20),
            log_dir=Path(log_dir).resolve() if log_dir else None,
            s3_object_acl=_choice("S3_OBJECT_ACL", "per-type", S3_OBJECT_ACL_MODES) or "per-type",
            s3_sse=s3_sse,
            s3_sse_kms_key_id=kms_key_id,
            export_retention_days=_retention_days(),
            dagster_postgres_url=_postgres_url(),
        )

    @property
    def buckets(self) -> dict[str, str]:
        """Registry bucket names (exportsS3, scoringS3, ...) → the configured buckets."""
        return {
            "exportsS3": self.exports_bucket,
            "scoringS3": self.scoring_bucket,
            "vfScoringS3": self.vf_scoring_bucket,
            "sfmcS3": self.sfmc_bucket,
        }

    def bucket_for(self, logical: str) -> str:
        return self.buckets[logical]

    @property
    def all_buckets(self) -> tuple[str, ...]:
        return (self.exports_bucket, self.scoring_bucket, self.vf_scoring_bucket, self.sfmc_bucket)


def _read_key(env_name: str, default_path: Path | None) -> str | None:
    """A PEM from the variable itself, or (dev mode) the generated dev key file when it is unset."""
    value = os.environ.get(env_name)
    if value:
        return value.replace("\\n", "\n")
    if default_path is not None and default_path.exists():
        return default_path.read_text()
    return None
