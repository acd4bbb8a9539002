"""A Kubernetes API server stand-in for tests (no kube-apiserver can run on these machines).

It speaks the real REST protocol on `http://127.0.0.1:<free port>`, so the code under test
uses the real clients (prefect-kubernetes `KubernetesCredentials` -> kubernetes_asyncio, or
the sync `kubernetes` client) with an ordinary kubeconfig. It is *not* a cluster: nothing
is scheduled or networked; a simulated Deployment controller (see `controller.py`) moves
status along instead.

Use it through the pytest fixture (tests/fixtures/kube.py):

```python
async def test_something(kube_api):             # a fresh server per test
    creds = kube_api.credentials()               # prefect-kubernetes KubernetesCredentials
    async with creds.get_client("core") as core:  # kubernetes_asyncio CoreV1Api
        await core.create_namespace({"metadata": {"name": "t1"}})
    assert kube_api.get("Namespace", "t1", namespace=None)["status"]["phase"] == "Active"
```

Served (GET, LIST, POST, PUT, PATCH, DELETE, DELETE-collection):
- core/v1: namespaces, pods, services, secrets, configmaps, serviceaccounts, resourcequotas,
  limitranges, endpoints, persistentvolumeclaims; apps/v1: deployments, replicasets,
  statefulsets; batch/v1: jobs, cronjobs; networking.k8s.io/v1: networkpolicies, ingresses;
  rbac.authorization.k8s.io/v1: roles, rolebindings, clusterroles, clusterrolebindings;
  policy/v1: poddisruptionbudgets. Namespaced kinds are also listable across namespaces
  (`/api/v1/pods`).
- Subresources: `status` (PUT/PATCH; the main endpoint ignores status changes, as the API
  does), `scale` (deployments/replicasets/statefulsets), `pods/<name>/log` (text, `tailLines`),
  `services/<name>[:port]/proxy/...` and `pods/<name>/proxy/...` (forwarded to a local HTTP
  server registered per image with `serve_image`), plus `/version`, `/api`, `/apis` discovery.
- `labelSelector` (`=`, `==`, `!=`, `in`, `notin`, exists, `!key`) and `fieldSelector`
  (equality on any dotted path, e.g. `metadata.name`, `status.phase`).
- PATCH: `application/strategic-merge-patch+json` (what both clients send for a dict body;
  lists merge by the usual keys: containers/env/volumes by name, ports, conditions by type),
  `application/merge-patch+json`, `application/json-patch+json` (a list body). No
  server-side apply (415), no watch (400).
- Server-set fields: `metadata.uid`, `creationTimestamp`, `resourceVersion` (one global
  counter; a PUT carrying a stale one gets 409 Conflict), `generation` on spec changes for
  workload kinds. Defaults as the API applies them (Deployment replicas/strategy/
  progressDeadlineSeconds, Service clusterIP/targetPort/protocol, Secret `stringData` folded
  into base64 `data`, namespace label `kubernetes.io/metadata.name`).
- Errors are `Status` bodies with the real codes/reasons: 404 NotFound (also for a missing
  namespace), 409 AlreadyExists / Conflict, 422 Invalid (schema, names, immutable fields such
  as Deployment `spec.selector`), 403 Forbidden (creating in a terminating namespace),
  401 Unauthorized (when the stand-in was given a `token` and the request lacks it; the
  proxy paths stay open because they play cluster networking, not the API).
- Deleting a namespace deletes everything in it (immediately, or after
  `store.settings.namespace_termination_seconds` during which it reads `Terminating`).
  Deleting an owner deletes its dependents via `ownerReferences` unless
  `propagationPolicy=Orphan`.
- Validation: every object written (by a client, a test via `put`, or the controller) is
  checked with `kubernetes-validate` in strict mode against the 1.33 schemas
  (`store.settings.schema_version`); unknown fields and bad types are answered 422 *and*
  recorded. The fixture fails the test at teardown if any recorded violation is left; a test
  that sends invalid objects on purpose claims them with `take_violations()`.

Test controls on the `KubeStandIn` object:
- `url`, `kubeconfig_dict(namespace="default")`, `credentials()` (a `KubernetesCredentials`).
- `fail_next(times=1, status=500, method=None, path=None, delay_seconds=0.0)`: answer
  `status` (a Status body) to the next `times` requests whose method matches and whose path
  matches the regex `path`; status < 400 with a delay only slows them down.
- `requests` / `requests_matching(method, path_regex)`: every request answered, in order.
- `get(kind, name, namespace="default")`, `list(kind, namespace=None, label_selector=None)`,
  `put(obj, namespace=None)` for direct inspection and seeding (kinds as `"Deployment"`...).
- `take_violations()`: claim the recorded 422s.
- `serve_image(image, base_url)`, `service_proxy_url(namespace, service, port=None)`,
  `append_pod_log(namespace, pod, *lines)`.
- `controller` (when started with one): see `controller.py` for image behaviours.
"""

from tests.k8s_standin.resources import RESOURCE_TYPES, ResourceType
from tests.k8s_standin.server import Fault, KubeStandIn, RequestRecord
from tests.k8s_standin.store import ApiError, ApiStore, StoreSettings, Violation

__all__ = [
    "RESOURCE_TYPES",
    "ApiError",
    "ApiStore",
    "Fault",
    "KubeStandIn",
    "RequestRecord",
    "ResourceType",
    "StoreSettings",
    "Violation",
]
