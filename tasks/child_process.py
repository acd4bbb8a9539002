"""Child tools that die with the flow run's process, whatever kills it.

Every external tool (mariadb-dump, mydumper, mariadb-backup, mbstream, zstd, the mariadb
client, ...) is started through `spawn` or `run`. The child stays in the flow run's process
group (a worker that kills the group reaches it) and gets a parent-death signal (SIGKILL) by
`prctl(PR_SET_PDEATHSIG)`, so a flow-run process killed with SIGKILL, which runs no cleanup
code, still takes its tools down with it instead of leaving an orphaned dump.

Linux delivers the parent-death signal when the *thread* that started the child ends: start
tools from the thread that also waits for them (as every caller here does).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import threading
from collections.abc import Callable, Sequence
from typing import IO, Any

PR_SET_PDEATHSIG = 1
STDERR_TAIL = 16384

_prctl: Any = None


def _resolve_prctl() -> Any:
    """libc's prctl, resolved in the parent (the child must not load anything)."""
    global _prctl
    if _prctl is None:
        libc = ctypes.CDLL(None, use_errno=True)
        function = libc.prctl
        function.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
        function.restype = ctypes.c_int
        _prctl = function
    return _prctl


def die_with_parent() -> Callable[[], None]:
    """A `preexec_fn` that makes the child receive SIGKILL when its parent dies."""
    prctl = _resolve_prctl()
    parent = os.getpid()
    kill = int(signal.SIGKILL)

    def preexec() -> None:
        prctl(PR_SET_PDEATHSIG, kill, 0, 0)
        if os.getppid() != parent:  # the parent died before the signal was armed
            os._exit(1)

    return preexec


def spawn(argv: Sequence[str], **popen_kwargs: Any) -> subprocess.Popen[bytes]:
    """`subprocess.Popen(argv, ...)` for a tool that must not outlive this process."""
    if popen_kwargs.get("start_new_session"):
        raise ValueError("a tool started in its own session would escape group kills")
    return subprocess.Popen(list(argv), preexec_fn=die_with_parent(), **popen_kwargs)


def run(argv: Sequence[str], **run_kwargs: Any) -> subprocess.CompletedProcess[Any]:
    """`subprocess.run(argv, ...)` for a tool that must not outlive this process."""
    return subprocess.run(list(argv), preexec_fn=die_with_parent(), **run_kwargs)


def stop(process: subprocess.Popen[bytes] | None, timeout_s: float = 10) -> None:
    """Kill `process` if it still runs and reap it."""
    if process is None or process.poll() is not None:
        return
    process.kill()
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=timeout_s)


class StderrTail(threading.Thread):
    """Reads a tool's stderr: keeps its end and fires `seen` on the first `marker` line."""

    def __init__(self, stream: IO[bytes], marker: str | None = None) -> None:
        super().__init__(daemon=True, name="tool-stderr")
        self.stream = stream
        self.marker = marker.encode() if marker else None
        self.seen = threading.Event()
        self.text = bytearray()

    def run(self) -> None:
        for line in self.stream:
            if self.marker and self.marker in line:
                self.seen.set()
            self.text += line
            del self.text[:-STDERR_TAIL]
