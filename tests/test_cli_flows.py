"""`vibeops` flow commands, `status` and `down`, run as real commands against real servers.

The flow commands run in a subprocess exactly as an operator types them: against a real
Prefect server started the way `vibeops up` starts it (recorded under VIBEOPS_HOME), a private
MariaDB, and local region folders. Nothing is mocked.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from blocks import MySQLConnection
from deployments.cli_options import option_name
from deployments.flow_commands import FLOW_COMMANDS, build_command, command_fields, field_options
from deployments.processes import ProcessRecord, matches, recorded, start_recorded
from tasks.local_stack import free_port, port_open
from tasks.sample_data import create_sample_database
from tests.fixtures.mysql import run_sql
from vibeops_cli import main

PROJECT = Path(__file__).resolve().parent.parent


# -- options mirror the parameter models (no server) ----------------------------------------------


@pytest.mark.parametrize("name", list(FLOW_COMMANDS))
def test_every_flow_command_takes_exactly_the_fields_of_its_parameter_models(name: str) -> None:
    models, _ = field_options(name)
    command = build_command(name)
    fields = set().union(*(set(model.model_fields) for model in models.values()))
    assert command_fields(command) == fields
    for param in command.params:
        if param.name in fields:
            assert option_name(param.name) in param.opts, (name, param.opts)
    kind_option = [p for p in command.params if p.name == "kind"]
    assert bool(kind_option) == (len(models) > 1)


def test_backup_and_drill_take_the_form_fields_the_issue_names() -> None:
    backup = command_fields(build_command("backup"))
    assert {"source", "database", "engine", "connection_block", "store_block", "codec"} <= backup
    assert {"bucket", "window_seconds", "batch_size"} <= backup  # --kind influxdb / mongodb
    drill = command_fields(build_command("drill"))
    assert {"source", "backup", "keep_hours", "scratch_database", "rto_target"} <= drill


def _cli_env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_API", "VIBEOPS_"))}
    env.update(
        VIBEOPS_HOME=str(home),
        PREFECT_HOME=str(home / "prefect-home"),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        DO_NOT_TRACK="1",
        COLUMNS="60",  # a narrow "terminal" must still not wrap ids or URIs off a terminal
        **extra,
    )
    return env


def vibeops(*args: str, env: dict[str, str], timeout: float = 600) -> subprocess.CompletedProcess:
    """The installed `vibeops` command, off a terminal (pipes), as a script would run it."""
    return subprocess.run(
        [shutil.which("vibeops") or "vibeops", *args],
        env=env,
        cwd=PROJECT,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def test_a_bad_choice_is_a_one_line_usage_error_not_a_traceback(tmp_path: Path) -> None:
    result = vibeops("backup", "--codec", "lz4", env=_cli_env(tmp_path))
    assert result.returncode == 2, result
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "--codec" in lines[0] and "lz4" in lines[0] and "zstd" in lines[0]
    assert result.stdout == ""


@pytest.mark.parametrize(
    ("args", "option", "words"),
    [
        (["drill", "--rto-target", "20 minutes"], "--rto-target", "30m"),
        (["drill", "--keep-hours", "500"], "--keep-hours", "168"),
        (["backup", "--kind", "mongodb", "--engine", "mydumper"], "--engine", "--kind mysql"),
        (["backup", "--source", "../etc"], "--source", "../etc"),
        (["provision-tenant", "--tenant", "admin"], "--tenant", "admin"),
    ],
)
def test_values_the_model_refuses_are_one_line_usage_errors_naming_the_option(
    args: list[str], option: str, words: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert f"'{option}'" in err[0] and words in err[0]


# -- against a real Prefect server started the way `vibeops up` starts it ---------------------------


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("vibeops-home")


@pytest.fixture(scope="module")
def up_server(home: Path) -> Iterator[str]:
    """A Prefect server started by `ensure_prefect_server` (what `vibeops up` runs), recorded."""
    port = free_port()
    env = _cli_env(home, VIBEOPS_PREFECT_PORT=str(port))
    started = subprocess.run(
        [
            sys.executable,
            "-c",
            "from deployments.local_stack_cli import ensure_prefect_server as e; print(e(600))",
        ],
        env=env,
        cwd=PROJECT,
        capture_output=True,
        text=True,
        timeout=660,
    )
    assert started.returncode == 0, started.stderr[-3000:]
    api_url = started.stdout.strip().splitlines()[-1]
    assert api_url == f"http://127.0.0.1:{port}/api"
    yield api_url
    for record in recorded():  # whatever a failed test left running
        if record.name == "prefect-server" and matches(record):
            os.killpg(record.pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def source(mysql_root: MySQLConnection) -> Iterator[str]:
    name = f"cli_{uuid.uuid4().hex[:8]}"
    create_sample_database(mysql_root, name, rows=2000)
    yield name
    run_sql(mysql_root, f"DROP DATABASE IF EXISTS `{name}`")


@pytest.fixture
def cli_env(home: Path, mysql_root: MySQLConnection, monkeypatch: pytest.MonkeyPatch) -> dict:
    monkeypatch.setenv("VIBEOPS_HOME", str(home))  # for recorded() in this process
    return _cli_env(home, VIBEOPS_MYSQL_HOST="127.0.0.1", VIBEOPS_MYSQL_PORT=str(mysql_root.port))


def _flow_runs(api_url: str, flow_name: str) -> list[dict]:
    flows = httpx.post(f"{api_url}/flows/filter", json={"flows": {"name": {"any_": [flow_name]}}})
    ids = [f["id"] for f in flows.json()]
    runs = httpx.post(f"{api_url}/flow_runs/filter", json={"flow_runs": {}, "limit": 200})
    return [r for r in runs.json() if r["flow_id"] in ids]


@pytest.fixture(scope="module")
def committed(up_server: str, source: str, home: Path, mysql_root: MySQLConnection) -> dict:
    """`vibeops backup ... --json` run once, off a terminal, with no PREFECT_API_URL set."""
    env = _cli_env(home, VIBEOPS_MYSQL_HOST="127.0.0.1", VIBEOPS_MYSQL_PORT=str(mysql_root.port))
    backup = vibeops("backup", "--source", source, "--database", source, "--json", env=env)
    assert backup.returncode == 0, backup.stderr[-3000:]
    return {"stderr": backup.stderr, **json.loads(backup.stdout.strip().splitlines()[-1])}


def test_backup_runs_on_the_server_up_recorded_and_shows_there(
    up_server: str, committed: dict
) -> None:
    assert f"Prefect server: {up_server}" in committed["stderr"]  # found through the record
    assert committed["state"] == "COMPLETED" and committed["flow"] == "backup-mysql"
    runs = _flow_runs(up_server, "backup-mysql")
    assert [r["id"] for r in runs] == [committed["flow_run_id"]]  # the run lives on that server
    ui = f"{up_server.removesuffix('/api')}/runs/flow-run/{committed['flow_run_id']}"
    assert committed["ui"] == ui


def test_backups_lists_full_ids_one_plain_line_each_off_a_terminal(
    committed: dict, source: str, cli_env: dict
) -> None:
    backup_id = committed["result"]["backup_id"]
    listing = vibeops("backups", "--source", source, env=cli_env)
    assert listing.returncode == 0, listing.stderr
    lines = listing.stdout.splitlines()
    assert lines[0].split("\t")[:3] == ["region", "backup_id", "state"]
    assert [line.split("\t")[1:3] for line in lines[1:]] == [[backup_id, "committed"]] * 2
    assert "\x1b[" not in listing.stdout
    as_json = json.loads(vibeops("backups", "--source", source, "--json", env=cli_env).stdout)
    assert {(r["region"], r["backup_id"], r["state"]) for r in as_json} == {
        ("local-a", backup_id, "committed"),
        ("local-b", backup_id, "committed"),
    }


def test_plain_backup_output_prints_each_region_uri_whole(source: str, cli_env: dict) -> None:
    plain = vibeops("backup", "--source", source, "--database", source, env=cli_env)
    assert plain.returncode == 0, plain.stderr[-3000:]
    uris = [line.split(": ", 1)[1] for line in plain.stdout.splitlines() if line.startswith("  ")]
    assert len(uris) == 2, plain.stdout
    assert all(Path(uri.removeprefix("file://")).is_dir() for uri in uris), plain.stdout
    assert "backup-mysql: Completed (http://" in plain.stdout


def test_drill_takes_the_form_fields_and_passes_on_the_named_backup(
    up_server: str, committed: dict, source: str, cli_env: dict
) -> None:
    backup_id = committed["result"]["backup_id"]
    drill = vibeops(
        "drill", "--source", source, "--backup", backup_id, "--keep-hours", "0",
        "--rto-target", "PT20M", "--json", env=cli_env,
    )  # fmt: skip
    assert drill.returncode == 0, drill.stderr[-3000:]
    record = json.loads(drill.stdout.strip().splitlines()[-1])["result"]
    assert record["passed"] is True and record["backup_id"] == backup_id
    assert record["rto_target_seconds"] == 1200
    assert len(_flow_runs(up_server, "restore-drill")) == 1


def test_a_failed_drill_exits_non_zero_and_ends_with_one_line_saying_why(
    source: str, cli_env: dict
) -> None:
    failed = vibeops("drill", "--source", source, "--backup", "1999-01-01", env=cli_env)
    assert failed.returncode == 1, failed
    assert "restore-drill: Failed" in failed.stdout
    assert "Traceback" not in failed.stdout  # the run's own log (stderr) may carry one
    own = [ln for ln in failed.stderr.strip().splitlines() if " | INFO    | prefect" not in ln]
    last = own[-1]  # Prefect may log its temporary server stopping after our last line
    assert last.startswith("restore-drill failed: "), last


def test_without_a_server_a_flow_runs_in_process_and_says_so_in_one_line(tmp_path: Path) -> None:
    dead = free_port()
    env = _cli_env(
        tmp_path,
        PREFECT_API_URL=f"http://127.0.0.1:{dead}/api",
        VIBEOPS_PREFECT_PORT=str(dead),
    )
    result = vibeops("drill", "--source", "nothing_here", env=env)
    notes = [line for line in result.stderr.splitlines() if "no Prefect server answered" in line]
    assert len(notes) == 1 and "temporary in-process server" in notes[0], result.stderr[-3000:]
    assert f"http://127.0.0.1:{dead}/api" in notes[0]
    assert result.returncode == 1  # no backup of that source: the drill fails


# -- status and down --------------------------------------------------------------------------------


def test_status_and_down_stop_what_up_recorded_and_nothing_else(
    up_server: str, cli_env: dict, home: Path
) -> None:
    # A worker under `uv run`, which ignores SIGTERM to its process group (FIELD-NOTES).
    worker = start_recorded(
        "worker",
        ["uv", "run", "--frozen", "prefect", "worker", "start", "--pool", "cli-test-pool"],
        log=home / "worker.log",
        address=f"pool cli-test-pool on {up_server}",
        env={**cli_env, "PREFECT_API_URL": up_server},
        cwd=PROJECT,
    )
    # A record whose PID now runs something else (a reused PID): never signalled.
    bystander = subprocess.Popen(["sleep", "600"], start_new_session=True)
    Path(home / "run" / "old-worker.json").write_text(
        json.dumps(
            ProcessRecord(
                name="old-worker",
                pid=bystander.pid,
                cmdline=["python", "-m", "prefect", "worker", "start"],
                start_ticks=1,
                started_at="2026-01-01T00:00:00+00:00",
            ).__dict__
        )
    )
    try:
        deadline = time.monotonic() + 120
        while "Worker" not in (home / "worker.log").read_text(errors="replace"):
            assert time.monotonic() < deadline, (home / "worker.log").read_text()[-2000:]
            time.sleep(1)

        status = vibeops("status", "--json", env=cli_env)
        assert status.returncode == 0, status.stderr
        rows = {row["name"]: row for row in json.loads(status.stdout)}
        assert rows["prefect-server"]["running"] and rows["prefect-server"]["address"] == up_server
        assert rows["worker"]["running"] and rows["worker"]["pid"] == worker.pid
        assert rows["old-worker"]["running"] is False
        plain = vibeops("status", env=cli_env).stdout
        assert f"prefect-server: running, pid {rows['prefect-server']['pid']}, {up_server}" in plain

        down = vibeops("down", "--timeout", "30", env=cli_env)
        assert down.returncode == 0, down.stdout + down.stderr
        assert f"worker (pid {worker.pid}): stopped" in down.stdout
        assert "old-worker" in down.stdout and "not running (record removed)" in down.stdout
        assert bystander.poll() is None  # the bystander was not signalled
        assert not port_open("127.0.0.1", int(up_server.rsplit(":", 1)[1].split("/")[0]))
        assert not Path(f"/proc/{worker.pid}").exists() or not matches(worker)
        assert recorded() == []
        again = vibeops("status", env=cli_env)
        assert "nothing recorded" in again.stdout
    finally:
        bystander.kill()
        bystander.wait()
