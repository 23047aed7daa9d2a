#!/bin/bash
# Which folio sizes the page cache holds for a file read cold: 64 MiB read with cat after
# drop_caches, then mapped and each page's flags looked up (/proc/self/pagemap for the frame,
# /proc/kpageflags for compound head/tail; needs root). Plain ext4, then the same bytes
# through oxcrypt mounted with each set of extra arguments given (default: none).
set -e
here=$(cd "$(dirname "$0")/.." && pwd)
B=${B:-$here/target/release/oxcrypt}
export OXCRYPT_PASSWORD=pw
w=$(mktemp -d -p /var/tmp); mkdir $w/m
trap 'umount $w/m 2>/dev/null || true; sleep 0.3; rm -rf $w' EXIT
cat > $w/folios.py <<'PY'
import mmap, os, struct, sys
path = os.path.realpath(sys.argv[1])
fd = os.open(path, os.O_RDONLY)
size = os.fstat(fd).st_size
m = mmap.mmap(fd, size, prot=mmap.PROT_READ)
touched = sum(m[off] for off in range(0, size, 4096))
start = next(int(l.split('-')[0], 16) for l in open('/proc/self/maps')
             if l.rstrip('\n').endswith(' ' + path))
head = tail = single = 0
with open('/proc/self/pagemap', 'rb') as pm, open('/proc/kpageflags', 'rb') as kf:
    for i in range(size // 4096):
        pm.seek((start // 4096 + i) * 8)
        entry = struct.unpack('Q', pm.read(8))[0]
        kf.seek((entry & ((1 << 55) - 1)) * 8)
        flags = struct.unpack('Q', kf.read(8))[0]
        if flags >> 15 & 1:
            head += 1
        elif flags >> 16 & 1:
            tail += 1
        else:
            single += 1
print(f"{size // 4096} pages: {single} in order-0 folios, {head + tail} in {head} large folios")
PY
dd if=/dev/urandom of=$w/plain bs=1M count=64 status=none
$B init $w/v --scrypt-cost 1024 >/dev/null 2>&1
look() { sync; echo 3 > /proc/sys/vm/drop_caches; cat "$1" > /dev/null; python3 $w/folios.py "$1"; }
echo "plain ext4: $(look $w/plain)"
[ $# -eq 0 ] && set -- ""
for args in "$@"; do
  # shellcheck disable=SC2086
  $B mount $w/v $w/m $args 2>/dev/null &
  for i in $(seq 100); do mountpoint -q $w/m && break; sleep 0.1; done
  [ -f $w/m/f ] || cp $w/plain $w/m/f
  echo "oxcrypt $args: $(look $w/m/f)"
  umount $w/m; wait
done
