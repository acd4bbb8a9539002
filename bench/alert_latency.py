"""Benchmark: how long from an alert to its runbook running.

Starts everything it needs in a temporary folder and stops it at the end:
a Prefect server (SQLite), the work pool and the prefect.yaml alert deployments (`prefect deploy`,
the same command the README gives), a process worker polling every second
(PREFECT_WORKER_QUERY_SECONDS=1), the relay (`vibeops relay`) and Debian's Alertmanager
(group_wait 0s) whose webhook receiver is the relay.

For each of N alerts (default 10) it POSTs the alert to Alertmanager and waits until the flow
run the trigger created is Running; then it cancels that run so the deployment's concurrency
slot is free for the next alert. Times are wall clock on this machine: alert POST -> run
created (Alertmanager + relay + Prefect trigger) and -> run Running (+ worker poll + process
start). The last line is:

    RESULT alert_to_running_s_p50=<x> alert_to_running_s_max=<y>

Usage: uv run python bench/alert_latency.py [--alerts 10] [--keep-logs]
(BENCH_LOG_LEVEL=DEBUG with --keep-logs leaves a worker log that shows where the time goes.)
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

PROJECT_DIR = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT_DIR))

from tasks.local_stack import free_port, wait_for_port  # noqa: E402
from tests.fixtures.alerting import Alertmanager, alertmanager_config, make_alert  # noqa: E402

ALERTNAME = "DatabaseConnectionPoolExhausted"
DEPLOYMENT = "restart-deployment/on-alert"
WORK_POOL = "vibeops-process"
TARGET_P50_S = 5.0


class Stack:
    """Child processes started by the benchmark, stopped in reverse order."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.children: list[tuple[str, subprocess.Popen[bytes]]] = []

    def start(self, name: str, argv: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        log = (self.workdir / f"{name}.log").open("wb")
        proc = subprocess.Popen(
            argv,
            env=env,
            cwd=PROJECT_DIR,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.children.append((name, proc))
        return proc

    def stop(self) -> None:
        for _name, proc in reversed(self.children):
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        for _name, proc in reversed(self.children):
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)

    def tail(self, name: str, chars: int = 3000) -> str:
        path = self.workdir / f"{name}.log"
        return path.read_text(errors="replace")[-chars:] if path.exists() else "(no log)"


def prefect_env(home: Path, api_url: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "PREFECT_HOME": str(home),
            "PREFECT_API_URL": api_url,
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "DO_NOT_TRACK": "1",
            "PREFECT_UI_ENABLED": "false",
            "PREFECT_WORKER_QUERY_SECONDS": "1",
            "PREFECT_LOGGING_LEVEL": os.environ.get("BENCH_LOG_LEVEL", "WARNING"),
            "VIBEOPS_PROJECT_DIR": str(PROJECT_DIR),  # prefect.yaml's pull step
        }
    )
    env.pop("PREFECT_PROFILE", None)
    return env


def wait_http(url: str, timeout_seconds: float, what: str) -> None:
    deadline = time.monotonic() + timeout_seconds
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(url, timeout=2).status_code == 200:
                return
        time.sleep(0.2)
    raise RuntimeError(f"{what} did not answer {url} within {timeout_seconds}s")


def run(argv: list[str], env: dict[str, str], what: str) -> None:
    done = subprocess.run(argv, env=env, cwd=PROJECT_DIR, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{what} failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")


def bin_path(name: str) -> str:
    found = Path(sys.executable).parent / name
    return str(found) if found.exists() else (shutil.which(name) or name)


def find_run(client: Any, deployment_id: Any, case: str) -> Any | None:
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    runs = client.read_flow_runs(
        deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id])),
        limit=50,
    )
    for flow_run in runs:
        if case in str(flow_run.parameters):
            return flow_run
    return None


def measure(client: Any, alertmanager: Alertmanager, deployment_id: Any, timeout: float) -> dict:
    """Post one alert and time it until its run is Running; then cancel the run."""
    from prefect.states import Cancelling

    case = uuid.uuid4().hex[:10]
    alert = make_alert(ALERTNAME, {"namespace": "bench", "deployment": f"bench-{case}"})
    posted = datetime.now(UTC)
    alertmanager.post_alerts([alert])
    deadline = time.monotonic() + timeout
    flow_run = None
    while time.monotonic() < deadline:
        flow_run = find_run(client, deployment_id, case)
        if flow_run is not None and flow_run.start_time is not None:
            break
        time.sleep(0.1)
    else:
        raise RuntimeError(f"no Running run for alert {case} within {timeout}s")
    states = {st.type.value: st.timestamp for st in client.read_flow_run_states(flow_run.id)}
    pending = states.get("PENDING")
    result = {
        "created_s": (flow_run.created - posted).total_seconds(),
        "pending_s": (pending - posted).total_seconds() if pending else float("nan"),
        "running_s": (flow_run.start_time - posted).total_seconds(),
        "state": flow_run.state_name,
    }
    if not flow_run.state or not flow_run.state.is_final():
        with contextlib.suppress(Exception):
            client.set_flow_run_state(flow_run.id, Cancelling(), force=True)
    while time.monotonic() < deadline + 60:
        state = client.read_flow_run(flow_run.id).state
        if state is not None and state.is_final():
            break
        time.sleep(0.2)
    return result


@contextlib.contextmanager
def local_stack(workdir: Path) -> Iterator[tuple[str, Alertmanager, Stack]]:
    stack = Stack(workdir)
    alertmanager: Alertmanager | None = None
    try:
        port = free_port()
        api_url = f"http://127.0.0.1:{port}/api"
        env = prefect_env(workdir / "prefect-home", api_url)
        prefect = bin_path("prefect")
        stack.start(
            "prefect-server",
            [prefect, "server", "start", "--host", "127.0.0.1", "--port", str(port)],
            env,
        )
        wait_http(f"{api_url}/health", 90, "prefect server")
        pool = WORK_POOL
        run([prefect, "work-pool", "create", pool, "--type", "process"], env, "work-pool create")
        run(
            [prefect, "--no-prompt", "deploy", "--name", DEPLOYMENT, "--pool", pool],
            env,
            f"prefect deploy --name {DEPLOYMENT}",
        )
        stack.start("worker", [prefect, "worker", "start", "--pool", pool], env)

        token = secrets.token_hex(24)
        token_file = workdir / "relay-token"
        token_file.write_text(token)
        token_file.chmod(0o600)
        relay_port = free_port()
        stack.start(
            "relay",
            [
                bin_path("vibeops"),
                "relay",
                "--port",
                str(relay_port),
                "--token-file",
                str(token_file),
            ],
            env,
        )
        wait_for_port("127.0.0.1", relay_port, 30, "relay")
        relay_url = f"http://127.0.0.1:{relay_port}"
        wait_http(f"{relay_url}/ready", 30, "relay")
        alertmanager = Alertmanager(base_dir=workdir / "alertmanager")
        alertmanager.start(alertmanager_config(relay_url, token_file, repeat_interval="1h"))
        yield api_url, alertmanager, stack
    finally:
        if alertmanager is not None:
            alertmanager.stop()
        stack.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--alerts", type=int, default=10)
    parser.add_argument("--timeout", type=float, default=60.0, help="Per alert, seconds.")
    parser.add_argument(
        "--keep-logs", action="store_true", help="Keep the work folder (server/worker logs)."
    )
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="vibeops-alert-bench-"))
    started = time.monotonic()
    try:
        with local_stack(workdir) as (api_url, alertmanager, stack):
            os.environ["PREFECT_API_URL"] = api_url
            from prefect.client.orchestration import get_client

            print(f"stack up in {time.monotonic() - started:.1f}s (Prefect API {api_url})")
            with get_client(sync_client=True) as client:
                flow_name, name = DEPLOYMENT.split("/")
                deployment = client.read_deployment_by_name(f"{flow_name}/{name}")
                # warm-up: the first run pays for imports the OS has not cached yet
                try:
                    warm = measure(client, alertmanager, deployment.id, args.timeout)
                except RuntimeError:
                    print(stack.tail("worker"))
                    print(stack.tail("relay"))
                    raise
                print(f"warm-up: running after {warm['running_s']:.2f}s (not counted)")
                print(
                    f"{'alert':>5} {'run created s':>14} {'worker took it s':>17} {'running s':>10}"
                )
                results = []
                for i in range(1, args.alerts + 1):
                    result = measure(client, alertmanager, deployment.id, args.timeout)
                    results.append(result)
                    print(
                        f"{i:>5} {result['created_s']:>14.2f} {result['pending_s']:>17.2f} "
                        f"{result['running_s']:>10.2f}"
                    )
    finally:
        if args.keep_logs:
            print(f"logs kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)

    created = [r["created_s"] for r in results]
    pending = [r["pending_s"] for r in results]
    running = [r["running_s"] for r in results]
    load = os.getloadavg()[0]
    print(
        f"alert -> run created: p50 {statistics.median(created):.2f}s, max {max(created):.2f}s; "
        f"-> picked up by the worker: p50 {statistics.median(pending):.2f}s; "
        f"-> Running: p50 {statistics.median(running):.2f}s, max {max(running):.2f}s "
        f"(target p50 <= {TARGET_P50_S:.0f}s; 1-min load average {load:.1f} on {os.cpu_count()} "
        "cores)"
    )
    print(
        f"RESULT alert_to_running_s_p50={statistics.median(running):.2f} "
        f"alert_to_running_s_max={max(running):.2f}"
    )


if __name__ == "__main__":
    main()
