// EVTCHNOP_status through /dev/xen/privcmd (IOCTL_PRIVCMD_HYPERCALL), the call libxc's
// xc_evtchn_status() makes and Qubes' vchan uses to notice a dead peer. Part of the peer-death
// experiment (peer-death.experiment.ts builds it with gcc in dom0 and copies it into the guests;
// see docs/peer-death-research.md, "Measured").
//
//   privcmd-status once PEER            one PDPRIV line: can this domain make the call at all, and
//                                       what it says about our ports bound to PEER and about PEER
//   privcmd-status watch PEER MS TAG    the same every MS ms, a PDPRIV line whenever it changes
//
// "self" is EVTCHNOP_status(DOMID_SELF, port) for every port of ours that was interdomain with
// PEER at the start (found by scanning our ports); "peer" is EVTCHNOP_status(PEER, 0xffffffff),
// which Xen answers ESRCH once PEER no longer exists and EINVAL (bad port) while it does.
#define _GNU_SOURCE // strerrorname_np
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

struct privcmd_hypercall {
  uint64_t op;
  uint64_t arg[5];
};
#define IOCTL_PRIVCMD_HYPERCALL _IOC(_IOC_NONE, 'P', 0, sizeof(struct privcmd_hypercall))
_Static_assert(IOCTL_PRIVCMD_HYPERCALL == 0x00305000, "IOCTL_PRIVCMD_HYPERCALL");

#define HYPERVISOR_event_channel_op 32
#define EVTCHNOP_status 5
#define DOMID_SELF 0x7FF0

struct evtchn_status {
  uint16_t dom;
  uint32_t port;
  uint32_t status; // 0 closed, 1 unbound, 2 interdomain, 3 pirq, 4 virq, 5 ipi
  uint32_t vcpu;
  union {
    uint16_t unbound_dom;
    struct {
      uint16_t dom;
      uint32_t port;
    } interdomain;
    uint32_t pirq;
    uint32_t virq;
  } u;
};
_Static_assert(sizeof(struct evtchn_status) == 24, "evtchn_status_t is 24 bytes");

static const char* state_names[] = {"closed", "unbound", "interdomain", "pirq", "virq", "ipi"};
static int fd = -1;
static struct evtchn_status* buffer; // must stay resident while Xen reads and writes it
static const char* buffer_kind = "?";

static long long now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/** One EVTCHNOP_status; writes a short JSON value describing the answer into out. */
static int status(uint16_t dom, uint32_t port, char* out, size_t size) {
  memset(buffer, 0, sizeof *buffer);
  buffer->dom = dom;
  buffer->port = port;
  struct privcmd_hypercall call = {HYPERVISOR_event_channel_op, {EVTCHNOP_status, (uint64_t)(uintptr_t)buffer, 0, 0, 0}};
  int rc = ioctl(fd, IOCTL_PRIVCMD_HYPERCALL, &call);
  if (rc < 0) {
    int code = errno;
    snprintf(out, size, "\"%s\"", strerrorname_np(code) ? strerrorname_np(code) : "E?");
    return -code;
  }
  uint32_t s = buffer->status;
  if (s == 1) snprintf(out, size, "\"unbound(remote %u)\"", buffer->u.unbound_dom);
  else if (s == 2) snprintf(out, size, "\"interdomain(%u:%u)\"", buffer->u.interdomain.dom, buffer->u.interdomain.port);
  else snprintf(out, size, "\"%s\"", s < 6 ? state_names[s] : "?");
  return (int)s;
}

int main(int argc, char** argv) {
  if (argc < 3 || (strcmp(argv[1], "once") != 0 && (strcmp(argv[1], "watch") != 0 || argc < 5))) {
    fprintf(stderr, "usage: privcmd-status once PEER | watch PEER MS TAG\n");
    return 2;
  }
  int watch = strcmp(argv[1], "watch") == 0;
  uint16_t peer = (uint16_t)atoi(argv[2]);
  int interval = watch ? atoi(argv[3]) : 0;
  const char* tag = watch ? argv[4] : "once";
  const char* device = "/dev/xen/privcmd";
  fd = open(device, O_RDWR | O_CLOEXEC);
  if (fd < 0) {
    device = "/proc/xen/privcmd";
    fd = open(device, O_RDWR | O_CLOEXEC);
  }
  if (fd < 0) {
    printf("PDPRIV {\"tag\":\"%s\",\"t\":%lld,\"open\":\"%s\"}\n", tag, now_ms(), strerrorname_np(errno));
    return 1;
  }
  // As libxencall: a page of /dev/xen/hypercall (privcmd-buf) if there is one, else locked memory.
  int hfd = open("/dev/xen/hypercall", O_RDWR | O_CLOEXEC);
  void* page = MAP_FAILED;
  if (hfd >= 0) {
    page = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, hfd, 0);
    buffer_kind = "hypercall";
  }
  if (page == MAP_FAILED) {
    page = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_LOCKED, -1, 0);
    buffer_kind = "locked";
  }
  if (page == MAP_FAILED) {
    perror("mmap");
    return 1;
  }
  buffer = page;

  // Our ports that are interdomain with PEER now (stop at the first bad port or refusal).
  uint32_t ports[16];
  int nports = 0;
  char first[96] = "\"not tried\"";
  for (uint32_t port = 1; port < 4096 && nports < 16; port++) {
    char text[96];
    int s = status(DOMID_SELF, port, text, sizeof text);
    if (port == 1) memcpy(first, text, sizeof text);
    if (s < 0) break;
    if (s == 2 && buffer->u.interdomain.dom == peer) ports[nports++] = port;
  }

  char previous[1024] = "";
  for (;;) {
    char line[1024], text[96], peer_text[96];
    int used = snprintf(line, sizeof line, "\"device\":\"%s\",\"buffer\":\"%s\",\"self1\":%s,\"self\":{", device, buffer_kind, first);
    for (int i = 0; i < nports; i++) {
      status(DOMID_SELF, ports[i], text, sizeof text);
      used += snprintf(line + used, sizeof line - used, "%s\"%u\":%s", i ? "," : "", ports[i], text);
    }
    status(peer, 0xffffffffu, peer_text, sizeof peer_text);
    snprintf(line + used, sizeof line - used, "},\"peer\":%s", peer_text);
    if (strcmp(line, previous) != 0) {
      printf("PDPRIV {\"tag\":\"%s\",\"t\":%lld,%s}\n", tag, now_ms(), line);
      fflush(stdout);
      memcpy(previous, line, sizeof line);
    }
    if (!watch) return 0;
    usleep((useconds_t)interval * 1000);
  }
}
