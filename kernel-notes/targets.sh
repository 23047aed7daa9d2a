# Sourced by the probes: `for_each_target SCRIPT ARGS… -- TARGETS…` mounts each target fresh in
# a temp dir (oxcrypt with a transport name — uring, dev-fuse —, securefs, gocryptfs, or plain
# for the bare directory) and runs `python3 SCRIPT MOUNTPOINT`, printing "target: output".
# Needs $BIN (the oxcrypt binary) and OXCRYPT_PASSWORD.
for_each_target() {
  local script=$1; shift
  for t in "$@"; do
    local w; w=$(mktemp -d); mkdir "$w/v" "$w/mnt"
    case $t in
      securefs) securefs create --format 4 --pass pw "$w/v" >/dev/null 2>&1
                securefs mount --pass pw "$w/v" "$w/mnt" >/dev/null 2>&1 & sleep 1 ;;
      gocryptfs) echo pw > "$w/pw"; gocryptfs -init -passfile "$w/pw" "$w/v" >/dev/null 2>&1
                 gocryptfs -passfile "$w/pw" "$w/v" "$w/mnt" >/dev/null 2>&1 ;;
      plain) ;;
      *) rmdir "$w/v"; "$BIN" init "$w/v" --scrypt-cost 1024 >/dev/null 2>&1
         "$BIN" mount "$w/v" "$w/mnt" --transport "$t" --daemon 2>/dev/null ;;
    esac
    echo -n "$t: "; python3 "$script" "$w/mnt"
    [ "$t" = plain ] || { umount "$w/mnt"; sleep 0.5; }
    rm -rf "$w"
  done
}
