/*
 * vchan-peer: the other end of a vchan, played by Xen's own C library (libxenvchan), so that
 * the Node implementation can be checked against the real thing on a real Xen.
 *
 *   vchan-peer [options] server <domid> <xs-path> <left_min> <right_min>
 *   vchan-peer [options] client <domid> <xs-path>
 *
 * <domid> is the peer's domain (for a server: the client's; for a client: the server's).
 * <left_min>/<right_min> go to libxenvchan_server_init as its 4th and 5th arguments: the left
 * ring is the one the server reads, the right ring the one it writes.
 *
 * Once connected, both ends run the same exchange, with the stream calls in blocking mode:
 *   1. write --send bytes: a seeded pseudo-random stream (xorshift32, --send-seed), cut into
 *      chunks of 1..--send-chunk bytes, one libxenvchan_write per chunk;
 *   2. read --recv bytes with libxenvchan_read, in random pieces, and compare each byte with the
 *      stream the peer must have sent (regenerated here from --recv-seed and --recv-chunk);
 *   3. print one result line and close.
 * Because every side reads everything it expects before it closes, libxenvchan's habit of not
 * draining the ring after the peer's close (see PROTOCOL.md, "Liveness and close") cannot lose
 * data here; the Node side drains anyway.
 *
 * The byte stream, the same in test/xen/interop.test.ts: a xorshift32 generator seeded with the
 * seed (0 becomes 0x9e3779b9); for each chunk, size = min(left, 1 + next() % max_chunk), then
 * each byte = next() & 0xff. Both sides also hash the bytes with 64-bit FNV-1a.
 *
 * Output (stdout), one line each:
 *   LISTENING <xs-path>                              server: published, waiting for the client
 *   CONNECTED                                        the channel is up
 *   RESULT {"role":...,"ok":true|false,...}          the outcome, as JSON
 * Diagnostics go to stderr. Exit status: 0 all matched, 1 data mismatch or short read,
 * 2 usage, 3 vchan error, 4 timeout (--timeout seconds, default 120).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <libxenvchan.h>

/* ---- seeded data ------------------------------------------------------------------------- */

static uint32_t xorshift32(uint32_t *state)
{
    uint32_t x = *state;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    *state = x;
    return x;
}

/* The byte stream one side sends: chunk sizes and bytes drawn from one generator. */
struct seeded_stream {
    uint32_t rng;
    uint64_t total_left;  /* bytes of the stream not generated yet */
    uint64_t chunk_left;  /* bytes left in the current chunk */
    uint32_t max_chunk;
};

static void stream_init(struct seeded_stream *s, uint32_t seed, uint64_t total, uint32_t max_chunk)
{
    s->rng = seed ? seed : 0x9e3779b9u;
    s->total_left = total;
    s->chunk_left = 0;
    s->max_chunk = max_chunk ? max_chunk : 1;
}

/* Starts the next chunk and returns its size (0 at the end of the stream). */
static uint64_t stream_next_chunk(struct seeded_stream *s)
{
    uint64_t size;

    if (s->total_left == 0)
        return 0;
    size = 1 + xorshift32(&s->rng) % s->max_chunk;
    if (size > s->total_left)
        size = s->total_left;
    s->chunk_left = size;
    return size;
}

static uint8_t stream_next_byte(struct seeded_stream *s)
{
    if (s->chunk_left == 0)
        stream_next_chunk(s);
    s->chunk_left--;
    s->total_left--;
    return (uint8_t)(xorshift32(&s->rng) & 0xff);
}

/* ---- 64-bit FNV-1a ----------------------------------------------------------------------- */

#define FNV64_OFFSET 0xcbf29ce484222325ull
#define FNV64_PRIME 0x00000100000001b3ull

static uint64_t fnv1a64(uint64_t hash, const uint8_t *data, size_t size)
{
    for (size_t i = 0; i < size; i++) {
        hash ^= data[i];
        hash *= FNV64_PRIME;
    }
    return hash;
}

/* ---- helpers ----------------------------------------------------------------------------- */

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static void on_alarm(int sig)
{
    static const char message[] = "vchan-peer: timed out\n";
    (void)sig;
    (void)!write(2, message, sizeof(message) - 1);
    _exit(4);
}

__attribute__((noreturn)) static void usage(const char *argv0, int status)
{
    fprintf(status ? stderr : stdout,
            "usage: %s [options] server <domid> <xs-path> <left_min> <right_min>\n"
            "       %s [options] client <domid> <xs-path>\n"
            "options:\n"
            "  --send N          bytes to send (default 0)\n"
            "  --send-seed S     seed of the stream sent (default 1)\n"
            "  --send-chunk C    largest chunk written at once (default 4096)\n"
            "  --recv N          bytes to expect from the peer (default 0)\n"
            "  --recv-seed S     seed of the stream the peer sends (default 2)\n"
            "  --recv-chunk C    the peer's largest chunk, to regenerate its stream (default 4096)\n"
            "  --read-chunk C    largest libxenvchan_read here (default 65536)\n"
            "  --timeout SEC     give up after this long, exit 4 (default 120; 0 = never)\n",
            argv0, argv0);
    exit(status);
}

static uint64_t parse_number(const char *text, const char *what, uint64_t max)
{
    char *end;
    unsigned long long value;

    errno = 0;
    value = strtoull(text, &end, 0);
    if (errno || end == text || *end || value > max) {
        fprintf(stderr, "vchan-peer: bad %s: %s\n", what, text);
        exit(2);
    }
    return value;
}

/* ---- main -------------------------------------------------------------------------------- */

int main(int argc, char **argv)
{
    uint64_t send_total = 0, recv_total = 0;
    uint32_t send_seed = 1, recv_seed = 2, send_chunk = 4096, recv_chunk = 4096;
    uint32_t read_chunk = 65536;
    unsigned timeout_s = 120;
    static const struct option longopts[] = {
        { "send", required_argument, NULL, 's' },
        { "send-seed", required_argument, NULL, 'S' },
        { "send-chunk", required_argument, NULL, 'c' },
        { "recv", required_argument, NULL, 'r' },
        { "recv-seed", required_argument, NULL, 'R' },
        { "recv-chunk", required_argument, NULL, 'C' },
        { "read-chunk", required_argument, NULL, 'k' },
        { "timeout", required_argument, NULL, 't' },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    int opt;

    while ((opt = getopt_long(argc, argv, "+h", longopts, NULL)) != -1) {
        switch (opt) {
        case 's': send_total = parse_number(optarg, "--send", UINT64_MAX); break;
        case 'S': send_seed = parse_number(optarg, "--send-seed", UINT32_MAX); break;
        case 'c': send_chunk = parse_number(optarg, "--send-chunk", 1u << 30); break;
        case 'r': recv_total = parse_number(optarg, "--recv", UINT64_MAX); break;
        case 'R': recv_seed = parse_number(optarg, "--recv-seed", UINT32_MAX); break;
        case 'C': recv_chunk = parse_number(optarg, "--recv-chunk", 1u << 30); break;
        case 'k': read_chunk = parse_number(optarg, "--read-chunk", 1u << 30); break;
        case 't': timeout_s = parse_number(optarg, "--timeout", 86400); break;
        case 'h': usage(argv[0], 0); break;
        default: usage(argv[0], 2);
        }
    }
    if (send_chunk == 0 || recv_chunk == 0 || read_chunk == 0) {
        fprintf(stderr, "vchan-peer: chunk sizes must be at least 1\n");
        return 2;
    }

    int is_server;
    int args = argc - optind;
    if (args >= 1 && strcmp(argv[optind], "server") == 0 && args == 5)
        is_server = 1;
    else if (args >= 1 && strcmp(argv[optind], "client") == 0 && args == 3)
        is_server = 0;
    else
        usage(argv[0], 2);
    const char *role = is_server ? "server" : "client";
    int domid = (int)parse_number(argv[optind + 1], "domid", 0x7fef);
    const char *xs_path = argv[optind + 2];

    setvbuf(stdout, NULL, _IOLBF, 0);
    if (timeout_s) {
        signal(SIGALRM, on_alarm);
        alarm(timeout_s);
    }

    struct libxenvchan *ctrl;
    if (is_server) {
        size_t left_min = parse_number(argv[optind + 3], "left_min", 1u << 20);
        size_t right_min = parse_number(argv[optind + 4], "right_min", 1u << 20);
        /* The prototype names these read_min, write_min; the library uses the 4th argument for
         * the left ring (the server reads it) and the 5th for the right ring. */
        ctrl = libxenvchan_server_init(NULL, domid, xs_path, left_min, right_min);
        if (!ctrl) {
            perror("vchan-peer: libxenvchan_server_init");
            return 3;
        }
        ctrl->blocking = 1;
        printf("LISTENING %s\n", xs_path);
        /* 2 = no client yet. Every event is a hint: look again after each one. */
        while (libxenvchan_is_open(ctrl) == 2) {
            if (libxenvchan_wait(ctrl) < 0) {
                perror("vchan-peer: libxenvchan_wait");
                return 3;
            }
        }
        if (libxenvchan_is_open(ctrl) != 1) {
            fprintf(stderr, "vchan-peer: the client went away before the exchange\n");
            return 3;
        }
    } else {
        ctrl = libxenvchan_client_init(NULL, domid, xs_path);
        if (!ctrl) {
            perror("vchan-peer: libxenvchan_client_init");
            return 3;
        }
        ctrl->blocking = 1;
    }
    printf("CONNECTED\n");
    double started = now_ms();

    /* 1. send */
    struct seeded_stream out;
    uint64_t sent = 0, sent_hash = FNV64_OFFSET;
    size_t buffer_size = send_chunk > read_chunk ? send_chunk : read_chunk;
    uint8_t *buffer = malloc(buffer_size);
    if (!buffer) {
        perror("vchan-peer: malloc");
        return 3;
    }
    stream_init(&out, send_seed, send_total, send_chunk);
    for (uint64_t size; (size = stream_next_chunk(&out)) != 0;) {
        for (uint64_t i = 0; i < size; i++)
            buffer[i] = stream_next_byte(&out);
        /* Blocking mode: returns once all of it is in the ring, or -1 if the peer closed. */
        int written = libxenvchan_write(ctrl, buffer, size);
        if (written != (int)size) {
            fprintf(stderr, "vchan-peer: libxenvchan_write returned %d for %" PRIu64 " bytes after %" PRIu64 " sent\n",
                    written, size, sent);
            libxenvchan_close(ctrl);
            return 3;
        }
        sent_hash = fnv1a64(sent_hash, buffer, size);
        sent += size;
    }
    double sent_at = now_ms();

    /* 2. receive and check */
    struct seeded_stream expected;
    uint32_t read_rng = recv_seed ^ 0x5bd1e995u;
    uint64_t received = 0, received_hash = FNV64_OFFSET;
    int64_t first_mismatch = -1;
    int closed_early = 0;
    stream_init(&expected, recv_seed, recv_total, recv_chunk);
    while (received < recv_total) {
        uint64_t want = 1 + xorshift32(&read_rng) % read_chunk;
        if (want > recv_total - received)
            want = recv_total - received;
        int got = libxenvchan_read(ctrl, buffer, want);
        if (got <= 0) {
            fprintf(stderr, "vchan-peer: libxenvchan_read returned %d after %" PRIu64 " of %" PRIu64 " bytes\n",
                    got, received, recv_total);
            closed_early = 1;
            break;
        }
        for (int i = 0; i < got; i++) {
            if (stream_next_byte(&expected) != buffer[i] && first_mismatch < 0)
                first_mismatch = (int64_t)(received + i);
        }
        received_hash = fnv1a64(received_hash, buffer, got);
        received += got;
    }
    double done_at = now_ms();

    int ok = !closed_early && received == recv_total && first_mismatch < 0;
    printf("RESULT {\"role\":\"%s\",\"ok\":%s,\"sent\":%" PRIu64 ",\"sentFnv\":\"%016" PRIx64 "\","
           "\"received\":%" PRIu64 ",\"receivedFnv\":\"%016" PRIx64 "\",\"firstMismatch\":%" PRId64 ","
           "\"readOrder\":%d,\"writeOrder\":%d,\"sendMs\":%.1f,\"totalMs\":%.1f}\n",
           role, ok ? "true" : "false", sent, sent_hash, received, received_hash, first_mismatch,
           ctrl->read.order, ctrl->write.order, sent_at - started, done_at - started);

    /* 3. close: everything expected has been read, so nothing in flight towards us is lost. */
    libxenvchan_close(ctrl);
    free(buffer);
    return ok ? 0 : 1;
}
