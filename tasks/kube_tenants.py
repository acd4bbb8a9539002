"""Kubernetes calls for tenant resources: read, create-if-absent, compare, update, delete.

Uses the real `kubernetes` client from `tasks.kube.api_client` (the one client factory,
configured from a `KubeCluster` block), so tests point it at the API stand-in exactly as
production points it at a cluster. Objects travel as plain dicts built in `tasks.tenants`; responses
are read as raw JSON (`_preload_content=False`) so what we compare is what the API holds.

Example:
    ```python
    from blocks import KubeCluster
    from tasks.kube import api_client
    from tasks.kube_tenants import ensure_object

    with api_client(KubeCluster.load("prod")) as api:
        outcome = ensure_object(api, namespace_manifest(names, "pro"), "acme-corp")
    ```
"""

from __future__ import annotations

import contextlib
import copy
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import urllib3
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from tasks.errors import KubernetesApiError, RolloutTimeoutError, TenantResourceConflict
from tasks.kube import api_client, is_transient
from tasks.tenants import (
    LABEL_TENANT,
    MANAGED_PATHS,
    SUBSET_PATHS,
    Action,
    FieldChange,
    Manifest,
    diff_manifest,
)

REQUEST_TIMEOUT = 30.0


@dataclass(frozen=True)
class _Kind:
    api: Callable[[k8s.ApiClient], Any]
    suffix: str
    namespaced: bool = True


KINDS: dict[str, _Kind] = {
    "Namespace": _Kind(k8s.CoreV1Api, "namespace", namespaced=False),
    "ResourceQuota": _Kind(k8s.CoreV1Api, "namespaced_resource_quota"),
    "LimitRange": _Kind(k8s.CoreV1Api, "namespaced_limit_range"),
    "Secret": _Kind(k8s.CoreV1Api, "namespaced_secret"),
    "NetworkPolicy": _Kind(k8s.NetworkingV1Api, "namespaced_network_policy"),
    "Ingress": _Kind(k8s.NetworkingV1Api, "namespaced_ingress"),
    "Role": _Kind(k8s.RbacAuthorizationV1Api, "namespaced_role"),
    "RoleBinding": _Kind(k8s.RbacAuthorizationV1Api, "namespaced_role_binding"),
}
# Workload kinds removed before a namespace at deprovision (api, collection suffix).
WORKLOADS: tuple[tuple[Callable[[k8s.ApiClient], Any], str, str], ...] = (
    (k8s.AppsV1Api, "namespaced_deployment", "Deployment"),
    (k8s.AppsV1Api, "namespaced_stateful_set", "StatefulSet"),
    (k8s.BatchV1Api, "namespaced_cron_job", "CronJob"),
    (k8s.BatchV1Api, "namespaced_job", "Job"),
    (k8s.AppsV1Api, "namespaced_replica_set", "ReplicaSet"),
    (k8s.CoreV1Api, "namespaced_pod", "Pod"),
    (k8s.CoreV1Api, "namespaced_service", "Service"),
)


def object_ref(manifest: Manifest) -> str:
    """`Kind namespace/name` (or `Kind name` for cluster-scoped kinds)."""
    meta = manifest["metadata"]
    where = f"{meta['namespace']}/{meta['name']}" if meta.get("namespace") else meta["name"]
    return f"{manifest['kind']} {where}"


def _request(what: str, method: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call a client method for raw JSON; errors become KubernetesApiError naming `what`."""
    try:
        response = method(*args, _preload_content=False, _request_timeout=REQUEST_TIMEOUT, **kwargs)
    except ApiException as exc:
        reason = exc.reason
        with contextlib.suppress(Exception):
            reason = json.loads(exc.body or "{}").get("message") or reason
        raise KubernetesApiError(f"{what}: HTTP {exc.status} {reason}", status=exc.status) from None
    except (urllib3.exceptions.HTTPError, OSError) as exc:
        raise KubernetesApiError(f"{what}: cannot reach the Kubernetes API: {exc}") from None
    data = response.data
    return json.loads(data) if data else None


def _call(api: k8s.ApiClient, kind: str, verb: str, *args: Any) -> Any:
    spec = KINDS[kind]
    return _request(f"{verb} {kind}", getattr(spec.api(api), f"{verb}_{spec.suffix}"), *args)


def _args(kind: str, name: str, namespace: str | None) -> tuple[str, ...]:
    return (name, namespace) if KINDS[kind].namespaced else (name,)  # type: ignore[return-value]


def read_object(api: k8s.ApiClient, kind: str, name: str, namespace: str | None) -> Manifest | None:
    """The live object as the API returns it, or None when it does not exist."""
    try:
        return _call(api, kind, "read", *_args(kind, name, namespace))  # type: ignore[no-any-return]
    except KubernetesApiError as exc:
        if exc.status == 404:
            return None
        raise


def create_object(api: k8s.ApiClient, manifest: Manifest) -> Manifest:
    kind = manifest["kind"]
    if KINDS[kind].namespaced:
        return _call(api, kind, "create", manifest["metadata"]["namespace"], manifest)  # type: ignore[no-any-return]
    return _call(api, kind, "create", manifest)  # type: ignore[no-any-return]


def replace_object(api: k8s.ApiClient, manifest: Manifest) -> Manifest:
    """PUT the whole object (carrying its resourceVersion: a concurrent change gets 409)."""
    kind = manifest["kind"]
    meta = manifest["metadata"]
    return _call(api, kind, "replace", *_args(kind, meta["name"], meta.get("namespace")), manifest)  # type: ignore[no-any-return]


def delete_object(api: k8s.ApiClient, kind: str, name: str, namespace: str | None) -> bool:
    """Delete one object; returns False when it was already gone."""
    try:
        _call(api, kind, "delete", *_args(kind, name, namespace))
    except KubernetesApiError as exc:
        if exc.status == 404:
            return False
        raise
    return True


def _set(obj: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    cur = obj
    for part in parts[:-1]:
        cur = cur.setdefault(part, {})
    if value is None:
        cur.pop(parts[-1], None)
    else:
        cur[parts[-1]] = copy.deepcopy(value)


def _get(obj: dict[str, Any], dotted: str) -> Any:
    cur: Any = obj
    for part in dotted.split("."):
        if not isinstance(cur, dict) or part not in cur:
            return None
        cur = cur[part]
    return cur


def merged(live: Manifest, desired: Manifest) -> Manifest:
    """The live object with the managed paths taken from `desired` (labels merged)."""
    out = copy.deepcopy(live)
    out.pop("status", None)
    for path in MANAGED_PATHS.get(desired["kind"], ("spec",)):
        want = _get(desired, path)
        if path in SUBSET_PATHS:
            if want:
                combined = dict(_get(out, path) or {})
                combined.update(want)
                _set(out, path, combined)
        else:
            _set(out, path, want)
    return out


def check_owner(live: Manifest, tenant: str) -> None:
    """Refuse to adopt or change an object that is not labelled as this tenant's."""
    owner = (live.get("metadata", {}).get("labels") or {}).get(LABEL_TENANT)
    if owner != tenant:
        raise TenantResourceConflict(
            f"{object_ref(live)} already exists and is labelled "
            f"{LABEL_TENANT}={owner!r}, not {tenant!r}; it was left alone. Delete or relabel "
            "it by hand if it really belongs to this tenant"
        )


@dataclass
class EnsureOutcome:
    """What `ensure_object` did; `previous` is the live object before an update."""

    ref: str
    action: Action
    changes: list[FieldChange] = field(default_factory=list)
    previous: Manifest | None = None


def ensure_object(api: k8s.ApiClient, desired: Manifest, tenant: str) -> EnsureOutcome:
    """Create `desired` if absent, update its managed fields if they differ, else nothing.

    Raises:
        TenantResourceConflict: an object of that name exists but is not this tenant's.
        KubernetesApiError: the API refused (status inside; 5xx/429 are transient).
    """
    meta = desired["metadata"]
    ref = object_ref(desired)
    live = read_object(api, desired["kind"], meta["name"], meta.get("namespace"))
    if live is None:
        try:
            create_object(api, desired)
        except KubernetesApiError as exc:
            if exc.status != 409:
                raise
            live = read_object(api, desired["kind"], meta["name"], meta.get("namespace"))
            if live is None:
                raise
        else:
            return EnsureOutcome(ref, Action.CREATED)
    check_owner(live, tenant)
    changes = diff_manifest(desired, live)
    if not changes:
        return EnsureOutcome(ref, Action.UNCHANGED)
    if desired["kind"] == "RoleBinding" and _get(desired, "roleRef") != _get(live, "roleRef"):
        # roleRef is immutable: replace the binding.
        delete_object(api, "RoleBinding", meta["name"], meta.get("namespace"))
        create_object(api, desired)
    else:
        replace_object(api, merged(live, desired))
    return EnsureOutcome(ref, Action.UPDATED, changes, previous=live)


def restore_object(api: k8s.ApiClient, previous: Manifest) -> None:
    """Put an object's managed fields back to `previous` (rollback of an update)."""
    meta = previous["metadata"]
    live = read_object(api, previous["kind"], meta["name"], meta.get("namespace"))
    if live is None:
        clean = {k: v for k, v in previous.items() if k != "status"}
        clean["metadata"] = {
            k: v for k, v in meta.items() if k in {"name", "namespace", "labels", "annotations"}
        }
        create_object(api, clean)
        return
    restored = merged(live, previous)
    # Labels/annotations: put back exactly what was there.
    for path in SUBSET_PATHS:
        _set(restored, path, _get(previous, path))
    replace_object(api, restored)


# -- deprovisioning ----------------------------------------------------------------------------


def list_workloads(api: k8s.ApiClient, namespace: str) -> dict[str, list[str]]:
    """Names of workload objects in `namespace`, by kind (empty kinds left out)."""
    found: dict[str, list[str]] = {}
    for api_cls, suffix, kind in WORKLOADS:
        try:
            listing = _request(f"list {kind}", getattr(api_cls(api), f"list_{suffix}"), namespace)
        except KubernetesApiError as exc:
            if exc.status == 404:
                continue
            raise
        items = (listing or {}).get("items", [])
        if items:
            found[kind] = sorted(item["metadata"]["name"] for item in items)
    return found


def delete_workloads(api: k8s.ApiClient, namespace: str) -> dict[str, list[str]]:
    """Delete every workload object in `namespace` (controllers first); returns what went."""
    present = list_workloads(api, namespace)
    for api_cls, suffix, kind in WORKLOADS:
        if kind not in present:
            continue
        try:
            _request(
                f"delete {kind} in {namespace}",
                getattr(api_cls(api), f"delete_collection_{suffix}"),
                namespace,
                propagation_policy="Foreground",
            )
        except KubernetesApiError as exc:
            if exc.status != 404:
                raise
    return present


def delete_namespace_and_wait(
    api: k8s.ApiClient,
    namespace: str,
    timeout_seconds: float,
    interval_seconds: float = 1.0,
) -> bool:
    """Delete a namespace and wait until the API no longer has it.

    Returns False when it was already gone.

    Raises:
        RolloutTimeoutError: still there (Terminating) after `timeout_seconds`.
    """
    if not delete_object(api, "Namespace", namespace, None):
        return False
    deadline = time.monotonic() + timeout_seconds
    while read_object(api, "Namespace", namespace, None) is not None:
        if time.monotonic() >= deadline:
            raise RolloutTimeoutError(
                f"namespace {namespace} is still terminating after {timeout_seconds:.0f}s; "
                "look for finalizers (kubectl get ns -o yaml) and re-run deprovision-tenant"
            )
        time.sleep(interval_seconds)
    return True


__all__ = [
    "EnsureOutcome",
    "api_client",
    "check_owner",
    "create_object",
    "delete_namespace_and_wait",
    "delete_object",
    "delete_workloads",
    "ensure_object",
    "is_transient",
    "list_workloads",
    "merged",
    "object_ref",
    "read_object",
    "replace_object",
    "restore_object",
]
