"""Every way a request can fail authentication gets 401 in the error shape (SPEC §6)."""

from __future__ import annotations

import time

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from starlette.testclient import TestClient

from export_api.auth import TokenVerifier
from export_api.errors import ApiError
from tests.api.conftest import CAMPAIGN, EXPORTS, OTHER_CAMPAIGN, TokenFactory, assert_error, unsigned_token


def other_private_key() -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def assert_401(response: httpx.Response, message: str | None = None) -> None:
    assert_error(response, 401, message)
    assert response.headers["www-authenticate"] == "Bearer"


def test_missing_token_is_401(client: TestClient) -> None:
    assert_401(client.get(EXPORTS), "Missing bearer token.")
    assert_401(client.post(EXPORTS, json={"exportType": "entries"}), "Missing bearer token.")
    assert_401(client.get(f"{EXPORTS}/abc"), "Missing bearer token.")


@pytest.mark.parametrize("value", ["Basic dXNlcjpwYXNz", "Bearer", "Bearer ", "Bearer a b", "token-without-scheme"])
def test_malformed_authorization_header_is_401(client: TestClient, value: str) -> None:
    assert_401(client.get(EXPORTS, headers={"Authorization": value}))


def claims(**extra: object) -> dict[str, object]:
    return {"sub": "user-1", "campaigns": {CAMPAIGN: ["REPORT"]}, "exp": int(time.time()) + 3600, **extra}


def bad_tokens(make_token: TokenFactory, public_pem: str) -> dict[str, str]:
    return {
        "garbage": "abc.def.ghi",
        "other key": make_token(key=other_private_key()),
        "expired": make_token(expires_in=-120),  # beyond the 30 s leeway
        "no exp": make_token(expires_in=None),
        "no sub": make_token(sub=None),
        "empty sub": make_token(sub=""),
        # The classic key-confusion attack: HS256 with the public key text as the HMAC secret.
        "HS256 with public key": unsigned_token({"alg": "HS256", "typ": "JWT"}, claims(), public_pem.encode()),
        "alg none": unsigned_token({"alg": "none", "typ": "JWT"}, claims(), None),
        "campaigns not a map": make_token(campaigns=["REPORT"]),
        "supreme not a bool": unsigned_token({"alg": "none"}, claims(supreme="yes"), None),
    }


@pytest.mark.parametrize(
    "case",
    [
        "garbage",
        "other key",
        "expired",
        "no exp",
        "no sub",
        "empty sub",
        "HS256 with public key",
        "alg none",
        "campaigns not a map",
        "supreme not a bool",
    ],
)
def test_invalid_tokens_are_401(
    client: TestClient, make_token: TokenFactory, jwt_keys: tuple[str, str], case: str
) -> None:
    token = bad_tokens(make_token, jwt_keys[1])[case]
    response = client.get(EXPORTS, headers={"Authorization": f"Bearer {token}"})
    assert_401(response, "Token expired." if case == "expired" else "Invalid token.")
    assert token not in response.text


def test_token_without_report_permission_is_401(client: TestClient, make_token: TokenFactory) -> None:
    token = make_token(campaigns={CAMPAIGN: ["VIEW", "report"]})
    assert_401(client.get(EXPORTS, headers={"Authorization": f"Bearer {token}"}))


def test_report_on_another_campaign_only_is_401(client: TestClient, make_token: TokenFactory) -> None:
    token = make_token(campaigns={OTHER_CAMPAIGN: ["REPORT"]})
    auth = {"Authorization": f"Bearer {token}"}
    assert_401(client.get(EXPORTS, headers=auth))
    assert_401(client.post(EXPORTS, json={"exportType": "entries"}, headers=auth))
    assert client.get(f"/campaigns/{OTHER_CAMPAIGN}/exports", headers=auth).status_code == 200


def test_auth_is_checked_before_the_body(client: TestClient) -> None:
    """An anonymous caller learns nothing about validation rules or which campaigns exist."""
    assert_401(client.post("/campaigns/nope/exports", json={"exportType": "bogus"}))


def test_supreme_token_passes_without_campaign_permissions(client: TestClient, make_token: TokenFactory) -> None:
    token = make_token(campaigns={}, supreme=True)
    assert client.get(EXPORTS, headers={"Authorization": f"Bearer {token}"}).status_code == 200


def test_scheme_is_case_insensitive(client: TestClient, make_token: TokenFactory) -> None:
    assert client.get(EXPORTS, headers={"Authorization": f"bearer {make_token()}"}).status_code == 200


def test_a_remembered_token_still_expires(make_token: TokenFactory, jwt_keys: tuple[str, str]) -> None:
    """Verified tokens are remembered (by digest) only until their own `exp` plus the leeway."""
    verifier = TokenVerifier(jwt_keys[1], leeway_seconds=1)
    token = make_token(expires_in=1)
    assert verifier.authenticate(f"Bearer {token}").user_id == "user-1"
    assert verifier.authenticate(f"Bearer {token}").user_id == "user-1"  # the remembered answer
    time.sleep(3.1)  # exp is a whole second: past it plus the 1 s leeway for sure
    with pytest.raises(ApiError) as refused:
        verifier.authenticate(f"Bearer {token}")
    assert refused.value.status == 401 and refused.value.message == "Token expired."
    assert token not in repr(vars(verifier))  # only a digest of it is kept
