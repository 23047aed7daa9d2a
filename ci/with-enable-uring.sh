#!/usr/bin/env bash
# Runs "$@" with FUSE-over-io_uring switched on (/sys/module/fuse/parameters/enable_uring = Y)
# and OXCRYPT_TRANSPORT=uring, then puts the parameter back to what it was, also when the
# command fails or the script is interrupted or terminated. The parameter is global: do not
# run other FUSE work on the machine meanwhile. Exits 0 with a message, running nothing, on a
# kernel without the parameter (before 6.14).
set -uo pipefail
param=/sys/module/fuse/parameters/enable_uring
if [ ! -e "$param" ]; then
  echo "with-enable-uring: $param does not exist (kernel before 6.14?); skipping: $*"
  exit 0
fi
orig=$(cat "$param")
restore() { echo "$orig" > "$param"; }
trap restore EXIT
trap 'restore; exit 130' INT
trap 'restore; exit 143' TERM
trap 'restore; exit 129' HUP
echo Y > "$param"
OXCRYPT_TRANSPORT=uring "$@"
