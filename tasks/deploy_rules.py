"""Pure rules of a staging deploy (no I/O, no Prefect).

- image references: what may be deployed (`parse_image_reference`)
- rollout status: when a Deployment has rolled out, or has failed (`evaluate_rollout`)
- smoke checks: what counts as a pass (`SmokeCheck`, `judge_smoke`)
- the backup gate: whether the newest backup is fresh enough (`decide_backup_gate`)
- blue-green colours and the promotion record kept on the cluster (`PromotionRecord`)
"""

from __future__ import annotations

import json
import re
import string
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, Field

from tasks.errors import ConfigurationError, ImageReferenceInvalid

Colour = Literal["blue", "green"]
Strategy = Literal["rolling", "blue-green"]

COLOUR_LABEL = "version"
PROMOTION_ANNOTATION = "vibeops.io/last-promotion"
RESTARTED_AT_ANNOTATION = "kubectl.kubernetes.io/restartedAt"

# ------------------------------------------------------------------ image references

_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_DOMAIN = (
    r"(?:localhost|(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)"
    r"(?:\.(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?))+)(?::[0-9]+)?"
)
# An image reference ends with its tag or digest.
IMAGE_PINNED = r"(:[\w][\w.-]{0,127}|@sha256:[a-f0-9]{64})$"
IMAGE_REFERENCE = re.compile(
    rf"^(?:(?P<domain>{_DOMAIN})/)?(?P<path>{_COMPONENT}(?:/{_COMPONENT})*)"
    r"(?::(?P<tag>[\w][\w.-]{0,127}))?(?:@(?P<digest>sha256:[a-f0-9]{64}))?$"
)


@dataclass(frozen=True)
class ImageReference:
    """A parsed image reference."""

    domain: str | None
    path: str
    tag: str | None
    digest: str | None

    def __str__(self) -> str:
        text = f"{self.domain}/{self.path}" if self.domain else self.path
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text


def parse_image_reference(value: str) -> ImageReference:
    """Parse and check an image reference: `repo/name:tag` or `repo/name@sha256:<hex>`.

    Raises:
        ImageReferenceInvalid: with the rule that failed and an example of a valid one.
    """
    example = "e.g. gcr.io/vibebench/core:1.4.2 or gcr.io/vibebench/core@sha256:<64 hex>"
    text = value.strip()
    if text != value or not text:
        raise ImageReferenceInvalid(f"image {value!r}: must not be empty or padded; {example}")
    if len(text) > 512:
        raise ImageReferenceInvalid(f"image: longer than 512 characters; {example}")
    match = IMAGE_REFERENCE.match(text)
    if match is None:
        raise ImageReferenceInvalid(
            f"image {value!r} is not a valid reference (lowercase repository path, optional "
            f"registry host, ':tag' of word characters/'.'/'-', or '@sha256:' digest); {example}"
        )
    ref = ImageReference(match["domain"], match["path"], match["tag"], match["digest"])
    if ref.domain is None and "/" not in ref.path:
        raise ImageReferenceInvalid(
            f"image {value!r} names no repository: use repo/name:tag; {example}"
        )
    if ref.tag is None and ref.digest is None:
        raise ImageReferenceInvalid(
            f"image {value!r} has no tag or digest: pin the version you built; {example}"
        )
    if ref.tag == "latest" and ref.digest is None:
        raise ImageReferenceInvalid(
            f"image {value!r}: ':latest' moves, so a rollback could not restore it; deploy the "
            f"tag CI built; {example}"
        )
    return ref


# ------------------------------------------------------------------ rollout status


@dataclass(frozen=True)
class RolloutStatus:
    """Where a Deployment's rollout stands (what `kubectl rollout status` would say)."""

    done: bool
    failed: bool
    message: str
    desired: int
    updated: int
    available: int


def evaluate_rollout(deployment: dict[str, Any]) -> RolloutStatus:
    """Judge a Deployment (its JSON form): rolled out, still progressing, or failed.

    Done means the controller has seen the latest spec (observedGeneration >= generation),
    and updated == available == total replicas == desired. Failed means the Progressing
    condition reports ProgressDeadlineExceeded.
    """
    meta = deployment.get("metadata") or {}
    spec = deployment.get("spec") or {}
    status = deployment.get("status") or {}
    desired = int(spec.get("replicas", 1) if spec.get("replicas") is not None else 1)
    updated = int(status.get("updatedReplicas") or 0)
    available = int(status.get("availableReplicas") or 0)
    total = int(status.get("replicas") or 0)
    name = meta.get("name", "?")

    def result(done: bool, failed: bool, message: str) -> RolloutStatus:
        return RolloutStatus(done, failed, message, desired, updated, available)

    for condition in status.get("conditions") or []:
        if condition.get("type") == "Progressing" and condition.get("reason") == (
            "ProgressDeadlineExceeded"
        ):
            return result(False, True, f'deployment "{name}" exceeded its progress deadline')
    if int(status.get("observedGeneration") or 0) < int(meta.get("generation") or 0):
        return result(False, False, "waiting for the deployment spec update to be observed")
    if updated < desired:
        return result(
            False,
            False,
            f"{updated} of {desired} updated replicas are available"
            if updated
            else f"0 of {desired} replicas updated",
        )
    if total > updated:
        return result(False, False, f"{total - updated} old replicas are pending termination")
    if available < updated:
        return result(False, False, f"{available} of {updated} updated replicas are available")
    return result(True, False, f'deployment "{name}" successfully rolled out')


def container_image(deployment: dict[str, Any], container: str | None) -> tuple[str, str]:
    """The (container name, image) to deploy into: the named container, else the first.

    Raises:
        DeployRefusedError-free ConfigurationError: the container does not exist.
    """
    containers = (((deployment.get("spec") or {}).get("template") or {}).get("spec") or {}).get(
        "containers"
    ) or []
    for item in containers:
        if container is None or item.get("name") == container:
            return str(item["name"]), str(item.get("image", ""))
    names = [c.get("name") for c in containers]
    raise ConfigurationError(
        f"container: deployment has no container named {container!r} (it has {names}); "
        "set `container` to one of them or leave it empty for the first"
    )


# ------------------------------------------------------------------ smoke checks


class SmokeCheck(BaseModel):
    """One HTTP check against the deployed version."""

    path: str = Field(
        default="/health", pattern=r"^/[^\s]*$", description="Path to GET, e.g. /health."
    )
    expected_status: int = Field(default=200, ge=100, le=599, description="Expected HTTP status.")
    max_latency_ms: int = Field(
        default=1000, ge=1, le=60_000, description="Slowest acceptable answer, in milliseconds."
    )


DEFAULT_SMOKE_CHECKS = [SmokeCheck(path="/health"), SmokeCheck(path="/ready")]


@dataclass(frozen=True)
class SmokeResult:
    """The outcome of one smoke check."""

    target: str  # "live", "idle colour green", ...
    path: str
    status: int | None
    latency_ms: float
    ok: bool
    reason: str


def judge_smoke(
    check: SmokeCheck, target: str, status: int | None, latency_ms: float, error: str | None
) -> SmokeResult:
    """Pass when the status is the expected one and the answer came in time."""
    if error is not None or status is None:
        reason = f"no answer: {error}"
    elif status != check.expected_status:
        reason = f"status {status}, expected {check.expected_status}"
    elif latency_ms > check.max_latency_ms:
        reason = f"took {latency_ms:.0f} ms, limit {check.max_latency_ms} ms"
    else:
        reason = "ok"
    return SmokeResult(target, check.path, status, latency_ms, reason == "ok", reason)


def render_service_url(template: str, namespace: str, service: str, port: int) -> str:
    """Fill a service URL template (`{namespace}`, `{service}`, `{port}`)."""
    return template.format(namespace=namespace, service=service, port=port).rstrip("/")


def check_url_template(template: str) -> str:
    """Return `template` if it only uses {namespace}, {service} and {port}, else raise ValueError."""
    fields = {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
    unknown = fields - {"namespace", "service", "port"}
    if unknown or "service" not in fields:
        raise ValueError(
            f"service URL template {template!r} must use {{service}} and only {{namespace}}, "
            f"{{service}}, {{port}} (unknown: {sorted(unknown)}); e.g. "
            "http://{service}.{namespace}.svc.cluster.local:{port}"
        )
    if not template.startswith(("http://", "https://")):
        raise ValueError(f"service URL template {template!r} must start with http:// or https://")
    return template


# ------------------------------------------------------------------ backup gate


@dataclass(frozen=True)
class GateDecision:
    """Whether the backup gate lets the deploy through, and why."""

    allowed: bool
    overridden: bool
    backup_id: str | None
    age: timedelta | None
    message: str


def decide_backup_gate(
    newest_backup_id: str | None,
    newest_consistent_at: datetime | None,
    now: datetime,
    max_age: timedelta,
    override_reason: str | None,
    label: str = "backup",
) -> GateDecision:
    """Refuse when the newest committed backup is missing or older than `max_age`.

    For MySQL the caller passes the newest restorable point (base backup + archived binlogs)
    as `newest_consistent_at` and says so in `label`. An override reason lets a stale gate
    through (and is reported); a fresh gate ignores it.
    """
    if newest_consistent_at is None:
        problem = "no committed backup exists"
        age = None
    else:
        age = now - newest_consistent_at
        if age <= max_age:
            return GateDecision(
                True,
                False,
                newest_backup_id,
                age,
                f"newest {label} {newest_backup_id} is {_fmt(age)} old (limit {_fmt(max_age)})",
            )
        problem = (
            f"newest {label} {newest_backup_id} is {_fmt(age)} old, older than the "
            f"{_fmt(max_age)} limit"
        )
    if override_reason and override_reason.strip():
        return GateDecision(
            True,
            True,
            newest_backup_id,
            age,
            f"{problem}; overridden: {override_reason.strip()}",
        )
    return GateDecision(
        False,
        False,
        newest_backup_id,
        age,
        f"{problem}: run backup-mysql first, or set backup_gate.override_reason to deploy anyway",
    )


def _fmt(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    if seconds < 0:
        return f"-{_fmt(-delta)}"
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


# ------------------------------------------------------------------ blue-green and promotions


def other_colour(colour: Colour) -> Colour:
    return "green" if colour == "blue" else "blue"


def live_colour(selector: dict[str, str] | None, service: str) -> Colour:
    """The colour a blue-green Service selects.

    Raises:
        ConfigurationError: the selector has no `version: blue|green`.
    """
    value = (selector or {}).get(COLOUR_LABEL)
    if value not in ("blue", "green"):
        raise ConfigurationError(
            f'service "{service}" selects {selector!r}: a blue-green Service must select '
            f"`{COLOUR_LABEL}: blue` or `{COLOUR_LABEL}: green` (patch it, or use strategy rolling)"
        )
    return value  # type: ignore[return-value]


class PromotionRecord(BaseModel):
    """The last promotion, kept as an annotation on the cluster so any run can undo it."""

    strategy: Strategy
    at: datetime
    keep_until: datetime
    image: str
    previous_image: str
    from_colour: Colour | None = None
    to_colour: Colour | None = None
    container: str | None = None
    flow_run_id: str | None = None

    def to_annotation(self) -> str:
        return self.model_dump_json()

    @classmethod
    def from_annotations(cls, annotations: dict[str, str] | None) -> PromotionRecord | None:
        raw = (annotations or {}).get(PROMOTION_ANNOTATION)
        if not raw:
            return None
        try:
            return cls.model_validate(json.loads(raw))
        except (ValueError, TypeError):
            return None


@dataclass(frozen=True)
class RollbackDecision:
    act: bool
    message: str


def decide_rollback(record: PromotionRecord | None, now: datetime) -> RollbackDecision:
    """Undo the last promotion only while the previous version is still kept."""
    if record is None:
        return RollbackDecision(False, "no promotion is recorded: nothing to roll back")
    if now > record.keep_until:
        return RollbackDecision(
            False,
            f"the last promotion ({record.image} at {record.at:%Y-%m-%d %H:%M} UTC) is past its "
            f"keep window (until {record.keep_until:%Y-%m-%d %H:%M} UTC): the previous version "
            "may be gone; deploy a known-good image instead",
        )
    if record.strategy == "blue-green":
        return RollbackDecision(
            True,
            f"switch {record.to_colour} back to {record.from_colour} ({record.previous_image})",
        )
    return RollbackDecision(True, f"patch the image back to {record.previous_image}")


# ------------------------------------------------------------------ the deploy report

Outcome = Literal[
    "promoted", "rolled_back", "refused", "failed", "nothing_to_do", "dry_run", "done"
]


@dataclass
class TimelineEntry:
    seconds: float  # since the run started
    step: str
    detail: str


@dataclass
class DeployReport:
    """What a deploy (or rollback) did, in order; rendered as the run's Markdown artifact."""

    title: str
    namespace: str
    app: str
    strategy: str
    image: str
    previous_image: str | None = None
    started_at: datetime | None = None  # wall clock of timeline second 0
    outcome: Outcome | None = None
    reason: str | None = None
    gate: GateDecision | None = None
    ready_after_seconds: float | None = None
    restored_after_seconds: float | None = None
    smoke: list[SmokeResult] = field(default_factory=list)
    timeline: list[TimelineEntry] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, seconds: float, step: str, detail: str) -> None:
        self.timeline.append(TimelineEntry(round(seconds, 2), step, detail))

    def markdown(self) -> str:
        verdict = {
            "promoted": "PROMOTED",
            "rolled_back": "ROLLED BACK",
            "refused": "REFUSED",
            "failed": "FAILED",
            "nothing_to_do": "NOTHING TO DO",
            "dry_run": "DRY RUN",
            "done": "DONE",
            None: "UNFINISHED",
        }[self.outcome]
        lines = [
            f"# {self.title} `{self.namespace}/{self.app}`: {verdict}",
            "",
            f"- strategy: `{self.strategy}`",
            f"- image: `{self.image}`",
            f"- previous image: `{self.previous_image or 'unknown'}`",
        ]
        if self.started_at is not None:
            lines.append(f"- started: {self.started_at:%Y-%m-%d %H:%M:%S} UTC")
        if self.reason:
            lines.append(f"- reason: {self.reason}")
        if self.gate is not None:
            flag = " (OVERRIDDEN)" if self.gate.overridden else ""
            lines.append(f"- backup gate{flag}: {self.gate.message}")
        if self.ready_after_seconds is not None:
            lines.append(f"- ready after {self.ready_after_seconds:.1f} s")
        if self.restored_after_seconds is not None:
            lines.append(
                f"- previous version serving again after {self.restored_after_seconds:.1f} s"
            )
        lines += ["", "## Timeline", "", "| t (s) | step | detail |", "|---:|---|---|"]
        lines += [f"| {e.seconds:.1f} | {e.step} | {_cell(e.detail)} |" for e in self.timeline]
        if self.smoke:
            lines += [
                "",
                "## Smoke checks",
                "",
                "| target | path | status | latency (ms) | result |",
                "|---|---|---:|---:|---|",
            ]
            lines += [
                f"| {r.target} | `{r.path}` | {r.status if r.status is not None else '-'} | "
                f"{r.latency_ms:.0f} | {'pass' if r.ok else 'FAIL: ' + _cell(r.reason)} |"
                for r in self.smoke
            ]
        if self.notes:
            lines += ["", "## Notes", ""] + [f"- {n}" for n in self.notes]
        return "\n".join(lines) + "\n"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")[:400]
