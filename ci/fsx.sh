#!/usr/bin/env bash
# fsx (the File System eXerciser, Rust port `fsx` 0.3.2) on a fresh oxcrypt mount: random
# reads, writes, truncates, mmap reads/writes and fallocates on one file, every read checked
# against fsx's own model of the content. Part of ./ci/test.sh, once per transport.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v fsx >/dev/null || cargo install fsx --version 0.3.2 --locked
cargo build --release --locked -p oxcrypt-cli
bin="$PWD/target/release/oxcrypt"
work=$(mktemp -d)
mnt="$work/mnt"
mkdir "$mnt"
export OXCRYPT_PASSWORD=fsx
cleanup() {
  "$bin" umount "$mnt" 2>/dev/null || umount -l "$mnt" 2>/dev/null || true
  [ -n "${pid:-}" ] && wait "$pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
"$bin" init "$work/vault" --scrypt-cost 1024 >/dev/null 2>&1
"$bin" mount "$work/vault" "$mnt" --stats &
pid=$!
for _ in $(seq 100); do mountpoint -q "$mnt" && break; sleep 0.1; done
mountpoint -q "$mnt"
ops=${FSX_OPS:-20000}
if fsx -N "$ops" -S 1 -P "$work" "$mnt/fsx.bin" > "$work/fsx.log" 2>&1; then
  tail -2 "$work/fsx.log"
  echo "fsx: $ops operations checked"
else
  tail -40 "$work/fsx.log"
  echo "fsx: failed" >&2
  exit 1
fi
