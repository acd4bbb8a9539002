"""OSS SLAs: Proactive triggers in prefect.yaml fire when an expected event does not arrive.

The windows live in one place (`definitions.slas`); the server test registers the deployments
exactly as written there, with every window shortened to 10 s (Prefect's minimum).
"""

from __future__ import annotations

import copy
import re
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from prefect.client.orchestration import get_client
from prefect.settings import PREFECT_API_URL

from flows.sla import report_sla_missed
from tasks.sla import EXPECTED_EVENT
from tests.fixtures.alerting import (
    PREFECT_YAML,
    PrefectEventRecorder,
    apply_deployment_spec,
    build_triggers,
    ensure_work_pool,
    load_prefect_yaml,
    read_runs_of,
)

SHORT = 10  # seconds: Prefect refuses a Proactive `within` under 10 s
WINDOW_OF = {
    "vibeops.backup.succeeded": "backup_within",
    "vibeops.drill.passed": "drill_within",
    "vibeops.binlog.archived": "binlog_within",
}


def _sla_specs(config: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        d
        for d in config["deployments"]
        if any(t.get("posture") == "Proactive" for t in d.get("triggers") or [])
    ]


def _proactive(spec: dict[str, Any]) -> list[dict[str, Any]]:
    return [t for t in spec.get("triggers") or [] if t.get("posture") == "Proactive"]


def test_every_sla_window_is_set_once_in_definitions_and_used_by_its_trigger():
    config = load_prefect_yaml()
    windows = config["definitions"]["slas"]
    assert set(windows) == set(WINDOW_OF.values())
    specs = _sla_specs(config)
    kinds_watched = set()
    for spec in specs:
        for raw, trigger in zip(_proactive(spec), build_triggers(spec), strict=False):
            (event,) = trigger.expect
            assert trigger.after == {event}, "after == expect, or the trigger never fires"
            assert trigger.for_each == {"prefect.resource.id"}, "one bucket per resource"
            window = windows[WINDOW_OF[event]]
            (expected,) = build_triggers({"name": "w", "triggers": [{**raw, "within": window}]})
            assert trigger.within == expected.within
            if "window" in (raw.get("parameters") or {}):
                assert raw["parameters"]["window"] == windows[WINDOW_OF[event]]
            rid = raw["match"]["prefect.resource.id"]
            if spec["entrypoint"].startswith("flows/sla.py"):
                continue
            # A backup/drill deployment watches exactly its own source and runs itself.
            kind, source = rid.split(".")[2], rid.split(".", 3)[3]
            assert source == spec["parameters"]["source"], spec["entrypoint"]
            kinds_watched.add((event, kind))
    assert kinds_watched == {
        (e, k)
        for e in ("vibeops.backup.succeeded", "vibeops.drill.passed")
        for k in ("mysql", "mongodb", "influxdb")
    }
    # The levels, and no window written anywhere but in definitions.slas.
    assert [windows[k] for k in ("backup_within", "drill_within", "binlog_within")] == [
        "PT26H",
        "P8D",
        "PT15M",
    ]
    text = PREFECT_YAML.read_text()
    proactive = text.count("posture: Proactive")
    assert len(re.findall(r"within: \*sla_\w+_within", text)) == proactive
    assert set(EXPECTED_EVENT.values()) == set(WINDOW_OF)


def _shortened(spec: dict[str, Any]) -> dict[str, Any]:
    spec = copy.deepcopy(spec)
    for trigger in _proactive(spec):
        trigger["within"] = SHORT
        if "window" in (trigger.get("parameters") or {}):
            trigger["parameters"]["window"] = f"PT{SHORT}S"  # a duration, as in prefect.yaml
    return spec


def _post_events(events: list[dict[str, Any]]) -> None:
    response = httpx.post(f"{PREFECT_API_URL.value()}/events", json=events, timeout=30)
    response.raise_for_status()


def _event(name: str, resource_id: str, source: str) -> dict[str, Any]:
    return {
        "id": str(uuid.uuid4()),
        "occurred": datetime.now(UTC).isoformat(),
        "event": name,
        "resource": {"prefect.resource.id": resource_id, "prefect.resource.name": source},
        "related": [],
        "payload": {},
    }


def test_each_sla_trigger_fires_on_a_real_prefect_server_once_its_event_stays_away():
    config = load_prefect_yaml()
    specs = [_shortened(s) for s in _sla_specs(config)]
    registered = {}
    ensure_work_pool("vibeops-process")
    try:
        for spec in specs:
            name, deployment_id = apply_deployment_spec(spec)
            registered[name] = (deployment_id, spec)
        time.sleep(1.0)  # the trigger service loads new automations asynchronously
        suffix = uuid.uuid4().hex[:6]
        events = []
        for spec in specs:
            for trigger in _proactive(spec):
                rid = trigger["match"]["prefect.resource.id"]
                if rid.endswith("*"):  # the on-sla deployment: any source of that prefix
                    rid = rid[:-1] + f"sla-{suffix}"
                events.append(_event(trigger["expect"][0], rid, rid.rsplit(".", 1)[-1]))
        # Backups of the watched sources also reach the on-sla trigger (vibeops.backup.*).
        _post_events(events)
        sent_at = time.monotonic()

        def runs() -> dict[str, list[Any]]:
            return {n: read_runs_of(d) for n, (d, _) in registered.items()}

        deadline = sent_at + 60
        want_on_sla = 5  # 3 backups of watched sources + 1 extra backup source + 1 binlog source
        while time.monotonic() < deadline:
            got = runs()
            if all(
                len(r) >= (want_on_sla if n.startswith("report-sla-missed") else 1)
                for n, r in got.items()
            ):
                break
            time.sleep(1)
        fired_after = time.monotonic() - sent_at
        got = runs()
        for name, (_, spec) in registered.items():
            if name.startswith("report-sla-missed"):
                continue
            assert len(got[name]) == 1, f"{name}: {len(got[name])} runs"
            assert got[name][0].parameters.get("source") == spec["parameters"]["source"]
        on_sla = next(r for n, r in got.items() if n.startswith("report-sla-missed"))
        by_resource = {r.parameters["resource_id"]: r.parameters for r in on_sla}
        assert len(on_sla) == want_on_sla, sorted(by_resource)
        binlog = by_resource[f"vibeops.binlog.mysql.sla-{suffix}"]
        assert binlog["sla"] == "binlog-archive" and binlog["source"] == f"sla-{suffix}"
        backup = by_resource["vibeops.backup.mysql.vibebench"]
        assert backup["sla"] == "backup" and backup["last_seen"]
        assert fired_after >= SHORT, "fired before its window ended"

        # The run the trigger created, executed: it emits vibeops.sla.missed.
        recorder = PrefectEventRecorder(id_prefix="vibeops.sla.binlog-archive.").start()
        try:
            miss = report_sla_missed(**binlog)
            (event,) = recorder.wait_for(lambda e: e.event == "vibeops.sla.missed")
        finally:
            recorder.stop()
        assert event.resource.id == f"vibeops.sla.binlog-archive.{binlog['resource_id']}"
        assert event.payload["window_seconds"] == str(SHORT)
        assert miss.window == timedelta(seconds=SHORT)
    finally:
        _forget(registered)


def _forget(registered: dict[str, Any]) -> None:
    """Delete the deployments and their automations, so later tests' events start nothing."""
    with get_client(sync_client=True) as client:
        for deployment_id, _ in registered.values():
            for automation in client.read_automations():
                if str(deployment_id) in automation.model_dump_json():
                    client.delete_automation(automation.id)
            client.delete_deployment(deployment_id)


@pytest.mark.parametrize("window", [timedelta(0), timedelta(seconds=-1)])
def test_report_sla_missed_refuses_a_window_that_is_not_positive(window: timedelta):
    from pydantic import ValidationError

    from flows.sla import ReportSlaMissedParams

    with pytest.raises(ValidationError, match="window"):
        ReportSlaMissedParams(sla="backup", resource_id="vibeops.backup.mysql.x", window=window)
