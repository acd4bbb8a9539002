"""The alert-started runbooks against the Kubernetes API stand-in (real client, simulated controller).

Flows run end to end on the session's Prefect server; the stand-in's controller replaces deleted
pods and rolls Deployments out, and tests choose images that never become ready.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from pydantic import ValidationError

from blocks.kube import KubeCluster
from flows.forms import params_of
from flows.incidents import (
    RecycleHungPodParams,
    RestartDeploymentParams,
    recycle_hung_pod,
    restart_deployment,
)
from tasks.errors import IncidentRunbookFailed
from tasks.incident_rules import (
    AlertContext,
    find_replacement,
    next_victim,
    replicaset_prefix,
    tail_text,
)
from tasks.kube import PodSummary
from tests.helpers import save_block

pytestmark = pytest.mark.kube

NS = "vibebench"
RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"


def deployment(name: str, image: str, replicas: int = 2) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": NS, "labels": {"app": name}},
        "spec": {
            "replicas": replicas,
            "progressDeadlineSeconds": 2,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "app", "image": image}]},
            },
        },
    }


def running_pods(kube_api: Any, app: str, count: int, timeout: float = 15) -> list[dict]:
    """Wait until `count` pods of `app` are Running and Ready."""
    deadline = time.monotonic() + timeout
    while True:
        pods = [
            p
            for p in kube_api.list("Pod", NS, label_selector=f"app={app}")
            if p["status"].get("phase") == "Running"
            and any(
                c["type"] == "Ready" and c["status"] == "True"
                for c in p["status"].get("conditions", [])
            )
        ]
        if len(pods) >= count or time.monotonic() > deadline:
            assert len(pods) >= count, f"{app}: {len(pods)}/{count} pods ready"
            return pods
        time.sleep(0.05)


@pytest.fixture
def cluster(kube_api: Any) -> str:
    """The stand-in as a saved KubeCluster block, with the `vibebench` namespace."""
    kube_api.put({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}})
    return save_block(KubeCluster(credentials=kube_api.credentials()), "incident-kube")


ALERT = AlertContext(
    alertname="SlowBenchmarkRun",
    fingerprint="0123456789abcdef",
    severity="warning",
    event_id="9b1f0d9e-0000-4000-8000-000000000000",
    starts_at="2025-03-01T11:55:00Z",
    summary="Benchmark run exceeding 5 minutes",
)


# --- pure rules -------------------------------------------------------------------------------


def pod(name: str, phase: str = "Running", ready: bool = True) -> PodSummary:
    return PodSummary(name, phase, ready, 0, "img", None)


def test_replicaset_prefix_and_replacement_rules():
    assert replicaset_prefix("vibebench-core-7d9f8c6b5-x2k9p") == "vibebench-core-7d9f8c6b5"
    assert replicaset_prefix("standalone") is None
    assert replicaset_prefix("web-abcdef") is None  # 6-char suffix: not a ReplicaSet pod
    before = ["web-5d8-aaaaa", "web-5d8-bbbbb"]
    now = [pod("web-5d8-bbbbb"), pod("web-5d8-ccccc", "Pending", False), pod("db-77f-ddddd")]
    assert find_replacement(now, "web-5d8", before) is None
    assert next_victim(now, "web-5d8", before).name == "web-5d8-ccccc"
    now[1] = pod("web-5d8-ccccc")
    assert find_replacement(now, "web-5d8", before).name == "web-5d8-ccccc"
    assert tail_text("a\n" * 10, max_chars=6) == "a\na\na\n"


def test_bad_parameters_fail_in_validation():
    with pytest.raises(ValidationError, match="namespace"):
        RestartDeploymentParams(namespace="Not_A_Namespace")
    with pytest.raises(ValidationError, match="pod"):
        RecycleHungPodParams(pod="bad pod name")
    with pytest.raises(ValidationError):
        RecycleHungPodParams(pod="p-abcde", max_attempts=0)
    assert RecycleHungPodParams(pod="p-abcde").dry_run is True  # manual runs only report


# --- restart-deployment ---------------------------------------------------------------------------


def test_restart_deployment_replaces_every_pod_and_waits(kube_api: Any, cluster: str):
    kube_api.put(deployment("vibebench-core", "repo/core:1"))
    before = {p["metadata"]["name"] for p in running_pods(kube_api, "vibebench-core", 2)}

    report = restart_deployment(
        **params_of(
            RestartDeploymentParams(
                namespace=NS, deployment="vibebench-core", cluster_block=cluster, dry_run=False
            )
        )
    )

    assert report.outcome.startswith("RESTARTED")
    dep = kube_api.get("Deployment", "vibebench-core", NS)
    assert RESTARTED_AT in dep["spec"]["template"]["metadata"]["annotations"]
    after = {p["metadata"]["name"] for p in running_pods(kube_api, "vibebench-core", 2)}
    assert not after & before, "every pod was replaced"


def test_restart_deployment_dry_run_changes_nothing(kube_api: Any, cluster: str):
    kube_api.put(deployment("vibebench-core", "repo/core:1"))
    running_pods(kube_api, "vibebench-core", 2)
    report = restart_deployment(
        **params_of(
            RestartDeploymentParams(
                namespace=NS, deployment="vibebench-core", cluster_block=cluster
            )
        )
    )
    assert report.outcome.startswith("DRY RUN")
    dep = kube_api.get("Deployment", "vibebench-core", NS)
    assert RESTARTED_AT not in (dep["spec"]["template"]["metadata"].get("annotations") or {})


def test_restart_of_a_missing_deployment_fails_naming_it(kube_api: Any, cluster: str):
    with pytest.raises(IncidentRunbookFailed, match="vibebench/ghost cannot be read"):
        restart_deployment(
            **params_of(
                RestartDeploymentParams(
                    namespace=NS, deployment="ghost", cluster_block=cluster, dry_run=False
                )
            )
        )


def test_restart_that_never_becomes_ready_fails_after_the_timeout(kube_api: Any, cluster: str):
    kube_api.put(deployment("vibebench-core", "repo/core:1"))
    running_pods(kube_api, "vibebench-core", 2)
    kube_api.controller.behave("repo/core:1", ready=False)  # restarted pods hang
    with pytest.raises(IncidentRunbookFailed, match="restart-deployment vibebench/vibebench-core"):
        restart_deployment(
            **params_of(
                RestartDeploymentParams(
                    namespace=NS,
                    deployment="vibebench-core",
                    cluster_block=cluster,
                    dry_run=False,
                    rollout_timeout=5,
                )
            )
        )


# --- recycle-hung-pod -------------------------------------------------------------------------


def test_recycle_saves_logs_deletes_the_pod_and_confirms_the_replacement(
    kube_api: Any, cluster: str
):
    kube_api.put(deployment("bench-runner", "repo/runner:1", replicas=2))
    pods = running_pods(kube_api, "bench-runner", 2)
    hung = pods[0]["metadata"]["name"]
    kube_api.append_pod_log(NS, hung, "benchmark step 41/50", "waiting on lock vb_experiments")

    report = recycle_hung_pod(
        **params_of(
            RecycleHungPodParams(
                namespace=NS, pod=hung, cluster_block=cluster, dry_run=False, alert=ALERT
            )
        )
    )

    assert report.outcome.startswith("RECYCLED")
    assert "waiting on lock vb_experiments" in (report.log_excerpt or "")
    names = {p["metadata"]["name"] for p in running_pods(kube_api, "bench-runner", 2)}
    assert hung not in names
    [attempt] = report.attempts
    assert attempt.deleted == hung and attempt.replacement in names
    markdown = report.markdown()
    assert "alert `SlowBenchmarkRun`" in markdown and "waiting on lock" in markdown


def test_recycle_gives_up_after_max_attempts(kube_api: Any, cluster: str):
    kube_api.put(deployment("bench-runner", "repo/runner:1", replicas=1))
    [first] = running_pods(kube_api, "bench-runner", 1)
    kube_api.controller.behave("repo/runner:1", ready=False)  # every replacement hangs too

    with pytest.raises(IncidentRunbookFailed, match="in 3 attempts"):
        recycle_hung_pod(
            **params_of(
                RecycleHungPodParams(
                    namespace=NS,
                    pod=first["metadata"]["name"],
                    cluster_block=cluster,
                    dry_run=False,
                    max_attempts=3,
                    replacement_timeout=1,
                    poll_interval_seconds=0.2,
                )
            )
        )
    # it recycled the hung replacements too, not the same pod three times
    remaining = kube_api.list("Pod", NS, label_selector="app=bench-runner")
    assert len(remaining) == 1
    assert remaining[0]["metadata"]["name"] != first["metadata"]["name"]


def test_recycle_dry_run_and_missing_and_bare_pods(kube_api: Any, cluster: str):
    kube_api.put(deployment("bench-runner", "repo/runner:1", replicas=1))
    [only] = running_pods(kube_api, "bench-runner", 1)
    name = only["metadata"]["name"]
    dry = recycle_hung_pod(
        **params_of(RecycleHungPodParams(namespace=NS, pod=name, cluster_block=cluster))
    )
    assert dry.outcome.startswith("DRY RUN")
    assert kube_api.get("Pod", name, NS) is not None

    gone = recycle_hung_pod(
        **params_of(
            RecycleHungPodParams(namespace=NS, pod="bench-runner-0-zzzzz", cluster_block=cluster)
        )
    )
    assert gone.outcome.startswith("NOTHING TO DO")
    with pytest.raises(IncidentRunbookFailed, match="not managed by a ReplicaSet"):
        recycle_hung_pod(
            **params_of(RecycleHungPodParams(namespace=NS, pod="standalone", cluster_block=cluster))
        )


def test_an_unknown_cluster_block_is_refused_naming_the_fix():
    from tasks.errors import ConfigurationError

    with pytest.raises(
        ConfigurationError, match="no 'VibeOps Kube Cluster' block named 'nope'; create it"
    ):
        restart_deployment(
            **params_of(RestartDeploymentParams(namespace=NS, cluster_block="nope", dry_run=False))
        )
