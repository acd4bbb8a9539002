"""deploy-staging, scale-down-idle-colour and rollback-deploy, end to end.

Kubernetes is the API stand-in (tests/k8s_standin) driven through the real `kubernetes`
client; the app versions are real local HTTP servers reached through the stand-in's
Service proxy, so switching a Service selector really changes which version answers.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterKey,
    FlowFilter,
    FlowFilterName,
    FlowRunFilter,
    FlowRunFilterState,
    FlowRunFilterStateType,
    LogFilter,
    LogFilterFlowRunId,
)
from prefect.client.schemas.objects import StateType
from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from blocks import BackupStore, KubeCluster, LocalFolderDestination
from flows.forms import params_of
from flows.staging_deploy import (
    SCALE_DOWN_DEPLOYMENT,
    BackupGate,
    DeployStagingParams,
    RollbackParams,
    ScaleDownParams,
    deploy_staging,
    rollback_deploy,
    scale_down_idle_colour,
)
from tasks.deploy_rules import (
    PROMOTION_ANNOTATION,
    PromotionRecord,
    SmokeCheck,
    check_url_template,
    decide_backup_gate,
    decide_rollback,
    evaluate_rollout,
    judge_smoke,
    parse_image_reference,
)
from tasks.errors import ImageReferenceInvalid
from tasks.manifest import BackupManifest, StoredObject, backup_prefix, new_backup_id
from tasks.storage import open_store
from tests.helpers import run_texts
from tests.k8s_standin import KubeStandIn
from tests.k8s_standin.server import ThreadedServer

NS = "staging"
OLD, NEW = "repo/web:1", "repo/web:2"


# ------------------------------------------------------------------ pure rules


@pytest.mark.parametrize(
    "image",
    [
        "repo/web:1",
        "gcr.io/vibebench/core:1.4.2",
        "localhost:5000/team/app:v2-rc.1",
        "repo/web@sha256:" + "a" * 64,
        "repo/web:1@sha256:" + "b" * 64,
    ],
)
def test_valid_image_references(image: str) -> None:
    assert str(parse_image_reference(image)) == image


@pytest.mark.parametrize(
    ("image", "hint"),
    [
        ("", "empty"),
        ("web:1", "no repository"),
        ("repo/web", "no tag or digest"),
        ("repo/web:latest", "latest"),
        ("Repo/Web:1", "not a valid reference"),
        ("repo/web:1 ", "padded"),
        ("repo/web@sha256:abc", "not a valid reference"),
        ("repo/web:1;rm -rf /", "not a valid reference"),
    ],
)
def test_invalid_image_references(image: str, hint: str) -> None:
    with pytest.raises(ImageReferenceInvalid, match=hint):
        parse_image_reference(image)


def _dep(generation: int = 2, observed: int = 2, **status: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": "web", "generation": generation},
        "spec": {"replicas": 2},
        "status": {"observedGeneration": observed, **status},
    }


def test_evaluate_rollout() -> None:
    done = _dep(replicas=2, updatedReplicas=2, availableReplicas=2)
    assert evaluate_rollout(done).done
    assert "observed" in evaluate_rollout(_dep(observed=1, replicas=2)).message
    old_left = evaluate_rollout(_dep(replicas=3, updatedReplicas=2, availableReplicas=2))
    assert not old_left.done and "pending termination" in old_left.message
    unavailable = evaluate_rollout(_dep(replicas=2, updatedReplicas=2, availableReplicas=1))
    assert not unavailable.done and not unavailable.failed
    stuck = _dep(
        replicas=4,
        updatedReplicas=2,
        availableReplicas=2,
        conditions=[
            {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"}
        ],
    )
    assert evaluate_rollout(stuck).failed


def test_backup_gate_decisions() -> None:
    now = datetime(2025, 1, 1, 12, tzinfo=UTC)
    hour = timedelta(hours=1)
    fresh = decide_backup_gate("b1", now - timedelta(minutes=20), now, hour, None)
    assert fresh.allowed and not fresh.overridden
    stale = decide_backup_gate("b1", now - timedelta(hours=3), now, hour, None)
    assert not stale.allowed and "3h00m old" in stale.message and "override_reason" in stale.message
    forced = decide_backup_gate(
        "b1", now - timedelta(hours=3), now, hour, "hotfix, no schema change"
    )
    assert forced.allowed and forced.overridden and "hotfix" in forced.message
    missing = decide_backup_gate(None, None, now, hour, None)
    assert not missing.allowed and "no committed backup" in missing.message


def test_rollback_decision_respects_the_keep_window() -> None:
    now = datetime(2025, 1, 2, tzinfo=UTC)
    record = PromotionRecord(
        strategy="blue-green",
        at=now - timedelta(hours=2),
        keep_until=now + timedelta(hours=22),
        image=NEW,
        previous_image=OLD,
        from_colour="blue",
        to_colour="green",
    )
    assert decide_rollback(record, now).act
    assert not decide_rollback(record, now + timedelta(days=1)).act
    assert not decide_rollback(None, now).act
    restored = PromotionRecord.from_annotations({PROMOTION_ANNOTATION: record.to_annotation()})
    assert restored == record
    assert PromotionRecord.from_annotations({PROMOTION_ANNOTATION: "{not json"}) is None


def test_judge_smoke_and_url_template() -> None:
    check = SmokeCheck(path="/ready", expected_status=200, max_latency_ms=100)
    assert judge_smoke(check, "live", 200, 20, None).ok
    assert judge_smoke(check, "live", 500, 20, None).reason == "status 500, expected 200"
    assert "limit 100 ms" in judge_smoke(check, "live", 200, 250, None).reason
    assert "no answer" in judge_smoke(check, "live", None, 5, "ConnectError").reason
    with pytest.raises(ValueError, match="unknown"):
        check_url_template("http://{service}.{cluster}")
    with pytest.raises(ValueError, match="http"):
        check_url_template("{service}")


# ------------------------------------------------------------------ fixtures


def version_app(version: str, ready: Callable[[int], int] = lambda _n: 200) -> Starlette:
    """A stand-in for one app version: /health, /ready (status chosen per call), /version."""
    calls = {"ready": 0}

    def ready_endpoint(_: Request) -> PlainTextResponse:
        calls["ready"] += 1
        status = ready(calls["ready"])
        return PlainTextResponse("ready" if status == 200 else "not ready", status_code=status)

    return Starlette(
        routes=[
            Route("/health", lambda _: PlainTextResponse("ok")),
            Route("/ready", ready_endpoint),
            Route("/version", lambda _: PlainTextResponse(version)),
        ]
    )


@pytest.fixture
def serve_versions(kube_api: KubeStandIn) -> Iterator[Callable[..., None]]:
    """serve(image, app): play `image` with a local HTTP server for the Service proxy."""
    servers: list[ThreadedServer] = []

    def serve(image: str, app: Starlette | None = None) -> None:
        server = ThreadedServer(app or version_app(image)).start()
        servers.append(server)
        kube_api.serve_image(image, server.url)

    yield serve
    for server in servers:
        server.stop()


def deployment(name: str, image: str, labels: dict[str, str], replicas: int = 2) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": NS, "labels": labels},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "containers": [
                        {
                            "name": "web",
                            "image": image,
                            "ports": [{"containerPort": 5000}],
                            "readinessProbe": {"httpGet": {"path": "/ready", "port": 5000}},
                        }
                    ]
                },
            },
        },
    }


def service(name: str, selector: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": NS},
        "spec": {"selector": selector, "ports": [{"port": 80, "targetPort": 5000}]},
    }


def wait_until(predicate: Callable[[], bool], timeout: float = 10, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def serving(kube_api: KubeStandIn, svc: str) -> str:
    """Which version answers through the Service right now."""
    return httpx.get(kube_api.service_proxy_url(NS, svc) + "/version").text


def rolled_out(kube_api: KubeStandIn, name: str) -> bool:
    dep = kube_api.get("Deployment", name, NS)
    return dep is not None and evaluate_rollout(dep).done


@pytest.fixture
def rolling_app(kube_api: KubeStandIn, serve_versions: Callable[..., None]) -> KubeStandIn:
    """Namespace staging with Deployment `web` (repo/web:1, 2 replicas) behind Service `web`."""
    kube_api.put({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}})
    kube_api.put(deployment("web", OLD, {"app": "web"}))
    kube_api.put(service("web", {"app": "web"}))
    serve_versions(OLD)
    wait_until(lambda: rolled_out(kube_api, "web"), what="the initial rollout")
    assert serving(kube_api, "web") == OLD
    return kube_api


@pytest.fixture
def blue_green_app(kube_api: KubeStandIn, serve_versions: Callable[..., None]) -> KubeStandIn:
    """web-blue (live, repo/web:1) and web-green (idle, scaled to 0); Services web, web-blue,
    web-green."""
    kube_api.put({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}})
    for colour, replicas in (("blue", 2), ("green", 0)):
        labels = {"app": "web", "version": colour}
        kube_api.put(deployment(f"web-{colour}", OLD, labels, replicas))
        kube_api.put(service(f"web-{colour}", labels))
    kube_api.put(service("web", {"app": "web", "version": "blue"}))
    serve_versions(OLD)
    wait_until(lambda: rolled_out(kube_api, "web-blue"), what="the initial rollout")
    return kube_api


@pytest.fixture
def cluster_block(kube_api: KubeStandIn) -> str:
    """A saved KubeCluster block whose smoke URLs go through the stand-in's Service proxy.

    When the stand-in requires a token, the token goes in the block's secret field only (the
    kubeconfig in the prefect-kubernetes block carries none).
    """
    name = f"staging-{uuid.uuid4().hex[:8]}"
    credentials = kube_api.credentials()
    assert credentials.cluster_config is not None
    credentials.cluster_config.config["users"][0]["user"] = {"username": "ci"}
    KubeCluster(
        credentials=credentials,
        bearer_token=kube_api.token,
        service_url_template=kube_api.url
        + "/api/v1/namespaces/{namespace}/services/{service}:{port}/proxy",
        request_timeout_seconds=10,
    ).save(name)
    return name


@pytest.fixture
def backup_store(tmp_path: Path) -> Callable[[timedelta], str]:
    """write(age) -> BackupStore block name holding one committed backup `age` old."""
    name = f"store-{uuid.uuid4().hex[:8]}"
    destination = LocalFolderDestination(region="local-a", path=str(tmp_path / "region-a"))
    BackupStore(destinations=[destination]).save(name)

    def write(age: timedelta) -> str:
        at = datetime.now(UTC) - age
        backup_id = new_backup_id(at)
        prefix = backup_prefix("mysql", "vibebench", backup_id)
        manifest = BackupManifest(
            backup_id=backup_id,
            source="vibebench",
            database="vibebench",
            started_at=at,
            consistent_at=at,
            finished_at=at + timedelta(seconds=30),
            objects=[StoredObject(name="dump.sql.zst", size=4, sha256="0" * 64)],
            prefix=prefix,
        )
        store = open_store(destination)
        for key, data in (
            (f"{prefix}dump.sql.zst", b"data"),
            (manifest.manifest_key, manifest.to_json()),
        ):
            writer = store.open_writer(key)
            writer.write(data)
            writer.commit()
        return name

    return write


def params(cluster: str, store: str, image: str = NEW, **overrides: Any) -> DeployStagingParams:
    gate = overrides.pop("backup_gate", {})
    fields: dict[str, Any] = {
        "namespace": NS,
        "app": "web",
        "cluster_block": cluster,
        "smoke_attempts": 2,
        "smoke_interval_seconds": 0.2,
        "rollout_timeout": timedelta(seconds=20),
        "schedule_scale_down": False,
        **overrides,
    }
    return DeployStagingParams(
        image=image, backup_gate=BackupGate(store_block=store, **gate), **fields
    )


def artifact_markdown(key: str) -> str:
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key]))
        )
    assert artifacts, f"no artifact {key}"
    return str(sorted(artifacts, key=lambda a: a.created)[-1].data)


def deploy_events(name: str, flow_run_id: Any) -> list[dict[str, Any]]:
    """Events of one flow run (they arrive asynchronously: poll briefly)."""
    body = {
        "filter": {
            "event": {"name": [name]},
            "related": {"id": [f"prefect.flow-run.{flow_run_id}"]},
        },
        "limit": 10,
    }
    with get_client(sync_client=True) as client:
        for _ in range(60):
            events = client.request("POST", "/events/filter", json=body).json()["events"]
            if events:
                return list(events)
            time.sleep(0.25)
    return []


def image_of(kube_api: KubeStandIn, name: str) -> str:
    dep = kube_api.get("Deployment", name, NS)
    assert dep is not None
    return str(dep["spec"]["template"]["spec"]["containers"][0]["image"])


# ------------------------------------------------------------------ rolling


@pytest.mark.kube
def test_rolling_success(
    rolling_app: KubeStandIn, serve_versions: Callable[..., None], cluster_block: str, backup_store
) -> None:
    serve_versions(NEW)
    state = deploy_staging(
        **params_of(params(cluster_block, backup_store(timedelta(minutes=10)))), return_state=True
    )
    report = state.result()
    assert report.outcome == "promoted" and report.previous_image == OLD
    (promoted,) = deploy_events("vibeops.deploy.promoted", state.state_details.flow_run_id)
    assert promoted["payload"]["image"] == NEW and promoted["payload"]["previous_image"] == OLD
    assert image_of(rolling_app, "web") == NEW
    assert serving(rolling_app, "web") == NEW
    assert {r.path for r in report.smoke if r.ok} == {"/health", "/ready"}
    record = PromotionRecord.from_annotations(
        rolling_app.get("Deployment", "web", NS)["metadata"]["annotations"]
    )
    assert record is not None and record.previous_image == OLD and record.image == NEW
    markdown = artifact_markdown("deploy-staging-staging-web")
    assert "PROMOTED" in markdown and "| patched |" in markdown and "/ready" in markdown


@pytest.mark.kube
def test_ready_500_rolls_back_and_fails_with_the_reason(
    rolling_app: KubeStandIn, serve_versions: Callable[..., None], cluster_block: str, backup_store
) -> None:
    bad = "repo/web:2-bad-ready"
    serve_versions(bad, version_app(bad, ready=lambda _n: 500))
    state = deploy_staging(
        **params_of(params(cluster_block, backup_store(timedelta(minutes=5)), image=bad)),
        return_state=True,
    )
    assert state.is_failed()
    message = str(state.result(raise_on_failure=False))
    assert "rolled back to repo/web:1" in message and "/ready: status 500" in message
    (event,) = deploy_events("vibeops.deploy.rolled_back", state.state_details.flow_run_id)
    assert "/ready: status 500" in event["payload"]["reason"]
    assert image_of(rolling_app, "web") == OLD
    wait_until(lambda: rolled_out(rolling_app, "web"), what="the restored rollout")
    assert serving(rolling_app, "web") == OLD
    markdown = artifact_markdown("deploy-staging-staging-web")
    assert "ROLLED BACK" in markdown and "FAIL: status 500" in markdown


@pytest.mark.kube
def test_rollout_never_ready_times_out_and_rolls_back(
    rolling_app: KubeStandIn, serve_versions: Callable[..., None], cluster_block: str, backup_store
) -> None:
    never = "repo/web:2-never-ready"
    serve_versions(never)
    state = deploy_staging(
        **params_of(
            params(
                cluster_block,
                backup_store(timedelta(minutes=5)),
                image=never,
                rollout_timeout=timedelta(seconds=2),
            )
        ),
        return_state=True,
    )
    assert state.is_failed()
    message = str(state.result(raise_on_failure=False))
    assert "RolloutTimeoutError" in message and "did not roll out within 2 s" in message
    assert image_of(rolling_app, "web") == OLD
    assert rolled_out(rolling_app, "web")
    pods = rolling_app.list("Pod", NS, "app=web")
    assert {p["spec"]["containers"][0]["image"] for p in pods} == {OLD}
    assert serving(rolling_app, "web") == OLD


@pytest.mark.kube
def test_api_500_twice_is_retried(
    rolling_app: KubeStandIn, serve_versions: Callable[..., None], cluster_block: str, backup_store
) -> None:
    serve_versions(NEW)
    store = backup_store(timedelta(minutes=5))
    rolling_app.fail_next(times=2, status=500, method="PATCH", path=r"/deployments/web$")
    report = deploy_staging(**params_of(params(cluster_block, store)))
    assert report.outcome == "promoted"
    statuses = [r.status for r in rolling_app.requests_matching("PATCH", r"/deployments/web$")]
    assert statuses[:3] == [500, 500, 200]
    assert serving(rolling_app, "web") == NEW


@pytest.mark.kube
def test_invalid_image_is_refused_before_any_api_call(
    kube_api: KubeStandIn, cluster_block: str
) -> None:
    with pytest.raises(ValidationError, match="names no repository"):
        DeployStagingParams(image="web:1", cluster_block=cluster_block)
    state = deploy_staging(
        image="repo/web", namespace=NS, app="web", cluster_block=cluster_block, return_state=True
    )
    assert state.is_failed() and "no tag or digest" in str(state.message) + str(
        state.result(raise_on_failure=False)
    )
    assert kube_api.requests == []


@pytest.mark.kube
def test_stale_backup_is_refused_then_accepted_with_override(
    rolling_app: KubeStandIn, serve_versions: Callable[..., None], cluster_block: str, backup_store
) -> None:
    serve_versions(NEW)
    store = backup_store(timedelta(hours=3))
    before = len(rolling_app.requests)
    state = deploy_staging(**params_of(params(cluster_block, store)), return_state=True)
    assert state.is_failed()
    message = str(state.result(raise_on_failure=False))
    assert "backup gate" in message and "older than the 1h00m limit" in message
    assert len(rolling_app.requests) == before  # nothing was touched
    assert image_of(rolling_app, "web") == OLD
    report = deploy_staging(
        **params_of(
            params(
                cluster_block, store, backup_gate={"override_reason": "INC-42 hotfix, no migration"}
            )
        )
    )
    assert report.outcome == "promoted" and report.gate is not None and report.gate.overridden
    assert "INC-42 hotfix" in artifact_markdown("deploy-staging-staging-web")


@pytest.mark.kube
def test_second_deploy_waits_or_is_refused_never_interleaves(
    rolling_app: KubeStandIn, serve_versions: Callable[..., None], cluster_block: str, backup_store
) -> None:
    held, third = "repo/web:2-held", "repo/web:3"
    assert rolling_app.controller is not None
    rolling_app.controller.behave("held", ready=False)  # the first deploy holds the slot
    serve_versions(held)
    serve_versions(third)
    store = backup_store(timedelta(minutes=5))
    results: dict[str, Any] = {}

    def deploy_in_background(name: str, image: str) -> threading.Thread:
        def run() -> None:
            results[name] = deploy_staging(
                **params_of(
                    params(cluster_block, store, image=image, rollout_timeout=timedelta(minutes=3))
                )
            )

        thread = threading.Thread(target=run, name=name)
        thread.start()
        return thread

    first = deploy_in_background("first", held)
    wait_until(lambda: image_of(rolling_app, "web") == held, 60, "the first deploy to patch")
    refused = deploy_staging(
        **params_of(params(cluster_block, store, image=third, lock_wait=timedelta(seconds=1))),
        return_state=True,
    )
    assert refused.is_failed()
    assert "DeployLockTimeout" in repr(refused.result(raise_on_failure=False))
    assert image_of(rolling_app, "web") == held  # the refused run changed nothing

    second = deploy_in_background("second", third)
    # Both running deploys passed their backup gate: the second now waits for the held slot.
    wait_until(lambda: deploys_past_the_gate() == 2, 60, "the second deploy to start and wait")
    released_at = datetime.now(UTC)
    rolling_app.controller.behave("held", ready=True)
    first.join(120)
    second.join(120)
    first_report, waited = results["first"], results["second"]
    assert first_report.outcome == "promoted" and waited.outcome == "promoted"
    assert image_of(rolling_app, "web") == third
    # never interleaved: the waiting run got the slot only after the first one's last step
    assert first_report.timeline[-2].step == "recorded promotion"
    first_last = first_report.started_at + timedelta(seconds=first_report.timeline[-2].seconds)
    lock = next(e for e in waited.timeline if e.step == "lock")
    second_lock = waited.started_at + timedelta(seconds=lock.seconds)
    gate = next(e for e in waited.timeline if e.step == "backup gate")
    second_at_the_lock = waited.started_at + timedelta(seconds=gate.seconds)
    assert second_at_the_lock < released_at <= first_last <= second_lock


def deploys_past_the_gate() -> int:
    """Running deploy-staging runs that have logged their backup-gate step."""
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=["deploy-staging"])),
            flow_run_filter=FlowRunFilter(
                state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.RUNNING]))
            ),
        )
        if not runs:
            return 0
        logs = client.read_logs(
            log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[r.id for r in runs]))
        )
    return len({log.flow_run_id for log in logs if log.message.startswith("backup gate:")})


@pytest.mark.kube
@pytest.mark.parametrize("kube_api", [{"token": "s3cret-api-t0ken"}], indirect=True)
def test_token_stays_secret(
    rolling_app: KubeStandIn, serve_versions: Callable[..., None], cluster_block: str, backup_store
) -> None:
    serve_versions(NEW)
    state = deploy_staging(
        **params_of(params(cluster_block, backup_store(timedelta(minutes=5)))), return_state=True
    )
    assert state.result().outcome == "promoted"
    unauthenticated = httpx.get(rolling_app.url + "/api/v1/namespaces")
    assert unauthenticated.status_code == 401
    texts = run_texts(state.state_details.flow_run_id)
    assert "PROMOTED" in texts and "s3cret-api-t0ken" not in texts


# ------------------------------------------------------------------ blue-green


@pytest.mark.kube
def test_blue_green_success_switches_selector_and_schedules_scale_down(
    blue_green_app: KubeStandIn,
    serve_versions: Callable[..., None],
    cluster_block: str,
    backup_store,
) -> None:
    serve_versions(NEW)
    scale_down_idle_colour.to_deployment(name="after-keep-window").apply()
    report = deploy_staging(
        **params_of(
            params(
                cluster_block,
                backup_store(timedelta(minutes=5)),
                strategy="blue-green",
                schedule_scale_down=True,
            )
        )
    )
    assert report.outcome == "promoted"
    svc = blue_green_app.get("Service", "web", NS)
    assert svc["spec"]["selector"] == {"app": "web", "version": "green"}
    assert image_of(blue_green_app, "web-green") == NEW
    assert blue_green_app.get("Deployment", "web-green", NS)["spec"]["replicas"] == 2
    assert image_of(blue_green_app, "web-blue") == OLD  # kept for the quick rollback
    assert blue_green_app.get("Deployment", "web-blue", NS)["spec"]["replicas"] == 2
    assert serving(blue_green_app, "web") == NEW
    targets = {r.target for r in report.smoke}
    assert targets == {"idle colour green", "live"}
    record = PromotionRecord.from_annotations(svc["metadata"]["annotations"])
    assert record and record.from_colour == "blue" and record.to_colour == "green"
    assert any("scheduled" in note and "NOT" not in note for note in report.notes)
    with get_client(sync_client=True) as client:
        dep = client.read_deployment_by_name(SCALE_DOWN_DEPLOYMENT)
        runs = client.read_flow_runs()
    scheduled = [r for r in runs if r.deployment_id == dep.id]
    assert len(scheduled) == 1
    assert scheduled[0].parameters["colour"] == "blue"
    assert scheduled[0].expected_start_time > datetime.now(UTC) + timedelta(hours=23)


@pytest.mark.kube
def test_blue_green_live_smoke_failure_switches_back_at_once(
    blue_green_app: KubeStandIn,
    serve_versions: Callable[..., None],
    cluster_block: str,
    backup_store,
) -> None:
    flaky = "repo/web:2-flaky"
    # passes the direct check of the idle colour (first /ready), fails once live
    serve_versions(flaky, version_app(flaky, ready=lambda n: 200 if n == 1 else 500))
    state = deploy_staging(
        **params_of(
            params(
                cluster_block,
                backup_store(timedelta(minutes=5)),
                image=flaky,
                strategy="blue-green",
                smoke_attempts=1,
            )
        ),
        return_state=True,
    )
    assert state.is_failed()
    message = str(state.result(raise_on_failure=False))
    assert "switched back blue" in message and "/ready: status 500" in message
    svc = blue_green_app.get("Service", "web", NS)
    assert svc["spec"]["selector"]["version"] == "blue"
    assert serving(blue_green_app, "web") == OLD
    # the idle colour was put back as it was (a valid rollback target again)
    assert image_of(blue_green_app, "web-green") == OLD
    assert blue_green_app.get("Deployment", "web-green", NS)["spec"]["replicas"] == 0
    markdown = artifact_markdown("deploy-staging-staging-web")
    assert "| switched |" in markdown and "| switched back |" in markdown


@pytest.mark.kube
def test_rollback_deploy_and_scale_down_after_a_promotion(
    blue_green_app: KubeStandIn,
    serve_versions: Callable[..., None],
    cluster_block: str,
    backup_store,
) -> None:
    serve_versions(NEW)
    deploy_staging(
        **params_of(
            params(cluster_block, backup_store(timedelta(minutes=5)), strategy="blue-green")
        )
    )
    target = {"namespace": NS, "app": "web", "cluster_block": cluster_block}
    early = scale_down_idle_colour(
        **params_of(ScaleDownParams(colour="blue", dry_run=False, **target))
    )
    assert early.outcome == "nothing_to_do" and "kept for rollback" in (early.reason or "")
    report = rollback_deploy(**params_of(RollbackParams(reason="alert HighErrorRate", **target)))
    assert report.outcome == "rolled_back"
    assert blue_green_app.get("Service", "web", NS)["spec"]["selector"]["version"] == "blue"
    assert serving(blue_green_app, "web") == OLD
    again = rollback_deploy(**params_of(RollbackParams(reason="second alert", **target)))
    assert again.outcome == "nothing_to_do"  # the promotion record was cleared
    live = scale_down_idle_colour(
        **params_of(ScaleDownParams(colour="blue", dry_run=False, **target))
    )
    assert live.outcome == "nothing_to_do" and "is live" in (live.reason or "")
    idle = scale_down_idle_colour(
        **params_of(ScaleDownParams(colour="green", dry_run=False, **target))
    )
    assert idle.outcome == "done"
    assert blue_green_app.get("Deployment", "web-green", NS)["spec"]["replicas"] == 0


@pytest.mark.kube
def test_blue_green_idle_never_ready_keeps_live_and_restores_idle(
    blue_green_app: KubeStandIn,
    serve_versions: Callable[..., None],
    cluster_block: str,
    backup_store,
) -> None:
    never = "repo/web:2-never-ready"
    serve_versions(never)
    state = deploy_staging(
        **params_of(
            params(
                cluster_block,
                backup_store(timedelta(minutes=5)),
                image=never,
                strategy="blue-green",
                rollout_timeout=timedelta(seconds=2),
            )
        ),
        return_state=True,
    )
    assert state.is_failed()
    message = str(state.result(raise_on_failure=False))
    assert "kept blue" in message and "RolloutTimeoutError" in message
    assert blue_green_app.get("Service", "web", NS)["spec"]["selector"]["version"] == "blue"
    assert serving(blue_green_app, "web") == OLD
    assert image_of(blue_green_app, "web-green") == OLD
    assert blue_green_app.get("Deployment", "web-green", NS)["spec"]["replicas"] == 0


@pytest.mark.kube
def test_rollback_deploy_after_a_rolling_promotion(
    rolling_app: KubeStandIn, serve_versions: Callable[..., None], cluster_block: str, backup_store
) -> None:
    serve_versions(NEW)
    deploy_staging(**params_of(params(cluster_block, backup_store(timedelta(minutes=5)))))
    assert serving(rolling_app, "web") == NEW
    target = {"namespace": NS, "app": "web", "cluster_block": cluster_block}
    dry = rollback_deploy(**params_of(RollbackParams(reason="check", dry_run=True, **target)))
    assert dry.outcome == "dry_run" and image_of(rolling_app, "web") == NEW
    report = rollback_deploy(**params_of(RollbackParams(reason="alert HighErrorRate", **target)))
    assert report.outcome == "rolled_back" and image_of(rolling_app, "web") == OLD
    assert serving(rolling_app, "web") == OLD
    annotations = rolling_app.get("Deployment", "web", NS)["metadata"].get("annotations") or {}
    assert PROMOTION_ANNOTATION not in annotations


# ------------------------------------------------------------------ prefect.yaml


def test_prefect_yaml_deployments_load() -> None:
    import yaml
    from prefect.flows import load_flow_from_entrypoint
    from prefect.utilities.callables import parameter_schema

    config = yaml.safe_load(Path("prefect.yaml").read_text())
    deployments = {
        (d["entrypoint"], d["name"]): d
        for d in config["deployments"]
        if "staging_deploy.py" in d["entrypoint"]
    }
    expected = {
        ("flows/staging_deploy.py:deploy_staging", "on-demand"): "deploy-staging",
        ("flows/staging_deploy.py:scale_down_idle_colour", "after-keep-window"): (
            "scale-down-idle-colour"
        ),
        ("flows/staging_deploy.py:rollback_deploy", "on-demand"): "rollback-deploy",
    }
    assert set(expected) <= set(deployments)
    for (entrypoint, _), flow_name in expected.items():
        flow = load_flow_from_entrypoint(entrypoint)
        assert flow.name == flow_name
        schema = parameter_schema(flow.fn).model_dump()
        assert "params" not in schema["properties"]
        assert list(schema["properties"]) == list(flow.fn.form_model.model_fields)
    for key, deployment in deployments.items():
        assert deployment["concurrency_limit"] == 1, key
    assert SCALE_DOWN_DEPLOYMENT == "scale-down-idle-colour/after-keep-window"
    # the form: image is the only required field; manual scale-downs are dry by default
    schema = DeployStagingParams.model_json_schema()
    assert schema["required"] == ["image"]
    assert ScaleDownParams(colour="blue").dry_run is True
