#!/bin/bash
# fio 4 KiB random reads of a 256 MiB file through a fresh mount (1 thread, then 4; buffered,
# psync, 2 s each) and the request counts of the transport. Extra arguments go to
# `oxcrypt mount` (e.g. --ablate no-decrypt-ahead); run under ci/with-enable-uring.sh for the ring.
B=${B:-$(dirname "$0")/../target/release/oxcrypt}; export OXCRYPT_PASSWORD=pw
w=$(mktemp -d -p /var/tmp); mkdir $w/m
$B init $w/v --scrypt-cost 1024 >/dev/null 2>&1
$B mount $w/v $w/m --stats "$@" 2>$w/err & pid=$!
for i in $(seq 100); do mountpoint -q $w/m && break; sleep 0.1; done
dd if=/dev/urandom of=$w/m/f bs=1M count=256 conv=fsync status=none
for j in 1 4; do
fio --name=r --filename=$w/m/f --rw=randread --bs=4k --numjobs=$j --ioengine=psync --time_based --runtime=2 --group_reporting --size=256M 2>&1 | grep -E "^\s+read:" | sed "s/^/x$j /"
done
umount $w/m; wait $pid; grep -E "queue|READ" $w/err | head -5; rm -rf $w
