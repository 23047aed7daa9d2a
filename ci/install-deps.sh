#!/usr/bin/env bash
# Installs what the tests need on a fresh Debian machine (idempotent; CI calls it).
set -euo pipefail
need_apt=()
command -v diff >/dev/null || need_apt+=(diffutils)
if [ ${#need_apt[@]} -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}"
fi
rustup component add rustfmt clippy >/dev/null 2>&1 || true
