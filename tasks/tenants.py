"""Tenant domain logic: name rules, resource names, tiers, Kubernetes manifests and diffs.

Pure and typed: nothing here talks to a server or imports Prefect. The flows in
`flows/tenants.py` turn these plans into API calls through `tasks/kube_tenants.py` and
`tasks/mysql_admin.py`.

Example:
    ```python
    from tasks.tenants import TenantNames, TierSpec, namespace_manifest, validate_tenant_name

    names = TenantNames.for_tenant(validate_tenant_name("acme-corp"), domain="vibebench.io")
    names.namespace  # 'acme-corp-vibebench'
    names.database  # 'acme_corp_vibebench'
    ```
"""

from __future__ import annotations

import base64
import hashlib
import random
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, field_validator

from tasks.errors import TenantNameInvalid

Manifest = dict[str, Any]
T = TypeVar("T")

# -- names -------------------------------------------------------------------------------------

NAME_MIN = 3
NAME_MAX = 40
_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
# Characters that mean something to SQL or to a shell; named in the refusal message.
_METACHARACTERS = set(";'\"`\\$&|<>(){}[]*?!#~%=,:/ \t\r\n\x00")
RESERVED_NAMES = frozenset(
    {
        "default",
        "vibebench",
        "admin",
        "administrator",
        "root",
        "system",
        "mysql",
        "information-schema",
        "performance-schema",
        "sys",
        "test",
        "prefect",
        "vibeops",
        "ops",
        "www",
        "api",
        "app",
        "staging",
        "prod",
        "production",
        "ingress-nginx",
        "cert-manager",
        "monitoring",
    }
)
RESERVED_PREFIXES = ("kube-", "system-", "openshift-", "vibebench-", "vibeops-", "drill-")

ALLOWED_NAMES_HELP = (
    f"a tenant name must be a DNS-1123 label of {NAME_MIN}-{NAME_MAX} characters: lowercase "
    "letters a-z, digits 0-9 and '-', starting and ending with a letter or digit "
    "(e.g. 'acme-corp'), and not a reserved name "
    f"({', '.join(sorted(RESERVED_NAMES))}) or prefix ({', '.join(RESERVED_PREFIXES)})"
)


def validate_tenant_name(name: object) -> str:
    """Return `name` when it is an allowed tenant name, else raise TenantNameInvalid.

    Runs before anything is touched; the message says what was wrong and what is allowed.

    Raises:
        TenantNameInvalid: not a string, SQL/shell metacharacters, uppercase, wrong length,
            not a DNS-1123 label, or reserved.
    """
    if not isinstance(name, str) or not name:
        raise TenantNameInvalid(f"tenant name is empty; {ALLOWED_NAMES_HELP}")
    shown = name if len(name) <= 60 else name[:57] + "..."
    bad = sorted({ch for ch in name if ch in _METACHARACTERS})
    if bad:
        listed = " ".join(repr(ch) for ch in bad)
        raise TenantNameInvalid(
            f"tenant name {shown!r} contains SQL/shell metacharacters {listed}; "
            f"{ALLOWED_NAMES_HELP}"
        )
    if any(ch.isupper() for ch in name):
        raise TenantNameInvalid(
            f"tenant name {shown!r} has uppercase letters (try {name.lower()!r}); "
            f"{ALLOWED_NAMES_HELP}"
        )
    if not NAME_MIN <= len(name) <= NAME_MAX:
        raise TenantNameInvalid(
            f"tenant name {shown!r} is {len(name)} characters long; {ALLOWED_NAMES_HELP}"
        )
    if not _DNS1123_LABEL.match(name):
        raise TenantNameInvalid(
            f"tenant name {shown!r} is not a DNS-1123 label; {ALLOWED_NAMES_HELP}"
        )
    if name in RESERVED_NAMES or name.startswith(RESERVED_PREFIXES):
        raise TenantNameInvalid(f"tenant name {shown!r} is reserved; {ALLOWED_NAMES_HELP}")
    return name


MYSQL_USER_MAX = 32  # MySQL 5.7/8.0 limit (MariaDB allows 80); stay portable.


@dataclass(frozen=True)
class TenantNames:
    """Every resource name derived from one validated tenant name."""

    tenant: str
    namespace: str
    database: str
    mysql_user: str
    host: str
    tls_secret: str
    credentials_secret: str
    credentials_block: str
    ingress: str = "vibebench"
    resource_quota: str = "tenant-quota"
    limit_range: str = "tenant-limits"
    network_policy: str = "tenant-isolation"
    role: str = "vibebench-deployer"
    role_binding: str = "vibebench-deployer"

    @classmethod
    def for_tenant(cls, tenant: str, domain: str = "vibebench.io") -> TenantNames:
        """Derive the names; `tenant` is validated again here (cheap, and never skipped)."""
        tenant = validate_tenant_name(tenant)
        underscored = tenant.replace("-", "_")
        user = f"vb_{underscored}"
        if len(user) > MYSQL_USER_MAX:
            digest = hashlib.sha256(tenant.encode()).hexdigest()[:8]
            user = f"vb_{underscored[: MYSQL_USER_MAX - 3 - 9]}_{digest}"
        return cls(
            tenant=tenant,
            namespace=f"{tenant}-vibebench",
            database=f"{underscored}_vibebench",
            mysql_user=user,
            host=f"{tenant}.{domain}",
            tls_secret=f"{tenant}-tls",
            credentials_secret="vibebench-mysql",  # noqa: S106 - a Secret object name
            credentials_block=f"tenant-{tenant}-mysql",
        )


# -- tiers -------------------------------------------------------------------------------------

TierName = Literal["starter", "pro", "enterprise"]
_QUANTITY = re.compile(r"^[0-9]+(\.[0-9]+)?(m|k|Ki|Mi|Gi|Ti|Pi|Ei|M|G|T|P|E)?$")


def _check_quantity(value: str) -> str:
    if not _QUANTITY.match(value):
        raise ValueError(
            f"{value!r} is not a Kubernetes quantity; write e.g. '500m', '2', '4Gi', '100'"
        )
    return value


class TierSpec(BaseModel):
    """Quota and container limits of one tier (data, edited in the TenantTiers block)."""

    model_config = ConfigDict(extra="forbid")

    requests_cpu: str = Field(description="ResourceQuota requests.cpu, e.g. '2'.")
    requests_memory: str = Field(description="ResourceQuota requests.memory, e.g. '4Gi'.")
    limits_cpu: str = Field(description="ResourceQuota limits.cpu, e.g. '4'.")
    limits_memory: str = Field(description="ResourceQuota limits.memory, e.g. '8Gi'.")
    requests_storage: str = Field(description="ResourceQuota requests.storage, e.g. '20Gi'.")
    pods: int = Field(ge=1, le=10000, description="ResourceQuota pods.")
    services: int = Field(ge=1, le=1000, description="ResourceQuota services.")
    persistentvolumeclaims: int = Field(ge=0, le=1000, description="ResourceQuota PVCs.")
    container_default_cpu: str = Field(description="LimitRange default (limit) cpu per container.")
    container_default_memory: str = Field(description="LimitRange default memory per container.")
    container_request_cpu: str = Field(description="LimitRange defaultRequest cpu per container.")
    container_request_memory: str = Field(description="LimitRange defaultRequest memory.")
    container_max_cpu: str = Field(description="LimitRange max cpu per container.")
    container_max_memory: str = Field(description="LimitRange max memory per container.")

    @field_validator(
        "requests_cpu",
        "requests_memory",
        "limits_cpu",
        "limits_memory",
        "requests_storage",
        "container_default_cpu",
        "container_default_memory",
        "container_request_cpu",
        "container_request_memory",
        "container_max_cpu",
        "container_max_memory",
    )
    @classmethod
    def _quantity(cls, value: str) -> str:
        return _check_quantity(value)


DEFAULT_TIERS: dict[str, TierSpec] = {
    "starter": TierSpec(
        requests_cpu="1",
        requests_memory="2Gi",
        limits_cpu="2",
        limits_memory="4Gi",
        requests_storage="10Gi",
        pods=10,
        services=5,
        persistentvolumeclaims=2,
        container_default_cpu="500m",
        container_default_memory="512Mi",
        container_request_cpu="100m",
        container_request_memory="128Mi",
        container_max_cpu="1",
        container_max_memory="2Gi",
    ),
    "pro": TierSpec(
        requests_cpu="4",
        requests_memory="8Gi",
        limits_cpu="8",
        limits_memory="16Gi",
        requests_storage="50Gi",
        pods=40,
        services=20,
        persistentvolumeclaims=10,
        container_default_cpu="1",
        container_default_memory="1Gi",
        container_request_cpu="250m",
        container_request_memory="256Mi",
        container_max_cpu="2",
        container_max_memory="4Gi",
    ),
    "enterprise": TierSpec(
        requests_cpu="16",
        requests_memory="32Gi",
        limits_cpu="32",
        limits_memory="64Gi",
        requests_storage="500Gi",
        pods=200,
        services=50,
        persistentvolumeclaims=50,
        container_default_cpu="2",
        container_default_memory="2Gi",
        container_request_cpu="500m",
        container_request_memory="512Mi",
        container_max_cpu="8",
        container_max_memory="16Gi",
    ),
}


# -- cluster-wide settings the manifests need --------------------------------------------------


class NetworkSettings(BaseModel):
    """What the NetworkPolicy and Ingress are built from (filled from the TenantSettings block)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    app_port: int = Field(default=5000, ge=1, le=65535, description="App container port.")
    app_service: str = Field(default="vibebench-core", description="Service the Ingress targets.")
    ingress_namespace: str = Field(default="ingress-nginx", description="Ingress controller ns.")
    ingress_class: str = Field(default="nginx", description="IngressClass name.")
    cluster_issuer: str | None = Field(
        default=None, description="cert-manager ClusterIssuer annotation; None = no annotation."
    )
    data_namespace_labels: dict[str, str] = Field(
        default_factory=lambda: {"vibebench.io/data-plane": "true"},
        description="Labels of namespaces that host databases (or their proxies).",
    )
    database_cidrs: list[str] = Field(
        default_factory=list, description="CIDRs of managed databases outside the cluster."
    )
    private_cidrs: list[str] = Field(
        default_factory=lambda: ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"],
        description="Ranges excluded from the HTTPS egress rule (pods of other tenants).",
    )
    dns_egress: bool = Field(default=True, description="Allow DNS (53 UDP/TCP) to kube-system.")
    deployer_group: str = Field(
        default="vibebench-deployers", description="Group bound to the deployer Role."
    )


MYSQL_PORT = 3306
MONGODB_PORT = 27017
HTTPS_PORT = 443
DNS_PORT = 53

LABEL_TENANT = "vibebench.io/tenant"
LABEL_TIER = "vibebench.io/tier"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGED_BY = "vibeops"


def _labels(names: TenantNames) -> dict[str, str]:
    return {
        LABEL_TENANT: names.tenant,
        "app.kubernetes.io/part-of": "vibebench",
        LABEL_MANAGED_BY: MANAGED_BY,
    }


def _meta(name: str, names: TenantNames, namespaced: bool = True) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "labels": _labels(names)}
    if namespaced:
        meta["namespace"] = names.namespace
    return meta


def namespace_manifest(names: TenantNames, tier: str) -> Manifest:
    """The tenant namespace, labelled with tenant and tier (pod security: baseline)."""
    labels = {
        **_labels(names),
        LABEL_TIER: tier,
        "pod-security.kubernetes.io/enforce": "baseline",
    }
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": names.namespace, "labels": labels},
    }


def resource_quota_manifest(names: TenantNames, tier: TierSpec) -> Manifest:
    """The tier's ResourceQuota; tenants never get LoadBalancer or NodePort services."""
    return {
        "apiVersion": "v1",
        "kind": "ResourceQuota",
        "metadata": _meta(names.resource_quota, names),
        "spec": {
            "hard": {
                "requests.cpu": tier.requests_cpu,
                "requests.memory": tier.requests_memory,
                "limits.cpu": tier.limits_cpu,
                "limits.memory": tier.limits_memory,
                "requests.storage": tier.requests_storage,
                "pods": str(tier.pods),
                "services": str(tier.services),
                "persistentvolumeclaims": str(tier.persistentvolumeclaims),
                "services.loadbalancers": "0",
                "services.nodeports": "0",
            }
        },
    }


def limit_range_manifest(names: TenantNames, tier: TierSpec) -> Manifest:
    """The tier's per-container defaults and maxima."""
    return {
        "apiVersion": "v1",
        "kind": "LimitRange",
        "metadata": _meta(names.limit_range, names),
        "spec": {
            "limits": [
                {
                    "type": "Container",
                    "default": {
                        "cpu": tier.container_default_cpu,
                        "memory": tier.container_default_memory,
                    },
                    "defaultRequest": {
                        "cpu": tier.container_request_cpu,
                        "memory": tier.container_request_memory,
                    },
                    "max": {"cpu": tier.container_max_cpu, "memory": tier.container_max_memory},
                }
            ]
        },
    }


def network_policy_manifest(names: TenantNames, net: NetworkSettings) -> Manifest:
    """The seed's NetworkPolicy, tightened so tenants cannot reach each other.

    Ingress: only from the ingress controller's namespace, on the app port. Egress: MySQL
    (3306) and MongoDB (27017) only to data-plane namespaces / database CIDRs (the seed's
    `namespaceSelector: {}` would let a tenant reach another tenant's pods on those ports),
    HTTPS (443) only to public addresses, and DNS (53) to kube-system (without it nothing
    resolves once egress is restricted).
    """
    db_peers: list[dict[str, Any]] = [
        {"namespaceSelector": {"matchLabels": dict(net.data_namespace_labels)}}
    ]
    db_peers += [{"ipBlock": {"cidr": cidr}} for cidr in net.database_cidrs]
    egress: list[dict[str, Any]] = [
        {
            "to": db_peers,
            "ports": [
                {"protocol": "TCP", "port": MYSQL_PORT},
                {"protocol": "TCP", "port": MONGODB_PORT},
            ],
        },
        {
            "to": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": list(net.private_cidrs)}}],
            "ports": [{"protocol": "TCP", "port": HTTPS_PORT}],
        },
    ]
    if net.dns_egress:
        egress.append(
            {
                "to": [
                    {
                        "namespaceSelector": {
                            "matchLabels": {"kubernetes.io/metadata.name": "kube-system"}
                        }
                    }
                ],
                "ports": [
                    {"protocol": "UDP", "port": DNS_PORT},
                    {"protocol": "TCP", "port": DNS_PORT},
                ],
            }
        )
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _meta(names.network_policy, names),
        "spec": {
            "podSelector": {},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [
                {
                    "from": [
                        {
                            "namespaceSelector": {
                                "matchLabels": {
                                    "kubernetes.io/metadata.name": net.ingress_namespace
                                }
                            }
                        }
                    ],
                    "ports": [{"protocol": "TCP", "port": net.app_port}],
                }
            ],
            "egress": egress,
        },
    }


def role_manifest(names: TenantNames) -> Manifest:
    """The seed's deployer Role, scoped to the tenant namespace (`pods/log`, the real name)."""
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": _meta(names.role, names),
        "rules": [
            {
                "apiGroups": ["apps"],
                "resources": ["deployments"],
                "verbs": ["get", "list", "watch", "update"],
            },
            {"apiGroups": [""], "resources": ["pods", "pods/log"], "verbs": ["get", "list"]},
        ],
    }


def role_binding_manifest(names: TenantNames, net: NetworkSettings) -> Manifest:
    """Binds the deployer Role to the deployer group, in the tenant namespace only."""
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": _meta(names.role_binding, names),
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "Role",
            "name": names.role,
        },
        "subjects": [
            {"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": net.deployer_group}
        ],
    }


def credentials_secret_manifest(names: TenantNames, values: Mapping[str, str]) -> Manifest:
    """An Opaque Secret with the tenant's MySQL credentials (base64 `data`)."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": _meta(names.credentials_secret, names),
        "data": {key: base64.b64encode(val.encode()).decode() for key, val in values.items()},
    }


def ingress_manifest(names: TenantNames, net: NetworkSettings) -> Manifest:
    """Host rule `<tenant>.<domain>` with its TLS secret, to the app service."""
    metadata = _meta(names.ingress, names)
    if net.cluster_issuer:
        metadata["annotations"] = {"cert-manager.io/cluster-issuer": net.cluster_issuer}
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": metadata,
        "spec": {
            "ingressClassName": net.ingress_class,
            "tls": [{"hosts": [names.host], "secretName": names.tls_secret}],
            "rules": [
                {
                    "host": names.host,
                    "http": {
                        "paths": [
                            {
                                "path": "/",
                                "pathType": "Prefix",
                                "backend": {
                                    "service": {
                                        "name": net.app_service,
                                        "port": {"number": net.app_port},
                                    }
                                },
                            }
                        ]
                    },
                }
            ],
        },
    }


# -- comparing desired with live objects -------------------------------------------------------

# The parts of each kind that provisioning owns; everything else on a live object (status,
# server-set metadata, labels added by others) is left alone.
MANAGED_PATHS: dict[str, tuple[str, ...]] = {
    "Namespace": ("metadata.labels",),
    "ResourceQuota": ("metadata.labels", "spec.hard"),
    "LimitRange": ("metadata.labels", "spec.limits"),
    "NetworkPolicy": ("metadata.labels", "spec"),
    "Role": ("metadata.labels", "rules"),
    "RoleBinding": ("metadata.labels", "roleRef", "subjects"),
    "Secret": ("metadata.labels", "type", "data"),
    "Ingress": ("metadata.labels", "metadata.annotations", "spec"),
}
# Maps compared as "desired keys must match" (others may add keys) rather than exactly.
SUBSET_PATHS = frozenset({"metadata.labels", "metadata.annotations"})
SECRET_PATHS = frozenset({"data"})


@dataclass(frozen=True)
class FieldChange:
    """One differing field: `path` in dotted form; secret values are never kept."""

    path: str
    before: str | None
    after: str | None

    def __str__(self) -> str:
        return f"{self.path}: {self.before if self.before is not None else '(none)'} -> " + (
            self.after if self.after is not None else "(none)"
        )


def _get(obj: Mapping[str, Any], dotted: str) -> Any:
    cur: Any = obj
    for part in dotted.split("."):
        if not isinstance(cur, Mapping) or part not in cur:
            return None
        cur = cur[part]
    return cur


def _quantity_equal(left: Any, right: Any) -> bool:
    if left == right:
        return True
    if isinstance(left, str | int) and isinstance(right, str | int):
        from kubernetes.utils.quantity import parse_quantity

        try:
            return bool(parse_quantity(str(left)) == parse_quantity(str(right)))
        except ValueError:
            return False
    return False


def _flatten(value: Any, prefix: str) -> dict[str, Any]:
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key in value:
            out.update(_flatten(value[key], f"{prefix}.{key}" if prefix else str(key)))
        return out or {prefix: {}}
    if isinstance(value, list):
        out = {}
        for index, item in enumerate(value):
            out.update(_flatten(item, f"{prefix}[{index}]"))
        return out or {prefix: []}
    return {prefix: value}


def _render(value: Any) -> str | None:
    return None if value is None else str(value)


def diff_manifest(desired: Manifest, live: Manifest | None) -> list[FieldChange]:
    """Field-level differences between what we want and what the API holds.

    Only the managed paths of the kind are compared; quantities compare by value
    ("1000m" == "1"); labels and annotations compare as subsets. Secret data is reported
    by key with masked values. An absent live object gives no changes (it is a create).
    """
    if live is None:
        return []
    kind = str(desired["kind"])
    changes: list[FieldChange] = []
    for path in MANAGED_PATHS.get(kind, ("spec",)):
        want = _get(desired, path)
        have = _get(live, path)
        if path in SUBSET_PATHS:
            want_map = dict(want or {})
            have_map = dict(have or {})
            for key in sorted(want_map):
                if want_map[key] != have_map.get(key):
                    changes.append(
                        FieldChange(
                            f"{path}.{key}", _render(have_map.get(key)), _render(want_map[key])
                        )
                    )
            continue
        flat_want = _flatten(want, path) if want is not None else {}
        flat_have = _flatten(have, path) if have is not None else {}
        for key in sorted(set(flat_want) | set(flat_have)):
            before, after = flat_have.get(key), flat_want.get(key)
            if _quantity_equal(before, after):
                continue
            if path in SECRET_PATHS:
                changes.append(
                    FieldChange(
                        key,
                        None if before is None else "***",
                        None if after is None else "***",
                    )
                )
            else:
                changes.append(FieldChange(key, _render(before), _render(after)))
    return changes


# -- step results and plans --------------------------------------------------------------------


class Action(StrEnum):
    """What a step did to its resource."""

    CREATED = "created"
    UPDATED = "updated"
    UNCHANGED = "unchanged"
    DELETED = "deleted"
    ABSENT = "absent"
    WOULD_DELETE = "would delete"


class ProvisionStep(StrEnum):
    """Provisioning steps, in order; each is one task and one rollback hook."""

    NAMESPACE = "namespace"
    RESOURCE_QUOTA = "resource-quota"
    LIMIT_RANGE = "limit-range"
    NETWORK_POLICY = "network-policy"
    ROLE = "role"
    ROLE_BINDING = "role-binding"
    MYSQL_DATABASE = "mysql-database"
    MYSQL_USER = "mysql-user"
    CREDENTIALS_SECRET = "credentials-secret"  # noqa: S105 - a step name
    CREDENTIALS_BLOCK = "credentials-block"
    INGRESS = "ingress"
    REGISTRY = "registry"


@dataclass
class StepResult:
    """The outcome of one step: resource, action and the field diff (never secret values)."""

    step: str
    resource: str
    action: Action
    changes: list[FieldChange] = field(default_factory=list)
    note: str = ""

    def summary(self) -> str:
        detail = "; ".join(str(change) for change in self.changes)
        parts = [p for p in (detail, self.note) if p]
        return f"{self.action.value}" + (f" ({' | '.join(parts)})" if parts else "")


def tier_diff(old: TierSpec | None, new: TierSpec) -> list[FieldChange]:
    """Field-by-field differences between two tier specs (for the run summary)."""
    if old is None:
        return []
    before, after = old.model_dump(), new.model_dump()
    return [
        FieldChange(key, str(before[key]), str(after[key]))
        for key in after
        if not _quantity_equal(before[key], after[key])
    ]


def results_table(results: Iterable[StepResult]) -> str:
    """A Markdown table of step results (no secret values ever reach a StepResult)."""
    lines = ["| step | resource | result |", "|---|---|---|"]
    for result in results:
        summary = result.summary().replace("|", "\\|")
        lines.append(f"| {result.step} | `{result.resource}` | {summary} |")
    return "\n".join(lines)


# -- small shared helpers ----------------------------------------------------------------------


def call_with_retries(
    call: Callable[[], T],
    is_transient: Callable[[BaseException], bool],
    attempts: int = 4,
    base_delay: float = 0.5,
    max_delay: float = 8.0,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Call `call`, retrying transient failures with exponential backoff and jitter.

    Used for I/O *inside* a provisioning transaction instead of Prefect task retries: in
    Prefect 3.9 a task attempt that fails inside `transaction()` rolls back the enclosing
    transaction at once, even when a retry then succeeds.
    """
    for attempt in range(1, attempts + 1):
        try:
            return call()
        except Exception as exc:
            if attempt == attempts or not is_transient(exc):
                raise
            delay = min(max_delay, base_delay * 2 ** (attempt - 1))
            sleep(delay * (0.5 + random.random()))  # noqa: S311 - jitter, not crypto
    raise AssertionError("unreachable")  # pragma: no cover


# -- the tenants registry ----------------------------------------------------------------------

TenantStatus = Literal["active", "deprovisioned"]


class TenantRecord(BaseModel):
    """One row of the tenants registry table in the ops database."""

    tenant: str
    tier: str
    contact: str
    region: str
    status: TenantStatus = "active"
    spec: dict[str, Any] = Field(default_factory=dict)
    resources: dict[str, str] = Field(default_factory=dict)
    created_at: datetime | None = None
    updated_at: datetime | None = None
    deprovisioned_at: datetime | None = None

    def same_content(self, other: TenantRecord) -> bool:
        """True when everything but the timestamps is equal."""
        skip = {"created_at", "updated_at", "deprovisioned_at"}
        return self.model_dump(exclude=skip) == other.model_dump(exclude=skip)


def tenant_resources(names: TenantNames) -> dict[str, str]:
    """Every resource a provisioned tenant owns, by kind (stored in the registry row)."""
    ns = names.namespace
    return {
        "namespace": ns,
        "resource_quota": f"{ns}/{names.resource_quota}",
        "limit_range": f"{ns}/{names.limit_range}",
        "network_policy": f"{ns}/{names.network_policy}",
        "role": f"{ns}/{names.role}",
        "role_binding": f"{ns}/{names.role_binding}",
        "credentials_secret": f"{ns}/{names.credentials_secret}",
        "ingress": f"{ns}/{names.ingress}",
        "host": names.host,
        "mysql_database": names.database,
        "mysql_user": names.mysql_user,
        "credentials_block": f"secret/{names.credentials_block}",
    }
