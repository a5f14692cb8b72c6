/*
 * shm-ring: the speed limit `vchan bench` compares against.
 *
 * A single-producer single-consumer byte ring in shared memory between two processes (a memfd,
 * mmapped MAP_SHARED, then fork), built the way a vchan ring is: free-running u32 indices, the
 * producer copies a chunk in (as much as fits), the consumer copies out what is there (at most
 * 64 KiB at a time, like the Node reader) and verifies it. Two ways to wait:
 *
 *   wait  a side that finds the ring full (or empty) raises a "wake me" flag, re-checks, and
 *         sleeps in read() on an eventfd; the other side, after moving its index, takes the flag
 *         and writes the eventfd. One notification per sleep, as libxenvchan's notify bits do.
 *   spin  both sides poll the indices and never sleep (they yield the CPU every 128 turns, a few
 *         microseconds, so that two spinners sharing one CPU of a loaded machine hand it over
 *         quickly instead of burning whole time slices).
 *
 * Usage:
 *   shm-ring throughput CHUNK RING SECONDS wait|spin
 *   shm-ring latency    SIZE  RING SECONDS wait|spin
 *
 * Prints one JSON object on stdout. Throughput counts only bytes the consumer received and
 * compared with the expected pattern (and the total must match what the producer sent), over
 * the consumer's clock from the first byte to the last. Exit status 1 on a usage or system
 * error, 2 when the data did not verify.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sched.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define CACHE_LINE 64
#define READ_MAX (64 * 1024)
/* The data is a random pattern of this period; an odd period keeps chunk boundaries moving. */
#define PERIOD ((1u << 20) + 4099u)

static void die(const char *what) {
  fprintf(stderr, "shm-ring: %s: %s\n", what, strerror(errno));
  exit(1);
}

/* One turn of a spin-wait: a pause, and every SPIN_YIELD turns the CPU back to the scheduler, so
 * that a spinning side cannot starve its peer when both share a CPU (a loaded 2-CPU machine). */
#define SPIN_YIELD 128
static inline void spin_once(unsigned *turns) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  __asm__ __volatile__("yield");
#endif
  if (++*turns % SPIN_YIELD == 0) sched_yield();
}

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

/* Shared header of one ring: every field the two sides write on a cache line of its own. */
struct header {
  _Alignas(CACHE_LINE) _Atomic uint32_t prod;
  _Alignas(CACHE_LINE) _Atomic uint32_t cons;
  _Alignas(CACHE_LINE) _Atomic int producer_waiting; /* set by the producer, taken by the consumer */
  _Alignas(CACHE_LINE) _Atomic int consumer_waiting; /* set by the consumer, taken by the producer */
  _Alignas(CACHE_LINE) _Atomic int closed;
  uint64_t sent; /* written by the producer before it sets closed */
};

struct ring {
  struct header *h;
  uint8_t *data;
  uint32_t size, mask;
  uint32_t own; /* this side's index, kept privately */
  int data_fd;  /* eventfd: data was written (wakes the consumer) */
  int space_fd; /* eventfd: data was consumed (wakes the producer) */
  int spin;
  uint64_t notifies, sleeps;
};

static void sleep_on(struct ring *r, int fd) {
  uint64_t value;
  r->sleeps++;
  while (read(fd, &value, sizeof value) < 0)
    if (errno != EINTR) die("read eventfd");
}

static void wake(struct ring *r, int fd) {
  uint64_t one = 1;
  r->notifies++;
  while (write(fd, &one, sizeof one) < 0)
    if (errno != EINTR) die("write eventfd");
}

/* Puts all of `len` bytes into the ring, waiting for space as needed. */
static void ring_write(struct ring *r, const uint8_t *source, size_t len) {
  unsigned turns = 0;
  while (len > 0) {
    uint32_t used = r->own - atomic_load(&r->h->cons);
    uint32_t space = r->size - used;
    if (space == 0) {
      if (r->spin) {
        spin_once(&turns);
        continue;
      }
      atomic_store(&r->h->producer_waiting, 1);
      if (r->size - (r->own - atomic_load(&r->h->cons)) == 0) sleep_on(r, r->space_fd);
      continue;
    }
    uint32_t count = space < len ? space : (uint32_t)len;
    uint32_t start = r->own & r->mask;
    uint32_t first = r->size - start < count ? r->size - start : count;
    memcpy(r->data + start, source, first);
    if (first < count) memcpy(r->data, source + first, count - first);
    r->own += count;
    atomic_store(&r->h->prod, r->own); /* seq-cst: data before index, index before the flag read */
    if (!r->spin && atomic_exchange(&r->h->consumer_waiting, 0)) wake(r, r->data_fd);
    source += count;
    len -= count;
  }
}

/* Copies out what is there, at most `max` bytes; waits while empty. Returns 0 once closed and drained. */
static size_t ring_read(struct ring *r, uint8_t *target, size_t max) {
  unsigned turns = 0;
  for (;;) {
    uint32_t ready = atomic_load(&r->h->prod) - r->own;
    if (ready == 0) {
      if (atomic_load(&r->h->closed)) {
        ready = atomic_load(&r->h->prod) - r->own;
        if (ready == 0) return 0;
      } else if (r->spin) {
        spin_once(&turns);
        continue;
      } else {
        atomic_store(&r->h->consumer_waiting, 1);
        if (atomic_load(&r->h->prod) - r->own == 0 && !atomic_load(&r->h->closed)) sleep_on(r, r->data_fd);
        continue;
      }
    }
    uint32_t count = ready < max ? ready : (uint32_t)max;
    uint32_t start = r->own & r->mask;
    uint32_t first = r->size - start < count ? r->size - start : count;
    memcpy(target, r->data + start, first);
    if (first < count) memcpy(target + first, r->data, count - first);
    r->own += count;
    atomic_store(&r->h->cons, r->own); /* seq-cst: the copy is done before the space is freed */
    if (!r->spin && atomic_exchange(&r->h->producer_waiting, 0)) wake(r, r->space_fd);
    return count;
  }
}

static void ring_close(struct ring *r, uint64_t sent) {
  r->h->sent = sent;
  atomic_store(&r->h->closed, 1);
  if (!r->spin && atomic_exchange(&r->h->consumer_waiting, 0)) wake(r, r->data_fd);
}

/* One shared memfd holding a header and `size` bytes of data per ring. */
static void make_rings(struct ring *rings, int count, uint32_t size, int spin) {
  size_t header_bytes = 4096;
  size_t per_ring = header_bytes + size;
  int fd = memfd_create("shm-ring", MFD_CLOEXEC);
  if (fd < 0) die("memfd_create");
  if (ftruncate(fd, (off_t)(per_ring * count)) < 0) die("ftruncate");
  uint8_t *memory = mmap(NULL, per_ring * count, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (memory == MAP_FAILED) die("mmap");
  close(fd);
  for (int i = 0; i < count; i++) {
    struct ring *r = &rings[i];
    memset(r, 0, sizeof *r);
    r->h = (struct header *)(memory + per_ring * i);
    r->data = memory + per_ring * i + header_bytes;
    r->size = size;
    r->mask = size - 1;
    r->spin = spin;
    r->data_fd = eventfd(0, EFD_CLOEXEC);
    r->space_fd = eventfd(0, EFD_CLOEXEC);
    if (r->data_fd < 0 || r->space_fd < 0) die("eventfd");
  }
}

static uint8_t *make_pattern(size_t extra) {
  uint8_t *pattern = malloc(PERIOD + extra);
  if (!pattern) die("malloc");
  uint64_t x = 0x9e3779b97f4a7c15ull;
  for (size_t i = 0; i < PERIOD; i++) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    pattern[i] = (uint8_t)(x >> 24);
  }
  memcpy(pattern + PERIOD, pattern, extra); /* any piece up to `extra` bytes is contiguous */
  return pattern;
}

static int wait_child(pid_t child) {
  int status;
  while (waitpid(child, &status, 0) < 0)
    if (errno != EINTR) die("waitpid");
  return WIFEXITED(status) ? WEXITSTATUS(status) : 1;
}

static int throughput(size_t chunk, uint32_t ring_size, double seconds, int spin) {
  struct ring ring;
  make_rings(&ring, 1, ring_size, spin);
  size_t extra = chunk > READ_MAX ? chunk : READ_MAX;
  uint8_t *pattern = make_pattern(extra);
  pid_t child = fork();
  if (child < 0) die("fork");
  if (child == 0) {
    /* The producer: chunk after chunk of the pattern until the time is up. */
    double deadline = now() + seconds;
    uint64_t sent = 0;
    size_t offset = 0;
    unsigned batch = chunk >= 4096 ? 1 : 64;
    for (;;) {
      for (unsigned i = 0; i < batch; i++) {
        ring_write(&ring, pattern + offset, chunk);
        sent += chunk;
        offset = (offset + chunk) % PERIOD;
      }
      if (now() >= deadline) break;
    }
    ring_close(&ring, sent);
    _exit(0);
  }
  /* The consumer: copy out, compare with the pattern, count. */
  uint8_t *buffer = malloc(READ_MAX);
  if (!buffer) die("malloc");
  uint64_t received = 0, first_piece = 0;
  size_t offset = 0;
  double started = 0, last = 0;
  int verified = 1;
  for (;;) {
    size_t count = ring_read(&ring, buffer, READ_MAX);
    if (count == 0) break;
    last = now();
    if (received == 0) {
      started = last;
      first_piece = count;
    }
    if (memcmp(buffer, pattern + offset, count) != 0) {
      verified = 0;
      fprintf(stderr, "shm-ring: data differ at byte %llu\n", (unsigned long long)received);
      break;
    }
    offset = (offset + count) % PERIOD;
    received += count;
  }
  int child_status = wait_child(child);
  uint64_t sent = ring.h->sent;
  if (verified && received != sent) {
    verified = 0;
    fprintf(stderr, "shm-ring: received %llu bytes, sent %llu\n", (unsigned long long)received, (unsigned long long)sent);
  }
  double elapsed = last - started;
  printf("{\"mode\":\"throughput\",\"chunk\":%zu,\"ring\":%u,\"spin\":%s,\"bytes\":%llu,\"sent\":%llu,"
         "\"measuredBytes\":%llu,\"seconds\":%.6f,\"verified\":%s,\"consumerNotifies\":%llu,\"consumerSleeps\":%llu}\n",
         chunk, ring_size, spin ? "true" : "false", (unsigned long long)received, (unsigned long long)sent,
         (unsigned long long)(received - first_piece), elapsed, verified ? "true" : "false",
         (unsigned long long)ring.notifies, (unsigned long long)ring.sleeps);
  if (child_status != 0) return 1;
  return verified ? 0 : 2;
}

static int compare_doubles(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

static void read_exactly(struct ring *r, uint8_t *target, size_t size) {
  size_t got = 0;
  while (got < size) {
    size_t count = ring_read(r, target + got, size - got);
    if (count == 0) {
      fprintf(stderr, "shm-ring: the ring closed in the middle of a message\n");
      exit(1);
    }
    got += count;
  }
}

static int latency(size_t size, uint32_t ring_size, double seconds, int spin) {
  /* rings[0]: ping to pong; rings[1]: pong to ping. */
  struct ring rings[2];
  make_rings(rings, 2, ring_size, spin);
  uint8_t *message = malloc(size), *reply = malloc(size);
  if (!message || !reply) die("malloc");
  pid_t child = fork();
  if (child < 0) die("fork");
  if (child == 0) {
    /* Pong: echo every message until the pinger closes. */
    size_t got = 0;
    for (;;) {
      size_t count = ring_read(&rings[0], reply + got, size - got);
      if (count == 0) break;
      got += count;
      if (got == size) {
        ring_write(&rings[1], reply, size);
        got = 0;
      }
    }
    ring_close(&rings[1], 0);
    _exit(0);
  }
  size_t capacity = 1 << 20, warmup = 100, count = 0;
  double *samples = malloc(capacity * sizeof *samples);
  if (!samples) die("malloc");
  double deadline = 0; /* set once the warm-up round trips are done */
  int verified = 1;
  for (uint64_t sequence = 0;; sequence++) {
    memset(message, (int)(sequence & 0xff), size);
    memcpy(message, &sequence, size < 8 ? size : 8);
    double started = now();
    ring_write(&rings[0], message, size);
    read_exactly(&rings[1], reply, size);
    double finished = now();
    if (memcmp(message, reply, size) != 0) {
      verified = 0;
      fprintf(stderr, "shm-ring: the echo of message %llu differs\n", (unsigned long long)sequence);
      break;
    }
    if (sequence == warmup) deadline = finished + seconds;
    if (sequence >= warmup && count < capacity) samples[count++] = (finished - started) * 1e6;
    if (count > 0 && finished >= deadline) break;
  }
  ring_close(&rings[0], 0);
  int child_status = wait_child(child);
  qsort(samples, count, sizeof *samples, compare_doubles);
  double sum = 0;
  for (size_t i = 0; i < count; i++) sum += samples[i];
  printf("{\"mode\":\"latency\",\"size\":%zu,\"ring\":%u,\"spin\":%s,\"roundTrips\":%zu,\"p50Us\":%.3f,\"p99Us\":%.3f,"
         "\"meanUs\":%.3f,\"minUs\":%.3f,\"verified\":%s}\n",
         size, ring_size, spin ? "true" : "false", count, samples[count / 2], samples[(size_t)((count - 1) * 0.99)],
         sum / (double)count, samples[0], verified ? "true" : "false");
  if (child_status != 0) return 1;
  return verified ? 0 : 2;
}

static int usage(void) {
  fprintf(stderr,
          "usage: shm-ring throughput CHUNK RING SECONDS wait|spin\n"
          "       shm-ring latency    SIZE  RING SECONDS wait|spin\n"
          "RING is a power of two from 1024 to 1073741824 bytes.\n");
  return 1;
}

int main(int argc, char **argv) {
  if (argc != 6) return usage();
  char *end;
  unsigned long long size = strtoull(argv[2], &end, 10);
  if (*end || size == 0 || size > (1ull << 30)) return usage();
  unsigned long long ring = strtoull(argv[3], &end, 10);
  if (*end || ring < 1024 || ring > (1ull << 30) || (ring & (ring - 1))) return usage();
  double seconds = strtod(argv[4], &end);
  if (*end || !(seconds > 0)) return usage();
  int spin;
  if (strcmp(argv[5], "spin") == 0) spin = 1;
  else if (strcmp(argv[5], "wait") == 0) spin = 0;
  else return usage();
  setvbuf(stdout, NULL, _IOLBF, 0);
  if (strcmp(argv[1], "throughput") == 0) return throughput((size_t)size, (uint32_t)ring, seconds, spin);
  if (strcmp(argv[1], "latency") == 0) return latency((size_t)size, (uint32_t)ring, seconds, spin);
  return usage();
}
