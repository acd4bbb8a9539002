"""The relay on its own: webhook validation, mapping to Prefect events, dedupe, auth, metrics.

Pure mapping and dedupe are plain pytest. The ASGI app is driven over HTTP with Starlette's
TestClient and a recording sink; delivery to a real Prefect API is in test_alerting_e2e.py.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient

from deployments.relay.app import RelaySettings, create_app
from deployments.relay.mapping import (
    EVENT_FIRING,
    EVENT_RESOLVED,
    Deduplicator,
    alert_to_event,
    event_id,
    parse_webhook,
)
from tasks.errors import AlertPayloadInvalid, ConfigurationError, EventDeliveryError

TOKEN = "t0ken-for-tests-0123456789"
NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def webhook(*alerts: dict[str, Any], status: str = "firing") -> dict[str, Any]:
    """An Alertmanager v4 webhook body, as Alertmanager 0.25 sends it."""
    return {
        "receiver": "vibeops-relay",
        "status": status,
        "alerts": list(alerts),
        "groupLabels": {},
        "commonLabels": {},
        "commonAnnotations": {},
        "externalURL": "http://alertmanager.example:9093",
        "version": "4",
        "groupKey": '{}:{alertname="HighErrorRate"}',
        "truncatedAlerts": 0,
    }


def am_alert(
    alertname: str = "HighErrorRate",
    fingerprint: str = "0123456789abcdef",
    status: str = "firing",
    starts_at: str = "2025-03-01T11:55:00Z",
    **labels: str,
) -> dict[str, Any]:
    return {
        "status": status,
        "labels": {"alertname": alertname, "severity": "critical", **labels},
        "annotations": {"summary": "High error rate detected", "runbook_url": "http://x/rb"},
        "startsAt": starts_at,
        "endsAt": "0001-01-01T00:00:00Z",
        "generatorURL": "http://prometheus.example:9090/graph?g0.expr=x",
        "fingerprint": fingerprint,
    }


class RecordingSink:
    """Stands in for the Prefect API: keeps every batch it is sent (or fails on demand)."""

    def __init__(self, fail: bool = False) -> None:
        self.batches: list[list[dict[str, Any]]] = []
        self.fail = fail

    async def send(self, events: list[dict[str, Any]]) -> None:
        if self.fail:
            raise EventDeliveryError("Prefect API unreachable (test)")
        self.batches.append(events)

    async def ready(self) -> bool:
        return not self.fail

    async def aclose(self) -> None:
        return None

    @property
    def events(self) -> list[dict[str, Any]]:
        return [e for batch in self.batches for e in batch]


def client_for(sink: RecordingSink, window: float = 300) -> TestClient:
    settings = RelaySettings(
        token=TOKEN, prefect_api_url="http://127.0.0.1:9/api", dedupe_window_seconds=window
    )
    return TestClient(create_app(settings, sink=sink), raise_server_exceptions=False)


def auth(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def metric(client: TestClient, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(client.get("/metrics").text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    raise AssertionError(f"metric {name}{labels} not exported")


# --- pure mapping ---------------------------------------------------------------------------


def test_firing_alert_maps_to_event_with_labels_and_payload():
    payload = parse_webhook(
        json.dumps(webhook(am_alert(namespace="staging", app="vibebench-core"))).encode()
    )
    event = alert_to_event(payload.alerts[0], payload, NOW, window_seconds=300)

    assert event["event"] == EVENT_FIRING
    resource = event["resource"]
    assert resource["prefect.resource.id"] == "alertmanager.alert.0123456789abcdef"
    assert resource["alertname"] == "HighErrorRate"
    assert resource["severity"] == "critical"
    assert resource["namespace"] == "staging"
    assert resource["alert.label.app"] == "vibebench-core"
    assert resource["alert.label.alertname"] == "HighErrorRate"
    assert resource["alert.fingerprint"] == "0123456789abcdef"
    assert event["payload"]["annotations"]["runbook_url"] == "http://x/rb"
    assert event["payload"]["summary"] == "High error rate detected"
    assert event["payload"]["startsAt"] == "2025-03-01T11:55:00Z"
    assert event["payload"]["generatorURL"].startswith("http://prometheus.example")
    assert event["related"][0]["prefect.resource.role"] == "receiver"
    assert all(isinstance(v, str) for v in resource.values())


def test_resolved_alert_maps_to_resolved_event():
    payload = parse_webhook(json.dumps(webhook(am_alert(status="resolved"))).encode())
    assert alert_to_event(payload.alerts[0], payload, NOW)["event"] == EVENT_RESOLVED


def test_event_ids_are_stable_within_a_window_and_change_after_it():
    alert = parse_webhook(json.dumps(webhook(am_alert())).encode()).alerts[0]
    first = event_id(alert, datetime(2025, 3, 1, 12, 0, 1, tzinfo=UTC), 300)
    again = event_id(alert, datetime(2025, 3, 1, 12, 4, 59, tzinfo=UTC), 300)
    later = event_id(alert, datetime(2025, 3, 1, 12, 5, 0, tzinfo=UTC), 300)
    assert first == again != later
    assert event_id(alert, NOW, 0) != event_id(alert, NOW, 0)  # no window: always fresh


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"{not json", "not valid JSON"),
        (b"\xff\xfe\x00", "not valid JSON"),
        (b"", "not valid JSON"),
        (b"[1, 2]", "must be a JSON object"),
        (b'"alerts"', "must be a JSON object"),
        (b'{"version": "4"}', "no 'alerts'"),
        (b'{"alerts": {}}', "'alerts' must be a list"),
        (b'{"alerts": [42]}', "alerts[0] must be an object"),
        (b'{"alerts": [{"status": "firing", "labels": {}, "fingerprint": "ab"}]}', "alertname"),
        (
            b'{"alerts": [{"status": "boom", "labels": {"alertname": "X"}, "fingerprint": "a"}]}',
            "status",
        ),
        (b'{"alerts": [{"status": "firing", "labels": {"alertname": "X"}}]}', "fingerprint"),
        (
            b'{"alerts": [{"status": "firing", "labels": {"alertname": 7}, "fingerprint": "a"}]}',
            "labels.alertname must be a string",
        ),
        (
            b'{"alerts": [{"status": "firing", "labels": {"alertname": "X", "a.b": "c"},'
            b' "fingerprint": "a"}]}',
            "invalid label name",
        ),
        (b'{"version": "3", "alerts": []}', "unsupported webhook version"),
        (b"[" * 100_000 + b"]" * 100_000, "not valid JSON"),
    ],
)
def test_malformed_payloads_are_refused_with_a_reason(body: bytes, reason: str):
    with pytest.raises(AlertPayloadInvalid, match=re.escape(reason)):
        parse_webhook(body)


def test_deduplicator_admits_once_per_window_and_releases_on_failure():
    dedupe = Deduplicator(window_seconds=60)
    key = ("fp", "firing")
    assert dedupe.admit(key, 100.0)
    assert not dedupe.admit(key, 159.9)
    assert dedupe.admit(("fp", "resolved"), 120.0)  # a status change is a new event
    assert dedupe.admit(key, 160.0)  # the window has passed
    dedupe.release(key, 160.0)
    assert dedupe.admit(key, 160.5)  # released: the retry is not a duplicate
    dedupe.expire(1000.0)
    assert len(dedupe) == 0


def test_deduplicator_bounds_its_memory():
    dedupe = Deduplicator(window_seconds=60, max_keys=10)
    for i in range(50):
        assert dedupe.admit((f"fp{i}", "firing"), float(i) / 100)
    assert len(dedupe) <= 10


def test_settings_refuse_weak_tokens_and_bad_urls():
    with pytest.raises(ConfigurationError, match="at least 16"):
        RelaySettings(token="short", prefect_api_url="http://127.0.0.1:4200/api")
    with pytest.raises(ConfigurationError, match="prefect_api_url"):
        RelaySettings(token=TOKEN, prefect_api_url="127.0.0.1:4200")
    assert TOKEN not in repr(RelaySettings(token=TOKEN, prefect_api_url="http://h/api"))


# --- the ASGI app over HTTP -----------------------------------------------------------------


def test_unauthenticated_posts_get_401_and_emit_nothing():
    sink = RecordingSink()
    with client_for(sink) as client:
        body = webhook(am_alert())
        assert client.post("/alerts", json=body).status_code == 401
        wrong = client.post("/alerts", json=body, headers=auth("x" * 30))
        assert wrong.status_code == 401
        assert wrong.headers["www-authenticate"] == "Bearer"
        basic = client.post("/alerts", json=body, headers={"Authorization": f"Basic {TOKEN}"})
        assert basic.status_code == 401
        assert metric(client, "vibeops_relay_requests_rejected_total", reason="unauthorized") == 3
    assert sink.events == []


def test_malformed_bodies_get_400_with_a_reason_never_500():
    sink = RecordingSink()
    with client_for(sink) as client:
        bad = client.post("/alerts", content=b"{oops", headers=auth())
        assert bad.status_code == 400
        assert "not valid JSON" in bad.json()["error"]
        missing = client.post("/alerts", json={"receiver": "x", "version": "4"}, headers=auth())
        assert missing.status_code == 400
        assert "alerts" in missing.json()["error"]
        for body in (b"null", b"[]", b'{"alerts": "x"}', b'{"alerts": [null]}', b"\x00" * 10):
            assert client.post("/alerts", content=body, headers=auth()).status_code == 400
        huge = client.post("/alerts", content=b"x" * (2 * 1024 * 1024), headers=auth())
        assert huge.status_code == 413
        assert metric(client, "vibeops_relay_requests_rejected_total", reason="malformed") == 7
    assert sink.events == []


def test_valid_webhook_emits_one_event_per_alert():
    sink = RecordingSink()
    with client_for(sink) as client:
        body = webhook(
            am_alert(fingerprint="aaaa000000000001"),
            am_alert(alertname="SlowBenchmarkRun", fingerprint="aaaa000000000002", pod="p-1"),
        )
        response = client.post("/alerts", json=body, headers=auth())
        assert response.status_code == 200
        assert response.json()["emitted"] == 2
        assert metric(client, "vibeops_relay_alerts_received_total", status="firing") == 2
        assert metric(client, "vibeops_relay_events_emitted_total", event=EVENT_FIRING) == 2
    assert len(sink.batches) == 1
    assert [e["resource"]["alertname"] for e in sink.events] == [
        "HighErrorRate",
        "SlowBenchmarkRun",
    ]
    assert sink.events[1]["resource"]["pod"] == "p-1"


def test_repeats_within_the_window_are_deduplicated():
    sink = RecordingSink()
    with client_for(sink) as client:
        for _ in range(20):
            assert client.post("/alerts", json=webhook(am_alert()), headers=auth()).is_success
        resolved = webhook(am_alert(status="resolved"), status="resolved")
        assert client.post("/alerts", json=resolved, headers=auth()).json()["emitted"] == 1
        assert client.post("/alerts", json=resolved, headers=auth()).json()["emitted"] == 0
        assert metric(client, "vibeops_relay_alerts_deduplicated_total") == 20
        assert metric(client, "vibeops_relay_alerts_received_total", status="firing") == 20
    assert [e["event"] for e in sink.events] == [EVENT_FIRING, EVENT_RESOLVED]


def test_a_refire_after_a_resolve_is_a_new_event_but_its_replays_are_not():
    """Fire, resolve, fire again (new startsAt) inside one dedupe window: two firing events."""
    sink = RecordingSink()
    first = am_alert(starts_at="2025-03-01T11:55:00Z")
    resolved = am_alert(status="resolved", starts_at="2025-03-01T11:55:00Z")
    refire = am_alert(starts_at="2025-03-01T11:58:30Z")
    with client_for(sink) as client:

        def post(alert: dict[str, Any]) -> int:
            body = webhook(alert, status=alert["status"])
            response = client.post("/alerts", json=body, headers=auth())
            assert response.status_code == 200
            return int(response.json()["emitted"])

        assert post(first) == 1
        assert post(first) == 0  # Alertmanager's repeat
        assert post(resolved) == 1
        assert post(resolved) == 0
        assert post(refire) == 1  # a genuine re-fire starts its runbook again
        assert post(refire) == 0  # ... once: its replays emit nothing
        assert post(first) == 0  # a late replay of the first notification, too
        assert post(resolved) == 0
    assert [(e["event"], e["payload"]["startsAt"]) for e in sink.events] == [
        (EVENT_FIRING, "2025-03-01T11:55:00Z"),
        (EVENT_RESOLVED, "2025-03-01T11:55:00Z"),
        (EVENT_FIRING, "2025-03-01T11:58:30Z"),
    ]
    assert len({e["id"] for e in sink.events}) == 3


def test_alert_dedupe_key_holds_fingerprint_status_and_start():
    one = parse_webhook(json.dumps(webhook(am_alert(starts_at="2025-03-01T11:55:00Z"))).encode())
    two = parse_webhook(json.dumps(webhook(am_alert(starts_at="2025-03-01T11:58:30Z"))).encode())
    assert one.alerts[0].dedupe_key == ("0123456789abcdef", "firing", "2025-03-01T11:55:00Z")
    assert one.alerts[0].dedupe_key != two.alerts[0].dedupe_key


def test_zero_window_disables_dedupe():
    sink = RecordingSink()
    with client_for(sink, window=0) as client:
        for _ in range(3):
            client.post("/alerts", json=webhook(am_alert()), headers=auth())
    assert len(sink.events) == 3
    assert len({e["id"] for e in sink.events}) == 3


def test_delivery_failure_answers_503_and_the_retry_is_not_a_duplicate():
    sink = RecordingSink(fail=True)
    with client_for(sink) as client:
        failed = client.post("/alerts", json=webhook(am_alert()), headers=auth())
        assert failed.status_code == 503
        assert "unreachable" in failed.json()["error"]
        assert client.get("/ready").status_code == 503
        sink.fail = False
        retried = client.post("/alerts", json=webhook(am_alert()), headers=auth())
        assert retried.json()["emitted"] == 1
        assert metric(client, "vibeops_relay_delivery_failures_total") == 1
    assert len(sink.events) == 1


def test_vibeops_relay_command_serves_and_refuses_to_start_without_a_token(tmp_path):
    import os
    import shutil
    import signal
    import subprocess
    import sys
    from pathlib import Path

    import httpx

    from tasks.local_stack import free_port, wait_for_port

    vibeops = shutil.which("vibeops") or str(Path(sys.executable).parent / "vibeops")
    env = {k: v for k, v in os.environ.items() if k != "VIBEOPS_RELAY_TOKEN"}
    env["PREFECT_API_URL"] = "http://127.0.0.1:9/api"
    refused = subprocess.run(
        [vibeops, "relay"], env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert refused.returncode != 0
    assert "VIBEOPS_RELAY_TOKEN" in refused.stderr + refused.stdout

    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    port = free_port()
    proc = subprocess.Popen(
        [vibeops, "relay", "--port", str(port), "--token-file", str(token_file)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        wait_for_port("127.0.0.1", port, 120, "vibeops relay")
        base = f"http://127.0.0.1:{port}"
        assert httpx.get(f"{base}/health", timeout=10).json() == {"status": "ok"}
        assert httpx.get(f"{base}/ready", timeout=10).status_code == 503  # no Prefect on :9
        assert httpx.post(f"{base}/alerts", json={}, timeout=10).status_code == 401
        bad = httpx.post(f"{base}/alerts", content=b"{", headers=auth(), timeout=10)
        assert bad.status_code == 400
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        output = proc.communicate(timeout=30)[0].decode()
    assert TOKEN not in output
    assert "relay ready" in output


def test_health_and_metrics_need_no_token():
    with client_for(RecordingSink()) as client:
        assert client.get("/health").json() == {"status": "ok"}
        assert client.get("/ready").status_code == 200
        text = client.get("/metrics").text
        for name in (
            "vibeops_relay_alerts_received_total",
            "vibeops_relay_events_emitted_total",
            "vibeops_relay_requests_rejected_total",
            "vibeops_relay_alerts_deduplicated_total",
        ):
            assert name in text
        assert client.get("/alerts").status_code == 405
