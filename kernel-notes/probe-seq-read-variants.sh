#!/bin/bash
# 1 GiB cold sequential read, three times, per variant "label|mount args|ENV=…", with the
# ring counters (requests per queue, handed to the pool). Run under ci/with-enable-uring.sh.
B=${B:-$(dirname "$0")/../target/release/oxcrypt}
export OXCRYPT_PASSWORD=pw
for spec in "$@"; do
  IFS='|' read label args env <<< "$spec"
  w=$(mktemp -d -p /var/tmp); mkdir $w/mnt
  $B init $w/v --scrypt-cost 1024 >/dev/null 2>&1
  env $env $B mount $w/v $w/mnt $args --stats 2>$w/log & pid=$!
  for i in $(seq 100); do mountpoint -q $w/mnt && break; sleep 0.1; done
  dd if=/dev/zero of=$w/mnt/big bs=1M count=1024 conv=fsync status=none
  out=""
  for i in 1 2 3; do
    sync; echo 3 > /proc/sys/vm/drop_caches
    r=$(dd if=$w/mnt/big of=/dev/null bs=1M 2>&1 | tail -1 | awk '{print $(NF-1)$NF}')
    out="$out $r"
  done
  umount $w/mnt; wait $pid
  echo "$label:$out | $(grep -E '^queue' $w/log | tr '\n' ' ')"
  rm -rf $w
done
