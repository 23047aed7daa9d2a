#!/usr/bin/env bash
# The project's test command (README "Tests"): formatting, lints, then every test.
set -euo pipefail
cd "$(dirname "$0")/.."
echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== cargo test"
cargo test --workspace --locked
echo "== fuzz targets over their corpus"
bash ci/fuzz.sh
echo "== pjdfstest on a mount"
bash ci/pjdfstest.sh
echo "== fsx on a mount"
bash ci/fsx.sh
echo "== the mount tests again with the writeback cache off"
OXCRYPT_WRITEBACK_CACHE=off cargo test --locked -p oxcrypt-cli --test mount
echo "== the mount tests, pjdfstest and fsx again, over FUSE-over-io_uring (enable_uring=Y, restored after)"
bash ci/with-enable-uring.sh cargo test --locked -p oxcrypt-cli --test mount
bash ci/with-enable-uring.sh bash ci/pjdfstest.sh
bash ci/with-enable-uring.sh bash ci/fsx.sh
echo "ci: every check passed"
