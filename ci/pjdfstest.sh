#!/usr/bin/env bash
# POSIX conformance: pjdfstest on a fresh oxcrypt mount (part of ./ci/test.sh).
# Fails on any failure not listed, with its reason, in ci/pjdfstest.toml.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v pjdfstest >/dev/null || cargo install pjdfstest --version 0.2.2 --locked
# shellcheck source=ci/mount-lib.sh
source ci/mount-lib.sh --allow-other
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
