"""HTTP smoke checks against a deployed version (the seed's `pytest tests/smoke_tests.py`).

Each check GETs `<base_url><path>` and passes when the status is the expected one within the
latency limit (`tasks.deploy_rules.judge_smoke`). A failing round is repeated up to
`attempts` times (a freshly switched Service may need a moment); the last round counts, and
`require_passing` turns failures into `SmokeTestFailed`.

Example:
    ```python
    from tasks.deploy_rules import DEFAULT_SMOKE_CHECKS
    from tasks.smoke import run_smoke_checks

    results = run_smoke_checks("http://vibebench-core.staging.svc.cluster.local:80",
                               DEFAULT_SMOKE_CHECKS, target="live")
    require_passing(results, "live")
    ```
"""

from __future__ import annotations

import logging
import time

import httpx
from prefect import get_run_logger, task
from prefect.exceptions import MissingContextError

from tasks.deploy_rules import SmokeCheck, SmokeResult, judge_smoke
from tasks.errors import SmokeTestFailed


def _log() -> logging.Logger | logging.LoggerAdapter[logging.Logger]:
    """The run logger inside a flow/task run, else a module logger (for `.fn()` calls)."""
    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger(__name__)


def probe(client: httpx.Client, base_url: str, check: SmokeCheck, target: str) -> SmokeResult:
    """One GET, timed; never raises for HTTP or network trouble (it becomes the result)."""
    started = time.perf_counter()
    try:
        response = client.get(base_url + check.path)
        status, error = response.status_code, None
    except httpx.HTTPError as exc:
        status, error = None, f"{type(exc).__name__}: {exc}"[:300]
    latency_ms = (time.perf_counter() - started) * 1000
    return judge_smoke(check, target, status, latency_ms, error)


def smoke_round(
    base_url: str, checks: list[SmokeCheck], target: str, timeout_seconds: float = 10.0
) -> list[SmokeResult]:
    """Every check once (plain function; used by tasks and rollback verification)."""
    with httpx.Client(timeout=timeout_seconds, follow_redirects=False) as client:
        return [probe(client, base_url, check, target) for check in checks]


@task(name="run-smoke-checks")
def run_smoke_checks(
    base_url: str,
    checks: list[SmokeCheck],
    target: str,
    attempts: int = 3,
    interval_seconds: float = 1.0,
    timeout_seconds: float = 10.0,
) -> list[SmokeResult]:
    """Run the checks until a round passes or `attempts` rounds were made.

    Returns the last round's results (check them with `require_passing`).
    """
    logger = _log()
    results: list[SmokeResult] = []
    for attempt in range(1, attempts + 1):
        results = smoke_round(base_url, checks, target, timeout_seconds)
        for result in results:
            logger.info(
                "smoke %s %s: %s (%.0f ms)", target, result.path, result.reason, result.latency_ms
            )
        if all(r.ok for r in results):
            return results
        if attempt < attempts:
            time.sleep(interval_seconds)
    return results


def require_passing(results: list[SmokeResult], target: str) -> None:
    """Raise SmokeTestFailed naming every failed check (path, status or error, latency)."""
    failed = "; ".join(f"{r.path}: {r.reason}" for r in results if not r.ok)
    if failed:
        raise SmokeTestFailed(f"smoke checks against {target} failed: {failed}")
