#!/bin/bash
# Time to create and rm -rf 3,000 small files in 30 directories (issue 9: space reservation cost).
# Usage: probe-create-delete.sh OXCRYPT_BINARY (needs bc) (root, /dev/fuse; prints one line).
BIN=$1
w=$(mktemp -d); mkdir $w/mnt
export OXCRYPT_PASSWORD=pw
$BIN init $w/v --scrypt-cost 16 >/dev/null 2>&1
$BIN mount $w/v $w/mnt 2>/dev/null & pid=$!
for i in $(seq 100); do mountpoint -q $w/mnt && break; sleep 0.1; done
s=$(date +%s.%N)
for d in $(seq 30); do mkdir $w/mnt/d$d; for f in $(seq 100); do echo x > $w/mnt/d$d/f$f; done; done
m=$(date +%s.%N)
rm -rf $w/mnt/d*
e=$(date +%s.%N)
echo "$(basename $(dirname $(dirname $BIN))) create=$(echo "$m - $s" | bc) delete=$(echo "$e - $m" | bc)"
$BIN umount $w/mnt; wait $pid; rm -rf $w
