"""Runbooks started by alerts (deployment triggers on the relay's `vibeops.alert.firing` events).

- `restart-deployment` (DatabaseConnectionPoolExhausted): the seed's
  `kubectl rollout restart deployment/<name>`, then wait until the rollout is ready.
- `recycle-hung-pod` (SlowBenchmarkRun): the seed's "benchmark hangs" runbook: save the pod's
  last log lines as an artifact, delete it, confirm its ReplicaSet's replacement is Running and
  Ready; when the replacement does not become ready, recycle it too, giving up after 5 attempts.
- HighErrorRate starts `rollback-deploy` (flows/staging_deploy.py) and BackupFailed /
  BackupTooOld start `backup-mysql` (flows/backup.py); see prefect.yaml.

Manual runs (UI form) default to `dry_run=True`; the triggers pass `dry_run: false`.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.events import emit_event
from pydantic import BaseModel, Field, field_validator

import blocks
from flows.forms import form
from flows.run_names import run_name
from tasks.errors import (
    IncidentRunbookFailed,
    KubernetesApiError,
    RolloutTimeoutError,
)
from tasks.form_fields import Duration, schema_pattern
from tasks.incident_rules import (
    DNS_LABEL,
    DNS_SUBDOMAIN,
    AlertContext,
    IncidentReport,
    RecycleAttempt,
    find_replacement,
    next_victim,
    replicaset_prefix,
    tail_text,
    validate_dns_label,
    validate_dns_subdomain,
)
from tasks.kube import (
    PodSummary,
    delete_pod,
    list_pods,
    read_deployment,
    read_pod_log,
    rollout_restart,
    wait_for_rollout,
)

if TYPE_CHECKING:
    from blocks.kube import KubeCluster


class IncidentTarget(BaseModel):
    """Where the runbook acts, and whether it only reports."""

    namespace: str = Field(
        default="vibebench",
        max_length=63,
        description="Kubernetes namespace of the workload.",
        json_schema_extra=schema_pattern(DNS_LABEL),
    )
    cluster_block: str | None = Field(
        default=None,
        description="KubeCluster block name; empty = in-cluster service account / ~/.kube/config.",
    )
    dry_run: bool = Field(
        default=True,
        description="Only report what would be done (alert triggers pass false).",
    )
    alert: AlertContext = Field(
        default_factory=AlertContext,
        description="The alert that started the run (filled by the trigger; empty when manual).",
    )

    @field_validator("namespace")
    @classmethod
    def _namespace(cls, value: str) -> str:
        return validate_dns_label(value, "namespace")


class RestartDeploymentParams(IncidentTarget):
    """Parameters of restart-deployment (rendered as the UI form)."""

    deployment: str = Field(
        default="vibebench-core",
        max_length=253,
        description="The Deployment to restart (the seed: vibebench-core-prod).",
        json_schema_extra=schema_pattern(DNS_SUBDOMAIN),
    )
    rollout_timeout: Duration = Field(
        default=timedelta(minutes=10),
        ge=timedelta(seconds=1),
        le=timedelta(hours=1),
        description="How long the restarted pods may take to become ready.",
    )

    @field_validator("deployment")
    @classmethod
    def _deployment(cls, value: str) -> str:
        return validate_dns_subdomain(value, "deployment")


class RecycleHungPodParams(IncidentTarget):
    """Parameters of recycle-hung-pod (rendered as the UI form)."""

    pod: str = Field(
        max_length=253,
        description="The hung pod (the alert's `pod` label).",
        json_schema_extra=schema_pattern(DNS_SUBDOMAIN),
    )
    log_lines: int = Field(
        default=200, ge=1, le=5000, description="How many last log lines to keep as an artifact."
    )
    max_attempts: int = Field(
        default=5, ge=1, le=10, description="Delete-and-wait cycles before giving up (seed: 5)."
    )
    replacement_timeout: Duration = Field(
        default=timedelta(minutes=3),
        ge=timedelta(seconds=1),
        le=timedelta(hours=1),
        description="How long each replacement pod may take to be Running and Ready.",
    )
    poll_interval_seconds: float = Field(
        default=1.0, ge=0.1, le=30, description="How often to look for the replacement."
    )

    @field_validator("pod")
    @classmethod
    def _pod(cls, value: str) -> str:
        return validate_dns_subdomain(value, "pod")


def _emit(name: str, target: IncidentTarget, resource_id: str, **payload: Any) -> None:
    related = []
    if target.alert.resource_id:
        related.append(
            {"prefect.resource.id": target.alert.resource_id, "prefect.resource.role": "alert"}
        )
    emit_event(
        event=name,
        resource={"prefect.resource.id": resource_id, "prefect.resource.name": resource_id},
        related=related,
        payload={
            "namespace": target.namespace,
            "alertname": target.alert.alertname,
            "alert_fingerprint": target.alert.fingerprint,
            "dry_run": target.dry_run,
            **payload,
        },
    )


def _publish(report: IncidentReport, key: str) -> None:
    create_markdown_artifact(key=key, markdown=report.markdown(), description=report.title)


# ------------------------------------------------------------------ restart-deployment


@flow(
    name="restart-deployment",
    flow_run_name=run_name("restart-{namespace}-{deployment}"),
    description="Rolling restart of a Deployment (kubectl rollout restart), wait until ready.",
    timeout_seconds=3600,
)
@form(RestartDeploymentParams)
def restart_deployment(params: RestartDeploymentParams) -> IncidentReport:
    """Restart every pod of a Deployment by stamping its template, and wait for the rollout.

    Raises:
        IncidentRunbookFailed: the Deployment is missing or did not become ready in time.
    """
    cluster = blocks.load_cluster(params.cluster_block)
    ns, name = params.namespace, params.deployment
    resource_id = f"vibeops.kube.deployment.{ns}.{name}"
    report = IncidentReport(
        title=f"restart-deployment `{ns}/{name}`",
        alert=params.alert,
        facts=[("deployment", f"{ns}/{name}"), ("dry run", str(params.dry_run))],
    )
    key = f"restart-deployment-{ns}-{name}"[:100]
    started = time.monotonic()
    try:
        current = read_deployment(cluster, ns, name)
    except KubernetesApiError as exc:
        report.outcome = f"FAILED: cannot read deployment {ns}/{name}: {exc}"
        _publish(report, key)
        _emit("vibeops.incident.restart_failed", params, resource_id, reason=str(exc)[:500])
        raise IncidentRunbookFailed(
            f"restart-deployment: deployment {ns}/{name} cannot be read ({exc}); check the "
            "alert's namespace/deployment labels and the cluster_block"
        ) from exc
    replicas = int((current.get("spec") or {}).get("replicas") or 0)
    report.facts.append(("replicas", str(replicas)))
    if params.dry_run:
        report.outcome = f"DRY RUN: would restart {ns}/{name} ({replicas} replicas) and wait"
        _publish(report, key)
        return report

    stamp = rollout_restart(cluster, ns, name, datetime.now(UTC))
    report.steps.append(f"rollout restart: template stamped restartedAt={stamp}")
    try:
        status = wait_for_rollout(cluster, ns, name, params.rollout_timeout.total_seconds(), 1.0)
    except RolloutTimeoutError as exc:
        report.outcome = f"FAILED: {exc}"
        report.steps.append(f"rollout not ready after {time.monotonic() - started:.1f} s")
        _publish(report, key)
        _emit("vibeops.incident.restart_failed", params, resource_id, reason=str(exc)[:500])
        raise IncidentRunbookFailed(f"restart-deployment {ns}/{name}: {exc}") from exc
    seconds = time.monotonic() - started
    report.steps.append(f"rollout ready after {seconds:.1f} s: {status.message}")
    report.outcome = f"RESTARTED: {ns}/{name} rolled out in {seconds:.1f} s"
    _publish(report, key)
    _emit(
        "vibeops.incident.deployment_restarted",
        params,
        resource_id,
        deployment=name,
        seconds=round(seconds, 2),
        restarted_at=stamp,
    )
    return report


# ------------------------------------------------------------------ recycle-hung-pod


@task(name="wait-for-replacement-pod")
def wait_for_replacement_pod(
    cluster: KubeCluster,
    namespace: str,
    prefix: str,
    known: list[str],
    timeout_seconds: float,
    interval_seconds: float,
) -> tuple[PodSummary | None, list[PodSummary]]:
    """Poll the ReplicaSet's pods until a new one is Running and Ready, or the timeout passes.

    Returns:
        (the ready replacement or None, the pods seen last).
    """
    deadline = time.monotonic() + timeout_seconds
    while True:
        pods = list_pods.fn(cluster, namespace)
        found = find_replacement(pods, prefix, known)
        if found is not None or time.monotonic() >= deadline:
            return found, pods  # type: ignore[return-value]
        time.sleep(min(interval_seconds, max(deadline - time.monotonic(), 0.01)))


@flow(
    name="recycle-hung-pod",
    flow_run_name=run_name("recycle-{namespace}-{pod}"),
    description="Save a hung pod's last logs, delete it, confirm the replacement runs (5 tries).",
    timeout_seconds=3600,
)
@form(RecycleHungPodParams)
def recycle_hung_pod(params: RecycleHungPodParams) -> IncidentReport:
    """The seed's "benchmark hangs" runbook.

    Raises:
        IncidentRunbookFailed: the pod is not managed by a ReplicaSet, or no replacement became
            ready within `max_attempts` delete-and-wait cycles.
    """
    logger = get_run_logger()
    cluster = blocks.load_cluster(params.cluster_block)
    ns, pod = params.namespace, params.pod
    resource_id = f"vibeops.kube.pod.{ns}.{pod}"
    key = f"recycle-hung-pod-{ns}-{pod}"[:100]
    report = IncidentReport(
        title=f"recycle-hung-pod `{ns}/{pod}`",
        alert=params.alert,
        facts=[("pod", f"{ns}/{pod}"), ("dry run", str(params.dry_run))],
        log_source=pod,
    )
    prefix = replicaset_prefix(pod)
    if prefix is None:
        report.outcome = f"REFUSED: {pod} is not named like a ReplicaSet pod; nothing replaces it"
        _publish(report, key)
        raise IncidentRunbookFailed(
            f"recycle-hung-pod: pod {ns}/{pod} is not managed by a ReplicaSet "
            "(<replicaset>-<5 chars>); deleting it would not bring it back"
        )
    pods = list_pods(cluster, ns)
    if pod not in {p.name for p in pods}:
        report.outcome = f"NOTHING TO DO: pod {ns}/{pod} no longer exists"
        _publish(report, key)
        _emit("vibeops.incident.pod_gone", params, resource_id)
        return report
    try:
        log = read_pod_log(cluster, ns, pod, tail_lines=params.log_lines)
    except KubernetesApiError as exc:
        log = f"(log unavailable: {exc})"
    report.log_excerpt = tail_text(log)
    report.facts.append(("ReplicaSet", prefix))
    if params.dry_run:
        report.outcome = f"DRY RUN: would delete {ns}/{pod} and wait for its replacement"
        _publish(report, key)
        return report

    exclude = [p.name for p in pods]  # a replacement is a pod that did not exist before
    victim = pod
    replacement: PodSummary | None = None
    attempts: list[RecycleAttempt] = []
    for number in range(1, params.max_attempts + 1):
        started = time.monotonic()
        deleted = delete_pod(cluster, ns, victim)
        replacement, seen = wait_for_replacement_pod(
            cluster,
            ns,
            prefix,
            exclude,
            params.replacement_timeout.total_seconds(),
            params.poll_interval_seconds,
        )
        attempt = RecycleAttempt(
            number,
            victim,
            replacement.name if replacement else None,
            time.monotonic() - started,
            "" if deleted else "already gone",
        )
        attempts.append(attempt)
        if replacement is not None:
            logger.info("replacement %s ready after %.1f s", replacement.name, attempt.seconds)
            break
        stuck = next_victim(seen, prefix, exclude)
        if stuck is None:
            attempt.note = "no replacement pod appeared (is the ReplicaSet scaled to 0?)"
        else:
            attempt.note = f"replacement {stuck.name} not ready ({stuck.phase}): recycling it"
            victim = stuck.name
            exclude.append(stuck.name)
    report.attempts = attempts
    if replacement is None:
        report.outcome = f"FAILED: no ready replacement after {len(attempts)} attempts"
        _publish(report, key)
        _emit("vibeops.incident.recycle_failed", params, resource_id, attempts=len(attempts))
        raise IncidentRunbookFailed(
            f"recycle-hung-pod {ns}/{pod}: no replacement became Running and Ready in "
            f"{len(attempts)} attempts of {params.replacement_timeout}; check the image and "
            "the pod events (the saved log is in the run's artifact)"
        )
    report.outcome = (
        f"RECYCLED: {pod} replaced by {replacement.name} (attempt {len(attempts)}, "
        f"{sum(a.seconds for a in attempts):.1f} s)"
    )
    _publish(report, key)
    _emit(
        "vibeops.incident.pod_recycled",
        params,
        resource_id,
        pod=pod,
        replacement=replacement.name,
        attempts=len(attempts),
    )
    return report
