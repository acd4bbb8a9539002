"""The Grafana dashboard as code: the committed JSON is what the builder builds, and every panel's
query, evaluated by a real Prometheus (Debian) scraping the real exporter, is valid and returns
series for every kind.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client import start_http_server

from deployments.grafana.dashboard import DASHBOARD_JSON, render
from tasks.drill import append_history
from tasks.local_stack import LocalServiceError, free_port, wait_for_port
from tasks.metrics import build_registry
from tasks.storage import open_store
from tests.helpers import local_store, save_block
from tests.test_metrics_exporter import commit_backup, drill

PROMETHEUS_BIN = "/usr/bin/prometheus"


def panel_queries(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(panel title, expr) of every query of every panel."""
    return [
        (panel["title"], target["expr"])
        for panel in dashboard["panels"]
        for target in panel.get("targets") or []
    ]


def test_the_committed_dashboard_json_is_what_the_builder_builds():
    assert DASHBOARD_JSON.read_text() == render(), (
        "rebuild: uv run python -m deployments.grafana.dashboard > " + str(DASHBOARD_JSON)
    )
    titles = {title for title, _ in panel_queries(json.loads(render()))}
    assert {"Backup age", "Backup size", "Backup duration", "Recovery-point age"} <= titles
    assert {"Drill RTO against its target", "Drill RPO against its target"} <= titles


@pytest.fixture
def prometheus_scraping(tmp_path: Path) -> Iterator[Any]:
    """Start Debian's prometheus scraping the given port every second; yields a starter."""
    processes: list[subprocess.Popen[bytes]] = []

    def start(target_port: int) -> str:
        port = free_port()
        config = tmp_path / "prometheus.yml"
        config.write_text(
            yaml.safe_dump(
                {
                    "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                    "scrape_configs": [
                        {
                            "job_name": "vibeops",
                            "static_configs": [{"targets": [f"127.0.0.1:{target_port}"]}],
                        }
                    ],
                }
            )
        )
        log = (tmp_path / "prometheus.log").open("wb")
        processes.append(
            subprocess.Popen(
                [
                    PROMETHEUS_BIN,
                    f"--config.file={config}",
                    f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                    f"--web.listen-address=127.0.0.1:{port}",
                    "--log.level=warn",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        )
        wait_for_port("127.0.0.1", port, 60, "prometheus")
        return f"http://127.0.0.1:{port}"

    yield start
    for process in processes:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def query(prometheus: str, expr: str) -> dict[str, Any]:
    response = httpx.get(f"{prometheus}/api/v1/query", params={"query": expr}, timeout=10)
    return response.json()  # type: ignore[no-any-return]


def test_every_panel_query_returns_series_from_prometheus_scraping_the_exporter(
    tmp_path: Path, prometheus_scraping: Any
):
    suffix = uuid.uuid4().hex[:6]
    sources = {
        "mysql": f"db-{suffix}",
        "mongodb": f"mongo-{suffix}",
        "influxdb": f"metrics-{suffix}",
    }
    now = datetime.now(UTC)
    store = local_store(tmp_path / "backups")
    region = open_store(store.destinations[0])
    history = tmp_path / "drills" / "history.jsonl"
    for hours, (kind, source) in enumerate(sources.items(), start=1):
        commit_backup(region, source, now - timedelta(hours=hours), kind, size=100 * hours)
        append_history(history, drill(f"{kind}/{source}", now, 60.0 * hours, True))
    registry = build_registry(
        [f"{k}/{s}" for k, s in sources.items()],
        save_block(store, "dashboard-store"),
        history,
        read_prefect=False,
    )
    port = free_port()
    server, thread = start_http_server(port, addr="127.0.0.1", registry=registry)
    try:
        prometheus = prometheus_scraping(port)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # until the first scrape landed
            try:
                if query(prometheus, "vibeops_drill_rto_seconds")["data"]["result"]:
                    break
            except (httpx.TransportError, KeyError, ValueError):
                pass
            time.sleep(0.5)
        else:
            raise LocalServiceError((tmp_path / "prometheus.log").read_text()[-2000:])

        queries = panel_queries(json.loads(DASHBOARD_JSON.read_text()))
        assert len(queries) >= 8
        for title, expr in queries:
            answer = query(prometheus, expr)
            assert answer["status"] == "success", (title, expr, answer)
            series = answer["data"]["result"]
            got = {(s["metric"].get("kind"), s["metric"].get("source")) for s in series}
            # per kind and source: every kind's source is there, no series without the labels
            assert got == set(sources.items()), (title, expr, got)
    finally:
        server.shutdown()
        thread.join(timeout=5)
