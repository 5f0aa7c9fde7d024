"""Destinations (SPEC §13): where a campaign's finished files are pushed, a test of one, and an export's deliveries.

REPORT on the campaign, as for its exports, webhooks and schedules. Secrets (an SFTP password, the private key
of a generated pair) are write-only: no answer, log line or error carries them; the 201 of a `generateKey`
destination carries the public key for the partner to authorize (it stays in GET: it is public). A 400 names
the refused field in `payload`; an id of another campaign is "not found". Deliveries are made by the Dagster
sensor (export_pipelines/destination_delivery.py), never inside a request; the test endpoint connects from
the request itself (bounded by the transports' timeouts).
"""

from __future__ import annotations

from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.endpoints import HTTPEndpoint
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from export_api import observability
from export_api.checks import json_body, load_export
from export_api.errors import ApiError
from export_api.state import NO_STORE, api_state, authorize_report
from export_core import destination_delivery
from export_core.destination_store import (
    ACLS,
    DEFAULT_FILE_NAME,
    DEFAULT_PORT,
    FILE_NAME_FIELDS,
    MAX_PER_CAMPAIGN,
    PENDING,
    TYPES,
    DestinationInvalid,
    DestinationStore,
    TooManyDestinations,
    check_host,
    destination_view,
    parse_destination,
)
from export_core.destinations import DeliveryError
from export_core.secrets import UnreadableSecret

NOT_FOUND = "Destination not found."


def _store(request: Request) -> DestinationStore:
    return DestinationStore(api_state(request).db)


def _found(doc: dict[str, Any] | None, destination_id: str) -> dict[str, Any]:
    if doc is None:
        raise ApiError(404, NOT_FOUND, destination_id[:100])
    return doc


class CampaignDestinations(HTTPEndpoint):
    """`/campaigns/{campaignId}/destinations`; one endpoint so a 405 lists both methods in `Allow`."""

    async def post(self, request: Request) -> Response:
        """Add a destination; for `generateKey: true` the answer carries the public key to authorize.
        ---
        summary: Add a destination (SFTP, S3 or Marketing Cloud)
        operationId: createDestination
        tags: [destinations]
        security: [{bearerAuth: []}]
        parameters: [{$ref: "#/components/parameters/campaignId"}]
        requestBody:
          required: true
          content:
            application/json:
              schema: {$ref: "#/components/schemas/DestinationRequest"}
        responses:
          "201":
            description: >-
              The destination, without its password or private key (never shown); `publicKey` (OpenSSH) when
              the service generated the key pair.
            content: {application/json: {schema: {$ref: "#/components/schemas/Destination"}}}
          "400": {$ref: "#/components/responses/DestinationBadRequest"}
          "409":
            description: The campaign already has 10 destinations.
            content: {application/json: {schema: {$ref: "#/components/schemas/Error"}}}
          "413": {$ref: "#/components/responses/PayloadTooLarge"}
          "503": {$ref: "#/components/responses/Unavailable"}
        """
        state = api_state(request)
        campaign_id = request.path_params["campaignId"]
        principal = authorize_report(request, campaign_id)
        body = await json_body(request)

        def create() -> dict[str, Any]:
            # gpg (a pgpPublicKey), DNS (the host) and pymongo block: off the event loop.
            destination = parse_destination(body)
            check_host(destination, allow_private=state.settings.webhook_allow_private)
            state.campaigns.name(campaign_id)  # 400 for a campaign that does not exist
            return _store(request).create(
                campaign_id=campaign_id, request=destination, created_by=principal.user_id, secret_box=state.secret_box
            )

        try:
            created = await run_in_threadpool(create)
        except DestinationInvalid as exc:
            raise ApiError(400, str(exc), exc.field) from None
        except TooManyDestinations as exc:
            raise ApiError(409, str(exc)) from None
        return JSONResponse(destination_view(created), 201, headers=NO_STORE)

    def get(self, request: Request) -> Response:
        """The campaign's destinations, oldest first, without their secrets (sync: pymongo).
        ---
        summary: List a campaign's destinations
        operationId: listDestinations
        tags: [destinations]
        security: [{bearerAuth: []}]
        parameters: [{$ref: "#/components/parameters/campaignId"}]
        responses:
          "200":
            description: Every destination of the campaign (at most 10); never a password or private key.
            content: {application/json: {schema: {$ref: "#/components/schemas/DestinationList"}}}
          "400": {$ref: "#/components/responses/BadRequest"}
          "503": {$ref: "#/components/responses/Unavailable"}
        """
        state = api_state(request)
        campaign_id = request.path_params["campaignId"]
        authorize_report(request, campaign_id)
        state.campaigns.name(campaign_id)
        found = _store(request).for_campaign(campaign_id)
        return JSONResponse({"destinations": [destination_view(doc) for doc in found]})


class OneDestination(HTTPEndpoint):
    """`/campaigns/{campaignId}/destinations/{destinationId}`: read, remove."""

    def get(self, request: Request) -> Response:
        """One destination, without its secrets (sync: pymongo).
        ---
        summary: Get one destination
        operationId: getDestination
        tags: [destinations]
        security: [{bearerAuth: []}]
        parameters: [{$ref: "#/components/parameters/campaignId"}, {$ref: "#/components/parameters/destinationId"}]
        responses:
          "200":
            description: The destination; never a password or private key.
            content: {application/json: {schema: {$ref: "#/components/schemas/Destination"}}}
          "404": {$ref: "#/components/responses/DestinationNotFound"}
          "503": {$ref: "#/components/responses/Unavailable"}
        """
        campaign_id, destination_id = request.path_params["campaignId"], request.path_params["destinationId"]
        authorize_report(request, campaign_id)
        return JSONResponse(destination_view(_found(_store(request).get(campaign_id, destination_id), destination_id)))

    def delete(self, request: Request) -> Response:
        """Remove the destination; the campaign's schedules stop naming it (sync: pymongo).
        ---
        summary: Remove a destination
        operationId: deleteDestination
        tags: [destinations]
        security: [{bearerAuth: []}]
        parameters: [{$ref: "#/components/parameters/campaignId"}, {$ref: "#/components/parameters/destinationId"}]
        responses:
          "204":
            description: >-
              Removed with its secrets; the campaign's schedules no longer name it, and a delivery to it that
              is still pending ends failed.
          "404": {$ref: "#/components/responses/DestinationNotFound"}
          "503": {$ref: "#/components/responses/Unavailable"}
        """
        campaign_id, destination_id = request.path_params["campaignId"], request.path_params["destinationId"]
        authorize_report(request, campaign_id)
        if not _store(request).delete(campaign_id, destination_id):
            raise ApiError(404, NOT_FOUND, destination_id[:100])
        return Response(status_code=204)


async def check_destination(request: Request) -> Response:
    """Connect to the destination (address rules, pinned host key, login or role) and write and remove a small file.
    ---
    summary: Test a destination
    operationId: testDestination
    tags: [destinations]
    security: [{bearerAuth: []}]
    parameters: [{$ref: "#/components/parameters/campaignId"}, {$ref: "#/components/parameters/destinationId"}]
    responses:
      "200":
        description: >-
          `ok` true with what was checked, or false with what failed (one sentence: host key, login, folder,
          permission, address); nothing else is left on the destination.
        content: {application/json: {schema: {$ref: "#/components/schemas/DestinationTest"}}}
      "404": {$ref: "#/components/responses/DestinationNotFound"}
      "503": {$ref: "#/components/responses/Unavailable"}
    """
    state = api_state(request)
    campaign_id, destination_id = request.path_params["campaignId"], request.path_params["destinationId"]
    authorize_report(request, campaign_id)

    def check() -> dict[str, Any]:
        store = _store(request)
        destination = _found(store.get(campaign_id, destination_id), destination_id)
        reach = destination_delivery.Reach.of(state.settings)
        try:
            secrets = store.login_secrets(destination_id, state.secret_box)
            message = destination_delivery.check(destination, secrets, reach)
        except (DeliveryError, ValueError, UnreadableSecret) as exc:
            return {"ok": False, "message": str(exc)}
        return {"ok": True, "message": message}

    return JSONResponse(await run_in_threadpool(check), headers=NO_STORE)


def list_export_deliveries(request: Request) -> Response:
    """An export's deliveries, one per destination it named, each with its attempts (sync: pymongo).
    ---
    summary: List an export's deliveries to its destinations
    operationId: listExportDeliveries
    tags: [destinations]
    security: [{bearerAuth: []}]
    parameters: [{$ref: "#/components/parameters/campaignId"}, {$ref: "#/components/parameters/exportId"}]
    responses:
      "200":
        description: >-
          Stored when the export FINISHED (none before, none for a run skipped empty), in the order of its
          destinations; attempts newest first.
        content: {application/json: {schema: {$ref: "#/components/schemas/DeliveryList"}}}
      "404": {$ref: "#/components/responses/NotFound"}
      "503": {$ref: "#/components/responses/Unavailable"}
    """
    state = api_state(request)
    campaign_id, export_id = request.path_params["campaignId"], request.path_params["exportId"]
    authorize_report(request, campaign_id)
    record, _ = load_export(state, campaign_id, export_id)
    observability.set_export_id(str(record["_id"]))
    return JSONResponse({"deliveries": _store(request).deliveries(record)})


def component_schemas() -> dict[str, Any]:
    """The OpenAPI schemas of these operations (export_api/openapi.py adds them to the document)."""
    date_time = {"type": "string", "format": "date-time"}
    text = {"type": "string", "minLength": 1}
    common = {
        "name": {**text, "maxLength": 100, "description": "Shown in lists; default: the host and folder, or bucket."},
        "pgpPublicKey": {
            "type": "string",
            "description": "ASCII-armoured OpenPGP public key: files are encrypted to it and `.pgp` is appended."
            " Expired, revoked, signing-only and private keys are refused.",
        },
        "fileName": {
            "type": "string",
            "minLength": 1,
            "maxLength": 200,
            "description": f"The delivered name, a template of {', '.join('{' + f + '}' for f in FILE_NAME_FIELDS)};"
            f" default `{DEFAULT_FILE_NAME}`. For sfmc it must use {{name}} and {{exportId}}.",
        },
    }
    sftp_properties = {
        "host": {**text, "maxLength": 253, "description": "Host name or IP address; public addresses only"
                 " (loopback/private too with WEBHOOK_ALLOW_PRIVATE=1; link-local never)."},
        "port": {"type": "integer", "minimum": 1, "maximum": 65535, "default": DEFAULT_PORT},
        "username": {**text, "maxLength": 128},
        "path": {"type": "string", "maxLength": 1024, "description": "The folder files go to (it must exist)."},
        "hostKey": {
            **text,
            "description": "The server's host key, pinned: known_hosts line(s) (what ssh-keyscan prints) or a"
            " `SHA256:` fingerprint.",
        },
    }  # fmt: skip
    login = {
        "password": {"type": "string", "minLength": 1, "maxLength": 1024, "writeOnly": True},
        "generateKey": {
            "type": "boolean",
            "enum": [True],
            "description": "The service makes an ed25519 key pair; the 201 answers the public key to authorize.",
        },
    }
    s3_properties = {
        "bucket": {"type": "string", "pattern": "^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$"},
        "prefix": {"type": "string", "maxLength": 1024, "description": "The folder in the bucket (empty: the top)."},
        "region": {"type": "string", "pattern": "^[a-z]{2}(-[a-z]+)+-[0-9]{1,2}$", "example": "eu-west-1"},
        "roleArn": {"type": "string", "description": "A role in the partner's account, assumed (STS) per delivery."},
        "externalId": {"type": "string", "pattern": "^[A-Za-z0-9+=,.@:/_-]{2,1224}$"},
        "acl": {"type": "string", "enum": list(ACLS), "default": ACLS[0]},
    }

    def request_variant(kind: str, properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
        return {
            "type": "object",
            "required": ["type", *required],
            "additionalProperties": False,
            "properties": {"type": {"type": "string", "enum": [kind]}, **common, **properties},
        }

    sftp_required = ["host", "username", "hostKey"]
    sftp_variants = [
        request_variant(kind, {**sftp_properties, login_field: login[login_field]}, [*sftp_required, login_field])
        for kind in ("sftp", "sfmc")
        for login_field in ("password", "generateKey")
    ]
    shown = {
        "id": {"type": "string"},
        "campaignId": {"type": "string"},
        "type": {"type": "string", "enum": list(TYPES)},
        **common,
        **sftp_properties,
        "auth": {"type": "string", "enum": ["password", "key"], "description": "How it logs in (sftp, sfmc)."},
        "publicKey": {"type": "string", "description": "The OpenSSH public key to authorize (generateKey)."},
        **s3_properties,
        "pgpFingerprint": {"type": "string"},
        "createdBy": {"type": "string", "description": "The `sub` of the token that added it."},
        "createdAt": date_time,
    }
    nullable_text = {"type": "string", "nullable": True}
    return {
        "DestinationRequest": {
            "description": "A destination (SPEC §13): `sftp`, `s3` or `sfmc` (an SFTP destination on a Marketing"
            " Cloud Enhanced FTP account), with `password` or `generateKey: true` for the SFTP types.",
            "oneOf": [*sftp_variants, request_variant("s3", s3_properties, ["bucket", "region"])],
            "example": {
                "type": "sftp",
                "host": "sftp.partner.example",
                "username": "verifiedfan",
                "path": "/incoming",
                "hostKey": "sftp.partner.example ssh-ed25519"
                " AAAAC3NzaC1lZDI1NTE5AAAAIG9dMmqxaW+S+sCXuY79Jqr6MyZAxlE6jTwUV8PdRYUz",
                "generateKey": True,
            },
        },
        "Destination": {
            "type": "object",
            "description": "A destination as stored; never its password or private key.",
            "required": ["id", "campaignId", "type", "name", "createdAt"],
            "additionalProperties": False,
            "properties": shown,
        },
        "DestinationList": {
            "type": "object",
            "required": ["destinations"],
            "additionalProperties": False,
            "properties": {
                "destinations": {
                    "type": "array",
                    "maxItems": MAX_PER_CAMPAIGN,
                    "items": {"$ref": "#/components/schemas/Destination"},
                }
            },
        },
        "DestinationTest": {
            "type": "object",
            "required": ["ok", "message"],
            "additionalProperties": False,
            "properties": {"ok": {"type": "boolean"}, "message": {"type": "string", "description": "One sentence."}},
        },
        "DeliveredFile": {
            "type": "object",
            "required": ["remotePath", "bytes", "sha256"],
            "properties": {
                "remotePath": {"type": "string", "description": "The SFTP path, or s3://bucket/key."},
                "bytes": {"type": "integer", "minimum": 0},
                "sha256": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
            },
        },
        "Delivery": {
            "type": "object",
            "description": "One export's delivery to one destination. `remotePath`, `bytes` and `sha256` describe"
            " what was sent (for several files, sfmc's regional CSVs: their folder, their total and no single"
            " sha256; `files` lists each).",
            "required": ["destinationId", "status", "remotePath", "bytes", "sha256", "files", "attempts"],
            "properties": {
                "destinationId": {"type": "string"},
                "status": {"type": "string", "enum": [PENDING, "delivered", "failed"]},
                "remotePath": nullable_text,
                "bytes": {"type": "integer", "minimum": 0, "nullable": True},
                "sha256": nullable_text,
                "files": {"type": "array", "items": {"$ref": "#/components/schemas/DeliveredFile"}},
                "attempts": {
                    "type": "array",
                    "description": "Newest first; `error` is one plain sentence, null for the attempt that succeeded.",
                    "items": {
                        "type": "object",
                        "required": ["at", "error"],
                        "properties": {"at": date_time, "error": nullable_text},
                    },
                },
                "createdAt": date_time,
                "nextAttemptAt": {**date_time, "nullable": True},
                "reason": {"type": "string", "description": "Why it failed (status failed)."},
            },
        },
        "DeliveryList": {
            "type": "object",
            "required": ["deliveries"],
            "additionalProperties": False,
            "properties": {"deliveries": {"type": "array", "items": {"$ref": "#/components/schemas/Delivery"}}},
        },
    }


routes = [
    Route("/campaigns/{campaignId}/destinations", CampaignDestinations),
    Route("/campaigns/{campaignId}/destinations/{destinationId}", OneDestination),
    Route("/campaigns/{campaignId}/destinations/{destinationId}/test", check_destination, methods=["POST"]),
    Route("/campaigns/{campaignId}/exports/{exportId}/deliveries", list_export_deliveries, methods=["GET"]),
]
