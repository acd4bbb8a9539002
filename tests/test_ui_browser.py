"""The Prefect UI in a real browser, as a new user would use it (issue #14).

One Prefect server (SQLite in a temp dir), the deployments from prefect.yaml, one process
worker, a private MariaDB with a small sample database, and Debian's chromium driven by
Playwright. Never `playwright install`: the browser is /usr/bin/chromium. Screenshots of the
page are saved under the test's tmp dir when a step fails.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
import pytest

from tasks.local_stack import PrivateMariaDB, free_port
from tasks.sample_data import create_sample_database
from tests.fixtures.deployments import ROOT

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
RUN_TIMEOUT = 600  # seconds a flow run may take from submit to a final state (loaded CI)

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    # The module's stack (server, deploy --all, worker) starts inside the first test's budget.
    pytest.mark.timeout(1500),
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian chromium is not installed"),
]


class _RetryWhileBusy(httpx.HTTPTransport):
    """The SQLite-backed server answers 503 while its database is busy (as Prefect's own
    client knows, and retries): try again, a bounded number of times."""

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        for attempt in range(6):
            response = super().handle_request(request)
            if response.status_code != 503:
                return response
            response.close()
            time.sleep(0.5 * 2**attempt)
        return super().handle_request(request)


@dataclass
class Stack:
    url: str  # the UI
    api: str
    env: dict[str, str]
    deployments: dict[str, dict[str, Any]]  # flow/name -> deployment

    def http(self) -> httpx.Client:
        return httpx.Client(base_url=self.api, timeout=60, transport=_RetryWhileBusy())

    def runs_of(self, key: str) -> list[dict[str, Any]]:
        """The deployment's runs that someone started (not the scheduler's upcoming ones)."""
        body = {"deployments": {"id": {"any_": [self.deployments[key]["id"]]}}}
        with self.http() as http:
            runs = http.post("/flow_runs/filter", json=body).raise_for_status().json()
        return [r for r in runs if not r["auto_scheduled"]]

    def wait_final(self, run_id: str) -> dict[str, Any]:
        deadline = time.monotonic() + RUN_TIMEOUT
        with self.http() as http:
            while time.monotonic() < deadline:
                run = http.get(f"/flow_runs/{run_id}").raise_for_status().json()
                if run["state"] and run["state"]["type"] in ("COMPLETED", "FAILED", "CRASHED"):
                    return run
                time.sleep(2)
        raise TimeoutError(f"flow run {run_id} not final after {RUN_TIMEOUT} s")

    def artifacts_of(self, run_id: str) -> list[dict[str, Any]]:
        body = {"artifacts": {"flow_run_id": {"any_": [run_id]}, "type": {"any_": ["markdown"]}}}
        with self.http() as http:
            return http.post("/artifacts/filter", json=body).raise_for_status().json()


def _wait_healthy(api: str, server: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"prefect server exited with {server.returncode}")
        try:
            if httpx.get(f"{api}/health", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(1)
    raise TimeoutError(f"prefect server not healthy after {timeout} s")


def _stop(process: subprocess.Popen) -> None:
    """SIGINT to the process group (a worker ignores SIGTERM), then kill after 20 s."""
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGINT)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    base = tmp_path_factory.mktemp("ui")
    mariadb = PrivateMariaDB(base_dir=base / "mariadb").start()
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")},
        "PREFECT_HOME": str(base / "prefect"),
        "PREFECT_API_URL": api,
        "PREFECT_UI_API_URL": api,
        "PREFECT_SERVER_API_PORT": str(port),
        "PREFECT_API_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{base / 'prefect.db'}",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
        "PREFECT_WORKER_QUERY_SECONDS": "2",
        "VIBEOPS_PROJECT_DIR": str(ROOT),
        "VIBEOPS_HOME": str(base / "home"),
        "VIBEOPS_MYSQL_HOST": "127.0.0.1",
        "VIBEOPS_MYSQL_PORT": str(mariadb.port),
        "VIBEOPS_MYSQL_USER": "root",
    }
    prefect = [sys.executable, "-m", "prefect"]
    logs = base / "logs"
    logs.mkdir()
    server = subprocess.Popen(
        [*prefect, "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=(logs / "server.log").open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    worker: subprocess.Popen | None = None
    try:
        _wait_healthy(api, server, timeout=300)
        from blocks import MySQLConnection

        create_sample_database(
            MySQLConnection(host="127.0.0.1", port=mariadb.port, user="root", database=""),
            "vibebench",
            rows=300,
        )
        subprocess.run(
            [*prefect, "work-pool", "create", "vibeops-process", "--type", "process"],
            env=env,
            check=True,
            capture_output=True,
            timeout=180,
        )
        deploy = subprocess.run(
            [*prefect, "--no-prompt", "deploy", "--all"],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert deploy.returncode == 0, deploy.stdout[-3000:] + deploy.stderr[-3000:]
        worker = subprocess.Popen(
            [*prefect, "worker", "start", "--pool", "vibeops-process", "--type", "process"],
            env=env,
            cwd=ROOT,
            stdout=(logs / "worker.log").open("w"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        with httpx.Client(base_url=api, timeout=60) as http:
            flows = {f["id"]: f["name"] for f in http.post("/flows/filter", json={}).json()}
            deployments = {
                f"{flows[d['flow_id']]}/{d['name']}": d
                for d in http.post("/deployments/filter", json={}).json()
            }
        yield Stack(f"http://127.0.0.1:{port}", api, env, deployments)
    finally:
        if worker is not None:
            _stop(worker)
        _stop(server)
        mariadb.stop()
        keep = ROOT / "var" / "ui-test-logs"
        shutil.copytree(logs, keep, dirs_exist_ok=True)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Any, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    """A 1366 px wide page; a screenshot is saved when the test fails."""
    context = browser.new_context(viewport={"width": 1366, "height": 900})
    context.set_default_timeout(60_000)
    page = context.new_page()
    yield page
    report = getattr(request.node, "rep_call", None)
    if report is None or report.failed:
        for target in (tmp_path, ROOT / "var" / "ui-test-screenshots"):
            target.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(target / f"{request.node.name}.png"), full_page=True)
    context.close()


def _field(page: Any, title: str) -> Any:
    """The form field whose label starts with `title` ("RTO target (Optional)")."""
    label = page.locator(".schema-form-property__label", has_text=re.compile(f"^{title}( \\(|$)"))
    return page.locator(".schema-form-property").filter(has=label).first


def _open_run_form(page: Any, stack: Stack, key: str) -> None:
    page.goto(f"{stack.url}/deployments/deployment/{stack.deployments[key]['id']}/run")
    page.get_by_text("Parameters", exact=True).wait_for()


def _type(page: Any, title: str, value: str) -> None:
    box = _field(page, title).locator("textarea, input").first
    box.fill(value)


def _new_run(stack: Stack, key: str, before: set[str]) -> str:
    """The run a click created (the UI then shows the deployment's Runs tab)."""
    deadline = time.monotonic() + 180  # the UI posts the run after its own validation round trips
    while not (created := [r for r in stack.runs_of(key) if r["id"] not in before]):
        assert time.monotonic() < deadline, f"{key}: the click created no run"
        time.sleep(1)
    assert len(created) == 1, created
    return str(created[0]["id"])


def _artifact_text(page: Any, stack: Stack, run_id: str, key_prefix: str, marker: str) -> str:
    """The artifact's page as a user reads it, once `marker` (a line of the report) shows."""
    [artifact] = [a for a in stack.artifacts_of(run_id) if (a["key"] or "").startswith(key_prefix)]
    page.goto(f"{stack.url}/artifacts/artifact/{artifact['id']}")
    page.get_by_text(marker).first.wait_for()
    return page.locator("body").inner_text()


def test_every_deployment_form_has_its_fields_titled(stack: Stack, page: Any) -> None:
    assert len(stack.deployments) >= 15
    for key, deployment in sorted(stack.deployments.items()):
        _open_run_form(page, stack, key)
        properties = deployment["parameter_openapi_schema"]["properties"]
        assert "params" not in properties
        for name, prop in properties.items():
            field = _field(page, prop["title"])
            assert field.count() == 1, f"{key}: no field titled {prop['title']!r} ({name})"
        assert page.locator(".schema-form-property__label", has_text="params").count() == 0


def test_bad_values_are_refused_by_the_form_and_no_run_is_created(stack: Stack, page: Any) -> None:
    for key, title, field, value, extra in [
        ("restore-drill/weekly", "RTO target", "rto_target", "20 minutes", {}),
        ("provision-tenant/on-demand", "Tenant", "tenant", "admin", {"Contact": "ops@x.test"}),
    ]:
        before = len(stack.runs_of(key))
        _open_run_form(page, stack, key)
        for other, text in extra.items():
            _type(page, other, text)
        _type(page, title, value)
        page.get_by_role("button", name="Submit").click()
        refusal = page.get_by_text(re.compile(f"Validation failed for field .{field}.")).first
        refusal.wait_for()
        assert value in refusal.inner_text()
        assert "/runs/flow-run/" not in page.url
        assert len(stack.runs_of(key)) == before, f"{key}: a run was created"


def test_a_drill_from_the_form_keeps_its_rto_target_and_reports_the_verdict(
    stack: Stack, page: Any
) -> None:
    # The drill needs a backup: the nightly deployment, started from the API, run by the worker.
    with stack.http() as http:
        backup = (
            http.post(
                f"/deployments/{stack.deployments['backup-mysql/nightly']['id']}/create_flow_run",
                json={},
            )
            .raise_for_status()
            .json()
        )
    assert stack.wait_final(backup["id"])["state"]["type"] == "COMPLETED"

    before = {r["id"] for r in stack.runs_of("restore-drill/weekly")}
    _open_run_form(page, stack, "restore-drill/weekly")
    _type(page, "RTO target", "45m")
    page.get_by_role("button", name="Submit").click()
    run_id = _new_run(stack, "restore-drill/weekly", before)
    run = stack.wait_final(run_id)
    assert run["parameters"]["rto_target"] == "45m"
    assert run["state"]["type"] == "COMPLETED", run["state"]
    report = _artifact_text(page, stack, run_id, "restore-drill", "RTO (start to validated")
    assert "PASSED" in report
    assert "45m" in report or "45 min" in report
    assert "met" in report and "MISSED" not in report


def test_quick_run_of_purge_retention_is_a_dry_run(stack: Stack, page: Any) -> None:
    key = "purge-retention/daily"
    before = {r["id"] for r in stack.runs_of(key)}
    page.goto(f"{stack.url}/deployments/deployment/{stack.deployments[key]['id']}")
    page.get_by_role("button", name="Run", exact=True).click()
    page.get_by_text("Quick run", exact=True).click()
    run = stack.wait_final(_new_run(stack, key, before))
    assert run["parameters"].get("dry_run", True) is True
    report = _artifact_text(
        page, stack, str(UUID(run["id"])), "purge-retention-report", "rows deleted"
    )
    assert "dry run (nothing changed)" in report
