"""A simulated Deployment + ReplicaSet controller for the stand-in.

It runs in a thread, ticking every `tick_seconds`, and does what kube-controller-manager
would, far enough for rollout logic to be exercised:

- A Deployment whose pod template changed (an image patch, or a rollout restart through
  the `kubectl.kubernetes.io/restartedAt` template annotation) gets a ReplicaSet
  `<deployment>-<pod-template-hash>` (an existing one with the same template is reused, as a
  rollback does) and the `deployment.kubernetes.io/revision` annotation moves on.
- The new ReplicaSet is scaled to `spec.replicas` at once; old ReplicaSets keep
  `replicas - available(new)` pods, so the old version keeps serving until the new one is
  available (and forever if it never is). `Recreate` scales old ones to 0 first.
- ReplicaSets create/delete Pods to match `spec.replicas`; a deleted Pod is replaced.
- Pods become Running, and Ready after `pod_ready_seconds`, unless their image matches a
  behaviour rule: by default an image containing `never-ready` runs but never passes its
  readiness probe, one containing `crashloop` sits in CrashLoopBackOff. Tests add rules
  with `behave(substring, ready=..., crash=..., ready_after_seconds=...)`.
- Deployment status: `observedGeneration`, `replicas`, `updatedReplicas`, `readyReplicas`,
  `availableReplicas`, `unavailableReplicas`, and conditions `Available`
  (MinimumReplicasAvailable, honouring maxUnavailable) and `Progressing`
  (ReplicaSetUpdated -> NewReplicaSetAvailable, or False/ProgressDeadlineExceeded when no
  progress was made for `spec.progressDeadlineSeconds`).
"""

from __future__ import annotations

import math
import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tests.k8s_standin.resources import DEPLOYMENTS, PODS, REPLICASETS
from tests.k8s_standin.store import ApiError, now_rfc3339, template_hash

if TYPE_CHECKING:
    from tests.k8s_standin.server import KubeStandIn

REVISION = "deployment.kubernetes.io/revision"
HASH_LABEL = "pod-template-hash"
SOURCE = "controller"
MERGE = "application/merge-patch+json"


@dataclass
class ImageBehaviour:
    """How pods running a matching image behave."""

    ready: bool = True
    crash: bool = False
    ready_after_seconds: float | None = None


@dataclass
class _Progress:
    template: str
    last_progress: float
    last_available: int


@dataclass
class DeploymentController:
    """Reconciles Deployments -> ReplicaSets -> Pods in the stand-in's store."""

    standin: KubeStandIn
    tick_seconds: float = 0.05
    pod_ready_seconds: float = 0.3
    rules: list[tuple[str, ImageBehaviour]] = field(
        default_factory=lambda: [
            ("never-ready", ImageBehaviour(ready=False)),
            ("crashloop", ImageBehaviour(ready=False, crash=True)),
        ]
    )
    _pod_born: dict[str, float] = field(default_factory=dict)
    _progress: dict[str, _Progress] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    errors: list[str] = field(default_factory=list)

    def behave(
        self,
        image_substring: str,
        ready: bool = True,
        crash: bool = False,
        ready_after_seconds: float | None = None,
    ) -> None:
        """Pods whose image contains `image_substring` behave as given (newest rule wins)."""
        self.rules.insert(0, (image_substring, ImageBehaviour(ready, crash, ready_after_seconds)))

    def behaviour_for(self, image: str) -> ImageBehaviour:
        for substring, behaviour in self.rules:
            if substring in image:
                return behaviour
        return ImageBehaviour()

    # ------------------------------------------------------------ thread

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._run, name="kube-standin-controller", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.wait(self.tick_seconds):
            try:
                self.reconcile_once()
            except ApiError as exc:  # a conflicting write from a client: retried next tick
                if exc.code not in (404, 409):
                    self._record(f"{exc.code} {exc.message}")
            except Exception as exc:  # pragma: no cover - surfaced through `errors`
                self._record(repr(exc))

    def _record(self, error: str) -> None:
        if error not in self.errors[-5:]:  # one line per distinct failure, not one per tick
            self.errors.append(error)

    # ------------------------------------------------------------ reconcile

    def reconcile_once(self) -> None:
        store = self.standin.store
        with store.lock:
            for deployment in store.list(DEPLOYMENTS):
                self._reconcile_deployment(deployment)
            for rs in store.list(REPLICASETS):
                self._reconcile_replicaset(rs)
            for deployment in store.list(DEPLOYMENTS):
                self._update_deployment_status(deployment)

    def _owned(self, kind: Any, namespace: str, owner_uid: str) -> list[dict[str, Any]]:
        return [
            o
            for o in self.standin.store.list(kind, namespace)
            if any(
                ref.get("uid") == owner_uid for ref in o["metadata"].get("ownerReferences") or []
            )
        ]

    def _reconcile_deployment(self, deployment: dict[str, Any]) -> None:
        store = self.standin.store
        meta, spec = deployment["metadata"], deployment["spec"]
        if spec.get("paused"):
            return
        ns, uid = meta["namespace"], meta["uid"]
        template = spec["template"]
        thash = template_hash(template)
        owned = self._owned(REPLICASETS, ns, uid)
        revisions = [int(rs["metadata"].get("annotations", {}).get(REVISION, "0")) for rs in owned]
        current = next(
            (rs for rs in owned if rs["metadata"]["labels"].get(HASH_LABEL) == thash), None
        )
        max_revision = max(revisions, default=0)
        if current is None:
            current = store.create(
                REPLICASETS, ns, self._replicaset_for(deployment, thash, max_revision + 1), SOURCE
            )
        elif int(current["metadata"].get("annotations", {}).get(REVISION, "0")) < max_revision:
            current = store.patch(
                REPLICASETS,
                ns,
                current["metadata"]["name"],
                {"metadata": {"annotations": {REVISION: str(max_revision + 1)}}},
                MERGE,
                SOURCE,
            )
        revision = current["metadata"]["annotations"][REVISION]
        if (meta.get("annotations") or {}).get(REVISION) != revision:
            store.patch(
                DEPLOYMENTS,
                ns,
                meta["name"],
                {"metadata": {"annotations": {REVISION: revision}}},
                MERGE,
                SOURCE,
            )
        desired = int(spec.get("replicas", 1))
        self._scale(current, desired)
        new_available = int((current.get("status") or {}).get("availableReplicas", 0))
        recreate = (spec.get("strategy") or {}).get("type") == "Recreate"
        keep_old = 0 if recreate else max(desired - new_available, 0)
        old = sorted(
            (rs for rs in owned if rs["metadata"]["uid"] != current["metadata"]["uid"]),
            key=lambda rs: int(rs["metadata"].get("annotations", {}).get(REVISION, "0")),
            reverse=True,
        )
        for rs in old:  # newest first; never scaled up, only down as the new one serves
            target = min(int(rs["spec"].get("replicas", 0)), keep_old)
            self._scale(rs, target)
            keep_old -= target
        limit = int(spec.get("revisionHistoryLimit", 10))
        idle_old = [rs for rs in old if int(rs["spec"].get("replicas", 0)) == 0]
        for rs in idle_old[limit:]:
            store.delete(REPLICASETS, ns, rs["metadata"]["name"])

    def _replicaset_for(
        self, deployment: dict[str, Any], thash: str, revision: int
    ) -> dict[str, Any]:
        meta, spec = deployment["metadata"], deployment["spec"]
        template = {**spec["template"]}
        template_meta = dict(template.get("metadata") or {})
        template_meta["labels"] = {**(template_meta.get("labels") or {}), HASH_LABEL: thash}
        template["metadata"] = template_meta
        selector = dict(spec["selector"])
        selector["matchLabels"] = {**(selector.get("matchLabels") or {}), HASH_LABEL: thash}
        return {
            "apiVersion": "apps/v1",
            "kind": "ReplicaSet",
            "metadata": {
                "name": f"{meta['name']}-{thash}",
                "labels": template_meta["labels"],
                "annotations": {REVISION: str(revision)},
                "ownerReferences": [
                    {
                        "apiVersion": "apps/v1",
                        "kind": "Deployment",
                        "name": meta["name"],
                        "uid": meta["uid"],
                        "controller": True,
                        "blockOwnerDeletion": True,
                    }
                ],
            },
            "spec": {"replicas": 0, "selector": selector, "template": template},
        }

    def _scale(self, rs: dict[str, Any], replicas: int) -> None:
        if int(rs["spec"].get("replicas", 0)) != replicas:
            self.standin.store.patch(
                REPLICASETS,
                rs["metadata"]["namespace"],
                rs["metadata"]["name"],
                {"spec": {"replicas": replicas}},
                MERGE,
                SOURCE,
            )

    def _reconcile_replicaset(self, rs: dict[str, Any]) -> None:
        store = self.standin.store
        meta = rs["metadata"]
        ns = meta["namespace"]
        pods = [p for p in self._owned(PODS, ns, meta["uid"])]
        desired = int(rs["spec"].get("replicas", 1))
        for _ in range(desired - len(pods)):
            pods.append(self._create_pod(rs))
        if len(pods) > desired:
            pods.sort(key=lambda p: self._pod_born.get(p["metadata"]["uid"], 0.0), reverse=True)
            for pod in pods[: len(pods) - desired]:
                store.delete(PODS, ns, pod["metadata"]["name"])
            pods = pods[len(pods) - desired :]
        pods = [self._advance_pod(p) for p in pods]
        ready = sum(1 for p in pods if _ready(p))
        status = {
            "replicas": len(pods),
            "fullyLabeledReplicas": len(pods),
            "readyReplicas": ready,
            "availableReplicas": ready,
            "observedGeneration": meta.get("generation", 1),
        }
        if (rs.get("status") or {}) != status:
            store.replace(REPLICASETS, ns, meta["name"], {**rs, "status": status}, SOURCE, "status")

    def _create_pod(self, rs: dict[str, Any]) -> dict[str, Any]:
        meta, template = rs["metadata"], rs["spec"]["template"]
        name = f"{meta['name']}-{secrets.token_hex(3)[:5]}"
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": name,
                "labels": dict((template.get("metadata") or {}).get("labels") or {}),
                "annotations": dict((template.get("metadata") or {}).get("annotations") or {}),
                "ownerReferences": [
                    {
                        "apiVersion": "apps/v1",
                        "kind": "ReplicaSet",
                        "name": meta["name"],
                        "uid": meta["uid"],
                        "controller": True,
                        "blockOwnerDeletion": True,
                    }
                ],
            },
            "spec": {**template["spec"], "nodeName": "standin-node"},
        }
        created = self.standin.store.create(PODS, meta["namespace"], pod, SOURCE)
        self._pod_born[created["metadata"]["uid"]] = time.monotonic()
        image = template["spec"]["containers"][0]["image"]
        self.standin.append_pod_log(meta["namespace"], name, f"starting container image={image}")
        return created

    def _advance_pod(self, pod: dict[str, Any]) -> dict[str, Any]:
        meta = pod["metadata"]
        born = self._pod_born.setdefault(meta["uid"], time.monotonic())
        containers = pod["spec"]["containers"]
        behaviour = self.behaviour_for(containers[0]["image"])
        wait = (
            behaviour.ready_after_seconds
            if behaviour.ready_after_seconds is not None
            else self.pod_ready_seconds
        )
        age = time.monotonic() - born
        started = (pod.get("status") or {}).get("startTime") or now_rfc3339()
        ready = behaviour.ready and not behaviour.crash and age >= wait
        if behaviour.crash:
            state: dict[str, Any] = {
                "waiting": {"reason": "CrashLoopBackOff", "message": "back-off restarting"}
            }
        else:
            state = {"running": {"startedAt": started}}
        previous = (pod.get("status") or {}).get("conditions") or []
        was_ready = any(c["type"] == "Ready" and c["status"] == "True" for c in previous)
        since = (
            next((c["lastTransitionTime"] for c in previous if c["type"] == "Ready"), started)
            if was_ready == ready
            else now_rfc3339()
        )
        flag = "True" if ready else "False"
        status = {
            "phase": "Running",
            "hostIP": "127.0.0.1",
            "podIP": f"10.244.0.{(int(meta['uid'][:4], 16) % 250) + 2}",
            "startTime": started,
            "qosClass": "BestEffort",
            "conditions": [
                {"type": "PodScheduled", "status": "True", "lastTransitionTime": started},
                {"type": "Initialized", "status": "True", "lastTransitionTime": started},
                {"type": "ContainersReady", "status": flag, "lastTransitionTime": since},
                {"type": "Ready", "status": flag, "lastTransitionTime": since},
            ],
            "containerStatuses": [
                {
                    "name": c["name"],
                    "image": c["image"],
                    "imageID": f"standin://{c['image']}",
                    "ready": ready,
                    "started": not behaviour.crash,
                    "restartCount": int(age // 1) if behaviour.crash else 0,
                    "state": state,
                }
                for c in containers
            ],
        }
        if (pod.get("status") or {}) == status:
            return pod
        if ready and not was_ready:
            self.standin.append_pod_log(meta["namespace"], meta["name"], "readiness probe passed")
        return self.standin.store.replace(
            PODS, meta["namespace"], meta["name"], {**pod, "status": status}, SOURCE, "status"
        )

    def _update_deployment_status(self, deployment: dict[str, Any]) -> None:
        store = self.standin.store
        meta, spec = deployment["metadata"], deployment["spec"]
        ns, uid = meta["namespace"], meta["uid"]
        owned = self._owned(REPLICASETS, ns, uid)
        thash = template_hash(spec["template"])
        new = [rs for rs in owned if rs["metadata"]["labels"].get(HASH_LABEL) == thash]
        old = [rs for rs in owned if rs not in new]

        def total(rss: list[dict[str, Any]], key: str) -> int:
            return sum(int((rs.get("status") or {}).get(key, 0)) for rs in rss)

        desired = int(spec.get("replicas", 1))
        replicas, available = total(owned, "replicas"), total(owned, "availableReplicas")
        updated, new_available = total(new, "replicas"), total(new, "availableReplicas")
        max_unavailable = _max_unavailable(spec, desired)
        now = time.monotonic()
        progress = self._progress.get(uid)
        if progress is None or progress.template != thash:
            progress = self._progress[uid] = _Progress(thash, now, new_available)
        elif new_available > progress.last_available:
            progress.last_progress, progress.last_available = now, new_available
        complete = new_available >= desired and total(old, "replicas") == 0 and updated == desired
        deadline = float(spec.get("progressDeadlineSeconds", 600))
        if complete:
            progressing = (
                "True",
                "NewReplicaSetAvailable",
                f'ReplicaSet "{meta["name"]}-{thash}" has successfully progressed.',
            )
        elif now - progress.last_progress > deadline:
            progressing = (
                "False",
                "ProgressDeadlineExceeded",
                f'ReplicaSet "{meta["name"]}-{thash}" has timed out progressing.',
            )
        else:
            progressing = (
                "True",
                "ReplicaSetUpdated",
                f'ReplicaSet "{meta["name"]}-{thash}" is progressing.',
            )
        available_ok = available >= desired - max_unavailable
        old_conditions = {
            c["type"]: c for c in (deployment.get("status") or {}).get("conditions", [])
        }

        def condition(kind: str, status: str, reason: str, message: str) -> dict[str, Any]:
            before = old_conditions.get(kind)
            same = before is not None and before["status"] == status and before["reason"] == reason
            stamp = now_rfc3339()
            return {
                "type": kind,
                "status": status,
                "reason": reason,
                "message": message,
                "lastUpdateTime": before["lastUpdateTime"] if same and before else stamp,
                "lastTransitionTime": (
                    before["lastTransitionTime"]
                    if before is not None and before["status"] == status
                    else stamp
                ),
            }

        status: dict[str, Any] = {
            "observedGeneration": meta.get("generation", 1),
            "replicas": replicas,
            "updatedReplicas": updated,
            "readyReplicas": total(owned, "readyReplicas"),
            "availableReplicas": available,
            "conditions": [
                condition(
                    "Available",
                    "True" if available_ok else "False",
                    "MinimumReplicasAvailable" if available_ok else "MinimumReplicasUnavailable",
                    "Deployment has minimum availability."
                    if available_ok
                    else "Deployment does not have minimum availability.",
                ),
                condition("Progressing", *progressing),
            ],
        }
        if replicas - available > 0:
            status["unavailableReplicas"] = replicas - available
        if (deployment.get("status") or {}) != status:
            store.replace(
                DEPLOYMENTS, ns, meta["name"], {**deployment, "status": status}, SOURCE, "status"
            )


def _ready(pod: dict[str, Any]) -> bool:
    conditions = (pod.get("status") or {}).get("conditions") or []
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def _max_unavailable(spec: dict[str, Any], desired: int) -> int:
    strategy = spec.get("strategy") or {}
    if strategy.get("type") == "Recreate":
        return desired
    value = (strategy.get("rollingUpdate") or {}).get("maxUnavailable", "25%")
    if isinstance(value, str) and value.endswith("%"):
        return math.floor(desired * int(value[:-1]) / 100)
    return int(value)
