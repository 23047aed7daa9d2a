#!/bin/bash
# Sequential write + fsync through the mount, per variant "label|mount args|ENV=…", each with
# plain ext4 beside it (the same disk, the same minute): `dd bs=$BS count=$COUNT conv=fsync`,
# twice per target, in seconds. BS=4k COUNT=131072 gives the small-writes case (512 MiB).
# Run under ci/with-enable-uring.sh for the ring transport. Needs root (drop_caches).
# Example: kernel-notes/probe-writeback.sh "wb on|" "wb off|--writeback-cache off"
B=${B:-$(dirname "$0")/../target/release/oxcrypt}
BS=${BS:-1M}; COUNT=${COUNT:-1024}
export OXCRYPT_PASSWORD=pw
for spec in "$@"; do
  IFS='|' read label args env <<< "$spec"
  w=$(mktemp -d -p /var/tmp); mkdir $w/m $w/p
  $B init $w/v --scrypt-cost 1024 >/dev/null 2>&1
  env $env $B mount $w/v $w/m $args --stats 2>$w/log & pid=$!
  for i in $(seq 100); do mountpoint -q $w/m && break; sleep 0.1; done
  out=""
  for t in p m p m; do
    sync; echo 3 > /proc/sys/vm/drop_caches
    s=$(date +%s.%N)
    dd if=/dev/zero of=$w/$t/f bs=$BS count=$COUNT conv=fsync status=none
    out="$out $t=$(printf %.3f $(echo "$(date +%s.%N) - $s" | bc))"
    rm $w/$t/f
  done
  rss=$(grep VmHWM /proc/$pid/status | awk '{print $2/1024 " MiB"}')
  umount $w/m; wait $pid
  echo "$label ($BS x $COUNT):$out (p = plain ext4, m = mount; daemon peak RSS $rss) | $(grep -E '^queue' $w/log | tr '\n' ' ')"
  rm -rf $w
done
