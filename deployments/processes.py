"""The background processes `vibeops up` starts, recorded so `status` and `down` find them.

Each start writes `VIBEOPS_HOME/run/<name>.json`: the PID, the command line and the start
time the kernel reports for it (so a reused PID is never taken for ours), the address it
serves and its log. `stop` signals only a process that still matches its record, and its
process group: SIGINT first (a `prefect worker` under `uv run` ignores SIGTERM to its group),
then SIGTERM, then SIGKILL, each after a timeout.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from blocks.paths import vibeops_home


@dataclass
class ProcessRecord:
    """One process `vibeops up` started."""

    name: str
    pid: int
    cmdline: list[str]
    start_ticks: int
    started_at: str
    address: str = ""
    log: str = ""
    first_signal: str = "SIGINT"


def run_dir() -> Path:
    return vibeops_home() / "run"


def _proc_cmdline(pid: int, attempts: int = 50) -> list[str] | None:
    """The command line of a live process (None when it is gone).

    The kernel can answer an empty command line for a live process (seen under memory
    pressure), so an empty answer is retried for up to ~5 s before it counts.
    """
    for _ in range(attempts):
        try:
            raw = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return None
        if raw:
            return [part.decode(errors="replace") for part in raw.split(b"\0") if part]
        fields = _proc_stat(pid)
        if fields is None or fields[0] == "Z":
            return None
        time.sleep(0.1)
    return None


def _proc_stat(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name (index 0 = state)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2 :].split()


def _start_ticks(pid: int) -> int | None:
    fields = _proc_stat(pid)
    return int(fields[19]) if fields else None  # field 22 of stat: starttime


def matches(record: ProcessRecord) -> bool:
    """True while the PID still runs the recorded command, started at the recorded time."""
    fields = _proc_stat(record.pid)
    if fields is None or fields[0] == "Z":
        return False
    return _proc_cmdline(record.pid) == record.cmdline and int(fields[19]) == record.start_ticks


def start_recorded(
    name: str,
    argv: Sequence[str],
    *,
    log: Path,
    address: str = "",
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> ProcessRecord:
    """Start `argv` in its own session (its own process group) and record it as `name`."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        process = subprocess.Popen(
            list(argv),
            env=dict(env) if env is not None else None,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            cwd=cwd,
        )
    deadline = time.monotonic() + 10
    while _proc_cmdline(process.pid) != list(argv) and time.monotonic() < deadline:
        time.sleep(0.05)  # until the kernel shows the new program's command line
    return record_process(name, process.pid, address=address, log=log)


def record_process(
    name: str,
    pid: int,
    *,
    address: str = "",
    log: Path | None = None,
    first_signal: str = "SIGINT",
) -> ProcessRecord:
    """Record a running process (already exec'd) under `name`.

    `down` stops it with `first_signal` first: SIGTERM for a server that ignores SIGINT
    (mariadbd), SIGINT otherwise (a worker under `uv run` ignores SIGTERM to its group).
    """
    cmdline = _proc_cmdline(pid)
    ticks = _start_ticks(pid)
    if cmdline is None or ticks is None:
        raise ProcessLookupError(f"process {pid} ({name}) is not running")
    record = ProcessRecord(
        name=name,
        pid=pid,
        cmdline=cmdline,
        start_ticks=ticks,
        started_at=datetime.now(UTC).isoformat(timespec="seconds"),
        address=address,
        log=str(log or ""),
        first_signal=first_signal,
    )
    run_dir().mkdir(parents=True, exist_ok=True)
    path = run_dir() / f"{name}.json"
    path.write_text(json.dumps(asdict(record), indent=1))
    return record


def recorded() -> list[ProcessRecord]:
    """Every record, in name order (unreadable records are skipped)."""
    records = []
    for path in sorted(run_dir().glob("*.json")):
        try:
            records.append(ProcessRecord(**json.loads(path.read_text())))
        except (OSError, ValueError, TypeError):
            continue
    return records


def recorded_address(name: str) -> str | None:
    """The address of the process recorded as `name`, if it is still running."""
    for record in recorded():
        if record.name == name and matches(record):
            return record.address
    return None


def forget(record: ProcessRecord) -> None:
    (run_dir() / f"{record.name}.json").unlink(missing_ok=True)


def _group_alive(pgid: int) -> bool:
    """Any live (non-zombie) process left in process group `pgid`."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        fields = _proc_stat(int(entry.name))
        if fields and fields[0] != "Z" and int(fields[2]) == pgid:
            return True
    return False


def _wait_gone(record: ProcessRecord, timeout_seconds: float) -> bool:
    deadline = time.monotonic() + timeout_seconds
    while time.monotonic() < deadline:
        if not matches(record) and not _group_alive(record.pid):
            return True
        time.sleep(0.2)
    return False


def _signal_group(record: ProcessRecord, sig: signal.Signals) -> None:
    """Signal the recorded process's group, if the leader still matches or its group lives."""
    leader_ours = matches(record)
    try:
        group_ours = (
            os.getpgid(record.pid) == record.pid if leader_ours else _group_alive(record.pid)
        )
    except ProcessLookupError:
        group_ours = _group_alive(record.pid)
    if group_ours:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(record.pid, sig)
    elif leader_ours:
        os.kill(record.pid, sig)


def stop(record: ProcessRecord, timeout_seconds: float = 20) -> str:
    """Stop one recorded process; returns what happened, in a few words.

    A record whose PID no longer runs the recorded command (it exited, or the PID was reused)
    is only forgotten: nothing is signalled.
    """
    if not matches(record):
        forget(record)
        return "not running (record removed)"
    first = signal.Signals[record.first_signal]
    steps = [(first, timeout_seconds)]
    steps += [(s, timeout_seconds) for s in (signal.SIGINT, signal.SIGTERM) if s != first]
    for sig, wait in [*steps, (signal.SIGKILL, 10.0)]:
        _signal_group(record, sig)
        if _wait_gone(record, wait):
            forget(record)
            return f"stopped ({sig.name})"
    return "still running after SIGKILL"
