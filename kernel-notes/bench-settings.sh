#!/usr/bin/env bash
# Measures the kernel settings of kernel-notes/README.md: read-ahead 128 vs 1024 KiB and the
# writeback cache off vs on, with dd (1 GiB, bs=1M; write ends with fsync, read after
# drop_caches). Prints medians of RUNS runs, configurations interleaved.
# Usage: kernel-notes/bench-settings.sh [RUNS]   (root; builds the release binary)
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-3}
cargo build --release --locked -p oxcrypt-cli >/dev/null 2>&1
bin="$PWD/target/release/oxcrypt"
work=$(mktemp -d /var/tmp/oxbench-set.XXXXXX)
export OXCRYPT_PASSWORD=bench
trap '"$bin" umount "$work/mnt" 2>/dev/null || true; rm -rf "$work"' EXIT
mbps() { sed -n 's/.*copied, [0-9.]* s, \([0-9.]*\) \([MG]\)B\/s/\1 \2/p' | awk '{print ($2=="G") ? $1*1000 : $1}'; }
declare -A W R
configs=("ra128:--read-ahead-kb 128" "ra1024:--read-ahead-kb 1024" "wb:--read-ahead-kb 1024 --writeback-cache")
for run in $(seq "$runs"); do
  for c in "${configs[@]}"; do
    name=${c%%:*}; opts=${c#*:}
    rm -rf "$work/vault"; mkdir -p "$work/mnt"
    "$bin" init "$work/vault" --scrypt-cost 1024 >/dev/null 2>&1
    # shellcheck disable=SC2086
    "$bin" mount "$work/vault" "$work/mnt" $opts 2>/dev/null &
    for _ in $(seq 100); do mountpoint -q "$work/mnt" && break; sleep 0.1; done
    W[$name,$run]=$(dd if=/dev/zero of="$work/mnt/f" bs=1M count=1024 conv=fsync 2>&1 | mbps)
    sync; echo 3 > /proc/sys/vm/drop_caches
    R[$name,$run]=$(dd if="$work/mnt/f" of=/dev/null bs=1M 2>&1 | mbps)
    "$bin" umount "$work/mnt"; wait 2>/dev/null || true
  done
done
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
echo "| setting | seq write + fsync MB/s | seq read (cold) MB/s |"
echo "|---|---|---|"
for c in "${configs[@]}"; do
  name=${c%%:*}
  w=$(for r in $(seq "$runs"); do echo "${W[$name,$r]}"; done | median)
  rd=$(for r in $(seq "$runs"); do echo "${R[$name,$r]}"; done | median)
  echo "| ${c#*:} | $w | $rd |"
done
