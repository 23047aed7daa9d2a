#!/bin/bash
# Cold sequential reads of one 2 GiB file, plain ext4 against the same bytes in a vault
# mounted once per variant ("label|mount args|VAR=value …" for its environment), the variants read in turn within each of
# rounds (ROUNDS, default 3, so each round's figures share the machine's mood). MB/s (dd bs=1M after
# drop_caches), the share of the two CPUs idle or in iowait, and the CPU time the whole
# machine spent per MiB read. Run under ci/with-enable-uring.sh for ring variants.
#   kernel-notes/probe-read-variants.sh "split|" "whole|--ablate whole-reads"
set -e
here=$(cd "$(dirname "$0")/.." && pwd)
B=${B:-$here/target/release/oxcrypt}
export OXCRYPT_PASSWORD=pw
w=$(mktemp -d -p /var/tmp); mkdir $w/p
labels=(); n=0
trap 'for m in $w/m*; do umount $m 2>/dev/null || true; done; sleep 0.5; rm -rf $w' EXIT
size=$((2048 << 20))
dd if=/dev/urandom of=$w/p/f bs=1M count=2048 status=none
$B init $w/v --scrypt-cost 1024 >/dev/null 2>&1
for spec in "$@"; do
  IFS='|' read -r label args vars <<< "$spec"
  mkdir $w/m$n
  # shellcheck disable=SC2086
  env $vars $B mount $w/v $w/m$n $args 2>/dev/null &
  for i in $(seq 100); do mountpoint -q $w/m$n && break; sleep 0.1; done
  labels+=("$label"); n=$((n + 1))
done
cp $w/p/f $w/m0/f; sync
ticks() { read -r _ u n s i io rest < /proc/stat; echo $((i + io)) $((u + n + s + i + io)); }
rate() {
  echo 3 > /proc/sys/vm/drop_caches
  read i0 t0 < <(ticks); s=$(date +%s.%N)
  dd if=$1 of=/dev/null bs=1M status=none
  read i1 t1 < <(ticks)
  # ticks are 10 ms (USER_HZ 100): busy ticks * 10000 us / MiB read
  printf "%5.0f (%2d%%, %3d us)  " $(echo "$size / 1000000 / ($(date +%s.%N) - $s)" | bc -l) \
    $(( (i1 - i0) * 100 / (t1 - t0) )) $(( (t1 - t0 - i1 + i0) * 10000 / (size >> 20) ))
}
echo "MB/s (idle, CPU per MiB): plain ${labels[*]}"
for r in $(seq ${ROUNDS:-3}); do
  line="round $r  $(rate $w/p/f)"
  for k in $(seq 0 $((n - 1))); do line="$line$(rate $w/m$k/f)"; done
  echo "$line"
done
