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
. "$here/kernel-notes/read-rate.sh"
echo "MB/s (idle, CPU per MiB): plain ${labels[*]}"
for r in $(seq ${ROUNDS:-3}); do
  line="round $r  $(rate $w/p/f $size)"
  for k in $(seq 0 $((n - 1))); do line="$line$(rate $w/m$k/f $size)"; done
  echo "$line"
done
