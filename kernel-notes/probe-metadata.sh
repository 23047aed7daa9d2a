#!/bin/bash
# Per-operation cost of creating, cold-stating (after drop_caches) and deleting 3,000 4 KiB
# files in 30 directories, from one Python process (no process start per operation), on
# oxcrypt with each transport given and on the peers (issue 10).
# Usage: ci/with-enable-uring.sh kernel-notes/probe-metadata.sh OXCRYPT_BINARY uring dev-fuse securefs gocryptfs plain
BIN=$1; shift
export OXCRYPT_PASSWORD=pw
cat > /tmp/oxcrypt-statbench.py <<'PY'
import os, sys, time, subprocess
mnt, n = sys.argv[1], 3000
os.makedirs(f"{mnt}/s", exist_ok=True)
for d in range(30): os.makedirs(f"{mnt}/s/d{d}", exist_ok=True)
data = b"B" * 4096
t = time.time()
for i in range(n):
    with open(f"{mnt}/s/d{i%30}/f{i}", "wb") as f: f.write(data)
create = time.time() - t
subprocess.run("sync; echo 3 > /proc/sys/vm/drop_caches", shell=True)
t = time.time()
for i in range(n): os.stat(f"{mnt}/s/d{i%30}/f{i}")
stat = time.time() - t
t = time.time()
for i in range(n): os.unlink(f"{mnt}/s/d{i%30}/f{i}")
delete = time.time() - t
print(f"create {create/n*1e6:.1f} us  stat(cold) {stat/n*1e6:.1f} us  delete {delete/n*1e6:.1f} us")
PY
# shellcheck source=kernel-notes/targets.sh
source "$(dirname "$0")/targets.sh"
for_each_target /tmp/oxcrypt-statbench.py "$@"
