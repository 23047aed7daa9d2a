#!/bin/bash
# What a hand-over between two threads costs here: thread A (on CPU 0) wakes thread B through
# an eventfd and waits for B's answer through another, 2,000 times, with A sleeping GAP µs
# between rounds (so B's CPU may go idle meanwhile); B on CPU 0 (same CPU) or CPU 1. Prints
# the round trip's p50/p90/p99 in µs. A small C program, built here with cc.
set -e
w=$(mktemp -d); trap 'rm -rf $w' EXIT
cat > $w/wake.c <<'C'
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>
enum { ROUNDS = 2000 };
static int to_b, to_a, cpu_b;
static double now_us(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec * 1e6 + t.tv_nsec / 1e3;
}
static void pin(int cpu) {
  cpu_set_t s;
  CPU_ZERO(&s);
  CPU_SET(cpu, &s);
  sched_setaffinity(0, sizeof s, &s);
}
static void *answer(void *unused) {
  uint64_t v;
  pin(cpu_b);
  for (;;) {
    if (read(to_b, &v, 8) != 8 || write(to_a, &v, 8) != 8) return unused;
  }
}
static int by_value(const void *x, const void *y) {
  double d = *(const double *)x - *(const double *)y;
  return (d > 0) - (d < 0);
}
int main(int argc, char **argv) {
  static double rtt[ROUNDS];
  int gap = atoi(argv[2]);
  uint64_t v = 1;
  pthread_t b;
  cpu_b = atoi(argv[1]);
  pin(0);
  to_b = eventfd(0, 0);
  to_a = eventfd(0, 0);
  pthread_create(&b, NULL, answer, NULL);
  for (int i = 0; i < ROUNDS; i++) {
    if (gap) usleep(gap);
    double s = now_us();
    if (write(to_b, &v, 8) != 8 || read(to_a, &v, 8) != 8) return 1;
    rtt[i] = now_us() - s;
  }
  qsort(rtt, ROUNDS, sizeof rtt[0], by_value);
  printf("B on CPU %d, %5d us apart: p50 %6.1f  p90 %6.1f  p99 %6.1f us\n", cpu_b, gap,
         rtt[ROUNDS / 2], rtt[ROUNDS * 9 / 10], rtt[ROUNDS * 99 / 100]);
  return 0;
}
C
cc -O2 -pthread -o $w/wake $w/wake.c
for cpu in 0 1; do
  for gap in 0 200 2000; do $w/wake $cpu $gap; done
done
