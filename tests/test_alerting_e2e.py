"""Alerts start runbooks, end to end: Alertmanager -> relay -> Prefect events -> deployment trigger.

Real Debian prometheus-alertmanager, the relay over HTTP, the session's real Prefect server with
the prefect.yaml deployments registered exactly as written there (triggers, parameters,
concurrency limits). Alerts are posted to Alertmanager's API, as Prometheus posts them. The runs
need not execute here: a run created with the right parameters is what the trigger promises.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import httpx
import pytest

from tests.fixtures.alerting import (
    PROJECT_DIR,
    RELAY_PATH,
    Alertmanager,
    PrefectEventRecorder,
    build_triggers,
    load_prefect_yaml,
    make_alert,
    read_runs_of,
    relay_metric,
    triggered_deployment_specs,
)

pytestmark = pytest.mark.alertmanager

ALERTING = PROJECT_DIR / "deployments" / "alerting"
RULE_FILES = sorted((ALERTING / "rules").glob("*.rules.yml"))

# alertname -> the deployment its trigger starts (flow/deployment), as the issue maps them.
RUNBOOKS = {
    "HighErrorRate": "rollback-deploy/on-alert",
    "DatabaseConnectionPoolExhausted": "restart-deployment/on-alert",
    "SlowBenchmarkRun": "recycle-hung-pod/on-alert",
    "BackupFailed": "backup-mysql/on-alert",
    "BackupTooOld": "backup-mysql/on-alert",
}


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def wait_for_runs(
    deployment_id: UUID,
    predicate: Callable[[Any], bool],
    count: int = 1,
    timeout_seconds: float = 30,
) -> list[Any]:
    """Flow runs of one deployment matching `predicate`, once at least `count` exist."""
    deadline = time.monotonic() + timeout_seconds
    while True:
        runs = [r for r in read_runs_of(deployment_id) if predicate(r)]
        if len(runs) >= count or time.monotonic() > deadline:
            assert len(runs) >= count, f"expected {count} run(s) within {timeout_seconds}s"
            return runs
        time.sleep(0.25)


def fire(
    alertmanager: Alertmanager,
    events: PrefectEventRecorder,
    alertname: str,
    labels: dict[str, str],
    annotations: dict[str, str] | None = None,
) -> tuple[Any, str]:
    """Post one alert (labels must hold a unique `case`) to Alertmanager; return the Prefect event
    the relay made of it and the alert's fingerprint."""
    alertmanager.post_alerts([make_alert(alertname, labels, annotations)])
    event = events.wait_for(by_test_label("case", labels["case"]))[0]
    return event, event.resource["alert.fingerprint"]


def run_started_by(deployments: dict[str, UUID], alertname: str, fingerprint: str) -> Any:
    """The one run the alert's trigger created (waits for it)."""
    deployment_id = deployments[RUNBOOKS[alertname]]
    return wait_for_runs(deployment_id, lambda r: _mentions(r, fingerprint))[0]


def params_of(run: Any) -> dict[str, Any]:
    return run.parameters


def by_test_label(label: str, value: str) -> Callable[[Any], bool]:
    return lambda event: event.resource.get(f"alert.label.{label}") == value


# --- what is shipped -------------------------------------------------------------------------


def test_promtool_checks_the_shipped_rules_and_configs():
    assert len(RULE_FILES) == 2
    checked = subprocess.run(
        ["/usr/bin/promtool", "check", "rules", *map(str, RULE_FILES)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS: 3 rules found" in checked.stdout
    # vibeops: BackupTooOld and BackupFailed twice (mysql with its runbook, other kinds without)
    # plus RecoveryPointTooOld
    assert "SUCCESS: 8 rules found" in checked.stdout
    unit = subprocess.run(
        ["/usr/bin/promtool", "test", "rules", "rules/rules.test.yml"],
        cwd=ALERTING,
        capture_output=True,
        text=True,
        check=False,
    )
    assert unit.returncode == 0, unit.stdout + unit.stderr
    config = subprocess.run(
        ["/usr/bin/promtool", "check", "config", "prometheus.yml"],
        cwd=ALERTING,
        capture_output=True,
        text=True,
        check=False,
    )
    assert config.returncode == 0, config.stdout + config.stderr
    amtool = shutil.which("amtool") or "/usr/bin/amtool"
    am = subprocess.run(
        [amtool, "check-config", str(ALERTING / "alertmanager.yml")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert am.returncode == 0, am.stdout + am.stderr


def test_relay_manifest_is_valid_kubernetes_and_runs_the_cli_command():
    import kubernetes_validate
    import yaml

    docs = list(yaml.safe_load_all((ALERTING / "kubernetes" / "relay.yaml").read_text()))
    assert [d["kind"] for d in docs] == ["Deployment", "Service", "NetworkPolicy"]
    for doc in docs:
        kubernetes_validate.validate(doc, "1.31.0", strict=True)
    container = docs[0]["spec"]["template"]["spec"]["containers"][0]
    assert container["args"][0] == "relay"
    env = {e["name"]: e for e in container["env"]}
    assert "secretKeyRef" in env["VIBEOPS_RELAY_TOKEN"]["valueFrom"]  # never a literal value
    dockerfile = (PROJECT_DIR / "deployments" / "relay" / "Dockerfile").read_text()
    assert 'ENTRYPOINT ["/app/.venv/bin/vibeops"]' in dockerfile


def test_every_rule_with_a_runbook_has_a_trigger_in_prefect_yaml():
    import yaml

    rules = [
        rule
        for path in RULE_FILES
        for group in yaml.safe_load(path.read_text())["groups"]
        for rule in group["rules"]
    ]
    with_runbook = {r["alert"]: r["labels"]["runbook"] for r in rules if "runbook" in r["labels"]}
    assert with_runbook == {name: dep.split("/")[0] for name, dep in RUNBOOKS.items()}
    # backup-mysql is started only for mysql backups; mongodb/influxdb alerts go to people only
    for rule in rules:
        if rule["alert"] in ("BackupTooOld", "BackupFailed"):
            mysql_only = rule["labels"].get("runbook") == "backup-mysql"
            assert ('{kind="mysql"}' in rule["expr"]) == mysql_only, rule["alert"]
            assert ('{kind!="mysql"}' in rule["expr"]) != mysql_only, rule["alert"]

    specs = triggered_deployment_specs(load_prefect_yaml())
    started_by: dict[str, str] = {}
    for spec in specs:
        flow_name = spec["entrypoint"].split(":")[1].replace("_", "-")
        assert spec.get("concurrency_limit"), f"{flow_name}/{spec['name']} has no concurrency limit"
        for trigger in build_triggers(spec):
            assert trigger.expect == {"vibeops.alert.firing"}
            names = trigger.match.get("alertname")
            for name in [names] if isinstance(names, str) else names:
                started_by[name] = f"{flow_name}/{spec['name']}"
    assert started_by == RUNBOOKS
    text = (PROJECT_DIR / "prefect.yaml").read_text()
    # A UUID or a datetime rendered without `| string` silently fails the automation.
    assert not re.search(r"event\.(id|occurred)\s*}}", text)


# --- alerts posted to Alertmanager ------------------------------------------------------------


@pytest.mark.parametrize(
    ("alertname", "labels", "expected"),
    [
        (
            "HighErrorRate",
            {"namespace": "staging", "app": "vibebench-core"},
            {"namespace": "staging", "app": "vibebench-core"},
        ),
        (
            "DatabaseConnectionPoolExhausted",
            {"namespace": "prod", "deployment": "vibebench-core-prod"},
            {"namespace": "prod", "deployment": "vibebench-core-prod", "dry_run": False},
        ),
        (
            "SlowBenchmarkRun",
            {"namespace": "bench", "pod": "vibebench-core-7d9f-abcde"},
            {"namespace": "bench", "pod": "vibebench-core-7d9f-abcde", "dry_run": False},
        ),
    ],
)
def test_each_incident_alert_starts_its_runbook(
    alertmanager: Alertmanager,
    alert_deployments: dict[str, UUID],
    prefect_alert_events: PrefectEventRecorder,
    alertname: str,
    labels: dict[str, str],
    expected: dict[str, Any],
):
    labels = {**labels, "case": unique("case"), "severity": "critical"}
    event, fingerprint = fire(
        alertmanager, prefect_alert_events, alertname, labels, {"summary": "s!"}
    )
    assert event.event == "vibeops.alert.firing"
    assert event.resource.id == f"alertmanager.alert.{fingerprint}"
    assert event.resource["alertname"] == alertname

    run = run_started_by(alert_deployments, alertname, fingerprint)
    params = params_of(run)
    for key, value in expected.items():
        assert params[key] == value, key
    if alertname == "HighErrorRate":  # deploy-staging's rollback path: the reason names the alert
        assert params["reason"] == f"alert HighErrorRate {fingerprint} (event {event.id}): s!"
    else:
        alert = params["alert"]
        assert alert["alertname"] == alertname
        assert alert["fingerprint"] == fingerprint
        assert alert["event_id"] == str(event.id)
        assert alert["severity"] == "critical"
        assert alert["summary"] == "s!"
        assert alert["starts_at"] == event.payload["startsAt"]
        assert alert["received_at"]
        assert alert["generator_url"].startswith("http://prometheus.example:9090/")
    # no other runbook started for it
    for name, other in alert_deployments.items():
        if name != RUNBOOKS[alertname]:
            assert not [r for r in read_runs_of(other) if _mentions(r, fingerprint)]


@pytest.mark.parametrize("alertname", ["BackupFailed", "BackupTooOld"])
def test_backup_alerts_start_backup_mysql(
    alertmanager: Alertmanager,
    alert_deployments: dict[str, UUID],
    prefect_alert_events: PrefectEventRecorder,
    alertname: str,
):
    source = unique("alerttest").replace("-", "_")
    alertmanager.post_alerts([make_alert(alertname, {"kind": "mysql", "source": source})])
    prefect_alert_events.wait_for(by_test_label("source", source))
    deployment_id = alert_deployments["backup-mysql/on-alert"]
    [run] = wait_for_runs(deployment_id, lambda r: params_of(r).get("source") == source)
    assert params_of(run)["database"] == source


@pytest.mark.kube
def test_a_slow_benchmark_alert_recycles_the_hung_pod_end_to_end(
    alertmanager: Alertmanager,
    alert_deployments: dict[str, UUID],
    prefect_alert_events: PrefectEventRecorder,
    kube_api: Any,
):
    """The run the trigger created, executed: its parameters alone drive the runbook."""
    from prefect.flow_engine import run_flow
    from prefect.flows import load_flow_from_entrypoint

    from blocks.kube import KubeCluster
    from tests.helpers import artifacts_of, save_block
    from tests.test_incidents import NS, deployment, running_pods

    kube_api.put({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}})
    kube_api.put(deployment("bench-runner", "repo/runner:1", replicas=1))
    [hung] = running_pods(kube_api, "bench-runner", 1)
    hung_name = hung["metadata"]["name"]
    kube_api.append_pod_log(NS, hung_name, "benchmark step 41/50: waiting for lock")
    cluster = save_block(KubeCluster(credentials=kube_api.credentials()), "alert-kube")

    labels = {"namespace": NS, "pod": hung_name, "cluster": cluster}
    alertmanager.post_alerts([make_alert("SlowBenchmarkRun", labels)])
    deployment_id = alert_deployments[RUNBOOKS["SlowBenchmarkRun"]]
    [flow_run] = wait_for_runs(deployment_id, lambda r: _mentions(r, hung_name))
    assert params_of(flow_run)["cluster_block"] == cluster

    flow = load_flow_from_entrypoint(str(PROJECT_DIR / "flows" / "incidents.py:recycle_hung_pod"))
    state = run_flow(flow, flow_run=flow_run, parameters=flow_run.parameters, return_type="state")

    assert state.is_completed(), state.message
    [replacement] = running_pods(kube_api, "bench-runner", 1)
    assert replacement["metadata"]["name"] != hung_name
    [artifact] = [a for a in artifacts_of(flow_run.id) if a.type == "markdown"]
    assert "waiting for lock" in artifact.data
    assert "alert `SlowBenchmarkRun`" in artifact.data


def test_two_different_alerts_at_once_start_two_runs(
    alertmanager: Alertmanager,
    alert_deployments: dict[str, UUID],
    prefect_alert_events: PrefectEventRecorder,
):
    """Two pods hang at the same moment: each alert gets its own run (one bucket per alert)."""
    case = unique("pair")
    alerts = [
        make_alert("SlowBenchmarkRun", {"namespace": "bench", "pod": f"runner-{i}", "case": case})
        for i in (1, 2)
    ]
    alertmanager.post_alerts(alerts)
    events = prefect_alert_events.wait_for(by_test_label("case", case), count=2)
    fingerprints = {e.resource["alert.fingerprint"] for e in events}
    assert len(fingerprints) == 2
    for fingerprint in fingerprints:
        run_started_by(alert_deployments, "SlowBenchmarkRun", fingerprint)


def test_the_same_alert_posted_20_times_starts_one_run(
    alertmanager: Alertmanager,
    alert_relay: Any,
    alert_deployments: dict[str, UUID],
    prefect_alert_events: PrefectEventRecorder,
):
    deduplicated_before = relay_metric(alert_relay.url, "vibeops_relay_alerts_deduplicated_total")
    case = unique("storm")
    alert = make_alert("DatabaseConnectionPoolExhausted", {"namespace": "prod", "case": case})
    for _ in range(20):
        alertmanager.post_alerts([alert])
        time.sleep(0.25)  # 5 s: Alertmanager re-sends the firing group every ~2 s
    event = prefect_alert_events.wait_for(by_test_label("case", case))[0]
    fingerprint = event.resource["alert.fingerprint"]
    deployment_id = alert_deployments[RUNBOOKS["DatabaseConnectionPoolExhausted"]]
    wait_for_runs(deployment_id, lambda r: _mentions(r, fingerprint))

    # Alertmanager did re-send, and the relay dropped the repeats
    deadline = time.monotonic() + 15
    while relay_metric(alert_relay.url, "vibeops_relay_alerts_deduplicated_total") <= (
        deduplicated_before
    ):
        assert time.monotonic() < deadline, "Alertmanager never repeated the alert"
        time.sleep(0.2)
    time.sleep(2)  # any extra run would be created ~0.3 s after an extra event
    assert len(prefect_alert_events.matching(by_test_label("case", case))) == 1
    runs = [r for r in read_runs_of(deployment_id) if _mentions(r, fingerprint)]
    assert len(runs) == 1


def test_a_resolved_alert_starts_no_new_run(
    alertmanager: Alertmanager,
    alert_deployments: dict[str, UUID],
    prefect_alert_events: PrefectEventRecorder,
):
    case = unique("resolve")
    labels = {"namespace": "bench", "pod": "runner-1", "case": case}
    fired, fingerprint = fire(alertmanager, prefect_alert_events, "SlowBenchmarkRun", labels)
    run_started_by(alert_deployments, "SlowBenchmarkRun", fingerprint)
    deployment_id = alert_deployments[RUNBOOKS["SlowBenchmarkRun"]]

    alertmanager.post_alerts([make_alert("SlowBenchmarkRun", labels, resolved=True)])
    resolved = prefect_alert_events.wait_for(
        lambda e: by_test_label("case", case)(e) and e.event == "vibeops.alert.resolved"
    )[0]
    assert resolved.resource.id == fired.resource.id
    assert resolved.payload["endsAt"]
    # barrier: a later firing alert's run exists, so the resolved event has been evaluated
    barrier = _barrier_run(alertmanager, alert_deployments, prefect_alert_events)
    assert barrier
    runs = [r for r in read_runs_of(deployment_id) if _mentions(r, fingerprint)]
    assert len(runs) == 1


def test_an_alert_that_fires_again_after_resolving_starts_its_runbook_again(
    alertmanager: Alertmanager,
    alert_deployments: dict[str, UUID],
    prefect_alert_events: PrefectEventRecorder,
):
    """Fire, resolve, fire again (new startsAt) well inside the relay's 300 s dedupe window."""
    case = unique("refire")
    labels = {"namespace": "bench", "pod": "runner-2", "case": case}
    first_start = datetime.now(UTC) - timedelta(seconds=30)
    alertmanager.post_alerts([make_alert("SlowBenchmarkRun", labels, starts_at=first_start)])
    fired = prefect_alert_events.wait_for(by_test_label("case", case))[0]
    fingerprint = fired.resource["alert.fingerprint"]
    deployment_id = alert_deployments[RUNBOOKS["SlowBenchmarkRun"]]
    wait_for_runs(deployment_id, lambda r: _mentions(r, fingerprint))

    resolved = make_alert("SlowBenchmarkRun", labels, resolved=True, starts_at=first_start)
    alertmanager.post_alerts([resolved])
    prefect_alert_events.wait_for(
        lambda e: by_test_label("case", case)(e) and e.event == "vibeops.alert.resolved"
    )
    second_start = datetime.now(UTC)
    alertmanager.post_alerts([make_alert("SlowBenchmarkRun", labels, starts_at=second_start)])
    refired = prefect_alert_events.wait_for(
        lambda e: by_test_label("case", case)(e) and e.event == "vibeops.alert.firing",
        count=2,
    )
    assert refired[1].resource["alert.fingerprint"] == fingerprint
    assert refired[1].payload["startsAt"] != refired[0].payload["startsAt"]
    runs = wait_for_runs(deployment_id, lambda r: _mentions(r, fingerprint), count=2)
    assert len(runs) == 2
    # Alertmanager keeps re-sending the second firing; those repeats start nothing more
    time.sleep(4)
    barrier = _barrier_run(alertmanager, alert_deployments, prefect_alert_events)
    assert barrier
    assert len([r for r in read_runs_of(deployment_id) if _mentions(r, fingerprint)]) == 2
    firing = prefect_alert_events.matching(
        lambda e: by_test_label("case", case)(e) and e.event == "vibeops.alert.firing"
    )
    assert len(firing) == 2


def test_an_unknown_alertname_emits_an_event_but_starts_nothing(
    alertmanager: Alertmanager,
    alert_deployments: dict[str, UUID],
    prefect_alert_events: PrefectEventRecorder,
):
    case = unique("unknown")
    labels = {"namespace": "prod", "case": case}
    event, fingerprint = fire(alertmanager, prefect_alert_events, "DiskAlmostFull", labels)
    assert event.event == "vibeops.alert.firing"
    assert event.resource["alertname"] == "DiskAlmostFull"
    _barrier_run(alertmanager, alert_deployments, prefect_alert_events)
    for deployment_id in alert_deployments.values():
        assert not [r for r in read_runs_of(deployment_id) if _mentions(r, fingerprint, case)]


# --- posts straight to the relay (what Alertmanager would never send) -------------------------


def test_unauthenticated_post_gets_401_and_no_event(
    alertmanager: Alertmanager,
    alert_relay: Any,
    alert_deployments: dict[str, UUID],
    prefect_alert_events: PrefectEventRecorder,
):
    case = unique("noauth")
    body = {
        "version": "4",
        "status": "firing",
        "receiver": "vibeops-relay",
        "alerts": [
            {
                "status": "firing",
                "labels": {"alertname": "HighErrorRate", "case": case},
                "annotations": {},
                "startsAt": "2025-01-01T00:00:00Z",
                "fingerprint": "feedfacefeedface",
            }
        ],
    }
    url = f"{alert_relay.url}{RELAY_PATH}"
    assert httpx.post(url, json=body, timeout=10).status_code == 401
    wrong = httpx.post(url, json=body, headers={"Authorization": "Bearer nope"}, timeout=10)
    assert wrong.status_code == 401
    _barrier_run(alertmanager, alert_deployments, prefect_alert_events)
    assert prefect_alert_events.matching(by_test_label("case", case)) == []
    for deployment_id in alert_deployments.values():
        assert not [r for r in read_runs_of(deployment_id) if _mentions(r, "feedface", case)]


def test_two_relay_replicas_posting_the_same_alert_start_one_run(
    alertmanager: Alertmanager,
    alert_relay: Any,
    relay_token: str,
    alert_deployments: dict[str, UUID],
    prefect_alert_events: PrefectEventRecorder,
):
    """Each replica has its own dedupe window, but both derive the same event id."""
    from prefect.settings import PREFECT_API_URL

    from deployments.relay.app import RelaySettings, RelayThread, create_app
    from tasks.local_stack import free_port

    settings = RelaySettings(
        token=relay_token,
        prefect_api_url=PREFECT_API_URL.value(),
        dedupe_window_seconds=300,
        path=RELAY_PATH,
    )
    second = RelayThread(create_app(settings), port=free_port()).start()
    try:
        fingerprint = uuid.uuid4().hex[:16]
        body = {
            "version": "4",
            "status": "firing",
            "receiver": "vibeops-relay",
            "alerts": [
                {
                    "status": "firing",
                    "labels": {"alertname": "DatabaseConnectionPoolExhausted", "namespace": "p"},
                    "annotations": {},
                    "startsAt": "2025-01-01T00:00:00Z",
                    "fingerprint": fingerprint,
                }
            ],
        }
        headers = {"Authorization": f"Bearer {relay_token}"}
        answers = [
            httpx.post(f"{relay.url}{RELAY_PATH}", json=body, headers=headers, timeout=10).json()
            for relay in (alert_relay, second)
        ]
    finally:
        second.stop()
    assert [a["emitted"] for a in answers] == [1, 1]
    assert answers[0]["event_ids"] == answers[1]["event_ids"]
    run_started_by(alert_deployments, "DatabaseConnectionPoolExhausted", fingerprint)
    _barrier_run(alertmanager, alert_deployments, prefect_alert_events)
    deployment_id = alert_deployments[RUNBOOKS["DatabaseConnectionPoolExhausted"]]
    assert len([r for r in read_runs_of(deployment_id) if _mentions(r, fingerprint)]) == 1


def test_malformed_json_and_missing_alerts_get_400(alert_relay: Any, relay_token: str):
    url = f"{alert_relay.url}{RELAY_PATH}"
    headers = {"Authorization": f"Bearer {relay_token}", "Content-Type": "application/json"}
    malformed = httpx.post(url, content=b'{"alerts": [', headers=headers, timeout=10)
    assert malformed.status_code == 400
    assert "not valid JSON" in malformed.json()["error"]
    missing = httpx.post(url, json={"version": "4", "receiver": "x"}, headers=headers, timeout=10)
    assert missing.status_code == 400
    assert "no 'alerts' field" in missing.json()["error"]
    assert httpx.get(f"{alert_relay.url}/health", timeout=10).json() == {"status": "ok"}
    assert httpx.get(f"{alert_relay.url}/ready", timeout=10).status_code == 200


# --- helpers ----------------------------------------------------------------------------------


def _mentions(run: Any, *needles: str) -> bool:
    text = str(run.parameters)
    return any(n in text for n in needles)


def _barrier_run(
    alertmanager: Alertmanager,
    alert_deployments: dict[str, UUID],
    prefect_alert_events: PrefectEventRecorder,
) -> Any:
    """Post a mapped alert and wait for its run: Prefect evaluates events in order, so anything
    posted before it has been evaluated by then (a deterministic 'nothing else happened')."""
    labels = {"namespace": "barrier", "app": "b", "case": unique("barrier")}
    _, fingerprint = fire(alertmanager, prefect_alert_events, "HighErrorRate", labels)
    return run_started_by(alert_deployments, "HighErrorRate", fingerprint)


def test_relay_log_never_holds_the_token(alert_relay: Any, relay_token: str, caplog):
    caplog.set_level("DEBUG", logger="vibeops.relay")
    httpx.post(
        f"{alert_relay.url}{RELAY_PATH}",
        content=b"{",
        headers={"Authorization": f"Bearer {relay_token}"},
        timeout=10,
    )
    httpx.post(f"{alert_relay.url}{RELAY_PATH}", content=b"{", timeout=10)
    assert caplog.records, "the relay logs refusals"
    assert all(relay_token not in r.getMessage() for r in caplog.records)
