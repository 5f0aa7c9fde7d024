"""Bearer-token auth (SPEC §6): RS256 JWTs checked against the configured public key.

Only RS256 is accepted, so a token signed with HS256 using the public key as secret,
or an unsigned ("none") token, is refused. Tokens are never stored or logged: what is kept
of a verified one is its SHA-256 digest, its `exp` and the `Principal` built from its claims.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

import jwt
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from export_api.errors import ApiError

logger = logging.getLogger("export_api.auth")

REPORT = "REPORT"
ALGORITHMS = ["RS256"]
MAX_TOKEN_BYTES = 8 * 1024  # SPEC §6: a larger token is refused before any parsing
MAX_SUB_LENGTH = 256
VERIFIED_CACHE_SIZE = 10_000  # tokens verified lately; a client sends the same one until it expires
_CHALLENGE = {"WWW-Authenticate": "Bearer"}


@dataclass(frozen=True)
class Principal:
    """Who is calling, from a verified token's claims."""

    user_id: str
    campaigns: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    supreme: bool = False

    def can_report(self, campaign_id: str) -> bool:
        return self.supreme or REPORT in self.campaigns.get(campaign_id, ())


def unauthorized(message: str) -> ApiError:
    return ApiError(401, message, headers=_CHALLENGE)


class TokenVerifier:
    """Verifies bearer tokens; with no public key configured every token is refused.

    `aud` / `iss` are checked only when an audience / issuer is configured; otherwise a token's
    `aud` is ignored rather than a reason to refuse it. exp/nbf/iat get `leeway_seconds`.

    A token that passed is remembered by digest until its `exp` (plus leeway): the RSA check
    and claim parsing were the largest part of a request's CPU, and a client sends the same
    token with every request. The checks do not depend on anything that changes while the
    process runs, so a remembered answer is the one a new check would give.
    """

    def __init__(
        self,
        public_key_pem: str | None,
        *,
        audience: str | None = None,
        issuer: str | None = None,
        leeway_seconds: int = 30,
    ) -> None:
        self._audience, self._issuer, self._leeway = audience, issuer, leeway_seconds
        self._required = ["exp", "sub", *(["aud"] if audience else []), *(["iss"] if issuer else [])]
        self._key: RSAPublicKey | None = None
        self._verified: dict[bytes, tuple[float, Principal]] = {}
        if public_key_pem:
            key = load_pem_public_key(public_key_pem.encode())
            if not isinstance(key, RSAPublicKey):
                raise ValueError("JWT_PUBLIC_KEY must be an RSA public key (tokens are RS256)")
            self._key = key
        else:
            logger.warning("JWT_PUBLIC_KEY is not set: every authenticated request will get 401")

    def authenticate(self, authorization: str | None) -> Principal:
        """The principal of an `Authorization: Bearer <JWT>` header value, or 401."""
        if not authorization:
            raise unauthorized("Missing bearer token.")
        if len(authorization) > MAX_TOKEN_BYTES + len("Bearer "):
            raise unauthorized("Token too large.")
        scheme, _, token = authorization.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token or " " in token:
            raise unauthorized("Authorization header must be 'Bearer <token>'.")
        if self._key is None:
            raise unauthorized("Invalid token.")
        digest = hashlib.sha256(token.encode()).digest()
        remembered = self._verified.get(digest)
        if remembered is not None:
            if time.time() <= remembered[0] + self._leeway:
                return remembered[1]
            del self._verified[digest]
            raise unauthorized("Token expired.")
        try:
            claims = jwt.decode(
                token,
                self._key,
                algorithms=ALGORITHMS,
                audience=self._audience,
                issuer=self._issuer,
                leeway=self._leeway,
                options={"require": self._required, "verify_aud": self._audience is not None},
            )
        except jwt.ExpiredSignatureError:
            raise unauthorized("Token expired.") from None
        except jwt.InvalidTokenError:
            # `from None`: the PyJWT error is not chained into anything that might be logged.
            raise unauthorized("Invalid token.") from None
        principal = _principal(claims)
        if len(self._verified) >= VERIFIED_CACHE_SIZE:
            self._verified.clear()
        self._verified[digest] = (float(claims["exp"]), principal)
        return principal


def _principal(claims: Mapping[str, object]) -> Principal:
    sub = claims.get("sub")
    campaigns = claims.get("campaigns", {})
    supreme = claims.get("supreme", False)
    if not isinstance(sub, str) or not sub or len(sub) > MAX_SUB_LENGTH or not _storable(sub):
        raise unauthorized("Invalid token.")
    if not isinstance(campaigns, dict) or not isinstance(supreme, bool):
        raise unauthorized("Invalid token.")
    perms: dict[str, tuple[str, ...]] = {}
    for campaign_id, granted in campaigns.items():
        if isinstance(granted, list):
            perms[str(campaign_id)] = tuple(p for p in granted if isinstance(p, str))
    return Principal(user_id=sub, campaigns=perms, supreme=supreme)


def _storable(text: str) -> bool:
    """The user id is stored on records: it must be valid UTF-8 (no lone surrogates)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def require_report(principal: Principal, campaign_id: str) -> Principal:
    """REPORT on the campaign (or a supreme token), else 401 as SPEC §6 says."""
    if not principal.can_report(campaign_id):
        raise unauthorized(f"Token lacks {REPORT} permission on this campaign.")
    return principal


def require_supreme(principal: Principal) -> Principal:
    """For compliance endpoints such as CCPA deletion: supreme tokens only, else 401."""
    if not principal.supreme:
        raise unauthorized("Supreme token required.")
    return principal


def issue_dev_token(
    private_key_pem: str,
    *,
    user_id: str,
    campaigns: Mapping[str, list[str]],
    supreme: bool,
    now: int,
    expires_in: int,
) -> str:
    """An RS256 token for local development (the /dev/token endpoint)."""
    claims: dict[str, object] = {
        "sub": user_id,
        "campaigns": dict(campaigns),
        "iat": now,
        "exp": now + expires_in,
    }
    if supreme:
        claims["supreme"] = True
    return jwt.encode(claims, private_key_pem, algorithm="RS256")
