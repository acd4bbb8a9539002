"""Where the project and its local state live (standard library only: cheap to import)."""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def vibeops_home() -> Path:
    """Where local state lives (backups, private servers, drill history)."""
    return Path(os.environ.get("VIBEOPS_HOME", PROJECT_ROOT / "var")).resolve()
