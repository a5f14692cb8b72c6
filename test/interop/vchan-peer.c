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
 * Once connected, the peer runs one of three exchanges (the modes exclude each other).
 *
 * Stream mode (the default: --send / --recv), with the stream calls in blocking mode:
 *   1. write --send bytes: a seeded pseudo-random stream (xorshift32, --send-seed), cut into
 *      chunks of 1..--send-chunk bytes, one libxenvchan_write per chunk;
 *   2. read --recv bytes with libxenvchan_read, in random pieces, and compare each byte with the
 *      stream the peer must have sent (regenerated here from --recv-seed and --recv-chunk);
 *   3. print one result line and close.
 * Because every side reads everything it expects before it closes, libxenvchan's habit of not
 * draining the ring after the peer's close (see PROTOCOL.md, "Liveness and close") cannot lose
 * data here; the Node side drains anyway.
 *
 * Message mode (--messages N), with libxenvchan's packet calls in blocking mode:
 *   1. send N messages with libxenvchan_send (all of a message or nothing): the chunks of the
 *      seeded stream of --send-seed with max_chunk = the size of the ring this side writes, so
 *      each message has 1..(write ring) bytes, except the first, which fills that ring exactly
 *      (no size is drawn for it; its bytes come from the stream as usual);
 *   2. receive N messages with libxenvchan_recv, each of exactly the size the peer's stream
 *      predicts (--recv-seed, max_chunk = the size of the ring this side reads, the first one
 *      that whole ring), and compare them;
 *   3. print one result line and close.
 * The message sizes depend on the ring sizes, which both ends know once connected.
 *
 * Bulk mode (--bulk-send B or --bulk-recv B), one way, for throughput: the data is a
 * 1048573-byte pattern (xorshift32 from --bulk-seed, one byte per step; a prime length, so a
 * byte lost or repeated anywhere, even a whole ring's worth, shows) repeated to B bytes.
 *   - sender: libxenvchan_write of --write-chunk bytes at a time until B are in the ring, then
 *     it waits for the receiver to close (libxenvchan does not drain a closed ring) and closes;
 *   - receiver: libxenvchan_read of up to --read-chunk bytes, each piece compared (memcmp) with
 *     the pattern at its offset, until B bytes; it then closes. It times from the first byte's
 *     arrival to the last's and reports MiB/s of the bytes after the first read (received and
 *     verified) over that time.
 *
 * The byte stream, the same in test/interop/seeded.ts: a xorshift32 generator seeded with the
 * seed (0 becomes 0x9e3779b9); for each chunk, size = min(left, 1 + next() % max_chunk), then
 * each byte = next() & 0xff. Both sides also hash the bytes with 64-bit FNV-1a.
 *
 * Output (stdout), one line each:
 *   LISTENING <xs-path>                              server: published, waiting for the client
 *   CONNECTED                                        the channel is up
 *   RESULT {"mode":...,"role":...,"ok":true|false,...}   the outcome, as JSON
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

/* Starts a chunk of `size` bytes (at most what is left) without drawing its size. */
static uint64_t stream_start_chunk(struct seeded_stream *s, uint64_t size)
{
    if (size > s->total_left)
        size = s->total_left;
    s->chunk_left = size;
    return size;
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

/* ---- bulk pattern ------------------------------------------------------------------------ */

/* Prime, so that no power-of-two slip (a ring's worth lost or repeated) lines up with it. */
#define PATTERN_SIZE 1048573u

/* The pattern twice over: any window of up to PATTERN_SIZE bytes at any offset is contiguous. */
static uint8_t *pattern_make(uint32_t seed)
{
    uint8_t *pattern = malloc(2 * (size_t)PATTERN_SIZE);
    uint32_t rng = seed ? seed : 0x9e3779b9u;

    if (!pattern)
        return NULL;
    for (uint32_t i = 0; i < PATTERN_SIZE; i++)
        pattern[i] = (uint8_t)(xorshift32(&rng) & 0xff);
    memcpy(pattern + PATTERN_SIZE, pattern, PATTERN_SIZE);
    return pattern;
}

/* ---- the exchanges ----------------------------------------------------------------------- */

struct settings {
    const char *role;
    uint64_t send_total, recv_total;
    uint32_t send_seed, recv_seed, send_chunk, recv_chunk, read_chunk, write_chunk;
    uint64_t messages;
    uint64_t bulk_send, bulk_recv;
    uint32_t bulk_seed;
};

static void close_with(struct libxenvchan *ctrl, void *buffer)
{
    libxenvchan_close(ctrl);
    free(buffer);
}

/* What one direction of a stream or message exchange has carried: bytes and their FNV-1a. */
struct tally {
    uint64_t bytes;
    uint64_t fnv;
};

static void tally_add(struct tally *t, const uint8_t *data, uint64_t size)
{
    t->fnv = fnv1a64(t->fnv, data, size);
    t->bytes += size;
}

/* Puts the stream's next `size` bytes in `buffer` and hands them to libxenvchan in one call:
 * libxenvchan_write, or for message `message` (>= 0) libxenvchan_send (all of it or nothing).
 * In blocking mode either call returns once all of it is in the ring, or -1 if the peer closed.
 * Returns 0 and adds the bytes to `sent`, or -1 after saying on stderr what failed. */
static int send_chunk(struct libxenvchan *ctrl, struct seeded_stream *s, uint8_t *buffer, uint64_t size,
                      int64_t message, struct tally *sent)
{
    for (uint64_t i = 0; i < size; i++)
        buffer[i] = stream_next_byte(s);
    if (message < 0) {
        int written = libxenvchan_write(ctrl, buffer, size);
        if (written != (int)size) {
            fprintf(stderr, "vchan-peer: libxenvchan_write returned %d for %" PRIu64 " bytes after %" PRIu64 " sent\n",
                    written, size, sent->bytes);
            return -1;
        }
    } else {
        int result = libxenvchan_send(ctrl, buffer, size);
        if (result != (int)size) {
            fprintf(stderr, "vchan-peer: libxenvchan_send returned %d for message %" PRId64 " (%" PRIu64 " bytes)\n",
                    result, message, size);
            return -1;
        }
    }
    tally_add(sent, buffer, size);
    return 0;
}

/* Compares `size` received bytes with what the peer's stream must hold next and adds them to
 * `received`; returns the stream offset of the first byte that differs, or -1. */
static int64_t check_chunk(struct seeded_stream *expected, const uint8_t *buffer, uint64_t size, struct tally *received)
{
    int64_t mismatch = -1;
    for (uint64_t i = 0; i < size; i++) {
        /* Draw every byte, even after a mismatch, so that the next chunk lines up. */
        if (stream_next_byte(expected) != buffer[i] && mismatch < 0)
            mismatch = (int64_t)(received->bytes + i);
    }
    tally_add(received, buffer, size);
    return mismatch;
}

/* One libxenvchan_read of up to `want` bytes (blocking mode: at least one, or <= 0 once the
 * peer closed); says so on stderr when nothing came. */
static int read_some(struct libxenvchan *ctrl, uint8_t *buffer, uint64_t want, uint64_t received, uint64_t total)
{
    int got = libxenvchan_read(ctrl, buffer, want);
    if (got <= 0)
        fprintf(stderr, "vchan-peer: libxenvchan_read returned %d after %" PRIu64 " of %" PRIu64 " bytes\n",
                got, received, total);
    return got;
}

/* Stream mode: write everything, then read and check everything. */
static int run_stream(struct libxenvchan *ctrl, const struct settings *o, double started)
{
    /* 1. send */
    struct seeded_stream out;
    struct tally sent = { 0, FNV64_OFFSET };
    size_t buffer_size = o->send_chunk > o->read_chunk ? o->send_chunk : o->read_chunk;
    uint8_t *buffer = malloc(buffer_size);
    if (!buffer) {
        perror("vchan-peer: malloc");
        return 3;
    }
    stream_init(&out, o->send_seed, o->send_total, o->send_chunk);
    for (uint64_t size; (size = stream_next_chunk(&out)) != 0;) {
        if (send_chunk(ctrl, &out, buffer, size, -1, &sent) < 0) {
            close_with(ctrl, buffer);
            return 3;
        }
    }
    double sent_at = now_ms();

    /* 2. receive and check */
    struct seeded_stream expected;
    uint32_t read_rng = o->recv_seed ^ 0x5bd1e995u;
    struct tally received = { 0, FNV64_OFFSET };
    int64_t first_mismatch = -1;
    int closed_early = 0;
    stream_init(&expected, o->recv_seed, o->recv_total, o->recv_chunk);
    while (received.bytes < o->recv_total) {
        uint64_t want = 1 + xorshift32(&read_rng) % o->read_chunk;
        if (want > o->recv_total - received.bytes)
            want = o->recv_total - received.bytes;
        int got = read_some(ctrl, buffer, want, received.bytes, o->recv_total);
        if (got <= 0) {
            closed_early = 1;
            break;
        }
        int64_t mismatch = check_chunk(&expected, buffer, got, &received);
        if (first_mismatch < 0)
            first_mismatch = mismatch;
    }
    double done_at = now_ms();

    int ok = !closed_early && received.bytes == o->recv_total && first_mismatch < 0;
    printf("RESULT {\"mode\":\"stream\",\"role\":\"%s\",\"ok\":%s,\"sent\":%" PRIu64 ",\"sentFnv\":\"%016" PRIx64 "\","
           "\"received\":%" PRIu64 ",\"receivedFnv\":\"%016" PRIx64 "\",\"firstMismatch\":%" PRId64 ","
           "\"readOrder\":%d,\"writeOrder\":%d,\"sendMs\":%.1f,\"totalMs\":%.1f}\n",
           o->role, ok ? "true" : "false", sent.bytes, sent.fnv, received.bytes, received.fnv, first_mismatch,
           ctrl->read.order, ctrl->write.order, sent_at - started, done_at - started);

    /* 3. close: everything expected has been read, so nothing in flight towards us is lost. */
    close_with(ctrl, buffer);
    return ok ? 0 : 1;
}

/* Message mode: N messages out with libxenvchan_send, then N in with libxenvchan_recv. */
static int run_messages(struct libxenvchan *ctrl, const struct settings *o, double started)
{
    size_t write_ring = (size_t)1 << ctrl->write.order, read_ring = (size_t)1 << ctrl->read.order;
    uint8_t *buffer = malloc(write_ring > read_ring ? write_ring : read_ring);
    if (!buffer) {
        perror("vchan-peer: malloc");
        return 3;
    }

    /* 1. send: message sizes 1..write ring, so each fits the ring in one piece */
    struct seeded_stream out;
    struct tally sent = { 0, FNV64_OFFSET };
    uint64_t messages_sent = 0, largest_sent = 0;
    stream_init(&out, o->send_seed, UINT64_MAX, (uint32_t)write_ring);
    for (; messages_sent < o->messages; messages_sent++) {
        /* The first message fills the ring exactly: it must wait for the ring to be empty. */
        uint64_t size = messages_sent == 0 ? stream_start_chunk(&out, write_ring) : stream_next_chunk(&out);
        /* Blocking mode: waits until the whole message fits, then puts it in. */
        if (send_chunk(ctrl, &out, buffer, size, (int64_t)messages_sent, &sent) < 0) {
            close_with(ctrl, buffer);
            return 3;
        }
        if (size > largest_sent)
            largest_sent = size;
    }
    double sent_at = now_ms();

    /* 2. receive: each message of exactly the size the peer's stream predicts */
    struct seeded_stream expected;
    struct tally received = { 0, FNV64_OFFSET };
    uint64_t messages_received = 0;
    int64_t first_mismatch = -1, bad_message = -1;
    int failed = 0;
    stream_init(&expected, o->recv_seed, UINT64_MAX, (uint32_t)read_ring);
    for (; messages_received < o->messages; messages_received++) {
        uint64_t size = messages_received == 0 ? stream_start_chunk(&expected, read_ring) : stream_next_chunk(&expected);
        int result = libxenvchan_recv(ctrl, buffer, size);
        if (result != (int)size) {
            fprintf(stderr, "vchan-peer: libxenvchan_recv returned %d for message %" PRIu64 " (%" PRIu64 " bytes)\n",
                    result, messages_received, size);
            failed = 1;
            break;
        }
        int64_t mismatch = check_chunk(&expected, buffer, size, &received);
        if (first_mismatch < 0 && mismatch >= 0) {
            first_mismatch = mismatch;
            bad_message = (int64_t)messages_received;
        }
    }
    double done_at = now_ms();

    int ok = !failed && messages_received == o->messages && first_mismatch < 0;
    printf("RESULT {\"mode\":\"messages\",\"role\":\"%s\",\"ok\":%s,\"messagesSent\":%" PRIu64 ",\"messagesReceived\":%" PRIu64 ","
           "\"sent\":%" PRIu64 ",\"sentFnv\":\"%016" PRIx64 "\",\"largestSent\":%" PRIu64 ","
           "\"received\":%" PRIu64 ",\"receivedFnv\":\"%016" PRIx64 "\",\"firstMismatch\":%" PRId64 ",\"badMessage\":%" PRId64 ","
           "\"readOrder\":%d,\"writeOrder\":%d,\"sendMs\":%.1f,\"totalMs\":%.1f}\n",
           o->role, ok ? "true" : "false", messages_sent, messages_received, sent.bytes, sent.fnv, largest_sent,
           received.bytes, received.fnv, first_mismatch, bad_message,
           ctrl->read.order, ctrl->write.order, sent_at - started, done_at - started);
    close_with(ctrl, buffer);
    return ok ? 0 : 1;
}

/* Bulk mode, sender: B pattern bytes, then wait for the receiver to close first. */
static int run_bulk_send(struct libxenvchan *ctrl, const struct settings *o, double started)
{
    uint8_t *pattern = pattern_make(o->bulk_seed);
    if (!pattern) {
        perror("vchan-peer: malloc");
        return 3;
    }
    uint64_t sent = 0;
    double first_write = now_ms();
    while (sent < o->bulk_send) {
        uint64_t size = o->bulk_send - sent;
        if (size > o->write_chunk)
            size = o->write_chunk;
        int written = libxenvchan_write(ctrl, pattern + sent % PATTERN_SIZE, size);
        if (written != (int)size) {
            fprintf(stderr, "vchan-peer: libxenvchan_write returned %d for %" PRIu64 " bytes after %" PRIu64 " sent\n",
                    written, size, sent);
            close_with(ctrl, pattern);
            return 3;
        }
        sent += size;
    }
    double written_at = now_ms();
    /* libxenvchan's reader stops at the close without draining: let the receiver close first. */
    while (libxenvchan_is_open(ctrl) == 1) {
        if (libxenvchan_wait(ctrl) < 0)
            break;
    }
    double peer_closed_at = now_ms();
    printf("RESULT {\"mode\":\"bulk\",\"role\":\"%s\",\"direction\":\"send\",\"ok\":true,\"bytes\":%" PRIu64 ",\"sent\":%" PRIu64 ","
           "\"readOrder\":%d,\"writeOrder\":%d,\"writeMs\":%.1f,\"totalMs\":%.1f}\n",
           o->role, o->bulk_send, sent, ctrl->read.order, ctrl->write.order,
           written_at - first_write, peer_closed_at - started);
    close_with(ctrl, pattern);
    return 0;
}

/* Bulk mode, receiver: B bytes, each piece compared with the pattern, timed. */
static int run_bulk_recv(struct libxenvchan *ctrl, const struct settings *o, double started)
{
    uint8_t *pattern = pattern_make(o->bulk_seed);
    uint8_t *buffer = malloc(o->read_chunk);
    if (!pattern || !buffer) {
        perror("vchan-peer: malloc");
        return 3;
    }
    uint64_t received = 0, first_read = 0, reads = 0;
    int64_t first_mismatch = -1;
    int closed_early = 0;
    double first_at = 0, last_at = 0;
    while (received < o->bulk_recv) {
        uint64_t want = o->bulk_recv - received;
        if (want > o->read_chunk)
            want = o->read_chunk;
        int got = read_some(ctrl, buffer, want, received, o->bulk_recv);
        if (got <= 0) {
            closed_early = 1;
            break;
        }
        const uint8_t *want_bytes = pattern + received % PATTERN_SIZE;
        if (first_mismatch < 0 && memcmp(buffer, want_bytes, got) != 0) {
            for (int i = 0; i < got; i++) {
                if (buffer[i] != want_bytes[i]) {
                    first_mismatch = (int64_t)(received + i);
                    break;
                }
            }
        }
        if (reads++ == 0) {
            first_at = now_ms();
            first_read = got;
        }
        received += got;
    }
    last_at = now_ms();
    double ms = last_at - first_at;
    double mibps = ms > 0 ? (double)(received - first_read) / 1048576.0 / (ms / 1000.0) : 0;
    int ok = !closed_early && received == o->bulk_recv && first_mismatch < 0;
    printf("RESULT {\"mode\":\"bulk\",\"role\":\"%s\",\"direction\":\"recv\",\"ok\":%s,\"bytes\":%" PRIu64 ",\"received\":%" PRIu64 ","
           "\"firstMismatch\":%" PRId64 ",\"reads\":%" PRIu64 ",\"firstRead\":%" PRIu64 ",\"readOrder\":%d,\"writeOrder\":%d,"
           "\"ms\":%.3f,\"totalMs\":%.3f,\"mibps\":%.3f}\n",
           o->role, ok ? "true" : "false", o->bulk_recv, received, first_mismatch, reads, first_read,
           ctrl->read.order, ctrl->write.order, ms, last_at - started, mibps);
    /* Everything has been read: closing now loses nothing and lets the sender go. */
    libxenvchan_close(ctrl);
    free(buffer);
    free(pattern);
    return ok ? 0 : 1;
}

__attribute__((noreturn)) static void usage(const char *argv0, int status)
{
    fprintf(status ? stderr : stdout,
            "usage: %s [options] server <domid> <xs-path> <left_min> <right_min>\n"
            "       %s [options] client <domid> <xs-path>\n"
            "stream mode (default):\n"
            "  --send N          bytes to send (default 0)\n"
            "  --send-seed S     seed of the stream sent (default 1)\n"
            "  --send-chunk C    largest chunk written at once (default 4096)\n"
            "  --recv N          bytes to expect from the peer (default 0)\n"
            "  --recv-seed S     seed of the stream the peer sends (default 2)\n"
            "  --recv-chunk C    the peer's largest chunk, to regenerate its stream (default 4096)\n"
            "  --read-chunk C    largest libxenvchan_read here (default 65536)\n"
            "message mode:\n"
            "  --messages N      send N messages (libxenvchan_send, sizes 1..write ring, stream of\n"
            "                    --send-seed), then receive N (libxenvchan_recv, sizes 1..read ring,\n"
            "                    stream of --recv-seed)\n"
            "bulk mode (one way):\n"
            "  --bulk-send B     write B pattern bytes in --write-chunk pieces, wait for the peer to close\n"
            "  --bulk-recv B     read B bytes in pieces of up to --read-chunk, check them, time them\n"
            "  --bulk-seed S     seed of the pattern (default 1)\n"
            "  --write-chunk C   bytes per libxenvchan_write in bulk mode (default 65536)\n"
            "any mode:\n"
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
    struct settings o = {
        .send_seed = 1, .recv_seed = 2, .send_chunk = 4096, .recv_chunk = 4096,
        .read_chunk = 65536, .write_chunk = 65536, .bulk_seed = 1,
    };
    unsigned timeout_s = 120;
    static const struct option longopts[] = {
        { "send", required_argument, NULL, 's' },
        { "send-seed", required_argument, NULL, 'S' },
        { "send-chunk", required_argument, NULL, 'c' },
        { "recv", required_argument, NULL, 'r' },
        { "recv-seed", required_argument, NULL, 'R' },
        { "recv-chunk", required_argument, NULL, 'C' },
        { "read-chunk", required_argument, NULL, 'k' },
        { "write-chunk", required_argument, NULL, 'w' },
        { "messages", required_argument, NULL, 'm' },
        { "bulk-send", required_argument, NULL, 'b' },
        { "bulk-recv", required_argument, NULL, 'B' },
        { "bulk-seed", required_argument, NULL, 'z' },
        { "timeout", required_argument, NULL, 't' },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    int opt;

    while ((opt = getopt_long(argc, argv, "+h", longopts, NULL)) != -1) {
        switch (opt) {
        case 's': o.send_total = parse_number(optarg, "--send", UINT64_MAX); break;
        case 'S': o.send_seed = parse_number(optarg, "--send-seed", UINT32_MAX); break;
        case 'c': o.send_chunk = parse_number(optarg, "--send-chunk", 1u << 30); break;
        case 'r': o.recv_total = parse_number(optarg, "--recv", UINT64_MAX); break;
        case 'R': o.recv_seed = parse_number(optarg, "--recv-seed", UINT32_MAX); break;
        case 'C': o.recv_chunk = parse_number(optarg, "--recv-chunk", 1u << 30); break;
        case 'k': o.read_chunk = parse_number(optarg, "--read-chunk", 1u << 30); break;
        case 'w': o.write_chunk = parse_number(optarg, "--write-chunk", 1u << 30); break;
        case 'm': o.messages = parse_number(optarg, "--messages", UINT32_MAX); break;
        case 'b': o.bulk_send = parse_number(optarg, "--bulk-send", UINT64_MAX); break;
        case 'B': o.bulk_recv = parse_number(optarg, "--bulk-recv", UINT64_MAX); break;
        case 'z': o.bulk_seed = parse_number(optarg, "--bulk-seed", UINT32_MAX); break;
        case 't': timeout_s = parse_number(optarg, "--timeout", 86400); break;
        case 'h': usage(argv[0], 0); break;
        default: usage(argv[0], 2);
        }
    }
    if (o.send_chunk == 0 || o.recv_chunk == 0 || o.read_chunk == 0 || o.write_chunk == 0) {
        fprintf(stderr, "vchan-peer: chunk sizes must be at least 1\n");
        return 2;
    }
    int stream_mode = o.send_total || o.recv_total;
    int bulk_mode = o.bulk_send || o.bulk_recv;
    if (stream_mode + (o.messages > 0) + bulk_mode > 1 || (o.bulk_send && o.bulk_recv)) {
        fprintf(stderr, "vchan-peer: --send/--recv, --messages and one of --bulk-send/--bulk-recv exclude each other\n");
        return 2;
    }
    if (bulk_mode && (o.read_chunk > PATTERN_SIZE || o.write_chunk > PATTERN_SIZE)) {
        fprintf(stderr, "vchan-peer: in bulk mode --read-chunk and --write-chunk may be at most %u\n", PATTERN_SIZE);
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
    o.role = is_server ? "server" : "client";
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

    if (o.messages)
        return run_messages(ctrl, &o, started);
    if (o.bulk_send)
        return run_bulk_send(ctrl, &o, started);
    if (o.bulk_recv)
        return run_bulk_recv(ctrl, &o, started);
    return run_stream(ctrl, &o, started);
}
