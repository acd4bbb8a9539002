#!/usr/bin/env bash
# Install what VibeBench Ops needs on a fresh Debian machine (idempotent, quiet when done).
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(mariadb-server mariadb-client mariadb-backup mydumper zstd prometheus-alertmanager prometheus chromium fonts-noto-color-emoji)
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "bootstrap: installing ${missing[*]}" >&2
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # Debian starts these on install; the project starts its own private copies instead.
  for svc in prometheus prometheus-alertmanager; do
    $SUDO service "$svc" stop >/dev/null 2>&1 || true
  done
fi

if ! command -v uv >/dev/null 2>&1; then
  echo "bootstrap: installing uv" >&2
  python3 -m pip install --quiet uv
  hash -r
fi
uv sync --frozen --quiet
