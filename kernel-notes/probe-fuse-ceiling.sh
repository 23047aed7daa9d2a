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
. "$here/kernel-notes/read-rate.sh"
echo "MB/s (idle, CPU per MiB)  plain  fuse-pread  fuse-zeros  oxcrypt"
for r in 1 2 3; do
  echo "round $r      $(rate $w/p/f $size)  $(rate $w/pass/data $size)  $(rate $w/zeros/data $size)  $(rate $w/ox/f $size)"
done
