#!/usr/bin/env bash
# Measures --io uring against --io sync with fio on fresh mounts, plus the plain backing
# directory as the ceiling. Prints a Markdown table (MB/s or IOPS, median of RUNS runs).
# Usage: kernel-notes/bench-io.sh [RUNS]   (root; needs fio; builds the release binary)
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-3}
cargo build --release --locked -p oxcrypt-cli >/dev/null 2>&1
bin="$PWD/target/release/oxcrypt"
work=$(mktemp -d /var/tmp/oxbench-io.XXXXXX)
export OXCRYPT_PASSWORD=bench
trap '"$bin" umount "$work/mnt" 2>/dev/null || true; rm -rf "$work"' EXIT

fio_job() { # dir name rw bs jobs size extra...
  local dir=$1 name=$2 rw=$3 bs=$4 jobs=$5 size=$6; shift 6
  fio --name="$name" --directory="$dir" --rw="$rw" --bs="$bs" --numjobs="$jobs" --size="$size" \
      --ioengine=psync --group_reporting --output-format=json "$@" 2>/dev/null
}
metric() { # json kind(read|write) unit(bw|iops)
  python3 -c 'import json,sys; j=json.load(sys.stdin)["jobs"][0][sys.argv[1]]; print(round(j["bw_bytes"]/1e6) if sys.argv[2]=="bw" else round(j["iops"]))' "$1" "$2"
}
measure() { # dir -> prints 6 numbers
  local d=$1
  local w r r4_1 r4_8 r128_1 r128_8
  w=$(fio_job "$d" seqw write 1M 1 1G --end_fsync=1 | metric write bw)
  sync; echo 3 > /proc/sys/vm/drop_caches
  r=$(fio_job "$d" seqw read 1M 1 1G | metric read bw)
  r4_1=$(fio_job "$d" seqw randread 4k 1 1G --time_based --runtime=8 | metric read iops)
  r4_8=$(fio_job "$d" seqw randread 4k 8 1G --time_based --runtime=8 --filename=seqw.0.0 | metric read iops)
  r128_1=$(fio_job "$d" seqw randread 128k 1 1G --time_based --runtime=8 | metric read iops)
  r128_8=$(fio_job "$d" seqw randread 128k 8 1G --time_based --runtime=8 --filename=seqw.0.0 | metric read iops)
  rm -f "$d"/seqw*
  echo "$w $r $r4_1 $r4_8 $r128_1 $r128_8"
}
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

declare -A results
for run in $(seq "$runs"); do
  for target in plain uring sync; do
    if [ "$target" = plain ]; then
      mkdir -p "$work/plain"; dir="$work/plain"
    else
      rm -rf "$work/vault"; mkdir -p "$work/mnt"
      "$bin" init "$work/vault" --scrypt-cost 1024 >/dev/null 2>&1
      "$bin" mount "$work/vault" "$work/mnt" --io "$target" 2>/dev/null &
      for _ in $(seq 100); do mountpoint -q "$work/mnt" && break; sleep 0.1; done
      dir="$work/mnt"
    fi
    results[$target,$run]=$(measure "$dir")
    [ "$target" = plain ] || "$bin" umount "$work/mnt"
    wait 2>/dev/null || true
  done
done
echo "| target | seq write 1 GiB + fsync MB/s | seq read 1 GiB (cold) MB/s | randread 4k 1 job IOPS | randread 4k 8 jobs IOPS | randread 128k 1 job IOPS | randread 128k 8 jobs IOPS |"
echo "|---|---|---|---|---|---|---|"
for target in plain uring sync; do
  row="| $target"
  for col in 1 2 3 4 5 6; do
    m=$(for run in $(seq "$runs"); do echo "${results[$target,$run]}" | cut -d' ' -f$col; done | median)
    row="$row | $m"
  done
  echo "$row |"
done
