#!/usr/bin/env bash
# fsx (the File System eXerciser, Rust port `fsx` 0.3.2) on a fresh oxcrypt mount: random
# reads, writes, truncates, mmap reads/writes and fallocates on one file, every read checked
# against fsx's own model of the content. Part of ./ci/test.sh, once per transport.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v fsx >/dev/null || cargo install fsx --version 0.3.2 --locked
# shellcheck source=ci/mount-lib.sh
source ci/mount-lib.sh
ops=${FSX_OPS:-20000}
if fsx -N "$ops" -S 1 -P "$work" "$mnt/fsx.bin" > "$work/fsx.log" 2>&1; then
  tail -2 "$work/fsx.log"
  echo "fsx: $ops operations checked"
else
  tail -40 "$work/fsx.log"
  echo "fsx: failed" >&2
  exit 1
fi
