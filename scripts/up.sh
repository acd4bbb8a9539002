#!/usr/bin/env bash
# The main job on embedded defaults: install, start a local Prefect server and MySQL,
# seed a sample VibeBench database, back it up into two local regions, run a restore drill.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
exec uv run vibeops up "$@"
