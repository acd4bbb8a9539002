#!/usr/bin/env bash
# The whole test suite against real local services (each started by the tests themselves).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
export PREFECT_SERVER_ANALYTICS_ENABLED=false DO_NOT_TRACK=1
uv run ruff check .
uv run mypy  # files and settings in pyproject.toml
exec uv run pytest -n 2 "$@"  # two workers: each starts its own servers
