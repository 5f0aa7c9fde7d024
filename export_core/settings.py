"""The one place environment variables are read (SPEC §8): one typed, immutable settings object.

Every process builds it once with `Settings.from_env()` and hands it on (the code location to its
resources, the API to its state). A variable set to the empty string counts as unset.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import AliasChoices, Field, ValidationError, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parents[1]

S3_OBJECT_ACL_MODES = ("per-type", "none")
S3_SSE_MODES = ("aws:kms", "AES256")
_TRUE = frozenset({"1", "true", "yes", "on"})


def _env(name: str | AliasChoices, default: Any = None, **kwargs: Any) -> Any:
    """A field read from the variable `name` (or the first set of its choices)."""
    return Field(default, validation_alias=name, **kwargs)


class Settings(BaseSettings):
    """Every variable of README's configuration table except `make run`'s and the client's own."""

    model_config = SettingsConfigDict(
        case_sensitive=True,
        env_ignore_empty=True,  # VAR= is unset, as a shell user expects
        frozen=True,
        hide_input_in_errors=True,  # errors never echo a value (passwords, keys)
    )

    mongodb_uri: str = _env("MONGODB_URI", "mongodb://127.0.0.1:27017/?directConnection=true")
    mongodb_db: str = _env("MONGODB_DB", "verifiedfan")
    s3_endpoint_url: str | None = _env("S3_ENDPOINT_URL")
    exports_bucket: str = _env("EXPORTS_S3_BUCKET", "exports")
    scoring_bucket: str = _env("SCORING_S3_BUCKET", "scoring")
    vf_scoring_bucket: str = _env("VF_SCORING_S3_BUCKET", "vf-scoring")
    sfmc_bucket: str = _env("SFMC_S3_BUCKET", "sfmc")
    api_port: int = _env("API_PORT", 8000)
    dagster_port: int = _env("DAGSTER_PORT", 3000)
    data_dir: Path = _env("DATA_DIR", REPO_ROOT / ".local", validate_default=True)
    polling_interval_ms: int = _env("POLLING_INTERVAL_MS", 1000)
    timeout_millis: int = _env("TIMEOUT_MILLIS", 3_600_000)
    max_rows_per_exported_file: int = _env("MAX_ROWS_PER_EXPORTED_FILE", 100_000)
    signed_url_ttl_seconds: int = _env("SIGNED_URL_TTL_SECONDS", 3600)
    dev_mode: bool = _env("DEV_MODE", False)
    # The generated key files are a dev-mode convenience only (SPEC §8): outside DEV_MODE a missing
    # JWT_PUBLIC_KEY stays missing, and the API refuses to start.
    jwt_public_key: str | None = _env("JWT_PUBLIC_KEY", validate_default=True)
    jwt_private_key: str | None = _env("JWT_PRIVATE_KEY", validate_default=True, repr=False)
    dagster_graphql_url: str = _env("DAGSTER_GRAPHQL_URL", "", validate_default=True)
    aws_region: str = _env(AliasChoices("AWS_REGION", "AWS_DEFAULT_REGION"), "us-east-1")
    # Only whether it is set matters here (clients.py: dummy credentials for a local endpoint);
    # boto3 reads the credentials themselves.
    aws_access_key_id: str | None = _env("AWS_ACCESS_KEY_ID", repr=False)
    # SFMC tables override (reminder e-mails): a JSON file path or inline JSON; see export_core/sfmc.py.
    sfmc_config: str | None = _env("SFMC_CONFIG")
    # Token checks (SPEC §6): when set, `aud` / `iss` must match; leeway for exp/nbf/iat.
    jwt_audience: str | None = _env("JWT_AUDIENCE")
    jwt_issuer: str | None = _env("JWT_ISSUER")
    jwt_leeway_seconds: int = _env("JWT_LEEWAY_SECONDS", 30)
    # PENDING exports a campaign may have before POST answers 429.
    max_pending_per_campaign: int = _env("MAX_PENDING_PER_CAMPAIGN", 20)
    # Schedules (SPEC §12, export_core/schedules.py): the shortest interval a cron may have, how many
    # FAILED/EXPIRED runs in a row pause a schedule, and how many schedules a campaign may have.
    schedule_min_interval_minutes: int = _env("SCHEDULE_MIN_INTERVAL_MINUTES", 5)
    schedule_pause_after_failures: int = _env("SCHEDULE_PAUSE_AFTER_FAILURES", 5)
    max_schedules_per_campaign: int = _env("MAX_SCHEDULES_PER_CAMPAIGN", 20)
    # Where processes write their JSON log lines (the API: api.jsonl); unset: no log file.
    log_dir: Path | None = _env("LOG_DIR")
    # Uploads (export_core/storage.py): "per-type" sends each type's ACL, "none" sends no ACL (buckets with
    # ACLs disabled, "bucket owner enforced", refuse any ACL header).
    s3_object_acl: str = _env("S3_OBJECT_ACL", "per-type")
    s3_sse: str | None = _env("S3_SSE")  # "aws:kms" or "AES256"; None leaves encryption to the bucket default
    s3_sse_kms_key_id: str | None = _env("S3_SSE_KMS_KEY_ID")  # only with aws:kms; None: the AWS-managed key
    export_retention_days: int | None = _env("EXPORT_RETENTION_DAYS")  # None keeps files (export_core/retention.py)
    dagster_postgres_url: str | None = _env("DAGSTER_POSTGRES_URL", repr=False)  # carries a password
    # WEBHOOK_ALLOW_PRIVATE: webhooks may use http:// and loopback/private addresses (local development,
    # tests); link-local addresses stay refused (export_core/webhooks.py).
    webhook_allow_private: bool = _env("WEBHOOK_ALLOW_PRIVATE", False)

    @classmethod
    def from_env(cls) -> Settings:
        """Read and check the environment: a bad value raises ValueError naming its variable, never a secret."""
        try:
            return cls()
        except ValidationError as exc:
            raise ValueError("; ".join(_message(error) for error in exc.errors())) from None

    @classmethod
    def env_name(cls, field: str) -> str:
        """The variable a field is read from (its first, for AWS_REGION / AWS_DEFAULT_REGION)."""
        alias = cls.model_fields[field].validation_alias
        return str(alias.choices[0] if isinstance(alias, AliasChoices) else alias)

    # -- how values are read ----------------------------------------------------------------

    @field_validator(
        "api_port", "dagster_port", "polling_interval_ms", "timeout_millis", "max_rows_per_exported_file",
        "signed_url_ttl_seconds", "jwt_leeway_seconds", "max_pending_per_campaign", mode="before",
    )  # fmt: skip
    @classmethod
    def _integer(cls, value: Any, info: ValidationInfo) -> Any:
        return _int(cls.env_name(str(info.field_name)), value)

    @field_validator(
        "schedule_min_interval_minutes", "schedule_pause_after_failures", "max_schedules_per_campaign", mode="before"
    )
    @classmethod
    def _positive(cls, value: Any, info: ValidationInfo) -> Any:
        """A whole number, at least 1 (0 would allow a schedule every minute, never pause, or allow none)."""
        name = cls.env_name(str(info.field_name))
        number = _int(name, value)
        if isinstance(number, int) and number < 1:
            raise ValueError(f"{name} must be at least 1, got {number}")
        return number

    @field_validator("dev_mode", "webhook_allow_private", mode="before")
    @classmethod
    def _flag(cls, value: Any) -> Any:
        """1/true/yes/on (any case) is on; any other value is off."""
        return value.strip().lower() in _TRUE if isinstance(value, str) else value

    @field_validator("data_dir", "log_dir")
    @classmethod
    def _absolute(cls, value: Path | None) -> Path | None:
        return value.resolve() if value is not None else None

    @field_validator("jwt_public_key", "jwt_private_key")
    @classmethod
    def _pem(cls, value: str | None, info: ValidationInfo) -> str | None:
        """The variable's PEM (`\\n` escapes accepted), or in dev mode the generated dev key file."""
        if value:
            return value.replace("\\n", "\n")
        data_dir = info.data.get("data_dir")
        if info.data.get("dev_mode") and data_dir is not None:
            name = "dev_public.pem" if info.field_name == "jwt_public_key" else "dev_private.pem"
            path = data_dir / "keys" / name
            if path.exists():
                return path.read_text()
        return None

    @field_validator("dagster_graphql_url")
    @classmethod
    def _graphql_url(cls, value: str, info: ValidationInfo) -> str:
        return value or f"http://127.0.0.1:{info.data.get('dagster_port', 3000)}/graphql"

    @field_validator("s3_object_acl", "s3_sse", mode="before")
    @classmethod
    def _choice(cls, value: Any, info: ValidationInfo) -> Any:
        allowed = S3_OBJECT_ACL_MODES if info.field_name == "s3_object_acl" else S3_SSE_MODES
        raw = value.strip() if isinstance(value, str) else value
        if not raw:
            return "per-type" if info.field_name == "s3_object_acl" else None
        if raw not in allowed:
            name = cls.env_name(str(info.field_name))
            raise ValueError(f"{name} must be one of {', '.join(allowed)}; got {raw!r}")
        return raw

    @field_validator("s3_sse_kms_key_id", mode="before")
    @classmethod
    def _stripped(cls, value: Any) -> Any:
        return (value.strip() or None) if isinstance(value, str) else value

    @field_validator("export_retention_days", mode="before")
    @classmethod
    def _retention_days(cls, value: Any) -> Any:
        """Unset keeps every file; otherwise a whole number of days, at least 1."""
        if isinstance(value, str) and not value.strip():
            return None
        days = _int("EXPORT_RETENTION_DAYS", value)
        if days is not None and days < 1:
            raise ValueError(f"EXPORT_RETENTION_DAYS must be at least 1 (or unset to keep files), got {days}")
        return days

    @field_validator("dagster_postgres_url", mode="before")
    @classmethod
    def _postgres_url(cls, value: Any) -> Any:
        raw = value.strip() if isinstance(value, str) else value
        if raw and not raw.startswith(("postgresql://", "postgres://")):
            # Never echo the value: it carries the password.
            raise ValueError("DAGSTER_POSTGRES_URL must look like postgresql://user:password@host:port/database")
        return raw or None

    @model_validator(mode="after")
    def _kms_key_needs_kms(self) -> Settings:
        if self.s3_sse_kms_key_id and self.s3_sse != "aws:kms":
            raise ValueError("S3_SSE_KMS_KEY_ID is set but S3_SSE is not aws:kms; set S3_SSE=aws:kms or unset it")
        return self

    # -- derived ----------------------------------------------------------------------------

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


def _int(name: str, value: Any) -> Any:
    """A whole number from the variable's text; the error names the variable."""
    if not isinstance(value, str):
        return value
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"{name} must be an integer, got {value!r}") from None


def _message(error: Any) -> str:
    """One validation error as the sentence a validator raised, or one naming the variable only."""
    if error["type"] == "value_error":
        return str(error["ctx"]["error"])
    return f"{'.'.join(str(part) for part in error['loc']) or 'settings'}: {error['msg']}"
