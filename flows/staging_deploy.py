"""Staging deploys: deploy-staging (rolling | blue-green), scale-down-idle-colour, rollback-deploy.

Staging is never left without a serving version: every change after the first patch runs
inside a Prefect transaction whose on_rollback hooks put the previous image / Service
selector back, and the flow then waits until the previous version serves again before it
fails the run with the cause.

Entrypoints (prefect.yaml):
- `flows/staging_deploy.py:deploy_staging` (`deploy-staging/on-demand`, CI and the UI)
- `flows/staging_deploy.py:scale_down_idle_colour` (scheduled by a promotion, after the keep window)
- `flows/staging_deploy.py:rollback_deploy` (alert runbooks: undo the last promotion while the
  previous version is still kept)
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal
from uuid import UUID

from prefect import flow, get_run_logger, task
from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    update_progress_artifact,
)
from prefect.context import get_run_context
from prefect.deployments import run_deployment
from prefect.events import emit_event
from prefect.exceptions import ObjectNotFound
from prefect.transactions import transaction
from pydantic import BaseModel, Field, field_validator

import blocks
from flows.forms import form
from flows.run_names import run_name
from tasks.binlog_catalog import newest_restorable_point_in_regions, recovery_point_label
from tasks.catalog import newest_committed_backup
from tasks.deploy_lock import deploy_lock
from tasks.deploy_rules import (
    COLOUR_LABEL,
    DEFAULT_SMOKE_CHECKS,
    IMAGE_PINNED,
    IMAGE_REFERENCE,
    PROMOTION_ANNOTATION,
    DeployReport,
    GateDecision,
    PromotionRecord,
    SmokeCheck,
    container_image,
    decide_backup_gate,
    decide_rollback,
    evaluate_rollout,
    live_colour,
    other_colour,
    parse_image_reference,
    render_service_url,
)
from tasks.errors import (
    ConfigurationError,
    DeployRefused,
    DeployRolledBack,
    ImageReferenceInvalid,
    KubernetesApiError,
    RollbackFailed,
    RolloutTimeoutError,
    SmokeTestFailed,
)
from tasks.form_fields import Duration, schema_pattern
from tasks.kube import (
    annotate_object,
    deploy_image,
    patch_service_selector,
    read_deployment,
    read_service,
    scale_deployment,
    set_deployment_image,
    switch_service_colour,
    wait_for_rollout,
)
from tasks.smoke import require_passing, run_smoke_checks

if TYPE_CHECKING:
    from blocks.kube import KubeCluster
from tasks.storage import open_store

DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
SCALE_DOWN_DEPLOYMENT = "scale-down-idle-colour/after-keep-window"
DEPLOY_FAILURES = (RolloutTimeoutError, SmokeTestFailed, KubernetesApiError)


# ------------------------------------------------------------------ parameters


class BackupGate(BaseModel):
    """Refuse to promote when the app's database has no fresh committed backup."""

    source: str = Field(
        default="vibebench",
        min_length=1,
        max_length=64,
        description="Backup source name of the app's database (as backup-mysql names it).",
    )
    kind: Literal["mysql", "mongodb", "influxdb"] = Field(
        default="mysql", description="Which kind of backup to look for."
    )
    max_age: Duration = Field(
        default=timedelta(hours=1),
        ge=timedelta(minutes=1),
        le=timedelta(days=7),
        description="The newest recovery point (MySQL: base backup + archived binlogs) may be "
        "at most this old (default: the 1 h RPO target).",
    )
    override_reason: str | None = Field(
        default=None,
        max_length=500,
        description="Deploy even with a stale or missing backup; the reason goes in the report.",
    )
    store_block: str | None = Field(
        default=None, description="BackupStore block name; empty = the embedded local store."
    )


class ClusterTarget(BaseModel):
    """Which cluster and app (shared by the deploy, scale-down and rollback flows)."""

    namespace: str = Field(
        default="staging", max_length=63, pattern=DNS_LABEL, description="Kubernetes namespace."
    )
    app: str = Field(
        default="vibebench-core",
        max_length=50,
        pattern=DNS_LABEL,
        description="App name: the Deployment (rolling) or {app}-blue/{app}-green and the "
        "Service {app} (blue-green).",
    )
    cluster_block: str | None = Field(
        default=None,
        description="KubeCluster block name; empty = in-cluster service account / ~/.kube/config.",
    )
    service_port: int = Field(default=80, ge=1, le=65535, description="Service port to smoke-test.")


class DeployStagingParams(ClusterTarget):
    """Parameters of deploy-staging (rendered as the UI form)."""

    image: str = Field(
        description="Image to deploy: registry/repo/name:tag or ...@sha256:{digest}.",
        examples=["gcr.io/vibebench/core:1.4.2"],
        max_length=512,
        json_schema_extra={
            **schema_pattern(IMAGE_REFERENCE),
            # a repository path and a pinned version, as parse_image_reference requires
            "allOf": [{"pattern": "/"}, {"pattern": IMAGE_PINNED}],
        },
    )
    strategy: Literal["rolling", "blue-green"] = Field(
        default="rolling", description="rolling: patch in place; blue-green: idle colour + switch."
    )
    container: str | None = Field(
        default=None, description="Container to update; empty = the first container."
    )
    smoke_checks: list[SmokeCheck] = Field(
        default_factory=lambda: [c.model_copy() for c in DEFAULT_SMOKE_CHECKS],
        min_length=1,
        max_length=20,
        description="HTTP checks that must pass (the seed's /health and /ready probes).",
    )
    smoke_attempts: int = Field(
        default=3, ge=1, le=10, description="Rounds of smoke checks before declaring failure."
    )
    smoke_interval_seconds: float = Field(
        default=1.0, ge=0, le=60, description="Pause between smoke rounds."
    )
    rollout_timeout: Duration = Field(
        default=timedelta(minutes=10),
        ge=timedelta(seconds=1),
        le=timedelta(hours=1),
        description="How long the new version may take to become ready.",
    )
    keep_old_colour: Duration = Field(
        default=timedelta(hours=24),
        ge=timedelta(0),
        le=timedelta(days=7),
        description="Blue-green: how long the previous colour stays up for a quick rollback.",
    )
    lock_wait: Duration = Field(
        default=timedelta(minutes=10),
        ge=timedelta(0),
        le=timedelta(hours=2),
        description="How long to wait for another deploy of the same app before refusing.",
    )
    schedule_scale_down: bool = Field(
        default=True,
        description="Blue-green: schedule scale-down-idle-colour after the keep window.",
    )
    backup_gate: BackupGate = Field(
        default_factory=BackupGate, description="Backup freshness required before promoting."
    )

    @field_validator("image")
    @classmethod
    def _image(cls, value: str) -> str:
        try:
            parse_image_reference(value)
        except ImageReferenceInvalid as exc:
            raise ValueError(str(exc)) from None
        return value


class ScaleDownParams(ClusterTarget):
    """Parameters of scale-down-idle-colour."""

    colour: Literal["blue", "green"] = Field(description="The colour to scale to zero.")
    force: bool = Field(
        default=False, description="Scale down even though the keep window is not over."
    )
    dry_run: bool = Field(default=True, description="Only report what would be done.")


class RollbackParams(ClusterTarget):
    """Parameters of rollback-deploy."""

    reason: str = Field(
        default="manual rollback",
        min_length=1,
        max_length=500,
        description="Why (an alert name, an incident id); recorded on the cluster and in events.",
    )
    rollout_timeout: Duration = Field(
        default=timedelta(minutes=5),
        ge=timedelta(seconds=1),
        le=timedelta(hours=1),
        description="How long the restored version may take to become ready.",
    )
    smoke_checks: list[SmokeCheck] = Field(
        default_factory=lambda: [c.model_copy() for c in DEFAULT_SMOKE_CHECKS],
        min_length=1,
        max_length=20,
        description="Checks that must pass on the restored version.",
    )
    dry_run: bool = Field(
        default=False,
        description="Only report. Off by default: this restores a kept, known-good version.",
    )


# ------------------------------------------------------------------ small tasks and helpers


@task(name="check-backup-gate", retries=2, retry_delay_seconds=2)
def check_backup_gate(gate: BackupGate, now: datetime) -> GateDecision:
    """Find the newest recovery point of the app's database and judge its age.

    MySQL: the newest base backup plus its unbroken chain of archived binlogs; other kinds:
    the newest committed backup.
    """
    stores = [open_store(d) for d in blocks.resolve_store(gate.store_block).destinations]
    if gate.kind == "mysql":
        point = newest_restorable_point_in_regions(stores, gate.source)
        return decide_backup_gate(
            recovery_point_label(point) if point else None,
            point.point_at if point else None,
            now,
            gate.max_age,
            gate.override_reason,
            label="recovery point",
        )
    newest = newest_committed_backup(stores, gate.source, gate.kind)
    return decide_backup_gate(
        newest.backup_id if newest else None,
        newest.consistent_at if newest else None,
        now,
        gate.max_age,
        gate.override_reason,
    )


class _Run:
    """Bookkeeping shared by the flows: clock, report, progress artifact, events."""

    def __init__(self, report: DeployReport, cluster: KubeCluster, target: ClusterTarget):
        self.report = report
        self.cluster = cluster
        self.target = target
        self.started = time.monotonic()
        report.started_at = datetime.now(UTC)
        self.progress_id: UUID | None = None

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def step(self, step: str, detail: str, progress: float | None = None) -> None:
        self.report.add(self.elapsed(), step, detail)
        get_run_logger().info("%s: %s", step, detail)
        if progress is not None and self.progress_id is not None:
            update_progress_artifact(self.progress_id, progress)

    def url(self, service: str) -> str:
        return render_service_url(
            self.cluster.service_url_template,
            self.target.namespace,
            service,
            self.target.service_port,
        )

    def smoke(self, service: str, label: str, params: Any, attempts: int | None = None) -> None:
        results = run_smoke_checks(
            self.url(service),
            params.smoke_checks,
            label,
            attempts=attempts
            if attempts is not None
            else int(getattr(params, "smoke_attempts", 3)),
            interval_seconds=getattr(params, "smoke_interval_seconds", 1.0),
        )
        self.report.smoke.extend(results)
        self.step("smoke", f"{label}: " + ", ".join(f"{r.path} {r.reason}" for r in results))
        require_passing(results, label)

    def publish(self, key: str) -> None:
        create_markdown_artifact(key=key, markdown=self.report.markdown(), description=key)

    def event(self, name: str, **payload: Any) -> None:
        emit_event(
            event=name,
            resource={
                "prefect.resource.id": f"vibeops.app.{self.target.namespace}.{self.target.app}",
                "prefect.resource.name": self.target.app,
            },
            payload={
                "namespace": self.target.namespace,
                "app": self.target.app,
                "strategy": self.report.strategy,
                "image": self.report.image,
                "previous_image": self.report.previous_image,
                **payload,
            },
        )


def _flow_run_id() -> str | None:
    context = get_run_context()
    flow_run = getattr(context, "flow_run", None)
    return str(flow_run.id) if flow_run is not None else None


def _artifact_key(prefix: str, target: ClusterTarget) -> str:
    return f"{prefix}-{target.namespace}-{target.app}"


# ------------------------------------------------------------------ deploy-staging


@flow(
    name="deploy-staging",
    flow_run_name=run_name("deploy-{app}-{strategy}"),
    description="Deploy an image to staging (rolling or blue-green) with smoke checks, a backup "
    "gate and automatic rollback.",
    timeout_seconds=3 * 3600,
)
@form(DeployStagingParams)
def deploy_staging(params: DeployStagingParams) -> DeployReport:
    """Deploy `params.image`; on any failure restore the previous version and fail.

    Returns:
        The report (outcome "promoted").

    Raises:
        DeployRefused: the backup gate or the cluster layout refused; nothing was changed.
        DeployLockTimeout: another deploy of the app kept running.
        DeployRolledBack: the new version failed; the previous one serves again.
        RollbackFailed: restoring failed too (staging needs a human).
    """
    cluster = blocks.load_cluster(params.cluster_block)
    report = DeployReport(
        "deploy-staging", params.namespace, params.app, params.strategy, params.image
    )
    run = _Run(report, cluster, params)
    run.progress_id = create_progress_artifact(0.0, description="deploy-staging progress")  # type: ignore[assignment]
    key = _artifact_key("deploy-staging", params)
    try:
        now = datetime.now(UTC)
        gate = check_backup_gate(params.backup_gate, now)
        report.gate = gate
        run.step("backup gate", gate.message, 10)
        if not gate.allowed:
            raise DeployRefused(f"backup gate: {gate.message}")
        with deploy_lock(params.namespace, params.app, params.lock_wait.total_seconds()) as waited:
            run.step("lock", f"deploy slot acquired after {waited:.1f} s", 15)
            if params.strategy == "rolling":
                _rolling(run, params)
            else:
                _blue_green(run, params)
    except DeployRolledBack as exc:
        report.outcome, report.reason = "rolled_back", str(exc)
        run.event("vibeops.deploy.rolled_back", reason=str(exc)[:500], automatic=True)
        run.publish(key)
        raise
    except (DeployRefused, ConfigurationError) as exc:
        report.outcome, report.reason = "refused", str(exc)
        run.event("vibeops.deploy.refused", reason=str(exc)[:500])
        run.publish(key)
        raise
    except Exception as exc:
        report.outcome, report.reason = "failed", f"{type(exc).__name__}: {exc}"
        run.event("vibeops.deploy.failed", reason=report.reason[:500])
        run.publish(key)
        raise
    report.outcome = "promoted"
    run.step("done", "promoted", 100)
    run.event(
        "vibeops.deploy.promoted",
        ready_after_s=report.ready_after_seconds,
        gate_overridden=bool(report.gate and report.gate.overridden),
        override_reason=params.backup_gate.override_reason
        if report.gate and report.gate.overridden
        else None,
    )
    run.publish(key)
    return report


def _rolling(run: _Run, params: DeployStagingParams) -> None:
    ns, app, cluster = params.namespace, params.app, run.cluster
    deployment = read_deployment(cluster, ns, app)
    container, previous = container_image(deployment, params.container)
    run.report.previous_image = previous
    run.step("recorded", f"{ns}/{app} container {container} runs {previous}", 20)
    patched_at = time.monotonic()
    try:
        with transaction():
            deploy_image(cluster, ns, app, container, params.image, previous)
            run.step("patched", f"{container} -> {params.image}", 30)
            wait_for_rollout(cluster, ns, app, params.rollout_timeout.total_seconds(), 0.5)
            run.report.ready_after_seconds = time.monotonic() - patched_at
            run.step("ready", f"rolled out after {run.report.ready_after_seconds:.1f} s", 60)
            run.smoke(app, "live", params)
    except DEPLOY_FAILURES as cause:
        run.step("failed", str(cause))
        _restore_rolling(run, params, container, previous, cause)
    record = PromotionRecord(
        strategy="rolling",
        at=datetime.now(UTC),
        keep_until=datetime.now(UTC) + params.keep_old_colour,
        image=params.image,
        previous_image=previous,
        container=container,
        flow_run_id=_flow_run_id(),
    )
    annotate_object(cluster, "Deployment", ns, app, {PROMOTION_ANNOTATION: record.to_annotation()})
    run.step(
        "recorded promotion", f"rollback possible until {record.keep_until:%Y-%m-%d %H:%M} UTC", 90
    )


def _restore_rolling(
    run: _Run, params: DeployStagingParams, container: str, previous: str, cause: Exception
) -> None:
    """After the transaction's rollback hook: make sure `previous` runs and serves, then fail."""
    ns, app, cluster = params.namespace, params.app, run.cluster
    started = time.monotonic()
    try:
        _, now_image = container_image(read_deployment(cluster, ns, app), container)
        if now_image != previous:  # the hook could not run (e.g. the patch itself failed late)
            set_deployment_image(cluster, ns, app, container, previous)
        run.step("rolled back", f"{container} -> {previous}")
        wait_for_rollout(cluster, ns, app, max(params.rollout_timeout.total_seconds(), 60), 0.5)
        run.smoke(app, "live after rollback", params, attempts=max(params.smoke_attempts, 3))
    except Exception as exc:
        raise RollbackFailed(
            f"deploy of {params.image} failed ({cause}) and restoring {previous} failed too: "
            f"{exc}; fix by hand: kubectl -n {ns} set image deployment/{app} {container}={previous}"
        ) from exc
    run.report.restored_after_seconds = time.monotonic() - started
    raise DeployRolledBack(f"rolled back to {previous}: {type(cause).__name__}: {cause}") from cause


def _blue_green(run: _Run, params: DeployStagingParams) -> None:
    ns, app, cluster = params.namespace, params.app, run.cluster
    service = read_service(cluster, ns, app)
    live = live_colour((service.get("spec") or {}).get("selector"), app)
    idle = other_colour(live)
    for colour in (live, idle):  # both colours' own Services must exist for direct checks
        try:
            read_service(cluster, ns, f"{app}-{colour}")
        except KubernetesApiError as exc:
            raise DeployRefused(
                f"blue-green needs a Service {app}-{colour} selecting version={colour} for "
                f"direct smoke checks: {exc}"
            ) from exc
    live_dep = read_deployment(cluster, ns, f"{app}-{live}")
    idle_dep = read_deployment(cluster, ns, f"{app}-{idle}")
    container, live_image = container_image(live_dep, params.container)
    _, idle_image = container_image(idle_dep, container)
    replicas = int((live_dep.get("spec") or {}).get("replicas") or 1)
    idle_replicas = int((idle_dep.get("spec") or {}).get("replicas") or 0)
    run.report.previous_image = live_image
    run.step(
        "recorded",
        f"live colour {live} runs {live_image} x{replicas}; idle {idle} runs {idle_image}",
        20,
    )
    patched_at = time.monotonic()
    switched = False
    try:
        with transaction():
            deploy_image(
                cluster,
                ns,
                f"{app}-{idle}",
                container,
                params.image,
                idle_image,
                replicas,
                idle_replicas,
            )
            run.step("patched", f"{app}-{idle}: {container} -> {params.image} x{replicas}", 30)
            wait_for_rollout(
                cluster, ns, f"{app}-{idle}", params.rollout_timeout.total_seconds(), 0.5
            )
            run.report.ready_after_seconds = time.monotonic() - patched_at
            run.step("ready", f"{idle} ready after {run.report.ready_after_seconds:.1f} s", 50)
            run.smoke(f"{app}-{idle}", f"idle colour {idle}", params)
            switch_service_colour(cluster, ns, app, idle, live)
            switched = True
            run.step("switched", f"service {app}: {live} -> {idle}", 70)
            run.smoke(app, "live", params)
    except DEPLOY_FAILURES as cause:
        run.step("failed", str(cause))
        _restore_blue_green(run, params, live, switched, cause)
    now = datetime.now(UTC)
    record = PromotionRecord(
        strategy="blue-green",
        at=now,
        keep_until=now + params.keep_old_colour,
        image=params.image,
        previous_image=live_image,
        from_colour=live,
        to_colour=idle,
        flow_run_id=_flow_run_id(),
    )
    annotate_object(cluster, "Service", ns, app, {PROMOTION_ANNOTATION: record.to_annotation()})
    run.step(
        "recorded promotion",
        f"{live} kept until {record.keep_until:%Y-%m-%d %H:%M} UTC for rollback-deploy",
        85,
    )
    if params.schedule_scale_down:
        run.report.notes.append(_schedule_scale_down(params, live, record.keep_until))


def _restore_blue_green(
    run: _Run, params: DeployStagingParams, live: str, switched: bool, cause: Exception
) -> None:
    """After the rollback hooks: the Service must select `live` and serve, then fail."""
    ns, app, cluster = params.namespace, params.app, run.cluster
    started = time.monotonic()
    try:
        selector = (read_service(cluster, ns, app).get("spec") or {}).get("selector") or {}
        if live_colour(selector, app) != live:
            patch_service_selector(cluster, ns, app, {COLOUR_LABEL: live})
        run.step(
            "switched back" if switched else "not switched",
            f"service {app} selects {live} ({time.monotonic() - started:.2f} s)",
        )
        run.smoke(app, "live after rollback", params, attempts=max(params.smoke_attempts, 3))
    except Exception as exc:
        raise RollbackFailed(
            f"deploy of {params.image} failed ({cause}) and keeping {live} live failed too: {exc}; "
            f"fix by hand: kubectl -n {ns} patch service {app} -p "
            f'\'{{"spec":{{"selector":{{"version":"{live}"}}}}}}\''
        ) from exc
    run.report.restored_after_seconds = time.monotonic() - started
    raise DeployRolledBack(
        f"{'switched back' if switched else 'kept'} {live} ({run.report.previous_image}): "
        f"{type(cause).__name__}: {cause}"
    ) from cause


def _schedule_scale_down(params: DeployStagingParams, colour: str, when: datetime) -> str:
    """Schedule scale-down-idle-colour for `colour` at `when`; returns a note for the report."""
    try:
        flow_run = run_deployment(
            SCALE_DOWN_DEPLOYMENT,
            parameters={
                "namespace": params.namespace,
                "app": params.app,
                "cluster_block": params.cluster_block,
                "service_port": params.service_port,
                "colour": colour,
                "dry_run": False,
            },
            scheduled_time=when,
            timeout=0,
            as_subflow=False,
        )
    except ObjectNotFound:
        return (
            f"scale-down of {colour} NOT scheduled: deployment {SCALE_DOWN_DEPLOYMENT!r} does not "
            "exist (prefect deploy --all); scale it down by hand after the keep window"
        )
    return (
        f"scale-down of {colour} scheduled for {when:%Y-%m-%d %H:%M} UTC "
        f"(flow run {flow_run.id})"  # type: ignore[union-attr]
    )


# ------------------------------------------------------------------ scale-down-idle-colour


@flow(
    name="scale-down-idle-colour",
    flow_run_name=run_name("scale-down-{app}-{colour}"),
    description="After the keep window, scale the idle blue-green colour to zero.",
    timeout_seconds=900,
)
@form(ScaleDownParams)
def scale_down_idle_colour(params: ScaleDownParams) -> DeployReport:
    """Scale `<app>-<colour>` to 0 if it is idle and its keep window is over.

    Refuses (reports, changes nothing) when the colour is live again (a rollback happened)
    or the promotion that idled it is still inside its keep window (unless `force`).
    """
    cluster = blocks.load_cluster(params.cluster_block)
    report = DeployReport("scale-down-idle-colour", params.namespace, params.app, "blue-green", "-")
    run = _Run(report, cluster, params)
    name = f"{params.app}-{params.colour}"
    service = read_service(cluster, params.namespace, params.app)
    live = live_colour((service.get("spec") or {}).get("selector"), params.app)
    record = PromotionRecord.from_annotations((service.get("metadata") or {}).get("annotations"))
    now = datetime.now(UTC)
    if live == params.colour:
        report.outcome, report.reason = "nothing_to_do", f"{params.colour} is live: left running"
    elif record is not None and now < record.keep_until and not params.force:
        report.outcome = "nothing_to_do"
        report.reason = (
            f"{params.colour} is kept for rollback until {record.keep_until:%Y-%m-%d %H:%M} UTC"
        )
    elif params.dry_run:
        report.outcome, report.reason = "dry_run", f"would scale {name} to 0"
    else:
        scale_deployment(cluster, params.namespace, name, 0)
        report.outcome, report.reason = "done", f"scaled {name} to 0"
        run.event("vibeops.deploy.idle_scaled_down", colour=params.colour)
    run.step("decision", report.reason or "")
    run.publish(_artifact_key("scale-down", params))
    return report


# ------------------------------------------------------------------ rollback-deploy


@flow(
    name="rollback-deploy",
    flow_run_name=run_name("rollback-{app}"),
    description="Undo the last staging promotion while the previous version is still kept.",
    timeout_seconds=1800,
)
@form(RollbackParams)
def rollback_deploy(params: RollbackParams) -> DeployReport:
    """Blue-green: switch the Service back to the previous colour (scaling it up if needed).
    Rolling: patch the previous image back. Only within the promotion's keep window; else
    report and do nothing.

    Raises:
        RollbackFailed: the previous version did not serve after the rollback.
    """
    cluster = blocks.load_cluster(params.cluster_block)
    ns, app = params.namespace, params.app
    service = read_service(cluster, ns, app)
    record = PromotionRecord.from_annotations((service.get("metadata") or {}).get("annotations"))
    kind: Literal["Service", "Deployment"] = "Service"
    if record is None:
        try:
            deployment = read_deployment(cluster, ns, app)
        except KubernetesApiError:
            deployment = {}
        record = PromotionRecord.from_annotations(
            (deployment.get("metadata") or {}).get("annotations")
        )
        kind = "Deployment"
    report = DeployReport(
        "rollback-deploy",
        ns,
        app,
        record.strategy if record else "unknown",
        record.previous_image if record else "-",
        previous_image=record.image if record else None,
    )
    run = _Run(report, cluster, params)
    key = _artifact_key("rollback-deploy", params)
    decision = decide_rollback(record, datetime.now(UTC))
    run.step("decision", f"{decision.message} (reason: {params.reason})")
    if not decision.act or record is None:
        report.outcome, report.reason = "nothing_to_do", decision.message
        run.event(
            "vibeops.deploy.rollback_skipped", reason=decision.message, requested_for=params.reason
        )
        run.publish(key)
        return report
    if params.dry_run:
        report.outcome, report.reason = "dry_run", f"would {decision.message}"
        run.publish(key)
        return report
    try:
        if record.strategy == "blue-green":
            _rollback_colour(run, params, record)
        else:
            _rollback_image(run, params, record)
    except Exception as exc:
        report.outcome, report.reason = "failed", f"{type(exc).__name__}: {exc}"
        run.event("vibeops.deploy.rollback_failed", reason=report.reason[:500])
        run.publish(key)
        raise RollbackFailed(f"rollback of {ns}/{app} failed: {exc}") from exc
    annotate_object(cluster, kind, ns, app, {PROMOTION_ANNOTATION: None})
    report.outcome, report.reason = "rolled_back", params.reason
    run.event("vibeops.deploy.rolled_back", reason=params.reason, automatic=False)
    run.publish(key)
    return report


def _rollback_colour(run: _Run, params: RollbackParams, record: PromotionRecord) -> None:
    ns, app, cluster = params.namespace, params.app, run.cluster
    back = record.from_colour or "blue"
    name = f"{app}-{back}"
    status = evaluate_rollout(read_deployment(cluster, ns, name))
    if status.desired == 0 or not status.done:
        current = read_deployment(cluster, ns, f"{app}-{record.to_colour}")
        replicas = int((current.get("spec") or {}).get("replicas") or 1)
        scale_deployment(cluster, ns, name, replicas)
        run.step("scaled up", f"{name} -> {replicas} replicas")
        wait_for_rollout(cluster, ns, name, params.rollout_timeout.total_seconds(), 0.5)
    started = time.monotonic()
    patch_service_selector(cluster, ns, app, {COLOUR_LABEL: back})
    run.step("switched back", f"service {app} selects {back} ({time.monotonic() - started:.2f} s)")
    run.smoke(app, "live after rollback", params)


def _rollback_image(run: _Run, params: RollbackParams, record: PromotionRecord) -> None:
    ns, app, cluster = params.namespace, params.app, run.cluster
    container, _ = container_image(read_deployment(cluster, ns, app), record.container)
    set_deployment_image(cluster, ns, app, container, record.previous_image)
    run.step("patched", f"{container} -> {record.previous_image}")
    wait_for_rollout(cluster, ns, app, params.rollout_timeout.total_seconds(), 0.5)
    run.smoke(app, "live after rollback", params)


__all__ = [
    "BackupGate",
    "DeployStagingParams",
    "RollbackParams",
    "ScaleDownParams",
    "deploy_staging",
    "rollback_deploy",
    "scale_down_idle_colour",
]
