"""The stand-in's object store: what the Kubernetes API server does with objects.

Thread-safe (one lock): the HTTP server, the simulated controllers and the tests all use it.
Every object written is checked with `kubernetes-validate` in strict mode (unknown fields
are errors); each rejection is answered 422 *and* recorded in `violations`.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import re
import secrets
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import kubernetes_validate

from tests.k8s_standin.patching import (
    PatchError,
    field_selector_matches,
    json_patch,
    label_selector_matches,
    merge_patch,
    strategic_merge,
)
from tests.k8s_standin.resources import BY_KIND, NAMESPACES, ResourceType

Obj = dict[str, Any]

DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
LABEL_NAMED = {"Namespace", "Service"}
GENERATION_KINDS = {
    "Deployment",
    "ReplicaSet",
    "StatefulSet",
    "Job",
    "CronJob",
    "Ingress",
    "NetworkPolicy",
    "PodDisruptionBudget",
}
IMMUTABLE_FIELDS = {
    "Deployment": [("spec", "selector")],
    "ReplicaSet": [("spec", "selector")],
    "StatefulSet": [("spec", "selector")],
    "Service": [("spec", "clusterIP")],
}


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class ApiError(Exception):
    """An error the API answers with a `Status` body."""

    REASONS = {
        400: "BadRequest",
        401: "Unauthorized",
        403: "Forbidden",
        404: "NotFound",
        405: "MethodNotAllowed",
        409: "AlreadyExists",
        415: "UnsupportedMediaType",
        422: "Invalid",
        429: "TooManyRequests",
        500: "InternalError",
        503: "ServiceUnavailable",
    }

    def __init__(
        self,
        code: int,
        message: str,
        reason: str | None = None,
        details: dict[str, Any] | None = None,
    ):
        super().__init__(message)
        self.code = code
        self.message = message
        self.reason = reason or self.REASONS.get(code, "Unknown")
        self.details = details or {}

    def status_body(self) -> Obj:
        return {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "details": self.details,
            "code": self.code,
        }


@dataclass
class Violation:
    """An object the API refused as invalid (422): a bug in whoever sent it, unless expected."""

    source: str  # "POST /apis/apps/v1/namespaces/x/deployments" or "controller"
    kind: str
    name: str
    message: str
    field_path: str

    def __str__(self) -> str:
        return f"{self.source}: {self.kind} {self.name!r}: {self.field_path}: {self.message}"


@dataclass
class StoreSettings:
    """Knobs a test may turn (all have real-cluster-like defaults)."""

    schema_version: str = "1.33"
    namespace_termination_seconds: float = 0.0


@dataclass
class ApiStore:
    """All objects, keyed by (resource key, namespace or "", name)."""

    settings: StoreSettings = field(default_factory=StoreSettings)
    objects: dict[tuple[str, str, str], Obj] = field(default_factory=dict)
    violations: list[Violation] = field(default_factory=list)
    lock: threading.RLock = field(default_factory=threading.RLock)
    _rv: int = 0
    _ip: int = 10
    _terminating: dict[str, float] = field(default_factory=dict)
    on_write: list[Callable[[ResourceType, Obj], None]] = field(default_factory=list)

    # ------------------------------------------------------------ helpers

    def _next_rv(self) -> str:
        self._rv += 1
        return str(self._rv)

    @property
    def resource_version(self) -> str:
        return str(self._rv)

    def _key(self, rtype: ResourceType, namespace: str | None, name: str) -> tuple[str, str, str]:
        return (rtype.key, namespace or "" if rtype.namespaced else "", name)

    def _not_found(self, rtype: ResourceType, name: str) -> ApiError:
        resource = rtype.plural if not rtype.group else f"{rtype.plural}.{rtype.group}"
        return ApiError(
            404,
            f'{resource} "{name}" not found',
            details={"name": name, "group": rtype.group, "kind": rtype.plural},
        )

    def _invalid(self, rtype: ResourceType, name: str, field_path: str, message: str, source: str):
        self.violations.append(Violation(source, rtype.kind, name, message, field_path))
        return ApiError(
            422,
            f'{rtype.kind} "{name}" is invalid: {field_path}: {message}',
            details={
                "name": name,
                "group": rtype.group,
                "kind": rtype.kind,
                "causes": [
                    {"reason": "FieldValueInvalid", "message": message, "field": field_path}
                ],
            },
        )

    def validate(self, rtype: ResourceType, obj: Obj, source: str) -> None:
        """Schema-check `obj` (strict: unknown fields fail) and the name rules; raise 422."""
        name = obj.get("metadata", {}).get("name", "")
        try:
            kubernetes_validate.validate(obj, self.settings.schema_version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            path = ".".join(str(p) for p in exc.absolute_path) or "<root>"
            raise self._invalid(rtype, name, path, exc.message, source) from None
        pattern, limit = (
            (DNS1123_LABEL, 63) if rtype.kind in LABEL_NAMED else (DNS1123_SUBDOMAIN, 253)
        )
        if not pattern.match(name) or len(name) > limit:
            raise self._invalid(
                rtype,
                name,
                "metadata.name",
                f"Invalid value: {name!r}: a lowercase RFC 1123 "
                f"{'label' if limit == 63 else 'subdomain'} of at most {limit} characters",
                source,
            )

    def _namespace_usable(self, namespace: str | None, rtype: ResourceType) -> None:
        if not rtype.namespaced:
            return
        self._reap_terminated()
        if (NAMESPACES.key, "", namespace or "") not in self.objects:
            raise ApiError(
                404,
                f'namespaces "{namespace}" not found',
                details={"name": namespace, "kind": "namespaces"},
            )
        if namespace in self._terminating:
            raise ApiError(
                403,
                f"unable to create new content in namespace {namespace} because it is being "
                "terminated",
            )

    # ------------------------------------------------------------ defaults

    def _apply_defaults(self, rtype: ResourceType, obj: Obj) -> None:
        spec = obj.get("spec")
        kind = rtype.kind
        if kind in ("Deployment", "ReplicaSet", "StatefulSet"):
            obj.setdefault("status", {} if kind == "Deployment" else {"replicas": 0})
        if kind == "Namespace":
            obj.setdefault("spec", {"finalizers": ["kubernetes"]})
            obj.setdefault("status", {"phase": "Active"})
            obj["metadata"].setdefault("labels", {})["kubernetes.io/metadata.name"] = obj[
                "metadata"
            ]["name"]
        elif kind == "Deployment" and isinstance(spec, dict):
            spec.setdefault("replicas", 1)
            spec.setdefault("revisionHistoryLimit", 10)
            spec.setdefault("progressDeadlineSeconds", 600)
            spec.setdefault(
                "strategy",
                {
                    "type": "RollingUpdate",
                    "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"},
                },
            )
            self._default_pod_spec(spec.get("template", {}).get("spec"))
        elif kind == "ReplicaSet" and isinstance(spec, dict):
            spec.setdefault("replicas", 1)
            self._default_pod_spec(spec.get("template", {}).get("spec"))
        elif kind == "Pod":
            self._default_pod_spec(spec)
            obj.setdefault("status", {"phase": "Pending"})
        elif kind == "Service" and isinstance(spec, dict):
            spec.setdefault("type", "ClusterIP")
            spec.setdefault("sessionAffinity", "None")
            if "clusterIP" not in spec:
                self._ip += 1
                spec["clusterIP"] = f"10.96.{self._ip // 250}.{self._ip % 250 + 1}"
                spec["clusterIPs"] = [spec["clusterIP"]]
            for port in spec.get("ports") or []:
                port.setdefault("protocol", "TCP")
                port.setdefault("targetPort", port.get("port"))
            obj.setdefault("status", {"loadBalancer": {}})
        elif kind == "Secret":
            string_data = obj.pop("stringData", None) or {}
            data = obj.setdefault("data", {}) if string_data else obj.get("data")
            for key, value in string_data.items():
                data[key] = base64.b64encode(str(value).encode()).decode()
            obj.setdefault("type", "Opaque")

    @staticmethod
    def _default_pod_spec(pod_spec: Obj | None) -> None:
        if not isinstance(pod_spec, dict):
            return
        pod_spec.setdefault("restartPolicy", "Always")
        pod_spec.setdefault("dnsPolicy", "ClusterFirst")
        pod_spec.setdefault("terminationGracePeriodSeconds", 30)
        for container in pod_spec.get("containers") or []:
            image = str(container.get("image", ""))
            latest = ":" not in image.rsplit("/", 1)[-1] or image.endswith(":latest")
            container.setdefault("imagePullPolicy", "Always" if latest else "IfNotPresent")

    # ------------------------------------------------------------ reads

    def get(self, rtype: ResourceType, namespace: str | None, name: str) -> Obj:
        with self.lock:
            self._reap_terminated()
            obj = self.objects.get(self._key(rtype, namespace, name))
            if obj is None:
                raise self._not_found(rtype, name)
            return copy.deepcopy(obj)

    def find(self, rtype: ResourceType, namespace: str | None, name: str) -> Obj | None:
        """Like `get` but None when missing (for tests and controllers)."""
        try:
            return self.get(rtype, namespace, name)
        except ApiError:
            return None

    def list(
        self,
        rtype: ResourceType,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> list[Obj]:
        with self.lock:
            self._reap_terminated()
            items = []
            for (key, ns, _), obj in sorted(self.objects.items()):
                if key != rtype.key or (
                    namespace is not None and rtype.namespaced and ns != namespace
                ):
                    continue
                try:
                    if not label_selector_matches(label_selector, obj["metadata"].get("labels")):
                        continue
                except ValueError as exc:
                    raise ApiError(400, str(exc)) from None
                if not field_selector_matches(field_selector, obj):
                    continue
                items.append(copy.deepcopy(obj))
            return items

    # ------------------------------------------------------------ writes

    def create(self, rtype: ResourceType, namespace: str | None, body: Obj, source: str) -> Obj:
        with self.lock:
            obj = self._with_type(rtype, body)
            meta = obj.setdefault("metadata", {})
            if not meta.get("name") and meta.get("generateName"):
                meta["name"] = meta["generateName"] + secrets.token_hex(3)[:5]
            if not meta.get("name"):
                raise ApiError(422, "name or generateName is required", reason="Invalid")
            if rtype.namespaced:
                if meta.get("namespace") not in (None, namespace):
                    raise ApiError(
                        400,
                        "the namespace of the provided object does not match the namespace sent "
                        "on the request",
                    )
                meta["namespace"] = namespace
                self._namespace_usable(namespace, rtype)
            else:
                meta.pop("namespace", None)
            key = self._key(rtype, namespace, meta["name"])
            if key in self.objects:
                resource = rtype.plural if not rtype.group else f"{rtype.plural}.{rtype.group}"
                raise ApiError(
                    409,
                    f'{resource} "{meta["name"]}" already exists',
                    details={"name": meta["name"], "group": rtype.group, "kind": rtype.plural},
                )
            for server_field in ("uid", "resourceVersion", "creationTimestamp", "generation"):
                meta.pop(server_field, None)
            self._apply_defaults(rtype, obj)
            meta["uid"] = str(uuid.uuid4())
            meta["creationTimestamp"] = now_rfc3339()
            if rtype.kind in GENERATION_KINDS:
                meta["generation"] = 1
            self.validate(rtype, obj, source)
            meta["resourceVersion"] = self._next_rv()
            self.objects[key] = obj
            self._notify(rtype, obj)
            return copy.deepcopy(obj)

    def replace(
        self,
        rtype: ResourceType,
        namespace: str | None,
        name: str,
        body: Obj,
        source: str,
        subresource: str | None = None,
    ) -> Obj:
        with self.lock:
            key = self._key(rtype, namespace, name)
            current = self.objects.get(key)
            if current is None:
                raise self._not_found(rtype, name)
            obj = self._with_type(rtype, body)
            meta = obj.setdefault("metadata", {})
            if meta.get("name", name) != name:
                raise ApiError(
                    400,
                    f"the name of the object ({meta.get('name')}) does not match "
                    f"the name on the URL ({name})",
                )
            sent_rv = meta.get("resourceVersion")
            if sent_rv and sent_rv != current["metadata"]["resourceVersion"]:
                raise ApiError(
                    409,
                    f'Operation cannot be fulfilled on {rtype.plural} "{name}": the object has '
                    "been modified; please apply your changes to the latest version and try again",
                    reason="Conflict",
                    details={"name": name, "kind": rtype.plural},
                )
            return self._commit(rtype, key, current, obj, source, subresource)

    def patch(
        self,
        rtype: ResourceType,
        namespace: str | None,
        name: str,
        patch_body: Any,
        content_type: str,
        source: str,
        subresource: str | None = None,
    ) -> Obj:
        with self.lock:
            key = self._key(rtype, namespace, name)
            current = self.objects.get(key)
            if current is None:
                raise self._not_found(rtype, name)
            try:
                if content_type == "application/json-patch+json":
                    obj = json_patch(current, patch_body)
                elif content_type == "application/merge-patch+json":
                    obj = merge_patch(current, patch_body)
                elif content_type == "application/strategic-merge-patch+json":
                    obj = strategic_merge(current, patch_body)
                else:
                    raise ApiError(
                        415,
                        f"the body of the request was in an unknown format - accepted media "
                        f"types include: application/json-patch+json, "
                        f"application/merge-patch+json, application/strategic-merge-patch+json "
                        f"(got {content_type!r}; the stand-in has no server-side apply)",
                    )
            except PatchError as exc:
                raise ApiError(422, str(exc), reason="Invalid") from None
            if not isinstance(obj, dict):
                raise ApiError(422, "patch did not produce an object", reason="Invalid")
            obj.setdefault("metadata", {})["name"] = name
            return self._commit(rtype, key, current, obj, source, subresource)

    def _commit(
        self,
        rtype: ResourceType,
        key: tuple[str, str, str],
        current: Obj,
        obj: Obj,
        source: str,
        subresource: str | None,
    ) -> Obj:
        meta = obj["metadata"]
        for server_field in ("uid", "creationTimestamp", "namespace", "generation"):
            if server_field in current["metadata"]:
                meta[server_field] = current["metadata"][server_field]
            else:
                meta.pop(server_field, None)
        if rtype.status_subresource:
            if subresource == "status":
                obj = {**copy.deepcopy(current), "status": obj.get("status", {})}
                meta = obj["metadata"]
            elif "status" in current:
                obj["status"] = copy.deepcopy(current["status"])
            else:
                obj.pop("status", None)
        for path in IMMUTABLE_FIELDS.get(rtype.kind, []):
            before, after = _dig(current, path), _dig(obj, path)
            if after is not None and before != after:
                raise self._invalid(
                    rtype, meta.get("name", ""), ".".join(path), "field is immutable", source
                )
        self._apply_defaults(rtype, obj)
        if rtype.kind in GENERATION_KINDS and _spec_changed(current, obj):
            meta["generation"] = int(current["metadata"].get("generation", 1)) + 1
        self.validate(rtype, obj, source)
        if _without_rv(obj) == _without_rv(current):
            return copy.deepcopy(current)  # a no-op write keeps the resourceVersion, like the API
        meta["resourceVersion"] = self._next_rv()
        self.objects[key] = obj
        self._notify(rtype, obj)
        return copy.deepcopy(obj)

    def delete(
        self,
        rtype: ResourceType,
        namespace: str | None,
        name: str,
        propagation: str | None = None,
    ) -> Obj:
        """Delete one object (and its dependents unless `propagation == "Orphan"`)."""
        with self.lock:
            self._reap_terminated()
            key = self._key(rtype, namespace, name)
            obj = self.objects.get(key)
            if obj is None:
                raise self._not_found(rtype, name)
            if rtype.kind == "Namespace":
                return self._delete_namespace(name)
            del self.objects[key]
            if propagation != "Orphan":
                self._collect_dependents(obj["metadata"]["uid"])
            return copy.deepcopy(obj)

    def _collect_dependents(self, owner_uid: str) -> None:
        for key, obj in list(self.objects.items()):
            owners = obj["metadata"].get("ownerReferences") or []
            if any(o.get("uid") == owner_uid for o in owners) and key in self.objects:
                del self.objects[key]
                self._collect_dependents(obj["metadata"]["uid"])

    def _delete_namespace(self, name: str) -> Obj:
        key = (NAMESPACES.key, "", name)
        obj = self.objects[key]
        meta = obj["metadata"]
        meta.setdefault("deletionTimestamp", now_rfc3339())
        obj["status"] = {"phase": "Terminating"}
        meta["resourceVersion"] = self._next_rv()
        self._terminating.setdefault(
            name, time.monotonic() + self.settings.namespace_termination_seconds
        )
        result = copy.deepcopy(obj)
        for other in [k for k in self.objects if k[1] == name and k[0] != NAMESPACES.key]:
            del self.objects[other]
        self._reap_terminated()
        return result

    def _reap_terminated(self) -> None:
        now = time.monotonic()
        for name, due in list(self._terminating.items()):
            if now >= due:
                self.objects.pop((NAMESPACES.key, "", name), None)
                for other in [k for k in self.objects if k[1] == name]:
                    del self.objects[other]
                del self._terminating[name]

    # ------------------------------------------------------------ internals

    def _with_type(self, rtype: ResourceType, body: Any) -> Obj:
        if not isinstance(body, dict):
            raise ApiError(400, "the request body must be a JSON object")
        obj = copy.deepcopy(body)
        if obj.setdefault("apiVersion", rtype.api_version) != rtype.api_version or (
            obj.setdefault("kind", rtype.kind) != rtype.kind
        ):
            raise ApiError(
                400,
                f"the API version in the data ({obj['apiVersion']}) and kind ({obj['kind']}) do "
                f"not match the URL's {rtype.api_version} {rtype.kind}",
            )
        return obj

    def _notify(self, rtype: ResourceType, obj: Obj) -> None:
        for callback in self.on_write:
            callback(rtype, obj)

    def kind(self, kind: str) -> ResourceType:
        return BY_KIND[kind]


def _dig(obj: Obj, path: tuple[str, ...]) -> Any:
    node: Any = obj
    for part in path:
        node = node.get(part) if isinstance(node, dict) else None
    return node


def _spec_changed(before: Obj, after: Obj) -> bool:
    def body(o: Obj) -> Obj:
        return {k: v for k, v in o.items() if k not in ("metadata", "status")}

    return body(before) != body(after)


def _without_rv(obj: Obj) -> Obj:
    clone = copy.deepcopy(obj)
    clone["metadata"].pop("resourceVersion", None)
    return clone


def template_hash(template: Obj) -> str:
    """A stable short hash of a pod template (the `pod-template-hash` label)."""
    digest = hashlib.sha256(json.dumps(template, sort_keys=True).encode()).hexdigest()
    return digest[:10]
