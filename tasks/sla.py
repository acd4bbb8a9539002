"""Service levels (OSS SLAs): what a missed one says. Pure: no Prefect, no I/O.

The windows themselves live in prefect.yaml (`definitions.slas`), where the Proactive
triggers that watch for each expected event read them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

SlaName = Literal["backup", "drill", "binlog-archive"]

# What each SLA expects to see, per resource (the event its trigger watches).
EXPECTED_EVENT: dict[str, str] = {
    "backup": "vibeops.backup.succeeded",
    "drill": "vibeops.drill.passed",
    "binlog-archive": "vibeops.binlog.archived",
}


@dataclass(frozen=True)
class SlaMiss:
    """One SLA missed for one resource (for example `vibeops.backup.mysql.vibebench`)."""

    sla: str
    resource_id: str
    source: str
    window: timedelta
    last_seen: str
    noticed_at: datetime

    @property
    def expected_event(self) -> str:
        return EXPECTED_EVENT[self.sla]

    def resource(self) -> dict[str, str]:
        """The Prefect event resource of the miss: one per SLA and watched resource."""
        return {
            "prefect.resource.id": f"vibeops.sla.{self.sla}.{self.resource_id}",
            "prefect.resource.name": f"{self.sla} SLA of {self.source}",
        }

    def related(self) -> list[dict[str, str]]:
        return [{"prefect.resource.id": self.resource_id, "prefect.resource.role": "watched"}]

    def payload(self) -> dict[str, str]:
        return {
            "sla": self.sla,
            "source": self.source,
            "expected_event": self.expected_event,
            "window_seconds": str(int(self.window.total_seconds())),
            "last_seen": self.last_seen,
            "noticed_at": self.noticed_at.isoformat(),
        }

    def summary(self) -> str:
        return (
            f"No `{self.expected_event}` for `{self.resource_id}` within {self.window} "
            f"(last one: {self.last_seen or 'unknown'})."
        )


def render_sla_report(miss: SlaMiss) -> str:
    """The run's Markdown artifact."""
    return "\n".join(
        [
            f"# SLA missed: {miss.sla} of {miss.source}",
            "",
            miss.summary(),
            "",
            "| field | value |",
            "|---|---|",
            *[f"| {k} | {v} |" for k, v in miss.payload().items()],
        ]
    )
