#!/bin/bash
# What FUSE allows a cold sequential reader here, against oxcrypt and plain ext4: a 2 GiB file
# read with dd bs=1M after drop_caches, three rounds of
#   plain        the file on ext4
#   fuse-pread   the same file through a FUSE passthrough without encryption (fuser, the
#                settings of oxcrypt's /dev/fuse transport, one pread per READ)
#   fuse-zeros   a FUSE file answered with zeros (no disk, no work: FUSE's own cost)
#   oxcrypt      the same bytes in a vault, mounted with the extra arguments given here
# in MB/s, with the share of the two CPUs left idle (or waiting for the disk) during the read
# and the CPU time all of the machine spent per MiB read (every process and the kernel).
# Run under ci/with-enable-uring.sh with --transport uring for the ring.
set -e
here=$(cd "$(dirname "$0")/.." && pwd)
cargo build -q --release --manifest-path "$here/Cargo.toml" -p oxcrypt-cli -p oxcrypt-fuse --example fuse_ceiling
B=$here/target/release/oxcrypt
C=$here/target/release/examples/fuse_ceiling
export OXCRYPT_PASSWORD=pw
w=$(mktemp -d -p /var/tmp); mkdir $w/p $w/pass $w/zeros $w/ox
trap 'umount $w/pass $w/zeros $w/ox 2>/dev/null; sleep 0.5; rm -rf $w' EXIT
size=$((2048 << 20))
dd if=/dev/urandom of=$w/p/f bs=1M count=2048 status=none
$B init $w/v --scrypt-cost 1024 >/dev/null 2>&1
$B mount $w/v $w/ox "$@" 2>/dev/null &
$C $w/pass --backing $w/p/f &
$C $w/zeros --size $size &
for m in ox pass zeros; do
  for i in $(seq 100); do mountpoint -q $w/$m && break; sleep 0.1; done
done
# The kernel's read-ahead of a FUSE mount starts at 128 KiB; oxcrypt sets 1 MiB on its own.
for m in pass zeros; do echo 1024 > /sys/class/bdi/$(mountpoint -d $w/$m)/read_ahead_kb; done
cp $w/p/f $w/ox/f; sync
# idle and iowait ticks, and all ticks, from /proc/stat
ticks() { read -r _ u n s i io rest < /proc/stat; echo $((i + io)) $((u + n + s + i + io)); }
rate() {
  echo 3 > /proc/sys/vm/drop_caches
  read i0 t0 < <(ticks); s=$(date +%s.%N)
  dd if=$1 of=/dev/null bs=1M status=none
  read i1 t1 < <(ticks)
  # ticks are 10 ms (USER_HZ 100): busy ticks * 10000 us / MiB read
  printf "%5.0f (%2d%%, %3d us)" $(echo "$size / 1000000 / ($(date +%s.%N) - $s)" | bc -l) \
    $(( (i1 - i0) * 100 / (t1 - t0) )) $(( (t1 - t0 - i1 + i0) * 10000 / (size >> 20) ))
}
echo "MB/s (idle, CPU per MiB)  plain  fuse-pread  fuse-zeros  oxcrypt"
for r in 1 2 3; do
  echo "round $r      $(rate $w/p/f)  $(rate $w/pass/data)  $(rate $w/zeros/data)  $(rate $w/ox/f)"
done
