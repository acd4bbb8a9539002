"""The resource types the stand-in serves, and the URL shapes of the real Kubernetes REST API."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ResourceType:
    """One REST resource: `/api/v1/...` for the core group, `/apis/<group>/<version>/...` else."""

    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool = True
    status_subresource: bool = False

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def key(self) -> str:
        return f"{self.group}/{self.version}/{self.plural}"

    @property
    def prefix(self) -> str:
        return f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"


RESOURCE_TYPES: tuple[ResourceType, ...] = (
    ResourceType("", "v1", "namespaces", "Namespace", namespaced=False, status_subresource=True),
    ResourceType("", "v1", "pods", "Pod", status_subresource=True),
    ResourceType("", "v1", "services", "Service", status_subresource=True),
    ResourceType("", "v1", "secrets", "Secret"),
    ResourceType("", "v1", "configmaps", "ConfigMap"),
    ResourceType("", "v1", "serviceaccounts", "ServiceAccount"),
    ResourceType("", "v1", "resourcequotas", "ResourceQuota", status_subresource=True),
    ResourceType("", "v1", "limitranges", "LimitRange"),
    ResourceType("", "v1", "endpoints", "Endpoints"),
    ResourceType("", "v1", "persistentvolumeclaims", "PersistentVolumeClaim", True, True),
    ResourceType("apps", "v1", "deployments", "Deployment", status_subresource=True),
    ResourceType("apps", "v1", "replicasets", "ReplicaSet", status_subresource=True),
    ResourceType("apps", "v1", "statefulsets", "StatefulSet", status_subresource=True),
    ResourceType("batch", "v1", "jobs", "Job", status_subresource=True),
    ResourceType("batch", "v1", "cronjobs", "CronJob", status_subresource=True),
    ResourceType("networking.k8s.io", "v1", "networkpolicies", "NetworkPolicy"),
    ResourceType("networking.k8s.io", "v1", "ingresses", "Ingress", status_subresource=True),
    ResourceType("rbac.authorization.k8s.io", "v1", "roles", "Role"),
    ResourceType("rbac.authorization.k8s.io", "v1", "rolebindings", "RoleBinding"),
    ResourceType("rbac.authorization.k8s.io", "v1", "clusterroles", "ClusterRole", False),
    ResourceType(
        "rbac.authorization.k8s.io", "v1", "clusterrolebindings", "ClusterRoleBinding", False
    ),
    ResourceType("policy", "v1", "poddisruptionbudgets", "PodDisruptionBudget", True, True),
)

BY_KEY: dict[str, ResourceType] = {rt.key: rt for rt in RESOURCE_TYPES}
BY_KIND: dict[str, ResourceType] = {rt.kind: rt for rt in RESOURCE_TYPES}

NAMESPACES = BY_KEY["/v1/namespaces"]
PODS = BY_KEY["/v1/pods"]
SERVICES = BY_KEY["/v1/services"]
DEPLOYMENTS = BY_KEY["apps/v1/deployments"]
REPLICASETS = BY_KEY["apps/v1/replicasets"]

# Subresources the stand-in understands (others answer 404).
SUBRESOURCES = {"status", "scale", "log", "proxy"}


@dataclass(frozen=True)
class Route:
    """A parsed request path."""

    rtype: ResourceType
    namespace: str | None
    name: str | None
    subresource: str | None = None
    rest: str = ""  # what follows `/proxy` (the proxied path)


class RouteNotFound(Exception):
    """The path names no resource the stand-in serves."""


def parse_path(path: str) -> Route:
    """Map a REST path to a resource type, namespace, name and subresource.

    Raises:
        RouteNotFound: the path is not a resource path the stand-in serves.
    """
    parts = [p for p in path.split("/") if p]
    if len(parts) >= 2 and parts[0] == "api":
        group, version, rest = "", parts[1], parts[2:]
    elif len(parts) >= 3 and parts[0] == "apis":
        group, version, rest = parts[1], parts[2], parts[3:]
    else:
        raise RouteNotFound(path)
    if not rest:
        raise RouteNotFound(path)

    def rtype_of(plural: str) -> ResourceType:
        rtype = BY_KEY.get(f"{group}/{version}/{plural}")
        if rtype is None:
            raise RouteNotFound(path)
        return rtype

    namespace: str | None = None
    if rest[0] == "namespaces" and len(rest) >= 3 and f"{group}/{version}/{rest[2]}" in BY_KEY:
        namespace, rest = rest[1], rest[2:]
        rtype = rtype_of(rest[0])
        if not rtype.namespaced:
            raise RouteNotFound(path)
    else:
        rtype = rtype_of(rest[0])
    name = rest[1] if len(rest) >= 2 else None
    if rtype.namespaced and namespace is None and name is not None:
        raise RouteNotFound(path)  # namespaced objects are only addressed inside a namespace
    sub = rest[2] if len(rest) >= 3 else None
    if sub is not None and sub not in SUBRESOURCES:
        raise RouteNotFound(path)
    if sub != "proxy" and len(rest) > 3:
        raise RouteNotFound(path)
    tail = "/" + "/".join(rest[3:]) if sub == "proxy" else ""
    if path.endswith("/") and sub == "proxy" and not tail.endswith("/"):
        tail += "/"
    return Route(rtype=rtype, namespace=namespace, name=name, subresource=sub, rest=tail)
