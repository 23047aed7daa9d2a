# Sourced by the read probes: `rate FILE BYTES` reads FILE cold (drop_caches, dd bs=1M) and
# prints MB/s, the share of the CPUs idle or in iowait meanwhile, and the CPU time the whole
# machine spent per MiB read (every process and the kernel, from /proc/stat).

# idle and iowait ticks, and all ticks, from /proc/stat
ticks() { read -r _ u n s i io _ < /proc/stat; echo $((i + io)) $((u + n + s + i + io)); }

rate() {
  local i0 t0 i1 t1 s
  echo 3 > /proc/sys/vm/drop_caches
  read -r i0 t0 < <(ticks); s=$(date +%s.%N)
  dd if="$1" of=/dev/null bs=1M status=none
  read -r i1 t1 < <(ticks)
  # ticks are 10 ms (USER_HZ 100): busy ticks * 10000 us / MiB read
  printf "%5.0f (%2d%%, %3d us)  " "$(echo "$2 / 1000000 / ($(date +%s.%N) - $s)" | bc -l)" \
    $(( (i1 - i0) * 100 / (t1 - t0) )) $(( (t1 - t0 - i1 + i0) * 10000 / ($2 >> 20) ))
}
