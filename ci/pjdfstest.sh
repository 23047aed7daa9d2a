#!/usr/bin/env bash
# POSIX conformance: pjdfstest on a fresh oxcrypt mount (part of ./ci/test.sh).
# Fails on any failure not listed, with its reason, in ci/pjdfstest.toml.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v pjdfstest >/dev/null || cargo install pjdfstest --version 0.2.2 --locked
cargo build --release --locked -p oxcrypt-cli
bin="$PWD/target/release/oxcrypt"
work=$(mktemp -d)
mnt="$work/mnt"
mkdir "$mnt"
export OXCRYPT_PASSWORD=pjdfstest
cleanup() {
  "$bin" umount "$mnt" 2>/dev/null || umount -l "$mnt" 2>/dev/null || true
  [ -n "${pid:-}" ] && wait "$pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
"$bin" init "$work/vault" --scrypt-cost 1024 >/dev/null 2>&1
"$bin" mount "$work/vault" "$mnt" --allow-other --stats &
pid=$!
for _ in $(seq 100); do mountpoint -q "$mnt" && break; sleep 0.1; done
mountpoint -q "$mnt"
# pjdfstest switches to the users of its config: the test tree must be reachable by them.
chmod 0755 "$work"
(cd "$mnt" && pjdfstest -c "$OLDPWD/ci/pjdfstest.toml" -p "$mnt") > "$work/pjdfstest.log" 2>&1 && rc=0 || rc=$?
grep -E '^Summary:' "$work/pjdfstest.log" || tail -20 "$work/pjdfstest.log"
if [ "$rc" -ne 0 ]; then
  grep -E " FAILED" "$work/pjdfstest.log" | head -40 || true
  grep -E ' FAILED$' "$work/pjdfstest.log" || true
  echo "pjdfstest: unexpected failures (see above)"
  exit 1
fi
