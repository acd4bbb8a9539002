"""Session-wide harness: a real Prefect API, plus fixture modules per service.

Each service's fixtures live in tests/fixtures/<service>.py and start real local servers
(or wire-level stand-ins where nothing real can be installed; see README).
"""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "INFO")

pytest_plugins = [
    "tests.fixtures.mysql",
    "tests.fixtures.gcs",
    "tests.fixtures.kube",
    "tests.fixtures.alerting",
    "tests.fixtures.influx",
    "tests.fixtures.mongo",
    "tests.fixtures.deployments",
]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Keep each phase's report on the item (the browser test screenshots failed calls)."""
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)


@pytest.fixture(scope="session", autouse=True)
def prefect_api():
    """One real Prefect API server (SQLite, temporary) for the whole session."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield
