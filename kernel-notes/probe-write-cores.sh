#!/bin/bash
# One sequential writer (dd bs=1M count=2048 conv=fsync) through a fresh mount: the CPU seconds
# each daemon thread spent on it (one line per thread), to see whether a single stream is
# encrypted on every core. Extra arguments go to `oxcrypt mount`; run under
# ci/with-enable-uring.sh for the ring transport.
B=${B:-$(dirname "$0")/../target/release/oxcrypt}; export OXCRYPT_PASSWORD=pw
w=$(mktemp -d -p /var/tmp); mkdir $w/m
$B init $w/v --scrypt-cost 1024 >/dev/null 2>&1
$B mount $w/v $w/m "$@" 2>/dev/null & pid=$!
for i in $(seq 100); do mountpoint -q $w/m && break; sleep 0.1; done
dpid=$(pgrep -f "oxcrypt mount $w/v" | head -1)
snap() { for t in /proc/$dpid/task/*; do echo "$(cat $t/comm)/$(basename $t) $(awk '{print $14+$15}' $t/stat)"; done | sort; }
snap > /tmp/w.before
s=$(date +%s.%N); dd if=/dev/zero of=$w/m/f bs=1M count=2048 conv=fsync status=none; e=$(date +%s.%N)
snap > /tmp/w.after
printf "2 GiB write+fsync: %.2f s\n" $(echo "$e - $s" | bc -l)
join /tmp/w.before /tmp/w.after 2>/dev/null | awk -v hz=$(getconf CLK_TCK) '{d=($3-$2)/hz; if (d>0) printf "  %-18s %.2f s\n", $1, d}'
umount $w/m; wait $pid; rm -rf $w
