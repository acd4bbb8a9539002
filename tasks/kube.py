"""Kubernetes: the one module that talks to the API for deploys and runbooks.

Clients come only from a `blocks.KubeCluster` (prefect-kubernetes `KubernetesCredentials`
kubeconfig + a secret bearer token), built with the `kubernetes` client. Objects are
returned as their JSON form (dicts, camelCase keys) so the pure rules in
`tasks.deploy_rules` judge exactly what the API holds.

Reusable tasks for runbooks: `read_deployment`, `set_deployment_image`, `scale_deployment`,
`rollout_restart`, `wait_for_rollout`, `read_service`, `patch_service_selector`,
`annotate_object`, `list_pods`, `read_pod_log`, `delete_pod`.

Example:
    ```python
    from blocks import KubeCluster
    from tasks.kube import rollout_restart, wait_for_rollout

    cluster = KubeCluster.load("staging")
    rollout_restart(cluster, "staging", "vibebench-core")
    wait_for_rollout(cluster, "staging", "vibebench-core", timeout_seconds=300)
    ```
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

import kubernetes
import urllib3
from kubernetes.client.exceptions import ApiException
from prefect import get_run_logger, task
from prefect.exceptions import MissingContextError
from prefect.tasks import exponential_backoff
from prefect.transactions import Transaction, get_transaction

from tasks.deploy_rules import (
    COLOUR_LABEL,
    RESTARTED_AT_ANNOTATION,
    RolloutStatus,
    evaluate_rollout,
)
from tasks.errors import ClusterNotConfigured, KubernetesApiError, RolloutTimeoutError

if TYPE_CHECKING:
    from blocks.kube import KubeCluster


def _log() -> logging.Logger | logging.LoggerAdapter[logging.Logger]:
    """The run logger inside a flow/task run, else a module logger (for `.fn()` calls)."""
    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger(__name__)


TRANSIENT_STATUS = {408, 429, 500, 502, 503, 504}
ObjectKind = Literal["Deployment", "Service"]


# ------------------------------------------------------------------ clients and errors


@contextlib.contextmanager
def api_client(cluster: KubeCluster) -> Iterator[kubernetes.client.ApiClient]:
    """A `kubernetes` ApiClient configured from the cluster block (closed on exit)."""
    configuration = kubernetes.client.Configuration()
    credentials = cluster.credentials
    if credentials is not None and credentials.cluster_config is not None:
        kubernetes.config.load_kube_config_from_dict(
            config_dict=credentials.cluster_config.config,
            context=credentials.cluster_config.context_name,
            client_configuration=configuration,
            persist_config=False,
        )
    else:
        try:
            kubernetes.config.load_incluster_config(client_configuration=configuration)
        except kubernetes.config.ConfigException:
            try:
                kubernetes.config.load_kube_config(
                    client_configuration=configuration, persist_config=False
                )
            except kubernetes.config.ConfigException as exc:
                raise ClusterNotConfigured(
                    "no Kubernetes cluster is configured: no KubeCluster block was named, this "
                    "worker has no in-cluster service account and no kubeconfig "
                    f"({exc}). Create a 'VibeOps Kube Cluster' block in the Prefect UI (Blocks "
                    "> Add block) or with `vibeops setup-blocks` and "
                    "`KubeCluster(credentials=...).save(NAME)`, then name it in cluster_block "
                    "(deploys, runbooks) or in the tenant settings' kube_cluster_block"
                ) from None
    if cluster.bearer_token is not None:
        configuration.api_key = {
            "authorization": f"Bearer {cluster.bearer_token.get_secret_value()}"
        }
        configuration.api_key_prefix = {}
    client = kubernetes.client.ApiClient(configuration)
    try:
        yield client
    finally:
        client.close()


@contextlib.contextmanager
def _api_errors(what: str) -> Iterator[None]:
    """Turn client exceptions into KubernetesApiError naming the call and the API's message."""
    try:
        yield
    except ApiException as exc:
        try:
            detail = json.loads(exc.body or "{}").get("message") or exc.reason
        except ValueError:
            detail = exc.reason
        raise KubernetesApiError(f"{what}: HTTP {exc.status}: {detail}", exc.status) from None
    except (urllib3.exceptions.HTTPError, OSError) as exc:
        raise KubernetesApiError(f"{what}: cannot reach the Kubernetes API: {exc}") from None


def is_transient(exc: BaseException) -> bool:
    """Throttling, 5xx and dropped connections are worth retrying; 4xx are not."""
    return isinstance(exc, KubernetesApiError) and (
        exc.status is None or exc.status in TRANSIENT_STATUS
    )


def retry_transient(_task: Any, _task_run: Any, state: Any) -> bool:
    """`retry_condition_fn` for Kubernetes tasks: retry only transient API errors."""
    try:
        state.result()
    except Exception as exc:
        return is_transient(exc)
    return False


API_RETRIES: dict[str, Any] = {
    "retries": 4,
    "retry_delay_seconds": exponential_backoff(backoff_factor=0.5),
    "retry_jitter_factor": 0.5,
    "retry_condition_fn": retry_transient,
}


def _call(cluster: KubeCluster, what: str, fn: Callable[[kubernetes.client.ApiClient], Any]) -> Any:
    with api_client(cluster) as client, _api_errors(what):
        result = fn(client)
        if isinstance(result, dict | str) or result is None:
            return result
        return client.sanitize_for_serialization(result)


def _opts(cluster: KubeCluster) -> dict[str, Any]:
    return {"_request_timeout": cluster.request_timeout_seconds}


# ------------------------------------------------------------------ plain operations
# (used by the tasks below and by rollback hooks, which must not start task runs)


def get_deployment(cluster: KubeCluster, namespace: str, name: str) -> dict[str, Any]:
    return _call(  # type: ignore[no-any-return]
        cluster,
        f"read deployment {namespace}/{name}",
        lambda c: kubernetes.client.AppsV1Api(c).read_namespaced_deployment(
            name, namespace, **_opts(cluster)
        ),
    )


def get_service(cluster: KubeCluster, namespace: str, name: str) -> dict[str, Any]:
    return _call(  # type: ignore[no-any-return]
        cluster,
        f"read service {namespace}/{name}",
        lambda c: kubernetes.client.CoreV1Api(c).read_namespaced_service(
            name, namespace, **_opts(cluster)
        ),
    )


def patch_deployment(
    cluster: KubeCluster, namespace: str, name: str, body: dict[str, Any]
) -> dict[str, Any]:
    """Strategic-merge patch a Deployment."""
    return _call(  # type: ignore[no-any-return]
        cluster,
        f"patch deployment {namespace}/{name}",
        lambda c: kubernetes.client.AppsV1Api(c).patch_namespaced_deployment(
            name, namespace, body, **_opts(cluster)
        ),
    )


def patch_service(
    cluster: KubeCluster, namespace: str, name: str, body: dict[str, Any]
) -> dict[str, Any]:
    """Strategic-merge patch a Service."""
    return _call(  # type: ignore[no-any-return]
        cluster,
        f"patch service {namespace}/{name}",
        lambda c: kubernetes.client.CoreV1Api(c).patch_namespaced_service(
            name, namespace, body, **_opts(cluster)
        ),
    )


def image_patch(container: str, image: str, replicas: int | None = None) -> dict[str, Any]:
    """The patch body that sets one container's image (and optionally the replica count)."""
    spec: dict[str, Any] = {
        "template": {"spec": {"containers": [{"name": container, "image": image}]}}
    }
    if replicas is not None:
        spec["replicas"] = replicas
    return {"spec": spec}


def poll_rollout(
    cluster: KubeCluster,
    namespace: str,
    name: str,
    timeout_seconds: float,
    interval_seconds: float = 1.0,
    on_progress: Callable[[RolloutStatus], None] | None = None,
) -> RolloutStatus:
    """Poll until the Deployment has rolled out; transient API errors are polled through.

    Raises:
        RolloutTimeoutError: not rolled out within `timeout_seconds`, or the progress
            deadline was exceeded (the message says which and how far it got).
        KubernetesApiError: a permanent API error (404, 403, ...).
    """
    deadline = time.monotonic() + timeout_seconds
    last: RolloutStatus | None = None
    last_error: KubernetesApiError | None = None
    while True:
        try:
            last = evaluate_rollout(get_deployment(cluster, namespace, name))
            last_error = None
        except KubernetesApiError as exc:
            if not is_transient(exc):
                raise
            last_error = exc
        if last is not None:
            if on_progress is not None:
                on_progress(last)
            if last.done:
                return last
            if last.failed:
                raise RolloutTimeoutError(
                    f"deployment {namespace}/{name}: {last.message} "
                    f"({last.available}/{last.desired} available)"
                )
        if time.monotonic() >= deadline:
            where = last.message if last else f"never readable ({last_error})"
            raise RolloutTimeoutError(
                f"deployment {namespace}/{name} did not roll out within {timeout_seconds:.0f} s: "
                f"{where}; raise rollout_timeout or check the pods (list_pods, read_pod_log)"
            )
        time.sleep(min(interval_seconds, max(deadline - time.monotonic(), 0.01)))


# ------------------------------------------------------------------ tasks


@task(name="read-deployment", **API_RETRIES)
def read_deployment(cluster: KubeCluster, namespace: str, name: str) -> dict[str, Any]:
    """The Deployment's JSON form.

    Raises:
        KubernetesApiError: 404 when it does not exist.
    """
    return get_deployment(cluster, namespace, name)


@task(name="read-service", **API_RETRIES)
def read_service(cluster: KubeCluster, namespace: str, name: str) -> dict[str, Any]:
    """The Service's JSON form."""
    return get_service(cluster, namespace, name)


@task(name="set-deployment-image", **API_RETRIES)
def set_deployment_image(
    cluster: KubeCluster,
    namespace: str,
    name: str,
    container: str,
    image: str,
    replicas: int | None = None,
) -> dict[str, Any]:
    """Patch one container's image (idempotent: the same patch twice is one change)."""
    _log().info("setting %s/%s container %s to %s", namespace, name, container, image)
    return patch_deployment(cluster, namespace, name, image_patch(container, image, replicas))


@task(name="scale-deployment", **API_RETRIES)
def scale_deployment(cluster: KubeCluster, namespace: str, name: str, replicas: int) -> None:
    """Set a Deployment's replica count."""
    _log().info("scaling %s/%s to %s", namespace, name, replicas)
    patch_deployment(cluster, namespace, name, {"spec": {"replicas": replicas}})


@task(name="rollout-restart", **API_RETRIES)
def rollout_restart(
    cluster: KubeCluster, namespace: str, name: str, at: datetime | None = None
) -> str:
    """`kubectl rollout restart`: stamp the pod template so every pod is replaced.

    Returns the timestamp written (a retry with the same `at` changes nothing).
    """
    stamp = (at or datetime.now(UTC)).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    _log().info("rollout restart of %s/%s at %s", namespace, name, stamp)
    patch_deployment(
        cluster,
        namespace,
        name,
        {"spec": {"template": {"metadata": {"annotations": {RESTARTED_AT_ANNOTATION: stamp}}}}},
    )
    return stamp


@task(name="wait-for-rollout")
def wait_for_rollout(
    cluster: KubeCluster,
    namespace: str,
    name: str,
    timeout_seconds: float = 600,
    interval_seconds: float = 1.0,
) -> RolloutStatus:
    """Wait until the Deployment rolled out (observedGeneration caught up, all replicas
    updated and available, no ProgressDeadlineExceeded).

    Raises:
        RolloutTimeoutError: not done within `timeout_seconds` or the deadline was exceeded.
    """
    status = poll_rollout(cluster, namespace, name, timeout_seconds, interval_seconds)
    _log().info("%s/%s: %s", namespace, name, status.message)
    return status


@task(name="patch-service-selector", **API_RETRIES)
def patch_service_selector(
    cluster: KubeCluster, namespace: str, name: str, selector: dict[str, str]
) -> dict[str, Any]:
    """Merge `selector` into a Service's selector (the blue-green switch)."""
    _log().info("service %s/%s selector <- %s", namespace, name, selector)
    return patch_service(cluster, namespace, name, {"spec": {"selector": selector}})


@task(name="annotate-object", **API_RETRIES)
def annotate_object(
    cluster: KubeCluster,
    kind: ObjectKind,
    namespace: str,
    name: str,
    annotations: dict[str, str | None],
) -> None:
    """Set (or, with None, remove) annotations on a Deployment or Service."""
    body = {"metadata": {"annotations": annotations}}
    if kind == "Deployment":
        patch_deployment(cluster, namespace, name, body)
    else:
        patch_service(cluster, namespace, name, body)


@dataclass(frozen=True)
class PodSummary:
    """What a runbook needs to know about a pod."""

    name: str
    phase: str
    ready: bool
    restarts: int
    image: str
    started_at: str | None


@task(name="list-pods", **API_RETRIES)
def list_pods(cluster: KubeCluster, namespace: str, label_selector: str = "") -> list[PodSummary]:
    """Pods in `namespace` matching `label_selector` (e.g. `app=vibebench-core`)."""
    body = _call(
        cluster,
        f"list pods in {namespace}",
        lambda c: kubernetes.client.CoreV1Api(c).list_namespaced_pod(
            namespace, label_selector=label_selector, **_opts(cluster)
        ),
    )
    pods = []
    for pod in body.get("items") or []:
        status = pod.get("status") or {}
        containers = status.get("containerStatuses") or []
        pods.append(
            PodSummary(
                name=pod["metadata"]["name"],
                phase=status.get("phase", "Unknown"),
                ready=any(
                    c.get("type") == "Ready" and c.get("status") == "True"
                    for c in status.get("conditions") or []
                ),
                restarts=sum(int(c.get("restartCount") or 0) for c in containers),
                image=(pod.get("spec") or {}).get("containers", [{}])[0].get("image", ""),
                started_at=status.get("startTime"),
            )
        )
    return pods


@task(name="read-pod-log", **API_RETRIES)
def read_pod_log(
    cluster: KubeCluster,
    namespace: str,
    pod: str,
    container: str | None = None,
    tail_lines: int = 200,
) -> str:
    """The last `tail_lines` lines of a pod's log."""
    kwargs: dict[str, Any] = {"tail_lines": tail_lines, **_opts(cluster)}
    if container:
        kwargs["container"] = container
    return _call(  # type: ignore[no-any-return]
        cluster,
        f"read log of pod {namespace}/{pod}",
        lambda c: kubernetes.client.CoreV1Api(c).read_namespaced_pod_log(pod, namespace, **kwargs),
    )


@task(name="delete-pod", **API_RETRIES)
def delete_pod(
    cluster: KubeCluster, namespace: str, pod: str, grace_period_seconds: int | None = None
) -> bool:
    """Delete a pod (its ReplicaSet replaces it). False when it was already gone."""
    kwargs: dict[str, Any] = dict(_opts(cluster))
    if grace_period_seconds is not None:
        kwargs["grace_period_seconds"] = grace_period_seconds
    try:
        _call(
            cluster,
            f"delete pod {namespace}/{pod}",
            lambda c: kubernetes.client.CoreV1Api(c).delete_namespaced_pod(
                pod, namespace, **kwargs
            ),
        )
    except KubernetesApiError as exc:
        if exc.status == 404:
            return False
        raise
    _log().info("deleted pod %s/%s", namespace, pod)
    return True


# ------------------------------------------------------------------ compensated steps
# Use inside `prefect.transactions.transaction()`: if a later step of the transaction fails,
# Prefect runs the on_rollback hook, which puts back what the step changed.


@task(name="deploy-image", **API_RETRIES)
def deploy_image(
    cluster: KubeCluster,
    namespace: str,
    name: str,
    container: str,
    image: str,
    previous_image: str,
    replicas: int | None = None,
    previous_replicas: int | None = None,
) -> dict[str, Any]:
    """Set a container's image (and replicas); on rollback, set the previous ones back."""
    txn = get_transaction()
    if txn is not None:
        txn.set(
            "undo",
            {
                "cluster": cluster,
                "namespace": namespace,
                "name": name,
                "body": image_patch(
                    container, previous_image, previous_replicas if replicas is not None else None
                ),
            },
        )
    _log().info("deploying %s to %s/%s (was %s)", image, namespace, name, previous_image)
    return patch_deployment(cluster, namespace, name, image_patch(container, image, replicas))


@deploy_image.on_rollback
def _undo_deploy_image(txn: Transaction) -> None:
    undo = txn.get("undo")
    patch_deployment(undo["cluster"], undo["namespace"], undo["name"], undo["body"])


@task(name="switch-service-colour", **API_RETRIES)
def switch_service_colour(
    cluster: KubeCluster, namespace: str, service: str, to_colour: str, from_colour: str
) -> dict[str, Any]:
    """Point a blue-green Service at `to_colour`; on rollback, back at `from_colour`."""
    txn = get_transaction()
    if txn is not None:
        txn.set(
            "undo",
            {"cluster": cluster, "namespace": namespace, "service": service, "colour": from_colour},
        )
    _log().info("switching %s/%s: %s -> %s", namespace, service, from_colour, to_colour)
    return patch_service(cluster, namespace, service, selector_patch(to_colour))


@switch_service_colour.on_rollback
def _undo_switch(txn: Transaction) -> None:
    undo = txn.get("undo")
    patch_service(
        undo["cluster"], undo["namespace"], undo["service"], selector_patch(undo["colour"])
    )


def selector_patch(colour: str) -> dict[str, Any]:
    return {"spec": {"selector": {COLOUR_LABEL: colour}}}
