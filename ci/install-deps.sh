#!/usr/bin/env bash
# Installs what the tests need on a fresh Debian machine (idempotent; CI calls it).
set -euo pipefail
need_apt=()
command -v diff >/dev/null || need_apt+=(diffutils)
command -v mountpoint >/dev/null || need_apt+=(util-linux)
if [ ${#need_apt[@]} -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}"
fi
rustup component add rustfmt clippy >/dev/null 2>&1 || true
# The FUSE device must exist; as root no fusermount3 is needed.
[ -c /dev/fuse ] || { echo "no /dev/fuse on this machine: the mount tests cannot run" >&2; exit 1; }
# pjdfstest switches to these users; Debian has them, a minimal image may not.
getent passwd nobody >/dev/null || useradd -r nobody
getent group nogroup >/dev/null || groupadd -r nogroup
getent passwd daemon >/dev/null || useradd -r daemon
getent group daemon >/dev/null || groupadd -r daemon
command -v pjdfstest >/dev/null || cargo install pjdfstest --version 0.2.2 --locked
command -v fsx >/dev/null || cargo install fsx --version 0.3.2 --locked
command -v taskset >/dev/null || { apt-get update -qq; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq util-linux; }
# The fuzz targets (ci/fuzz.sh) build with cargo-fuzz on the nightly toolchain, when the
# machine has one (none can be downloaded here).
if rustup run nightly rustc --version >/dev/null 2>&1; then
  command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --version 0.13.2 --locked
fi
