#!/bin/bash
# A 10,000-entry directory (issue 10): cold listing (after drop_caches) from one Python
# process, then 1,000 creates, cold stats and deletes in it, per target.
# Usage: ci/with-enable-uring.sh kernel-notes/probe-big-dir.sh OXCRYPT_BINARY uring dev-fuse securefs gocryptfs plain
BIN=$1; shift
export OXCRYPT_PASSWORD=pw
cat > /tmp/oxcrypt-bigdir.py <<'PY'
import os, sys, time, subprocess
d = sys.argv[1] + "/big"
os.makedirs(d)
for i in range(10000): open(f"{d}/entry-{i:06}", "w").close()
subprocess.run("sync; echo 3 > /proc/sys/vm/drop_caches", shell=True)
t = time.time(); n = len(os.listdir(d)); ls = time.time() - t
assert n == 10000, n
t = time.time()
for i in range(1000): open(f"{d}/new-{i}", "w").close()
c = time.time() - t
t = time.time()
for i in range(1000): os.unlink(f"{d}/new-{i}")
u = time.time() - t
print(f"readdir 10k {ls*1000:.1f} ms  create {c*1000:.0f} us/op  delete {u*1000:.0f} us/op")
PY
# shellcheck source=kernel-notes/targets.sh
source "$(dirname "$0")/targets.sh"
for_each_target /tmp/oxcrypt-bigdir.py "$@"
