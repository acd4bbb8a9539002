"""Rules of the alert-started runbooks (pure: no I/O, no Prefect).

- the alert a run was started by (`AlertContext`, filled by the deployment trigger);
- which pods belong to the same ReplicaSet as a hung pod, and which of them is its ready
  replacement (`replicaset_prefix`, `find_replacement`, `next_victim`);
- the Markdown reports the runbooks publish.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from pydantic import BaseModel, Field

DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
# Pods a ReplicaSet creates are named `<replicaset>-<5 random characters>`.
REPLICASET_POD = re.compile(r"^(?P<rs>[a-z0-9][-a-z0-9.]*)-(?P<suffix>[a-z0-9]{5})$")
MAX_LOG_CHARS = 60_000


class AlertContext(BaseModel):
    """The alert that started a run (empty for manual runs).

    The deployment trigger fills it from the relay's `vibeops.alert.firing` event.
    """

    alertname: str = Field(default="", description="Alert name, e.g. SlowBenchmarkRun.")
    fingerprint: str = Field(default="", description="Alertmanager fingerprint of the alert.")
    severity: str = Field(default="", description="The alert's severity label.")
    event_id: str = Field(default="", description="Id of the Prefect event that started the run.")
    received_at: str = Field(default="", description="When the relay received the alert.")
    starts_at: str = Field(default="", description="When the alert started firing.")
    summary: str = Field(default="", description="The alert's summary annotation.")
    generator_url: str = Field(default="", description="Link to the alert's expression.")

    @property
    def resource_id(self) -> str | None:
        """The alert's Prefect resource id (for related resources of events)."""
        return f"alertmanager.alert.{self.fingerprint}" if self.fingerprint else None

    def markdown_rows(self) -> list[str]:
        """Table rows describing the alert (none for a manual run)."""
        if not self.alertname:
            return ["| started by | a manual run |"]
        rows = [
            f"| started by | alert `{self.alertname}` ({self.severity or 'no severity'}) |",
            f"| alert fingerprint | `{self.fingerprint}` |",
            f"| firing since | {self.starts_at or '-'} |",
        ]
        if self.summary:
            rows.append(f"| summary | {_cell(self.summary)} |")
        if self.generator_url:
            rows.append(f"| expression | [Prometheus]({self.generator_url}) |")
        return rows


def validate_dns_label(value: str, what: str) -> str:
    """`value` if it is a Kubernetes DNS-1123 label, else ValueError naming `what`."""
    if not DNS_LABEL.match(value):
        raise ValueError(
            f"{what} {value!r} is not a valid Kubernetes name: lower-case letters, digits and "
            "'-', at most 63 characters, starting and ending with a letter or digit"
        )
    return value


def validate_dns_subdomain(value: str, what: str) -> str:
    """`value` if it is a Kubernetes object name (DNS-1123 subdomain), else ValueError."""
    if not DNS_SUBDOMAIN.match(value):
        raise ValueError(
            f"{what} {value!r} is not a valid Kubernetes object name: lower-case letters, "
            "digits, '-' and '.', at most 253 characters"
        )
    return value


class PodLike(Protocol):
    """What the rules read of a pod (tasks.kube.PodSummary has it)."""

    @property
    def name(self) -> str: ...

    @property
    def phase(self) -> str: ...

    @property
    def ready(self) -> bool: ...


def replicaset_prefix(pod_name: str) -> str | None:
    """The ReplicaSet name a pod was created by (`<rs>-<5 chars>`), or None for a bare pod."""
    match = REPLICASET_POD.match(pod_name)
    return match.group("rs") if match else None


def siblings(pods: Iterable[PodLike], prefix: str) -> list[PodLike]:
    """Pods created by the ReplicaSet `prefix`."""
    return [p for p in pods if replicaset_prefix(p.name) == prefix]


def find_replacement(pods: Iterable[PodLike], prefix: str, known: Iterable[str]) -> PodLike | None:
    """A pod of the same ReplicaSet that did not exist before (not in `known`), Running and Ready."""
    seen = set(known)
    for pod in siblings(pods, prefix):
        if pod.name not in seen and pod.phase == "Running" and pod.ready:
            return pod
    return None


def next_victim(pods: Iterable[PodLike], prefix: str, known: Iterable[str]) -> PodLike | None:
    """The replacement that is not becoming ready (the next pod to recycle), if any."""
    seen = set(known)
    fresh = [p for p in siblings(pods, prefix) if p.name not in seen and not p.ready]
    return fresh[0] if fresh else None


def tail_text(text: str, max_chars: int = MAX_LOG_CHARS) -> str:
    """The end of a log, cut at a line boundary to at most `max_chars`."""
    if len(text) <= max_chars:
        return text
    cut = text[-max_chars:]
    if text[-max_chars - 1] == "\n":
        return cut
    newline = cut.find("\n")
    return cut[newline + 1 :] if 0 <= newline < 200 else cut


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


@dataclass
class RecycleAttempt:
    """One delete-and-wait cycle of recycle-hung-pod."""

    number: int
    deleted: str
    replacement: str | None
    seconds: float
    note: str = ""


@dataclass
class IncidentReport:
    """What an alert-started runbook did; rendered as the run's Markdown artifact."""

    title: str
    alert: AlertContext
    facts: list[tuple[str, str]] = field(default_factory=list)
    steps: list[str] = field(default_factory=list)
    outcome: str = ""
    attempts: Sequence[RecycleAttempt] = ()
    log_excerpt: str | None = None
    log_source: str = ""

    def markdown(self) -> str:
        lines = [f"# {self.title}", "", f"**{self.outcome}**", "", "| | |", "|---|---|"]
        lines += self.alert.markdown_rows()
        lines += [f"| {k} | {_cell(v)} |" for k, v in self.facts]
        if self.steps:
            lines += ["", "## Steps", ""] + [f"{i}. {s}" for i, s in enumerate(self.steps, 1)]
        if self.attempts:
            lines += [
                "",
                "## Attempts",
                "",
                "| # | deleted | replacement | seconds | note |",
                "|---|---|---|---|---|",
            ]
            lines += [
                f"| {a.number} | `{a.deleted}` | {f'`{a.replacement}`' if a.replacement else '-'} "
                f"| {a.seconds:.1f} | {_cell(a.note)} |"
                for a in self.attempts
            ]
        if self.log_excerpt is not None:
            fence = "````" if "```" in self.log_excerpt else "```"
            lines += ["", f"## Last log lines of `{self.log_source}`", "", fence]
            lines += [self.log_excerpt.rstrip("\n") or "(empty log)", fence]
        return "\n".join(lines)


def format_when(at: datetime) -> str:
    return f"{at:%Y-%m-%d %H:%M:%S} UTC"
