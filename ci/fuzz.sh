#!/usr/bin/env bash
# Builds every cargo-fuzz target (fuzz/) and runs each over its committed corpus once
# (-runs=0: replay, no new inputs), so a target that no longer builds or an input that
# crashes again fails CI. Needs the nightly toolchain and cargo-fuzz; without them it says so
# and stops, and the corpus is still replayed on stable by
# crates/oxcrypt-core/tests/fuzz_corpus.rs. To fuzz for real:
#   cd fuzz && cargo +nightly fuzz run -O <target> corpus/<target> -- -max_total_time=600
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
if ! rustup run nightly rustc --version >/dev/null 2>&1 || ! command -v cargo-fuzz >/dev/null; then
  echo "fuzz: no nightly toolchain or cargo-fuzz on this machine; targets not built (corpus replayed on stable by the core's tests)"
  exit 0
fi
cargo +nightly fuzz build -O
for target in $(cargo +nightly fuzz list); do
  echo "fuzz: $target over $(ls "corpus/$target" | wc -l) inputs"
  cargo +nightly fuzz run -O "$target" "corpus/$target" -- -runs=0 >"/tmp/oxcrypt-fuzz-$target.log" 2>&1 \
    || { tail -40 "/tmp/oxcrypt-fuzz-$target.log"; echo "fuzz: $target failed" >&2; exit 1; }
done
echo "fuzz: every target built and replayed its corpus"
