#!/bin/bash
# One cold ls -f of a 10,000-entry directory, with the daemon's getdents64/statx/openat counts.
# Usage: probe-cold-readdir.sh OXCRYPT_BINARY [LABEL] (needs strace, bc) (root, /dev/fuse; prints one line).
BIN=$1
w=$(mktemp -d); mkdir $w/mnt
export OXCRYPT_PASSWORD=pw
$BIN init $w/v --scrypt-cost 16 >/dev/null 2>&1
$BIN mount $w/v $w/mnt 2>/dev/null & pid=$!
for i in $(seq 100); do mountpoint -q $w/mnt && break; sleep 0.1; done
mkdir $w/mnt/big; (cd $w/mnt/big && seq -f "entry-%06g" 10000 | xargs touch)
strace -f -e trace=getdents64,statx,openat -p $pid -o /tmp/probe-readdir.${2:-run} & sp=$!
sleep 0.3
sync; echo 3 > /proc/sys/vm/drop_caches
s=$(date +%s.%N); ls -f $w/mnt/big > /dev/null; e=$(date +%s.%N)
sleep 0.3; kill -INT $sp; wait $sp 2>/dev/null
echo "${2:-run} ls=$(echo "$e - $s" | bc) getdents=$(grep -c getdents64 /tmp/probe-readdir.${2:-run}) statx=$(grep -c statx /tmp/probe-readdir.${2:-run}) openat=$(grep -c openat /tmp/probe-readdir.${2:-run})"
$BIN umount $w/mnt; wait $pid; rm -rf $w
