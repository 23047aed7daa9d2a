# Sourced by ci/pjdfstest.sh and ci/fsx.sh: builds the release binary, makes a fresh vault and
# mounts it in the background at "$mnt" (extra mount options in "$@"); the EXIT trap unmounts
# it and removes the work directory. Sets: bin, work, mnt, pid.
cargo build --release --locked -p oxcrypt-cli
bin="$PWD/target/release/oxcrypt"
work=$(mktemp -d)
mnt="$work/mnt"
mkdir "$mnt"
export OXCRYPT_PASSWORD=ci-mount
cleanup() {
  "$bin" umount "$mnt" 2>/dev/null || umount -l "$mnt" 2>/dev/null || true
  [ -n "${pid:-}" ] && wait "$pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
"$bin" init "$work/vault" --scrypt-cost 1024 >/dev/null 2>&1
"$bin" mount "$work/vault" "$mnt" --stats "$@" &
pid=$!
for _ in $(seq 100); do mountpoint -q "$mnt" && break; sleep 0.1; done
mountpoint -q "$mnt"
