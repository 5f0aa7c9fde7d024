"""What a download saves as (keys.content_disposition) and what a download link looks like (clients.s3_config).

The header is checked against RFC 6266's grammar and parsed back by werkzeug, a client-side parser
we did not write; the links are signed by boto3 itself, offline (signing needs no network).
"""

from __future__ import annotations

import re
import urllib.parse
from typing import Any

import pytest
from werkzeug.http import parse_options_header

from export_core.clients import new_s3_client
from export_core.keys import MAX_FILE_NAME_BYTES, content_disposition, display_file_name

# RFC 6266 with RFC 5987: a quoted ASCII `filename` without `"` or `\`, then `filename*` of attr-chars and %XX.
HEADER = re.compile(
    r"attachment; filename=\"([ !#-\[\]-~]+)\"; filename\*=UTF-8''((?:[A-Za-z0-9!#$&+.^_`|~-]|%[0-9A-F]{2})+)"
)


def parts(header: str) -> tuple[str, str]:
    """(ASCII fallback, decoded filename*) of a header that matches the grammar exactly."""
    match = HEADER.fullmatch(header)
    assert match, header
    return match.group(1), urllib.parse.unquote(match.group(2), encoding="utf-8", errors="strict")


def test_the_campaigns_own_name_survives_in_filename_star() -> None:
    header = content_disposition("Beyoncé Tour 🎸 - Entries.csv")
    fallback, name = parts(header)
    assert name == "Beyoncé Tour 🎸 - Entries.csv"
    assert fallback == "Beyonce Tour _ - Entries.csv", "accents stripped, the emoji one `_`"
    disposition, params = parse_options_header(header)
    assert disposition == "attachment" and params["filename"] == "Beyoncé Tour 🎸 - Entries.csv"


@pytest.mark.parametrize(
    ("file_name", "expected_name", "expected_fallback"),
    [
        ('Say "Hi" Tour.csv', 'Say "Hi" Tour.csv', "Say _Hi_ Tour.csv"),
        ("AC\\DC / Live.csv", "AC_DC _ Live.csv", "AC_DC _ Live.csv"),
        ("Tour\r\nSet-Cookie: x=1.csv", "Tour__Set-Cookie: x=1.csv", "Tour__Set-Cookie: x=1.csv"),
        ("Tab\there\x00\x7f\x85.csv", "Tab_here___.csv", "Tab_here___.csv"),
        ("100% 東京ツアー; a=b.zip", "100% 東京ツアー; a=b.zip", "100_ _; a=b.zip"),
        ("ﬁnal Ａ.csv", "ﬁnal Ａ.csv", "final A.csv"),
        ("", "_", "_"),
    ],
)
def test_quotes_separators_controls_and_other_scripts(file_name: str, expected_name: str, expected_fallback: str):
    header = content_disposition(file_name)
    assert header.isascii() and "\r" not in header and "\n" not in header
    assert parts(header) == (expected_fallback, expected_name)
    assert parse_options_header(header)[1]["filename"] == expected_name


def test_very_long_names_fit_a_file_system_and_keep_their_extension() -> None:
    name = display_file_name("{campaign} - Entries.csv", "Beyoncé 🎸" * 200)
    assert len(name.encode()) <= MAX_FILE_NAME_BYTES
    assert name.endswith(" - Entries.csv") and name.startswith("Beyoncé 🎸Beyoncé"), "the campaign part is cut"
    fallback, decoded = parts(content_disposition(name))
    assert decoded == name and fallback.endswith(" - Entries.csv") and len(fallback) <= MAX_FILE_NAME_BYTES

    # A name from elsewhere (no template to shorten): the stem is cut, the extension kept.
    fallback, decoded = parts(content_disposition("é" * 400 + ".zip"))
    assert decoded == "é" * 125 + ".zip" and len(decoded.encode()) == 254
    assert fallback == "e" * 125 + ".zip", "the fallback spells the same name"
    assert len(content_disposition("x" * 10_000)) < 1_000, "bounded whatever comes in"


def test_display_name_is_the_template_with_the_unsanitised_campaign_name() -> None:
    template = "Combined - {campaign} ASU - Reminder Email Data.zip"
    assert (
        display_file_name(template, 'Fan Club: ☃ "Zoë"') == 'Combined - Fan Club: ☃ "Zoë" ASU - Reminder Email Data.zip'
    )
    assert display_file_name("{campaign} - Entries.csv", "{campaign} {0}") == "{campaign} {0} - Entries.csv"
    assert display_file_name("NA.csv", "ignored") == "NA.csv"


# -- download links: SigV4, the bucket region's own host ----------------------------------------------------


@pytest.fixture
def aws_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fixed credentials and no endpoint override, as on AWS; nothing here goes over the network."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    for name in ("AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)


def presigned(client: Any, bucket: str, key: str) -> tuple[urllib.parse.SplitResult, dict[str, str]]:
    url = client.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=3600)
    split = urllib.parse.urlsplit(url)
    return split, dict(urllib.parse.parse_qsl(split.query))


@pytest.mark.usefixtures("aws_credentials")
@pytest.mark.parametrize("region", ["us-east-1", "eu-west-1", "ap-southeast-2"])
def test_links_on_aws_are_sigv4_on_the_regional_host(region: str) -> None:
    split, query = presigned(new_s3_client(None, region), "exports", "entries/c1/e1/Tour - Entries.csv")
    assert (split.scheme, split.netloc) == ("https", f"exports.s3.{region}.amazonaws.com")
    assert split.path == "/entries/c1/e1/Tour%20-%20Entries.csv"
    assert query["X-Amz-Algorithm"] == "AWS4-HMAC-SHA256"
    assert query["X-Amz-Credential"].endswith(f"/{region}/s3/aws4_request")
    assert query["X-Amz-Expires"] == "3600" and re.fullmatch(r"[0-9a-f]{64}", query["X-Amz-Signature"])
    assert not {"AWSAccessKeyId", "Signature", "Expires"} & set(query), "no SigV2 parameters"


@pytest.mark.usefixtures("aws_credentials")
def test_a_bucket_name_with_dots_goes_path_style_on_the_regional_host() -> None:
    """A dotted name cannot be a virtual host under S3's TLS certificate."""
    split, query = presigned(new_s3_client(None, "eu-west-1"), "acme.exports", "k.csv")
    assert (split.netloc, split.path) == ("s3.eu-west-1.amazonaws.com", "/acme.exports/k.csv")
    assert query["X-Amz-Algorithm"] == "AWS4-HMAC-SHA256"


@pytest.mark.usefixtures("aws_credentials")
@pytest.mark.parametrize("endpoint", ["http://127.0.0.1:4568", "http://localhost:4568"])
def test_links_to_a_local_endpoint_are_sigv4_and_path_style(endpoint: str) -> None:
    split, query = presigned(new_s3_client(endpoint, "eu-west-1"), "exports", "k.csv")
    assert f"{split.scheme}://{split.netloc}" == endpoint and split.path == "/exports/k.csv"
    assert query["X-Amz-Algorithm"] == "AWS4-HMAC-SHA256"
    assert query["X-Amz-Credential"].endswith("/eu-west-1/s3/aws4_request")
