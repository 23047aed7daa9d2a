#!/bin/bash
# Daemon descriptors before and after reading 200 files twice (issue 8: Close above 64 workers).
# Usage: probe-fd-leak.sh OXCRYPT_BINARY [mount options…] (root, /dev/fuse; prints one line).
BIN=$1; shift
w=$(mktemp -d); mkdir $w/mnt
export OXCRYPT_PASSWORD=pw
$BIN init $w/v --scrypt-cost 16 >/dev/null 2>&1
$BIN mount $w/v $w/mnt "$@" 2>/dev/null & pid=$!
for i in $(seq 100); do mountpoint -q $w/mnt && break; sleep 0.1; done
for i in 1 2 3 4 5; do echo x > $w/mnt/warm$i; done
before=$(ls /proc/$pid/fd | wc -l)
for i in $(seq 200); do head -c 10000 /dev/zero > $w/mnt/f$i; cat $w/mnt/f$i > /dev/null; cat $w/mnt/f$i >/dev/null; done
after=$(ls /proc/$pid/fd | wc -l)
echo "fds before=$before after=$after"
$BIN umount $w/mnt; wait $pid; rm -rf $w
