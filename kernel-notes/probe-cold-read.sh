#!/bin/bash
# 1 GiB cold sequential read (dd bs=1M after drop_caches), three rounds of plain ext4 then the
# mount, in MB/s. Extra arguments go to `oxcrypt mount` (e.g. --read-ahead-kb 4096); the
# environment reaches the daemon. Run under ci/with-enable-uring.sh for the ring transport.
B=${B:-$(dirname "$0")/../target/release/oxcrypt}
export OXCRYPT_PASSWORD=pw
w=$(mktemp -d -p /var/tmp); mkdir $w/m $w/p
$B init $w/v --scrypt-cost 1024 >/dev/null 2>&1
$B mount $w/v $w/m "$@" 2>/dev/null & pid=$!
for i in $(seq 100); do mountpoint -q $w/m && break; sleep 0.1; done
dd if=/dev/urandom of=$w/p/f bs=1M count=1024 status=none; cp $w/p/f $w/m/f; sync
for i in 1 2 3; do
  for t in p m; do
    echo 3 > /proc/sys/vm/drop_caches
    s=$(date +%s.%N); dd if=$w/$t/f of=/dev/null bs=1M status=none
    printf "%s %4.0f  " $t $(echo "1073.741824 / ($(date +%s.%N) - $s)" | bc -l)
  done
done
echo "(p = plain ext4, m = mount; MB/s)"
umount $w/m; wait $pid; rm -rf $w
