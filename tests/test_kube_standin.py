"""The Kubernetes API stand-in, driven only through the real client libraries."""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Awaitable, Callable
from typing import Any

import kubernetes
import pytest
from kubernetes_asyncio.client import NetworkingV1Api, RbacAuthorizationV1Api
from kubernetes_asyncio.client.exceptions import ApiException

from tests.k8s_standin import KubeStandIn

pytestmark = pytest.mark.kube


def run(coro: Awaitable[Any]) -> Any:
    return asyncio.run(coro)  # type: ignore[arg-type]


def deployment(name: str, image: str, replicas: int = 2, **extra: Any) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "app", "image": image, **extra}]},
            },
        },
    }


async def with_core(kube_api: KubeStandIn, body: Callable[[Any], Awaitable[Any]]) -> Any:
    async with kube_api.credentials().get_client("core") as core:
        return await body(core)


def test_namespace_lifecycle_through_prefect_kubernetes(kube_api: KubeStandIn) -> None:
    async def body(core: Any) -> None:
        created = await core.create_namespace({"metadata": {"name": "tenant-a"}})
        assert created.metadata.uid and created.metadata.resource_version
        assert created.status.phase == "Active"
        with pytest.raises(ApiException) as exc:
            await core.create_namespace({"metadata": {"name": "tenant-a"}})
        assert exc.value.status == 409 and "AlreadyExists" in exc.value.body
        await core.create_namespaced_secret(
            "tenant-a", {"metadata": {"name": "db"}, "stringData": {"password": "s3cret"}}
        )
        await core.create_namespaced_config_map(
            "tenant-a", {"metadata": {"name": "cfg", "labels": {"tier": "pro"}}, "data": {"a": "1"}}
        )
        secret = await core.read_namespaced_secret("db", "tenant-a")
        assert base64.b64decode(secret.data["password"]) == b"s3cret"
        assert secret.string_data is None
        listed = await core.list_namespaced_config_map("tenant-a", label_selector="tier=pro")
        assert [c.metadata.name for c in listed.items] == ["cfg"]
        assert (
            await core.list_namespaced_config_map("tenant-a", label_selector="tier!=pro")
        ).items == []
        await core.delete_namespace("tenant-a")
        with pytest.raises(ApiException) as missing:
            await core.read_namespaced_secret("db", "tenant-a")
        assert missing.value.status == 404

    run(with_core(kube_api, body))
    assert kube_api.get("Namespace", "tenant-a", namespace=None) is None
    assert kube_api.list("Secret", "tenant-a") == []


def test_create_in_missing_namespace_is_404(kube_api: KubeStandIn) -> None:
    async def body(core: Any) -> None:
        with pytest.raises(ApiException) as exc:
            await core.create_namespaced_config_map("nope", {"metadata": {"name": "x"}})
        assert exc.value.status == 404 and 'namespaces \\"nope\\" not found' in exc.value.body

    run(with_core(kube_api, body))


def test_unknown_field_is_422_and_recorded(kube_api: KubeStandIn) -> None:
    async def body() -> None:
        async with kube_api.credentials().get_client("apps") as apps:
            bad = deployment("web", "repo/web:1")
            bad["spec"]["template"]["spec"]["containers"][0]["imagee"] = "typo"
            with pytest.raises(ApiException) as exc:
                await apps.create_namespaced_deployment("default", bad)
            assert exc.value.status == 422 and "imagee" in exc.value.body

    run(body())
    violations = kube_api.take_violations()
    assert len(violations) == 1 and "'imagee' was unexpected" in violations[0]


def test_bad_names_and_immutable_selector_are_422(kube_api: KubeStandIn) -> None:
    async def body() -> None:
        async with kube_api.credentials().get_client("core") as core:
            with pytest.raises(ApiException) as exc:
                await core.create_namespace({"metadata": {"name": "Bad_Name"}})
            assert exc.value.status == 422
        async with kube_api.credentials().get_client("apps") as apps:
            await apps.create_namespaced_deployment("default", deployment("web", "repo/web:1"))
            with pytest.raises(ApiException) as exc:
                await apps.patch_namespaced_deployment(
                    "web", "default", {"spec": {"selector": {"matchLabels": {"app": "other"}}}}
                )
            assert exc.value.status == 422 and "immutable" in exc.value.body

    run(body())
    assert len(kube_api.take_violations()) == 2


def test_patch_flavours_resource_version_and_generation(kube_api: KubeStandIn) -> None:
    async def body() -> None:
        async with kube_api.credentials().get_client("apps") as apps:
            created = await apps.create_namespaced_deployment(
                "default", deployment("web", "repo/web:1", env=[{"name": "A", "value": "1"}])
            )
            assert created.metadata.generation == 1
            assert created.spec.strategy.type == "RollingUpdate"  # defaulted by the API
            # strategic merge: the container list merges by name, env by name
            patched = await apps.patch_namespaced_deployment(
                "web",
                "default",
                {
                    "spec": {
                        "template": {
                            "spec": {
                                "containers": [
                                    {
                                        "name": "app",
                                        "image": "repo/web:2",
                                        "env": [{"name": "B", "value": "2"}],
                                    }
                                ]
                            }
                        }
                    }
                },
            )
            container = patched.spec.template.spec.containers[0]
            assert container.image == "repo/web:2"
            assert [e.name for e in container.env] == ["A", "B"]
            assert patched.metadata.generation == 2
            assert int(patched.metadata.resource_version) > int(created.metadata.resource_version)
            # json patch (a list body)
            jp = await apps.patch_namespaced_deployment(
                "web", "default", [{"op": "replace", "path": "/spec/replicas", "value": 5}]
            )
            assert jp.spec.replicas == 5 and jp.metadata.generation == 3
            # metadata-only change keeps the generation
            labelled = await apps.patch_namespaced_deployment(
                "web", "default", {"metadata": {"labels": {"team": "core"}}}
            )
            assert labelled.metadata.generation == 3
            # a PUT with a stale resourceVersion is a 409 Conflict
            created.spec.replicas = 1
            with pytest.raises(ApiException) as exc:
                await apps.replace_namespaced_deployment("web", "default", created)
            assert exc.value.status == 409 and "Conflict" in exc.value.body

    run(body())


def test_networking_and_rbac_through_kubernetes_asyncio(kube_api: KubeStandIn) -> None:
    async def body() -> None:
        async with kube_api.credentials().get_client("core") as core:
            await core.create_namespace({"metadata": {"name": "t1"}})
            api_client = core.api_client
            net = NetworkingV1Api(api_client)
            rbac = RbacAuthorizationV1Api(api_client)
            await net.create_namespaced_network_policy(
                "t1",
                {
                    "metadata": {"name": "deny-all"},
                    "spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]},
                },
            )
            await rbac.create_namespaced_role(
                "t1",
                {
                    "metadata": {"name": "reader"},
                    "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}],
                },
            )
            await rbac.create_namespaced_role_binding(
                "t1",
                {
                    "metadata": {"name": "reader"},
                    "roleRef": {
                        "apiGroup": "rbac.authorization.k8s.io",
                        "kind": "Role",
                        "name": "reader",
                    },
                    "subjects": [{"kind": "ServiceAccount", "name": "default", "namespace": "t1"}],
                },
            )
            assert len((await net.list_namespaced_network_policy("t1")).items) == 1
            assert (await rbac.read_namespaced_role("reader", "t1")).rules[0].verbs == ["get"]

    run(body())
    assert kube_api.get("RoleBinding", "reader", "t1")["roleRef"]["name"] == "reader"


def test_fault_injection_answers_status_then_recovers(kube_api: KubeStandIn) -> None:
    fault = kube_api.fail_next(times=2, status=500, method="GET", path=r"/namespaces/default$")

    async def body(core: Any) -> None:
        for _ in range(2):
            with pytest.raises(ApiException) as exc:
                await core.read_namespace("default")
            assert exc.value.status == 500 and "InternalError" in exc.value.body
        assert (await core.read_namespace("default")).metadata.name == "default"

    run(with_core(kube_api, body))
    assert fault.hits == 2
    assert [r.status for r in kube_api.requests_matching("GET", r"/namespaces/default$")] == [
        500,
        500,
        200,
    ]


def test_sync_kubernetes_client_and_owner_gc(kube_api: KubeStandIn) -> None:
    api_client = kubernetes.config.new_client_from_config_dict(kube_api.kubeconfig_dict())
    core = kubernetes.client.CoreV1Api(api_client)
    core.create_namespace({"metadata": {"name": "gc"}})
    owner = core.create_namespaced_config_map("gc", {"metadata": {"name": "owner"}})
    core.create_namespaced_config_map(
        "gc",
        {
            "metadata": {
                "name": "child",
                "ownerReferences": [
                    {
                        "apiVersion": "v1",
                        "kind": "ConfigMap",
                        "name": "owner",
                        "uid": owner.metadata.uid,
                    }
                ],
            }
        },
    )
    status = core.delete_namespaced_config_map("owner", "gc")
    assert status["status"] == "Success"  # kubernetes>=35 returns delete bodies as dicts
    with pytest.raises(kubernetes.client.exceptions.ApiException) as exc:
        core.read_namespaced_config_map("child", "gc")
    assert exc.value.status == 404
    svc = core.create_namespaced_service(
        "gc",
        {
            "metadata": {"name": "web"},
            "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]},
        },
    )
    assert svc.spec.cluster_ip and svc.spec.ports[0].target_port == 80
    api_client.close()


def test_bearer_token_is_required_when_configured() -> None:
    with KubeStandIn(token="t0ken") as server:
        api_client = kubernetes.config.new_client_from_config_dict(server.kubeconfig_dict())
        assert kubernetes.client.CoreV1Api(api_client).read_namespace("default").metadata.name
        api_client.close()
        config = server.kubeconfig_dict()
        config["users"][0]["user"]["token"] = "wrong"
        api_client = kubernetes.config.new_client_from_config_dict(config)
        with pytest.raises(kubernetes.client.exceptions.ApiException) as exc:
            kubernetes.client.CoreV1Api(api_client).read_namespace("default")
        assert exc.value.status == 401
        api_client.close()


def test_namespace_termination_window(kube_api: KubeStandIn) -> None:
    kube_api.store.settings.namespace_termination_seconds = 0.5

    async def body(core: Any) -> None:
        await core.create_namespace({"metadata": {"name": "going"}})
        await core.delete_namespace("going")
        with pytest.raises(ApiException) as exc:
            await core.create_namespaced_config_map("going", {"metadata": {"name": "late"}})
        assert exc.value.status == 403
        assert (await core.read_namespace("going")).status.phase == "Terminating"
        await asyncio.sleep(0.6)
        with pytest.raises(ApiException) as gone:
            await core.read_namespace("going")
        assert gone.value.status == 404

    run(with_core(kube_api, body))


async def wait_deployment(apps: Any, name: str, predicate: Callable[[Any], bool]) -> Any:
    for _ in range(200):
        dep = await apps.read_namespaced_deployment_status(name, "default")
        if predicate(dep):
            return dep
        await asyncio.sleep(0.05)
    raise AssertionError(f"deployment {name} never reached the expected state: {dep.status}")


def rolled_out(dep: Any) -> bool:
    s = dep.status
    return (
        (s.observed_generation or 0) >= dep.metadata.generation
        and s.updated_replicas == dep.spec.replicas
        and s.available_replicas == dep.spec.replicas
        and (s.replicas or 0) == dep.spec.replicas
    )


def test_controller_rolls_out_and_rolls_back(kube_api: KubeStandIn) -> None:
    async def body() -> None:
        async with kube_api.credentials().get_client("apps") as apps:
            await apps.create_namespaced_deployment("default", deployment("web", "repo/web:1"))
            first = await wait_deployment(apps, "web", rolled_out)
            assert first.metadata.annotations["deployment.kubernetes.io/revision"] == "1"
            await apps.patch_namespaced_deployment(
                "web",
                "default",
                {
                    "spec": {
                        "template": {
                            "spec": {"containers": [{"name": "app", "image": "repo/web:2"}]}
                        }
                    }
                },
            )
            second = await wait_deployment(apps, "web", rolled_out)
            assert second.metadata.annotations["deployment.kubernetes.io/revision"] == "2"
            progressing = {c.type: c for c in second.status.conditions}["Progressing"]
            assert progressing.reason == "NewReplicaSetAvailable"
            # rollout restart: the template annotation makes a new ReplicaSet too
            await apps.patch_namespaced_deployment(
                "web",
                "default",
                {
                    "spec": {
                        "template": {
                            "metadata": {
                                "annotations": {
                                    "kubectl.kubernetes.io/restartedAt": "2025-01-01T00:00:00Z"
                                }
                            }
                        }
                    }
                },
            )
            third = await wait_deployment(apps, "web", rolled_out)
            assert third.metadata.annotations["deployment.kubernetes.io/revision"] == "3"

    run(body())
    pods = kube_api.list("Pod", "default", label_selector="app=web")
    assert len(pods) == 2 and all(p["status"]["phase"] == "Running" for p in pods)
    rs = kube_api.list("ReplicaSet", "default", label_selector="app=web")
    assert len(rs) == 3 and sorted(r["spec"]["replicas"] for r in rs) == [0, 0, 2]


def test_never_ready_image_keeps_old_pods_and_hits_deadline(kube_api: KubeStandIn) -> None:
    async def body() -> None:
        async with kube_api.credentials().get_client("apps") as apps:
            dep = deployment("web", "repo/web:1")
            dep["spec"]["progressDeadlineSeconds"] = 1
            await apps.create_namespaced_deployment("default", dep)
            await wait_deployment(apps, "web", rolled_out)
            await apps.patch_namespaced_deployment(
                "web",
                "default",
                {
                    "spec": {
                        "template": {
                            "spec": {
                                "containers": [{"name": "app", "image": "repo/web:2-never-ready"}]
                            }
                        }
                    }
                },
            )

            def deadline(d: Any) -> bool:
                conditions = {c.type: c for c in d.status.conditions or []}
                return conditions["Progressing"].reason == "ProgressDeadlineExceeded"

            stuck = await wait_deployment(apps, "web", deadline)
            assert stuck.status.updated_replicas == 2 and stuck.status.available_replicas == 2
            assert stuck.status.unavailable_replicas == 2

    run(body())
    images = sorted(
        p["spec"]["containers"][0]["image"] for p in kube_api.list("Pod", "default", "app=web")
    )
    assert images == [
        "repo/web:1",
        "repo/web:1",
        "repo/web:2-never-ready",
        "repo/web:2-never-ready",
    ]


def test_deleted_pod_is_replaced_and_logs_are_served(kube_api: KubeStandIn) -> None:
    async def body() -> None:
        async with kube_api.credentials().get_client("apps") as apps:
            await apps.create_namespaced_deployment("default", deployment("web", "repo/web:1", 1))
            await wait_deployment(apps, "web", rolled_out)
        async with kube_api.credentials().get_client("core") as core:
            (pod,) = (await core.list_namespaced_pod("default", label_selector="app=web")).items
            log = await core.read_namespaced_pod_log(pod.metadata.name, "default")
            assert "starting container image=repo/web:1" in log
            await core.delete_namespaced_pod(pod.metadata.name, "default")
            for _ in range(100):
                pods = (await core.list_namespaced_pod("default", label_selector="app=web")).items
                if pods and pods[0].metadata.name != pod.metadata.name:
                    break
                await asyncio.sleep(0.05)
            assert len(pods) == 1 and pods[0].metadata.name != pod.metadata.name

    run(body())


def test_service_proxy_follows_the_selector(kube_api: KubeStandIn) -> None:
    import httpx
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    from tests.k8s_standin.server import serve_app

    def version_app(text: str) -> Starlette:
        return Starlette(routes=[Route("/version", lambda _: PlainTextResponse(text))])

    with serve_app(version_app("blue")) as blue, serve_app(version_app("green")) as green:
        kube_api.serve_image("repo/web:blue", blue)
        kube_api.serve_image("repo/web:green", green)
        for colour in ("blue", "green"):
            dep = deployment(f"web-{colour}", f"repo/web:{colour}", 1)
            dep["spec"]["template"]["metadata"]["labels"] = {"app": "web", "version": colour}
            dep["spec"]["selector"]["matchLabels"] = {"app": "web", "version": colour}
            kube_api.put(dep)
        kube_api.put(
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": "web"},
                "spec": {"selector": {"app": "web", "version": "blue"}, "ports": [{"port": 80}]},
            }
        )
        url = kube_api.service_proxy_url("default", "web") + "/version"
        for _ in range(100):
            if httpx.get(url).status_code == 200:
                break
            time.sleep(0.05)
        assert httpx.get(url).text == "blue"
        api_client = kubernetes.config.new_client_from_config_dict(kube_api.kubeconfig_dict())
        kubernetes.client.CoreV1Api(api_client).patch_namespaced_service(
            "web", "default", {"spec": {"selector": {"version": "green"}}}
        )
        api_client.close()
        assert httpx.get(url).text == "green"


# ------------------------------------------------------------------ runbook tasks (tasks/kube.py)
# The same test runs against the stand-in and, when VIBEOPS_TEST_KUBECONFIG is set, a real
# disposable cluster (it creates and deletes its own namespace there).


@pytest.fixture(params=["standin", "real"])
def runbook_cluster(request: pytest.FixtureRequest) -> Any:
    from blocks import KubeCluster

    if request.param == "standin":
        standin: KubeStandIn = request.getfixturevalue("kube_api")
        return KubeCluster(credentials=standin.credentials())
    import yaml
    from prefect_kubernetes.credentials import KubernetesClusterConfig, KubernetesCredentials

    path = request.getfixturevalue("real_kubeconfig")
    config = yaml.safe_load(path.read_text())
    return KubeCluster(
        credentials=KubernetesCredentials(
            cluster_config=KubernetesClusterConfig(
                config=config, context_name=config["current-context"]
            )
        )
    )


def test_runbook_tasks(runbook_cluster: Any) -> None:
    import uuid

    from tasks.errors import KubernetesApiError, RolloutTimeoutError
    from tasks.kube import (
        api_client,
        delete_pod,
        list_pods,
        read_pod_log,
        rollout_restart,
        scale_deployment,
        wait_for_rollout,
    )

    ns = f"runbook-{uuid.uuid4().hex[:6]}"
    with api_client(runbook_cluster) as client:
        kubernetes.client.CoreV1Api(client).create_namespace({"metadata": {"name": ns}})
        kubernetes.client.AppsV1Api(client).create_namespaced_deployment(
            ns, deployment("web", "registry.k8s.io/pause:3.9")
        )
    try:
        status = wait_for_rollout.fn(runbook_cluster, ns, "web", timeout_seconds=120)
        assert status.done and status.available == 2
        before = {p.name for p in list_pods.fn(runbook_cluster, ns, "app=web")}
        assert len(before) == 2
        stamp = rollout_restart.fn(runbook_cluster, ns, "web")
        assert stamp.endswith("Z")
        wait_for_rollout.fn(runbook_cluster, ns, "web", timeout_seconds=120)
        after = list_pods.fn(runbook_cluster, ns, "app=web")
        assert len(after) == 2 and not before & {p.name for p in after}
        assert all(p.ready and p.phase == "Running" for p in after)
        assert isinstance(read_pod_log.fn(runbook_cluster, ns, after[0].name, tail_lines=5), str)
        assert delete_pod.fn(runbook_cluster, ns, after[0].name) is True
        assert delete_pod.fn(runbook_cluster, ns, "no-such-pod") is False
        scale_deployment.fn(runbook_cluster, ns, "web", 1)
        wait_for_rollout.fn(runbook_cluster, ns, "web", timeout_seconds=120)
        assert len(list_pods.fn(runbook_cluster, ns, "app=web")) == 1
        with pytest.raises(KubernetesApiError) as missing:
            wait_for_rollout.fn(runbook_cluster, ns, "nope", timeout_seconds=5)
        assert missing.value.status == 404
        with pytest.raises(RolloutTimeoutError, match="did not roll out within 1 s"):
            with api_client(runbook_cluster) as client:
                # a tag that never becomes ready: the stand-in's rule, an image pull error for real
                kubernetes.client.AppsV1Api(client).patch_namespaced_deployment(
                    "web",
                    ns,
                    {
                        "spec": {
                            "template": {
                                "spec": {
                                    "containers": [
                                        {
                                            "name": "app",
                                            "image": "registry.k8s.io/pause:never-ready",
                                        }
                                    ]
                                }
                            }
                        }
                    },
                )
            wait_for_rollout.fn(runbook_cluster, ns, "web", timeout_seconds=1, interval_seconds=0.2)
    finally:
        with api_client(runbook_cluster) as client:
            kubernetes.client.CoreV1Api(client).delete_namespace(ns)
