"""tasks.kube_tenants against the Kubernetes API stand-in (kubernetes-validate on every write)."""

from __future__ import annotations

import pytest

from blocks.kube import KubeCluster
from tasks.errors import KubernetesApiError, RolloutTimeoutError, TenantResourceConflict
from tasks.kube_tenants import (
    api_client,
    delete_namespace_and_wait,
    delete_object,
    delete_workloads,
    ensure_object,
    is_transient,
    list_workloads,
    read_object,
    restore_object,
)
from tasks.tenants import (
    DEFAULT_TIERS,
    Action,
    NetworkSettings,
    TenantNames,
    credentials_secret_manifest,
    diff_manifest,
    ingress_manifest,
    limit_range_manifest,
    namespace_manifest,
    network_policy_manifest,
    resource_quota_manifest,
    role_binding_manifest,
    role_manifest,
)

pytestmark = pytest.mark.kube

NAMES = TenantNames.for_tenant("acme-corp")
NET = NetworkSettings(database_cidrs=["10.20.0.0/16"])


def _manifests(tier: str = "starter") -> list[dict]:
    spec = DEFAULT_TIERS[tier]
    return [
        namespace_manifest(NAMES, tier),
        resource_quota_manifest(NAMES, spec),
        limit_range_manifest(NAMES, spec),
        network_policy_manifest(NAMES, NET),
        role_manifest(NAMES),
        role_binding_manifest(NAMES, NET),
        credentials_secret_manifest(NAMES, {"MYSQL_PASSWORD": "pw"}),
        ingress_manifest(NAMES, NET),
    ]


def test_create_then_unchanged_then_tier_update_then_restore(kube_api) -> None:
    with api_client(KubeCluster(credentials=kube_api.credentials())) as api:
        for manifest in _manifests():
            assert ensure_object(api, manifest, NAMES.tenant).action is Action.CREATED
        for manifest in _manifests():
            live = read_object(api, manifest["kind"], manifest["metadata"]["name"], NAMES.namespace)
            # What the API holds is exactly what was sent (the client changed nothing).
            assert diff_manifest(manifest, live) == [], manifest["kind"]
            assert ensure_object(api, manifest, NAMES.tenant).action is Action.UNCHANGED
        quota = resource_quota_manifest(NAMES, DEFAULT_TIERS["enterprise"])
        outcome = ensure_object(api, quota, NAMES.tenant)
        assert outcome.action is Action.UPDATED
        changed = {c.path: (c.before, c.after) for c in outcome.changes}
        assert changed["spec.hard.pods"] == ("10", "200")
        live = kube_api.get("ResourceQuota", NAMES.resource_quota, namespace=NAMES.namespace)
        assert live["spec"]["hard"]["pods"] == "200"
        restore_object(api, outcome.previous)
        live = kube_api.get("ResourceQuota", NAMES.resource_quota, namespace=NAMES.namespace)
        assert live["spec"]["hard"]["pods"] == "10"
        namespace = namespace_manifest(NAMES, "pro")
        outcome = ensure_object(api, namespace, NAMES.tenant)
        assert [str(c) for c in outcome.changes] == [
            "metadata.labels.vibebench.io/tier: starter -> pro"
        ]
        restore_object(api, outcome.previous)
        assert (
            kube_api.get("Namespace", NAMES.namespace, namespace=None)["metadata"]["labels"][
                "vibebench.io/tier"
            ]
            == "starter"
        )


def test_foreign_objects_are_left_alone(kube_api) -> None:
    kube_api.put({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMES.namespace}})
    with (
        api_client(KubeCluster(credentials=kube_api.credentials())) as api,
        pytest.raises(TenantResourceConflict, match="left alone"),
    ):
        ensure_object(api, namespace_manifest(NAMES, "pro"), NAMES.tenant)
    assert "vibebench.io/tier" not in (
        kube_api.get("Namespace", NAMES.namespace, namespace=None)["metadata"].get("labels") or {}
    )


def test_errors_are_typed_and_transient_ones_marked(kube_api) -> None:
    with api_client(KubeCluster(credentials=kube_api.credentials())) as api:
        # The client itself retries a few reads on 5xx (client-go style); outlast it.
        kube_api.fail_next(times=50, status=503, method="GET")
        with pytest.raises(KubernetesApiError) as info:
            read_object(api, "Namespace", "x", None)
        assert info.value.status == 503 and is_transient(info.value)
        kube_api.clear_faults()
        kube_api.fail_next(times=1, status=403, method="POST")
        with pytest.raises(KubernetesApiError) as info:
            ensure_object(api, namespace_manifest(NAMES, "pro"), NAMES.tenant)
        assert info.value.status == 403 and not is_transient(info.value)
        assert read_object(api, "Namespace", NAMES.namespace, None) is None
        assert delete_object(api, "Ingress", "nope", "default") is False


def test_workloads_and_namespace_deletion(kube_api) -> None:
    with api_client(KubeCluster(credentials=kube_api.credentials())) as api:
        for manifest in _manifests():
            ensure_object(api, manifest, NAMES.tenant)
        kube_api.put(
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": "vibebench-core", "namespace": NAMES.namespace},
                "spec": {"ports": [{"port": 5000}], "selector": {"app": "vibebench-core"}},
            }
        )
        assert list_workloads(api, NAMES.namespace) == {"Service": ["vibebench-core"]}
        assert delete_workloads(api, NAMES.namespace) == {"Service": ["vibebench-core"]}
        assert list_workloads(api, NAMES.namespace) == {}
        assert delete_namespace_and_wait(api, NAMES.namespace, timeout_seconds=10)
        assert read_object(api, "Namespace", NAMES.namespace, None) is None
        assert kube_api.list("Secret", namespace=NAMES.namespace) == []
        assert delete_namespace_and_wait(api, NAMES.namespace, timeout_seconds=10) is False


def test_namespace_wait_times_out(kube_api) -> None:
    kube_api.store.settings.namespace_termination_seconds = 30
    with api_client(KubeCluster(credentials=kube_api.credentials())) as api:
        ensure_object(api, namespace_manifest(NAMES, "pro"), NAMES.tenant)
        with pytest.raises(RolloutTimeoutError, match="still terminating"):
            delete_namespace_and_wait(
                api, NAMES.namespace, timeout_seconds=0.5, interval_seconds=0.1
            )
