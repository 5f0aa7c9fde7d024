"""`export-service webhooks add|list|remove|deliveries` against a real API over HTTP (SPEC §9, §11)."""

from __future__ import annotations

from export_core.vocabulary import WEBHOOK_EVENTS
from tests.api.conftest import CAMPAIGN, LiveServer, TokenFactory
from tests.api.test_cli import one_line_error, run_cli


def test_add_list_deliveries_and_remove(live_api: LiveServer, make_token: TokenFactory):
    token = make_token()
    added = run_cli(
        live_api, "webhooks", "add", CAMPAIGN, "https://8.8.8.8/in", "--events", "export.finished,export.failed",
        token=token,
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    first, second = added.stdout.splitlines()
    webhook_id = first.split()[1]
    assert first == f"webhook {webhook_id}  export.finished,export.failed  https://8.8.8.8/in"
    assert second.startswith("secret whsec_")
    assert "never shown again" in added.stderr

    listed = run_cli(live_api, "webhooks", "list", CAMPAIGN, token=token)
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert lines[0] == "id\tevents\turl\tcreated" and lines[-1] == "1 webhook(s)"
    assert lines[1].startswith(f"{webhook_id}\texport.finished,export.failed\thttps://8.8.8.8/in\t")
    assert "whsec_" not in listed.stdout

    deliveries = run_cli(live_api, "webhooks", "deliveries", CAMPAIGN, webhook_id, token=token)
    assert deliveries.returncode == 0 and deliveries.stdout.splitlines()[-1] == "0 delivery(ies)"

    removed = run_cli(live_api, "webhooks", "remove", CAMPAIGN, webhook_id, token=token)
    assert removed.returncode == 0 and removed.stdout.strip() == f"removed webhook {webhook_id}"
    again = run_cli(live_api, "webhooks", "remove", CAMPAIGN, webhook_id, token=token)
    assert one_line_error(again, 3).startswith("export-service: Webhook not found. (HTTP 404")


def test_refusals_are_one_line(live_api: LiveServer, make_token: TokenFactory):
    token = make_token()
    bad_events = run_cli(
        live_api, "webhooks", "add", CAMPAIGN, "https://8.8.8.8/", "--events", "export.done", token=token
    )
    listed = ", ".join(WEBHOOK_EVENTS)  # the service's own list: the CLI has no copy of it
    assert one_line_error(bad_events, 2) == f"export-service: --events takes a comma-separated list of: {listed}"
    http = run_cli(live_api, "webhooks", "add", CAMPAIGN, "http://8.8.8.8/", token=token)
    assert one_line_error(http, 3).startswith("export-service: The webhook URL must start with https://. (HTTP 400")
    private = run_cli(live_api, "webhooks", "add", CAMPAIGN, "https://127.0.0.1:9/", token=token)
    assert "only public addresses are allowed" in one_line_error(private, 3)
    no_token = run_cli(live_api, "webhooks", "list", CAMPAIGN)
    assert "no token" in one_line_error(no_token, 2)


def test_add_subscribes_to_every_event_of_the_service_by_default(live_api: LiveServer, make_token: TokenFactory):
    added = run_cli(live_api, "webhooks", "add", CAMPAIGN, "https://8.8.8.8/all", token=make_token())
    assert added.returncode == 0, added.stderr
    first = added.stdout.splitlines()[0]
    assert first == f"webhook {first.split()[1]}  {','.join(WEBHOOK_EVENTS)}  https://8.8.8.8/all"
