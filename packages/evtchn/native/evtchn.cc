// /dev/xen/evtchn: one function per syscall, plus the shared Poller (xen_vchan/poller.h) that turns
// readability of the fd into a JS callback through libuv (no thread blocked in read). The ioctl structs are the kernel's
// uapi (include/uapi/xen/evtchn.h), restated here so a build needs no Xen headers.
#include <fcntl.h>
#include <sys/ioctl.h>

#include "xen_vchan/native.h"
#include "xen_vchan/poller.h"

using namespace xen_vchan;

namespace {

struct BindInterdomain {
  uint32_t remote_domain;
  uint32_t remote_port;
};
struct BindUnboundPort {
  uint32_t remote_domain;
};
struct PortArg {
  uint32_t port;
};
struct RestrictDomid {
  uint16_t domid;
};

constexpr unsigned long kBindInterdomain = _IOC(_IOC_NONE, 'E', 1, sizeof(BindInterdomain));
constexpr unsigned long kBindUnboundPort = _IOC(_IOC_NONE, 'E', 2, sizeof(BindUnboundPort));
constexpr unsigned long kUnbind = _IOC(_IOC_NONE, 'E', 3, sizeof(PortArg));
constexpr unsigned long kNotify = _IOC(_IOC_NONE, 'E', 4, sizeof(PortArg));
constexpr unsigned long kReset = _IOC(_IOC_NONE, 'E', 5, 0);
constexpr unsigned long kRestrictDomid = _IOC(_IOC_NONE, 'E', 6, sizeof(RestrictDomid));
static_assert(kBindInterdomain == 0x00084501, "IOCTL_EVTCHN_BIND_INTERDOMAIN");
static_assert(kBindUnboundPort == 0x00044502, "IOCTL_EVTCHN_BIND_UNBOUND_PORT");
static_assert(kUnbind == 0x00044503, "IOCTL_EVTCHN_UNBIND");
static_assert(kNotify == 0x00044504, "IOCTL_EVTCHN_NOTIFY");
static_assert(kReset == 0x00004505, "IOCTL_EVTCHN_RESET");
static_assert(kRestrictDomid == 0x00024506, "IOCTL_EVTCHN_RESTRICT_DOMID");

Napi::Value PortResult(Napi::Env env, int result, const char* syscall) {
  if (result < 0) return ThrowErrno(env, errno, syscall);
  return Napi::Number::New(env, result);
}

// bindInterdomain(fd, remoteDomain, remotePort) -> local port
Napi::Value BindInterdomainPort(const Napi::CallbackInfo& info) {
  BindInterdomain request{ToU32(info[1]), ToU32(info[2])};
  return PortResult(info.Env(), ioctl(ToFd(info[0]), kBindInterdomain, &request), "ioctl(IOCTL_EVTCHN_BIND_INTERDOMAIN)");
}

// bindUnbound(fd, remoteDomain) -> local port
Napi::Value BindUnbound(const Napi::CallbackInfo& info) {
  BindUnboundPort request{ToU32(info[1])};
  return PortResult(info.Env(), ioctl(ToFd(info[0]), kBindUnboundPort, &request), "ioctl(IOCTL_EVTCHN_BIND_UNBOUND_PORT)");
}

Napi::Value Unbind(const Napi::CallbackInfo& info) {
  PortArg request{ToU32(info[1])};
  return VoidResult(info.Env(), ioctl(ToFd(info[0]), kUnbind, &request), "ioctl(IOCTL_EVTCHN_UNBIND)");
}

Napi::Value Notify(const Napi::CallbackInfo& info) {
  PortArg request{ToU32(info[1])};
  return VoidResult(info.Env(), ioctl(ToFd(info[0]), kNotify, &request), "ioctl(IOCTL_EVTCHN_NOTIFY)");
}

Napi::Value Reset(const Napi::CallbackInfo& info) {
  return VoidResult(info.Env(), ioctl(ToFd(info[0]), kReset, nullptr), "ioctl(IOCTL_EVTCHN_RESET)");
}

Napi::Value Restrict(const Napi::CallbackInfo& info) {
  RestrictDomid request{static_cast<uint16_t>(ToU32(info[1]))};
  return VoidResult(info.Env(), ioctl(ToFd(info[0]), kRestrictDomid, &request), "ioctl(IOCTL_EVTCHN_RESTRICT_DOMID)");
}

// readPorts(fd) -> pending ports (empty when none: the fd is non-blocking). Each is now masked.
Napi::Value ReadPorts(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  uint32_t ports[256];
  ssize_t got = read(ToFd(info[0]), ports, sizeof ports);
  if (got < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK) return Napi::Array::New(env, 0);
    return ThrowErrno(env, errno, "read");
  }
  size_t count = static_cast<size_t>(got) / sizeof(uint32_t);
  Napi::Array result = Napi::Array::New(env, count);
  for (size_t i = 0; i < count; i++) result.Set(static_cast<uint32_t>(i), Napi::Number::New(env, ports[i]));
  return result;
}

// unmask(fd, port): writing a port back re-enables its delivery
Napi::Value Unmask(const Napi::CallbackInfo& info) {
  uint32_t port = ToU32(info[1]);
  return VoidResult(info.Env(), static_cast<int>(write(ToFd(info[0]), &port, sizeof port)), "write");
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("Poller", Poller::Define(env));
  return ExportFunctions(env, exports,
                         {{"open", OpenDevice<O_RDWR | O_NONBLOCK>}, {"close", CloseFd},
                          {"bindInterdomain", BindInterdomainPort}, {"bindUnbound", BindUnbound}, {"unbind", Unbind},
                          {"notify", Notify}, {"reset", Reset}, {"restrictDomid", Restrict},
                          {"readPorts", ReadPorts}, {"unmask", Unmask}});
}

}  // namespace

NODE_API_MODULE(xen_evtchn, Init)
