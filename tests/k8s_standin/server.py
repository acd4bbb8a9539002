"""The HTTP face of the stand-in: Kubernetes REST paths, Status bodies, faults, proxying."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import count
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

import httpx
import uvicorn
import yaml
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route as StarletteRoute

from tests.k8s_standin.controller import DeploymentController
from tests.k8s_standin.patching import selector_from_match_labels
from tests.k8s_standin.resources import (
    PODS,
    RESOURCE_TYPES,
    SERVICES,
    Route,
    RouteNotFound,
    parse_path,
)
from tests.k8s_standin.store import ApiError, ApiStore

if TYPE_CHECKING:
    from prefect_kubernetes.credentials import KubernetesCredentials

GIT_VERSION = "v1.33.0-vibeops-standin"
# Kinds whose DELETE answers the object itself (per the API's OpenAPI); others answer a Status.
DELETE_RETURNS_OBJECT = {
    "Namespace",
    "Pod",
    "Service",
    "ServiceAccount",
    "ResourceQuota",
    "PersistentVolumeClaim",
}


@dataclass
class Fault:
    """Answer `status` (after `delay_seconds`) to the next `remaining` matching requests."""

    status: int
    remaining: int
    method: str | None = None
    path: re.Pattern[str] | None = None
    delay_seconds: float = 0.0
    message: str = "injected fault"
    hits: int = 0

    def matches(self, method: str, path: str) -> bool:
        if self.remaining <= 0:
            return False
        if self.method and self.method.upper() != method:
            return False
        return not (self.path and not self.path.search(path))


@dataclass(frozen=True)
class RequestRecord:
    """One request the stand-in answered."""

    method: str
    path: str
    query: str
    content_type: str
    status: int
    at: float


@dataclass
class KubeStandIn:
    """A Kubernetes API server stand-in on 127.0.0.1 (see the package docstring)."""

    token: str | None = None
    store: ApiStore = field(default_factory=ApiStore)
    faults: list[Fault] = field(default_factory=list)
    requests: list[RequestRecord] = field(default_factory=list)
    image_backends: dict[str, str] = field(default_factory=dict)
    pod_logs: dict[tuple[str, str], list[str]] = field(default_factory=dict)
    controllers: list[Any] = field(default_factory=list)
    with_controller: bool = True
    controller: DeploymentController | None = None
    port: int = 0
    _http: ThreadedServer | None = None
    _rr: count = field(default_factory=count)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    # ------------------------------------------------------------ lifecycle

    def start(self) -> KubeStandIn:
        self._http = ThreadedServer(self.app()).start()
        self.port = self._http.port
        for name in ("default", "kube-system"):
            self.store.create(
                self.store.kind("Namespace"), None, {"metadata": {"name": name}}, "boot"
            )
        if self.with_controller and self.controller is None:
            self.controller = DeploymentController(self)
            self.controllers.append(self.controller)
        for controller in self.controllers:
            controller.start()
        return self

    def stop(self) -> None:
        for controller in self.controllers:
            controller.stop()
        if self._http is not None:
            self._http.stop()

    def __enter__(self) -> KubeStandIn:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------ client-side helpers

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def kubeconfig_dict(self, namespace: str = "default") -> dict[str, Any]:
        """A kubeconfig (as a dict) whose current context points at this server."""
        user: dict[str, Any] = {"token": self.token} if self.token else {"username": "standin"}
        return {
            "apiVersion": "v1",
            "kind": "Config",
            "current-context": "standin",
            "clusters": [{"name": "standin", "cluster": {"server": self.url}}],
            "users": [{"name": "standin", "user": user}],
            "contexts": [
                {
                    "name": "standin",
                    "context": {"cluster": "standin", "user": "standin", "namespace": namespace},
                }
            ],
        }

    def credentials(self) -> KubernetesCredentials:
        """A prefect-kubernetes `KubernetesCredentials` block for this server."""
        from prefect_kubernetes.credentials import KubernetesClusterConfig, KubernetesCredentials

        return KubernetesCredentials(
            cluster_config=KubernetesClusterConfig(
                config=self.kubeconfig_dict(), context_name="standin"
            )
        )

    # ------------------------------------------------------------ test controls

    def fail_next(
        self,
        times: int = 1,
        status: int = 500,
        method: str | None = None,
        path: str | None = None,
        delay_seconds: float = 0.0,
        message: str = "injected fault",
    ) -> Fault:
        """Answer `status` to the next `times` requests matching method and path regex."""
        fault = Fault(
            status=status,
            remaining=times,
            method=method,
            path=re.compile(path) if path else None,
            delay_seconds=delay_seconds,
            message=message,
        )
        with self._lock:
            self.faults.append(fault)
        return fault

    def clear_faults(self) -> None:
        with self._lock:
            self.faults.clear()

    def requests_matching(
        self, method: str | None = None, path: str | None = None
    ) -> list[RequestRecord]:
        """Requests answered so far, filtered by method and path regex."""
        pattern = re.compile(path) if path else None
        return [
            r
            for r in list(self.requests)
            if (method is None or r.method == method.upper())
            and (pattern is None or pattern.search(r.path))
        ]

    def take_violations(self) -> list[str]:
        """Return and clear the recorded 422 rejections (for tests that expect them)."""
        with self.store.lock:
            found = [str(v) for v in self.store.violations]
            self.store.violations.clear()
        return found

    def get(self, kind: str, name: str, namespace: str | None = "default") -> dict[str, Any] | None:
        """The stored object (a copy) or None."""
        return self.store.find(self.store.kind(kind), namespace, name)

    def list(
        self, kind: str, namespace: str | None = None, label_selector: str | None = None
    ) -> list[dict[str, Any]]:
        return self.store.list(self.store.kind(kind), namespace, label_selector)

    def put(self, obj: dict[str, Any], namespace: str | None = None) -> dict[str, Any]:
        """Create an object directly (validated like an API write), bypassing HTTP."""
        rtype = self.store.kind(obj["kind"])
        ns = namespace or obj.get("metadata", {}).get("namespace") or "default"
        return self.store.create(rtype, ns if rtype.namespaced else None, obj, "test")

    def serve_image(self, image: str, base_url: str) -> None:
        """Route proxy traffic for pods running `image` to a local HTTP server at `base_url`."""
        self.image_backends[image] = base_url.rstrip("/")

    def append_pod_log(self, namespace: str, pod: str, *lines: str) -> None:
        self.pod_logs.setdefault((namespace, pod), []).extend(lines)

    def service_proxy_url(self, namespace: str, service: str, port: int | str | None = None) -> str:
        """The API-server proxy URL of a Service (`.../services/<name>[:port]/proxy`)."""
        target = f"{service}:{port}" if port is not None else service
        return f"{self.url}/api/v1/namespaces/{namespace}/services/{target}/proxy"

    # ------------------------------------------------------------ HTTP

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                StarletteRoute(
                    "/{path:path}",
                    self._handle,
                    methods=["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"],
                )
            ]
        )

    async def _handle(self, request: Request) -> Response:
        path = "/" + request.path_params["path"]
        method = request.method
        content_type = request.headers.get("content-type", "").split(";")[0].strip()
        response = await self._answer(request, path, method, content_type)
        self.requests.append(
            RequestRecord(
                method, path, request.url.query, content_type, response.status_code, time.time()
            )
        )
        return response

    async def _answer(
        self, request: Request, path: str, method: str, content_type: str
    ) -> Response:
        # The proxy plays cluster networking (in-cluster DNS needs no API token), so it is open.
        if (
            self.token is not None
            and request.headers.get("authorization") != f"Bearer {self.token}"
            and "/proxy" not in path
        ):
            return _status(ApiError(401, "Unauthorized"))
        fault = self._take_fault(method, path)
        if fault is not None:
            if fault.delay_seconds:
                await asyncio.sleep(fault.delay_seconds)
            if fault.status < 400:
                fault = None
            else:
                return _status(ApiError(fault.status, fault.message))
        discovery = self._discovery(path)
        if discovery is not None:
            return JSONResponse(discovery)
        try:
            route = parse_path(path)
        except RouteNotFound:
            return _status(ApiError(404, "the server could not find the requested resource"))
        query = {k: v[-1] for k, v in parse_qs(request.url.query).items()}
        if query.get("watch") in ("1", "true"):
            return _status(ApiError(400, "watch is not supported by the Kubernetes stand-in"))
        source = f"{method} {path}"
        try:
            if route.subresource == "proxy":
                return await self._proxy(request, route)
            if route.subresource == "log":
                return self._log(route, query)
            if route.subresource == "scale":
                return JSONResponse(await self._scale(request, route, method, content_type, source))
            body = (
                await _read_body(request, content_type)
                if method in ("POST", "PUT", "PATCH")
                else None
            )
            result = await asyncio.to_thread(
                self._dispatch, route, method, query, body, content_type, source
            )
            return JSONResponse(result, status_code=201 if method == "POST" else 200)
        except ApiError as exc:
            return _status(exc)

    def _take_fault(self, method: str, path: str) -> Fault | None:
        with self._lock:
            for fault in self.faults:
                if fault.matches(method, path):
                    fault.remaining -= 1
                    fault.hits += 1
                    return fault
        return None

    def _dispatch(
        self,
        route: Route,
        method: str,
        query: dict[str, str],
        body: Any,
        content_type: str,
        source: str,
    ) -> dict[str, Any]:
        store, rtype, ns, name = self.store, route.rtype, route.namespace, route.name
        if name is None:
            if method == "GET":
                items = store.list(
                    rtype, ns, query.get("labelSelector"), query.get("fieldSelector")
                )
                for item in items:
                    item.pop("apiVersion", None)
                    item.pop("kind", None)
                return {
                    "kind": f"{rtype.kind}List",
                    "apiVersion": rtype.api_version,
                    "metadata": {"resourceVersion": store.resource_version},
                    "items": items,
                }
            if method == "POST":
                return store.create(rtype, ns, body, source)
            if method == "DELETE":
                deleted = []
                for item in store.list(
                    rtype, ns, query.get("labelSelector"), query.get("fieldSelector")
                ):
                    deleted.append(store.delete(rtype, ns, item["metadata"]["name"]))
                return {
                    "kind": f"{rtype.kind}List",
                    "apiVersion": rtype.api_version,
                    "metadata": {"resourceVersion": store.resource_version},
                    "items": deleted,
                }
            raise ApiError(405, f"{method} is not allowed on a collection")
        if method == "GET":
            return store.get(rtype, ns, name)
        if method == "PUT":
            return store.replace(rtype, ns, name, body, source, route.subresource)
        if method == "PATCH":
            return store.patch(rtype, ns, name, body, content_type, source, route.subresource)
        if method == "DELETE":
            options = body if isinstance(body, dict) else {}
            propagation = query.get("propagationPolicy") or options.get("propagationPolicy")
            deleted = store.delete(rtype, ns, name, propagation)
            if rtype.kind in DELETE_RETURNS_OBJECT:
                return deleted
            return {
                "kind": "Status",
                "apiVersion": "v1",
                "metadata": {},
                "status": "Success",
                "details": {
                    "name": name,
                    "group": rtype.group,
                    "kind": rtype.plural,
                    "uid": deleted["metadata"]["uid"],
                },
            }
        raise ApiError(405, f"{method} is not allowed on {rtype.plural}")

    async def _scale(
        self, request: Request, route: Route, method: str, content_type: str, source: str
    ) -> dict[str, Any]:
        if route.rtype.kind not in ("Deployment", "ReplicaSet", "StatefulSet"):
            raise ApiError(404, "the server could not find the requested resource")
        rtype, ns, name = route.rtype, route.namespace, route.name or ""
        if method in ("PUT", "PATCH"):
            body = await _read_body(request, content_type)
            replicas = (body.get("spec") or {}).get("replicas") if isinstance(body, dict) else None
            if not isinstance(replicas, int) or replicas < 0:
                raise ApiError(422, "spec.replicas: must be a non-negative integer", "Invalid")
            await asyncio.to_thread(
                self.store.patch,
                rtype,
                ns,
                name,
                {"spec": {"replicas": replicas}},
                "application/merge-patch+json",
                source,
            )
        elif method != "GET":
            raise ApiError(405, f"{method} is not allowed on scale")
        obj = self.store.get(rtype, ns, name)
        return {
            "kind": "Scale",
            "apiVersion": "autoscaling/v1",
            "metadata": {
                "name": name,
                "namespace": ns,
                "uid": obj["metadata"]["uid"],
                "resourceVersion": obj["metadata"]["resourceVersion"],
                "creationTimestamp": obj["metadata"]["creationTimestamp"],
            },
            "spec": {"replicas": obj["spec"].get("replicas", 1)},
            "status": {
                "replicas": (obj.get("status") or {}).get("replicas", 0),
                "selector": selector_from_match_labels(obj["spec"].get("selector")),
            },
        }

    def _log(self, route: Route, query: dict[str, str]) -> Response:
        if route.rtype is not PODS or route.name is None:
            raise ApiError(404, "the server could not find the requested resource")
        self.store.get(PODS, route.namespace, route.name)
        lines = list(self.pod_logs.get((route.namespace or "", route.name), []))
        if "tailLines" in query:
            lines = lines[-int(query["tailLines"]) :] if int(query["tailLines"]) else []
        return PlainTextResponse("".join(f"{line}\n" for line in lines))

    def ready_pods_for_service(self, namespace: str, service: str) -> list[dict[str, Any]]:
        """Ready pods a Service's selector picks (what its Endpoints would list)."""
        svc = self.store.get(SERVICES, namespace, service)
        selector = svc.get("spec", {}).get("selector") or {}
        if not selector:
            return []
        pods = self.store.list(PODS, namespace, ",".join(f"{k}={v}" for k, v in selector.items()))
        return [p for p in pods if _pod_ready(p) and "deletionTimestamp" not in p["metadata"]]

    async def _proxy(self, request: Request, route: Route) -> Response:
        ns, name = route.namespace or "", (route.name or "").split(":")[0]
        if route.rtype is SERVICES:
            pods = self.ready_pods_for_service(ns, name)
            if not pods:
                raise ApiError(503, f'no endpoints available for service "{name}"')
            pod = pods[next(self._rr) % len(pods)]
        elif route.rtype is PODS:
            pod = self.store.get(PODS, ns, name)
        else:
            raise ApiError(404, "the server could not find the requested resource")
        image = pod["spec"]["containers"][0]["image"]
        backend = self.image_backends.get(image)
        if backend is None:
            raise ApiError(503, f"no local server plays image {image!r} (call serve_image)")
        target = backend + (route.rest or "/")
        if request.url.query:
            target += "?" + request.url.query
        try:
            async with httpx.AsyncClient(timeout=30) as client:
                upstream = await client.request(
                    request.method,
                    target,
                    content=await request.body(),
                    headers={"x-standin-pod": pod["metadata"]["name"]},
                )
        except httpx.HTTPError as exc:
            raise ApiError(503, f"error trying to reach service: {exc}") from None
        headers = {k: v for k, v in upstream.headers.items() if k.lower() == "content-type"}
        headers["x-standin-pod"] = pod["metadata"]["name"]
        return Response(upstream.content, status_code=upstream.status_code, headers=headers)

    def _discovery(self, path: str) -> dict[str, Any] | None:
        path = path.rstrip("/") or "/"
        if path == "/version":
            return {
                "major": "1",
                "minor": "33",
                "gitVersion": GIT_VERSION,
                "platform": "linux/amd64",
            }
        if path == "/api":
            return {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []}
        if path == "/apis":
            groups = sorted({(rt.group, rt.version) for rt in RESOURCE_TYPES if rt.group})
            return {
                "kind": "APIGroupList",
                "apiVersion": "v1",
                "groups": [
                    {
                        "name": g,
                        "versions": [{"groupVersion": f"{g}/{v}", "version": v}],
                        "preferredVersion": {"groupVersion": f"{g}/{v}", "version": v},
                    }
                    for g, v in groups
                ],
            }
        for rt_group in {(rt.group, rt.version) for rt in RESOURCE_TYPES}:
            group, version = rt_group
            prefix = f"/apis/{group}/{version}" if group else f"/api/{version}"
            if path == prefix:
                return {
                    "kind": "APIResourceList",
                    "apiVersion": "v1",
                    "groupVersion": f"{group}/{version}" if group else version,
                    "resources": [
                        {
                            "name": rt.plural,
                            "singularName": rt.kind.lower(),
                            "namespaced": rt.namespaced,
                            "kind": rt.kind,
                            "verbs": [
                                "create",
                                "delete",
                                "deletecollection",
                                "get",
                                "list",
                                "patch",
                                "update",
                            ],
                        }
                        for rt in RESOURCE_TYPES
                        if (rt.group, rt.version) == rt_group
                    ],
                }
        return None


class ThreadedServer:
    """Any ASGI app served by uvicorn in a daemon thread on a free 127.0.0.1 port."""

    def __init__(self, app: Any):
        self.app = app
        self.port = 0
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_seconds: float = 15) -> ThreadedServer:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self.port = int(sock.getsockname()[1])
        config = uvicorn.Config(
            self.app, log_level="warning", access_log=False, lifespan="off", timeout_keep_alive=30
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + timeout_seconds
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError(f"local HTTP server did not start within {timeout_seconds} s")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)


@contextlib.contextmanager
def serve_app(app: Any) -> Iterator[str]:
    """Serve an ASGI app on a free local port for the duration of the block; yields its URL."""
    server = ThreadedServer(app).start()
    try:
        yield server.url
    finally:
        server.stop()


def _pod_ready(pod: dict[str, Any]) -> bool:
    conditions = (pod.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


async def _read_body(request: Request, content_type: str) -> Any:
    raw = await request.body()
    if not raw:
        return None
    try:
        if "yaml" in content_type:
            return yaml.safe_load(raw)
        return json.loads(raw)
    except (ValueError, yaml.YAMLError) as exc:
        raise ApiError(400, f"the request body could not be decoded: {exc}") from None


def _status(error: ApiError) -> JSONResponse:
    headers = {"Retry-After": "1"} if error.code in (429, 503) else None
    return JSONResponse(error.status_body(), status_code=error.code, headers=headers)
