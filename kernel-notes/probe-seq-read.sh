#!/bin/bash
# 1 GiB written through the mount, then read cold (drop_caches) three times, per variant.
# Usage: ci/with-enable-uring.sh kernel-notes/probe-seq-read.sh dev-fuse uring "uring:OXCRYPT_RING_OFFLOAD_READ_KIB=100000"
B=${B:-$(dirname "$0")/../target/release/oxcrypt}
export OXCRYPT_PASSWORD=pw
for spec in "$@"; do
  t=${spec%%:*}; env=${spec#*:}; [ "$env" = "$spec" ] && env=""
  w=$(mktemp -d); mkdir $w/mnt
  $B init $w/v --scrypt-cost 1024 >/dev/null 2>&1
  env $env $B mount $w/v $w/mnt --transport $t 2>/dev/null & pid=$!
  for i in $(seq 100); do mountpoint -q $w/mnt && break; sleep 0.1; done
  dd if=/dev/zero of=$w/mnt/big bs=1M count=1024 conv=fsync status=none
  out=""
  for i in 1 2 3; do
    sync; echo 3 > /proc/sys/vm/drop_caches
    r=$(dd if=$w/mnt/big of=/dev/null bs=1M 2>&1 | tail -1 | awk '{print $(NF-1)$NF}')
    out="$out $r"
  done
  echo "$spec seq cold read:$out"
  umount $w/mnt; wait $pid; rm -rf $w
done
