#!/bin/bash
# What a cold sequential read through the mount would give if the disk cost nothing: 1 GiB
# read with the ciphertext already in the page cache (cleartext cache dropped by remounting)
# against a fully cold read, three times. Extra arguments go to `oxcrypt mount`.
B=${B:-$(dirname "$0")/../target/release/oxcrypt}
export OXCRYPT_PASSWORD=pw
w=$(mktemp -d -p /var/tmp); mkdir $w/m
$B init $w/v --scrypt-cost 1024 >/dev/null 2>&1
mnt() { $B mount $w/v $w/m "$@" 2>/dev/null & for i in $(seq 100); do mountpoint -q $w/m && break; sleep 0.1; done; }
rate() { s=$(date +%s.%N); dd if=$w/m/f of=/dev/null bs=1M status=none; printf %.0f $(echo "1073.741824 / ($(date +%s.%N) - $s)" | bc -l); }
mnt "$@"; dd if=/dev/urandom of=$w/m/f bs=1M count=1024 status=none; umount $w/m; sleep 0.5
for i in 1 2 3; do
  echo 3 > /proc/sys/vm/drop_caches; find $w/v/d -name '*.c9r' -size +1M -exec cat {} + > /dev/null
  mnt "$@"; warm=$(rate); umount $w/m; sleep 0.5
  echo 3 > /proc/sys/vm/drop_caches
  mnt "$@"; cold=$(rate); umount $w/m; sleep 0.5
  echo "ciphertext cached: $warm MB/s   cold: $cold MB/s"
done
rm -rf $w
