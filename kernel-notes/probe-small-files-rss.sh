#!/bin/bash
# Peak and final RSS of the ring-transport daemon over 10,000 4 KiB files (create, cold stat,
# read, delete), per variant "label|ENV=…"; B=binary. Run under ci/with-enable-uring.sh.
B=${B:-$(dirname "$0")/../target/release/oxcrypt}
export OXCRYPT_PASSWORD=pw
for spec in "$@"; do
  IFS='|' read label env <<< "$spec"
  w=$(mktemp -d -p /var/tmp); mkdir $w/mnt
  $B init $w/v --scrypt-cost 1024 >/dev/null 2>&1
  env $env $B mount $w/v $w/mnt --transport uring 2>/dev/null & pid=$!
  for i in $(seq 100); do mountpoint -q $w/mnt && break; sleep 0.1; done
  python3 - $w/mnt <<'PY'
import os, sys, subprocess
m = sys.argv[1]
for d in range(100): os.mkdir(f"{m}/d{d}")
for i in range(10000):
    with open(f"{m}/d{i%100}/f{i}", "wb") as f: f.write(b"B"*4096)
subprocess.run("sync; echo 3 > /proc/sys/vm/drop_caches", shell=True)
for i in range(10000): os.stat(f"{m}/d{i%100}/f{i}")
for i in range(10000): open(f"{m}/d{i%100}/f{i}","rb").read()
for i in range(10000): os.unlink(f"{m}/d{i%100}/f{i}")
PY
  echo "$label: $(grep -E 'VmHWM|VmRSS' /proc/$pid/status | tr -s ' \n' ' ') threads $(ls /proc/$pid/task | wc -l)"
  umount $w/mnt; wait $pid; rm -rf $w
done
