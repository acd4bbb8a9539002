"""report-sla-missed: started by a Proactive trigger when an expected event did not arrive."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.events import emit_event
from pydantic import BaseModel, Field

from flows.forms import form
from flows.run_names import run_name
from tasks.form_fields import schema_pattern
from tasks.manifest import SOURCE_NAME
from tasks.sla import SlaMiss, SlaName, render_sla_report


class ReportSlaMissedParams(BaseModel):
    """Parameters of report-sla-missed (filled by the SLA triggers in prefect.yaml)."""

    sla: SlaName = Field(description="Which service level was missed.")
    resource_id: str = Field(
        min_length=1,
        description="The watched resource, e.g. vibeops.backup.mysql.vibebench.",
    )
    source: str = Field(
        default="",
        description="The source's name, for people; empty = the last part of the resource id.",
        json_schema_extra=schema_pattern(f"^$|{SOURCE_NAME.pattern}"),
    )
    window: timedelta = Field(
        gt=timedelta(0), description="How long the expected event may be absent, e.g. PT26H."
    )
    last_seen: str = Field(default="", description="When the last expected event occurred.")


@flow(
    name="report-sla-missed",
    flow_run_name=run_name("sla-missed-{sla}-{source}"),
    description="Emit vibeops.sla.missed for a resource whose expected event did not arrive "
    "within its SLA window, with a report artifact.",
    timeout_seconds=300,
)
@form(ReportSlaMissedParams)
def report_sla_missed(params: ReportSlaMissedParams) -> SlaMiss:
    """Publish one missed SLA as an event and an artifact."""
    miss = SlaMiss(
        sla=params.sla,
        resource_id=params.resource_id,
        source=params.source or params.resource_id.rsplit(".", 1)[-1],
        window=params.window,
        last_seen=params.last_seen,
        noticed_at=datetime.now(UTC),
    )
    get_run_logger().warning("SLA missed: %s", miss.summary())
    create_markdown_artifact(
        key=f"sla-{miss.sla}",
        markdown=render_sla_report(miss),
        description="report-sla-missed result",
    )
    emit_event(
        event="vibeops.sla.missed",
        resource=miss.resource(),
        related=miss.related(),
        payload=miss.payload(),
    )
    return miss
