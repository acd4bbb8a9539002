"""The VibeBench Ops Grafana dashboard, as code (grafana-foundation-sdk).

Every query reads a metric the exporter (`tasks/metrics.py`) serves, labelled by kind and source.
Rebuild the committed JSON after a change:

    uv run python -m deployments.grafana.dashboard > deployments/grafana/vibeops-dashboard.json
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from grafana_foundation_sdk.builders.dashboard import Dashboard, DatasourceVariable, Row
from grafana_foundation_sdk.builders.prometheus import Dataquery
from grafana_foundation_sdk.builders.timeseries import Panel
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.dashboard import DataSourceRef, GridPos

DASHBOARD_JSON = Path(__file__).with_name("vibeops-dashboard.json")
DATASOURCE = DataSourceRef(type_val="prometheus", uid="${datasource}")
PER_SOURCE = "{{kind}}/{{source}}"


@dataclass(frozen=True)
class Query:
    expr: str
    legend: str = PER_SOURCE


@dataclass(frozen=True)
class PanelSpec:
    title: str
    description: str
    unit: str
    queries: tuple[Query, ...]


def _drill_against_target(what: str) -> PanelSpec:
    """`rto` or `rpo` of each source's latest drill, beside the target it is held to."""
    label = what.upper()
    return PanelSpec(
        f"Drill {label} against its target",
        f"{label} of each source's latest drill, and the target it is held to.",
        "s",
        (
            Query(f"vibeops_drill_{what}_seconds", f"{PER_SOURCE} {label}"),
            Query(f"vibeops_drill_{what}_target_seconds", f"{PER_SOURCE} target"),
        ),
    )


ROWS: dict[str, tuple[PanelSpec, ...]] = {
    "Backups": (
        PanelSpec(
            "Backup age",
            "Age of the newest committed backup's consistent point, per kind and source.",
            "s",
            (Query("vibeops_backup_newest_age_seconds"),),
        ),
        PanelSpec(
            "Backup size",
            "Stored size of the newest committed backup.",
            "bytes",
            (Query("vibeops_backup_newest_size_bytes"),),
        ),
        PanelSpec(
            "Backup duration",
            "How long the newest committed backup took, start to manifest.",
            "s",
            (Query("vibeops_backup_newest_duration_seconds"),),
        ),
        PanelSpec(
            "Recovery-point age",
            "What a restore now would lose: newest base backup plus its archived binlogs "
            "(MySQL), else the newest backup.",
            "s",
            (Query("vibeops_recovery_point_age_seconds"),),
        ),
    ),
    "Restore drills": tuple(_drill_against_target(what) for what in ("rto", "rpo")),
}


def _panel(spec: PanelSpec, x: int, y: int) -> Panel:
    panel = (
        Panel()
        .title(spec.title)
        .description(spec.description)
        .unit(spec.unit)
        .min(0)
        .datasource(DATASOURCE)
        .grid_pos(GridPos(h=8, w=12, x=x, y=y))
    )
    for ref, query in zip("ABCDEFGH", spec.queries, strict=False):
        panel = panel.with_target(
            Dataquery().expr(query.expr).legend_format(query.legend).ref_id(ref)
        )
    return panel


def build_dashboard() -> dict[str, object]:
    """The dashboard model as Grafana's JSON (a plain dict)."""
    dashboard = (
        Dashboard("VibeBench Ops: backups and restore drills")
        .uid("vibeops-backups")
        .tags(["vibeops", "generated"])
        .refresh("1m")
        .time("now-7d", "now")
        .timezone("utc")
        .with_variable(DatasourceVariable("datasource").label("Prometheus").type("prometheus"))
    )
    y = 0
    for title, panels in ROWS.items():
        dashboard = dashboard.with_row(Row(title).grid_pos(GridPos(h=1, w=24, x=0, y=y)))
        y += 1
        for i, spec in enumerate(panels):
            dashboard = dashboard.with_panel(_panel(spec, x=12 * (i % 2), y=y + 8 * (i // 2)))
        y += 8 * ((len(panels) + 1) // 2)
    data: dict[str, object] = json.loads(json.dumps(dashboard.build(), cls=JSONEncoder))
    return data


def render() -> str:
    """The committed file's text."""
    return json.dumps(build_dashboard(), indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":
    print(render(), end="")
