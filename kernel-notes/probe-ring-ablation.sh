#!/bin/bash
# Ring ablation (issue 10): fio 4 KiB O_DIRECT random reads (4 and 16 jobs), random writes,
# a 3,000-file create+delete loop and peak RSS, one fresh mount per variant.
# Usage: ci/with-enable-uring.sh kernel-notes/probe-ring-ablation.sh "label|mount args|env" ...
# e.g. "depth 1|--transport uring --ring-depth 1|" "unpinned|--transport uring|OXCRYPT_RING_NOPIN=1"
B=${B:-$(dirname "$0")/../target/release/oxcrypt}
export OXCRYPT_PASSWORD=pw
for spec in "$@"; do
  IFS='|' read label args env <<< "$spec"
  w=$(mktemp -d); mkdir $w/mnt
  $B init $w/v --scrypt-cost 1024 >/dev/null 2>&1
  env $env $B mount $w/v $w/mnt $args 2>/dev/null & pid=$!
  for i in $(seq 100); do mountpoint -q $w/mnt && break; sleep 0.1; done
  fio --name=prep --filename=$w/mnt/f --rw=write --bs=1M --size=256m --ioengine=psync >/dev/null 2>&1
  r=$(fio --name=t --filename=$w/mnt/f --rw=randread --bs=4k --size=256m --runtime=4 --time_based --ioengine=psync --numjobs=4 --direct=1 --group_reporting 2>/dev/null | grep -oE "IOPS=[0-9.k]+" | head -1)
  r16=$(fio --name=t --filename=$w/mnt/f --rw=randread --bs=4k --size=256m --runtime=4 --time_based --ioengine=psync --numjobs=16 --direct=1 --group_reporting 2>/dev/null | grep -oE "IOPS=[0-9.k]+" | head -1)
  wr=$(fio --name=t --filename=$w/mnt/f --rw=randwrite --bs=4k --size=256m --runtime=3 --time_based --ioengine=psync --numjobs=4 --direct=1 --group_reporting 2>/dev/null | grep -oE "IOPS=[0-9.k]+" | head -1)
  c=$( { /usr/bin/time -f %e python3 -c "
import os
os.mkdir('$w/mnt/d')
for i in range(3000): open('$w/mnt/d/f%d'%i,'w').write('x')
for i in range(3000): os.unlink('$w/mnt/d/f%d'%i)"; } 2>&1)
  hwm=$(awk '/VmHWM/{print $2}' /proc/$pid/status)
  echo "$label: randread-4k-direct x4 $r  x16 $r16  randwrite-4k-direct x4 $wr  3000 create+delete ${c}s  peak RSS ${hwm} kB"
  umount $w/mnt; wait $pid; rm -rf $w
done
