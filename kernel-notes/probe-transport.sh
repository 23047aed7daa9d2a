#!/bin/bash
# The two transports side by side (issue 10): fio 4 KiB O_DIRECT random reads with 4 jobs,
# 4 KiB random writes with 1 job, and the daemon's RSS, once per transport given.
# Usage: ci/with-enable-uring.sh kernel-notes/probe-transport.sh OXCRYPT_BINARY uring dev-fuse …
# (root, /dev/fuse, fio; the ring needs enable_uring=Y, which the wrapper sets and restores).
# OXCRYPT_RING_NOPIN=1 in the environment leaves the queue threads unpinned.
BIN=$1; shift
export OXCRYPT_PASSWORD=pw
for t in "$@"; do
  w=$(mktemp -d); mkdir $w/mnt
  $BIN init $w/v --scrypt-cost 1024 >/dev/null 2>&1
  $BIN mount $w/v $w/mnt --transport "$t" 2>/dev/null & pid=$!
  for i in $(seq 100); do mountpoint -q $w/mnt && break; sleep 0.1; done
  idle=$(awk '/VmRSS/{print $2}' /proc/$pid/status)
  fio --name=prep --filename=$w/mnt/f --rw=write --bs=1M --size=256m --ioengine=psync >/dev/null 2>&1
  r=$(fio --name=t --filename=$w/mnt/f --rw=randread --bs=4k --size=256m --runtime=5 --time_based \
      --ioengine=psync --numjobs=4 --direct=1 --group_reporting 2>/dev/null | grep -oE "IOPS=[0-9.k]+" | head -1)
  wr=$(fio --name=t --filename=$w/mnt/f --rw=randwrite --bs=4k --size=256m --runtime=4 --time_based \
      --ioengine=psync --numjobs=1 --group_reporting 2>/dev/null | grep -oE "IOPS=[0-9.k]+" | head -1)
  hwm=$(awk '/VmHWM/{print $2}' /proc/$pid/status)
  echo "$t: randread-direct-4k-x4 $r  randwrite-4k $wr  rss idle ${idle} kB peak ${hwm} kB"
  $BIN umount $w/mnt; wait $pid; rm -rf $w
done
