"""Alertmanager webhook -> Prefect event mapping, and the dedupe window (pure: no I/O, no Prefect).

Alertmanager posts version-4 webhook payloads (`{"version": "4", "alerts": [...], ...}`).
Each alert becomes one Prefect event:

- name `vibeops.alert.firing` or `vibeops.alert.resolved`;
- resource id `alertmanager.alert.<fingerprint>`; every alert label as `alert.label.<name>`, and
  the routing labels (alertname, severity, namespace, deployment, app, pod, database, ...) also
  plain, so deployment triggers can `match:` on them and templates can read them;
- payload: annotations (plus `summary` / `description` always present as strings), startsAt,
  endsAt, generatorURL and the group facts.

Prometheus label names cannot contain a dot, so plain label keys never collide with Prefect's
`prefect.resource.*` keys.
"""

from __future__ import annotations

import json
import math
import re
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from tasks.errors import AlertPayloadInvalid

EVENT_FIRING = "vibeops.alert.firing"
EVENT_RESOLVED = "vibeops.alert.resolved"
RESOURCE_PREFIX = "alertmanager.alert."
LABEL_PREFIX = "alert.label."
# Labels copied plain onto the resource, so triggers can `match: {alertname: X}`.
ROUTING_LABELS = (
    "alertname",
    "severity",
    "namespace",
    "deployment",
    "app",
    "pod",
    "container",
    "database",
    "source",
    "store",
    "service",
    "job",
    "instance",
    "runbook",
)
MAX_ALERTS_PER_PAYLOAD = 1000
MAX_LABELS_PER_ALERT = 100
MAX_VALUE_CHARS = 4096
FINGERPRINT = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")
LABEL_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
# Stable namespace for deterministic event ids (uuid5), so two relay replicas that receive the
# same alert inside the same dedupe window post the same event id, which Prefect's trigger
# service evaluates only once.
EVENT_ID_NAMESPACE = uuid.UUID("6f1d3c52-8f0e-4d0b-9a57-0c6f2a0e7d11")

Status = Literal["firing", "resolved"]
DedupeKey = tuple[str, ...]


@dataclass(frozen=True)
class Alert:
    """One validated alert from a webhook payload."""

    fingerprint: str
    status: Status
    labels: dict[str, str]
    annotations: dict[str, str]
    starts_at: str
    ends_at: str
    generator_url: str

    @property
    def alertname(self) -> str:
        return self.labels.get("alertname", "")

    @property
    def dedupe_key(self) -> DedupeKey:
        """(fingerprint, status, startsAt): a re-fire after a resolve has a new startsAt."""
        return (self.fingerprint, self.status, self.starts_at)


@dataclass(frozen=True)
class WebhookPayload:
    """A validated Alertmanager webhook (version 4)."""

    alerts: list[Alert]
    receiver: str = ""
    group_key: str = ""
    external_url: str = ""
    version: str = "4"


def _string_map(value: Any, where: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise AlertPayloadInvalid(
            f"{where} must be an object of strings, got {type(value).__name__}"
        )
    if len(value) > MAX_LABELS_PER_ALERT:
        raise AlertPayloadInvalid(
            f"{where} has {len(value)} entries; at most {MAX_LABELS_PER_ALERT}"
        )
    out: dict[str, str] = {}
    for key, item in value.items():
        if not isinstance(item, str):
            raise AlertPayloadInvalid(f"{where}.{key} must be a string, got {type(item).__name__}")
        out[str(key)] = item[:MAX_VALUE_CHARS]
    return out


def _optional_str(raw: dict[str, Any], key: str, where: str) -> str:
    value = raw.get(key, "")
    if value is None:
        return ""
    if not isinstance(value, str):
        raise AlertPayloadInvalid(f"{where}.{key} must be a string, got {type(value).__name__}")
    return value[:MAX_VALUE_CHARS]


def parse_alert(raw: Any, index: int, group_status: str = "") -> Alert:
    """Validate one entry of `alerts`.

    Raises:
        AlertPayloadInvalid: naming the alert index and the field at fault.
    """
    where = f"alerts[{index}]"
    if not isinstance(raw, dict):
        raise AlertPayloadInvalid(f"{where} must be an object, got {type(raw).__name__}")
    status = raw.get("status", group_status)
    if status not in ("firing", "resolved"):
        raise AlertPayloadInvalid(f"{where}.status must be 'firing' or 'resolved', got {status!r}")
    labels = _string_map(raw.get("labels"), f"{where}.labels")
    for name in labels:
        if not LABEL_NAME.match(name):
            raise AlertPayloadInvalid(f"{where}.labels has an invalid label name {name[:64]!r}")
    if not labels.get("alertname"):
        raise AlertPayloadInvalid(f"{where}.labels.alertname is missing")
    fingerprint = raw.get("fingerprint")
    if not isinstance(fingerprint, str) or not FINGERPRINT.match(fingerprint):
        raise AlertPayloadInvalid(
            f"{where}.fingerprint is missing or invalid (Alertmanager sends 16 hex characters)"
        )
    return Alert(
        fingerprint=fingerprint,
        status=status,
        labels=labels,
        annotations=_string_map(raw.get("annotations"), f"{where}.annotations"),
        starts_at=_optional_str(raw, "startsAt", where),
        ends_at=_optional_str(raw, "endsAt", where),
        generator_url=_optional_str(raw, "generatorURL", where),
    )


def parse_webhook(body: bytes) -> WebhookPayload:
    """Parse and validate an Alertmanager webhook body.

    Raises:
        AlertPayloadInvalid: the body is not JSON, not an object, or lacks a valid `alerts` list.
    """
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise AlertPayloadInvalid(f"body is not valid JSON: {exc}") from None
    except RecursionError:
        raise AlertPayloadInvalid("body is not valid JSON: nested too deeply") from None
    if not isinstance(data, dict):
        raise AlertPayloadInvalid(
            f"body must be a JSON object (Alertmanager webhook v4), got {type(data).__name__}"
        )
    if "alerts" not in data:
        raise AlertPayloadInvalid(
            "payload has no 'alerts' field (expected Alertmanager webhook v4)"
        )
    raw_alerts = data["alerts"]
    if not isinstance(raw_alerts, list):
        raise AlertPayloadInvalid(f"'alerts' must be a list, got {type(raw_alerts).__name__}")
    if len(raw_alerts) > MAX_ALERTS_PER_PAYLOAD:
        raise AlertPayloadInvalid(
            f"'alerts' holds {len(raw_alerts)} alerts; at most {MAX_ALERTS_PER_PAYLOAD}"
        )
    version = data.get("version", "4")
    if version != "4":
        raise AlertPayloadInvalid(f"unsupported webhook version {version!r}; expected '4'")
    group_status = data.get("status", "")
    alerts = [parse_alert(raw, i, group_status) for i, raw in enumerate(raw_alerts)]
    return WebhookPayload(
        alerts=alerts,
        receiver=_optional_str(data, "receiver", "payload"),
        group_key=_optional_str(data, "groupKey", "payload"),
        external_url=_optional_str(data, "externalURL", "payload"),
        version=version,
    )


def event_name(alert: Alert) -> str:
    """`vibeops.alert.firing` or `vibeops.alert.resolved`."""
    return EVENT_FIRING if alert.status == "firing" else EVENT_RESOLVED


def event_id(alert: Alert, now: datetime, window_seconds: float) -> str:
    """A deterministic id per alert, status, start and dedupe-window bucket (random if no window)."""
    if window_seconds <= 0:
        return str(uuid.uuid4())
    bucket = math.floor(now.timestamp() / window_seconds)
    key = f"{alert.fingerprint}|{alert.status}|{alert.starts_at}|{bucket}"
    return str(uuid.uuid5(EVENT_ID_NAMESPACE, key))


def alert_to_event(
    alert: Alert, payload: WebhookPayload, now: datetime, window_seconds: float = 0
) -> dict[str, Any]:
    """The Prefect event (JSON-ready dict, as `POST /api/events` takes it) for one alert."""
    resource: dict[str, str] = {
        "prefect.resource.id": f"{RESOURCE_PREFIX}{alert.fingerprint}",
        "prefect.resource.name": alert.alertname,
        "alert.fingerprint": alert.fingerprint,
        "alert.status": alert.status,
    }
    for name in ROUTING_LABELS:
        if name in alert.labels:
            resource[name] = alert.labels[name]
    for name, value in alert.labels.items():
        resource[f"{LABEL_PREFIX}{name}"] = value
    related = []
    if payload.receiver:
        related.append(
            {
                "prefect.resource.id": f"alertmanager.receiver.{payload.receiver}",
                "prefect.resource.role": "receiver",
            }
        )
    return {
        "id": event_id(alert, now, window_seconds),
        "occurred": now.astimezone(UTC).isoformat(),
        "event": event_name(alert),
        "resource": resource,
        "related": related,
        "payload": {
            "status": alert.status,
            "labels": dict(alert.labels),
            "annotations": dict(alert.annotations),
            "summary": alert.annotations.get("summary", ""),
            "description": alert.annotations.get("description", ""),
            "startsAt": alert.starts_at or now.astimezone(UTC).isoformat(),
            "endsAt": alert.ends_at,
            "generatorURL": alert.generator_url,
            "groupKey": payload.group_key,
            "externalURL": payload.external_url,
            "receiver": payload.receiver,
        },
    }


@dataclass
class Deduplicator:
    """Admits one alert per key (`Alert.dedupe_key`) per window; clock values are seconds.

    `admit` reserves the key at once, so concurrent deliveries of the same alert cannot both
    pass; `release` gives the reservation back when the event could not be delivered, so the
    sender's retry is not mistaken for a duplicate.
    """

    window_seconds: float
    max_keys: int = 100_000
    _seen: dict[DedupeKey, float] = field(default_factory=dict)

    def admit(self, key: DedupeKey, now: float) -> bool:
        """True when `key` was not admitted within the window (and records it)."""
        if self.window_seconds <= 0:
            return True
        last = self._seen.get(key)
        if last is not None and now - last < self.window_seconds:
            return False
        self._seen[key] = now
        if len(self._seen) > self.max_keys:
            self.expire(now)
        return True

    def release(self, key: DedupeKey, admitted_at: float) -> None:
        """Forget a reservation made at `admitted_at` (delivery failed)."""
        if self._seen.get(key) == admitted_at:
            del self._seen[key]

    def expire(self, now: float) -> None:
        """Drop keys older than the window (and the oldest ones beyond `max_keys`)."""
        self._seen = {k: t for k, t in self._seen.items() if now - t < self.window_seconds}
        if len(self._seen) > self.max_keys:
            newest = sorted(self._seen.items(), key=lambda kv: kv[1])[-self.max_keys :]
            self._seen = dict(newest)

    def __len__(self) -> int:
        return len(self._seen)
