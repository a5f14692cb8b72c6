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
  if (ioctl(ToFd(info[0]), kUnbind, &request) < 0) return ThrowErrno(info.Env(), errno, "ioctl(IOCTL_EVTCHN_UNBIND)");
  return info.Env().Undefined();
}

Napi::Value Notify(const Napi::CallbackInfo& info) {
  PortArg request{ToU32(info[1])};
  if (ioctl(ToFd(info[0]), kNotify, &request) < 0) return ThrowErrno(info.Env(), errno, "ioctl(IOCTL_EVTCHN_NOTIFY)");
  return info.Env().Undefined();
}

Napi::Value Reset(const Napi::CallbackInfo& info) {
  if (ioctl(ToFd(info[0]), kReset, nullptr) < 0) return ThrowErrno(info.Env(), errno, "ioctl(IOCTL_EVTCHN_RESET)");
  return info.Env().Undefined();
}

Napi::Value Restrict(const Napi::CallbackInfo& info) {
  RestrictDomid request{static_cast<uint16_t>(ToU32(info[1]))};
  if (ioctl(ToFd(info[0]), kRestrictDomid, &request) < 0)
    return ThrowErrno(info.Env(), errno, "ioctl(IOCTL_EVTCHN_RESTRICT_DOMID)");
  return info.Env().Undefined();
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
  if (write(ToFd(info[0]), &port, sizeof port) < 0) return ThrowErrno(info.Env(), errno, "write");
  return info.Env().Undefined();
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("open", Napi::Function::New(env, OpenDevice<O_RDWR | O_NONBLOCK>));
  exports.Set("close", Napi::Function::New(env, CloseFd));
  exports.Set("bindInterdomain", Napi::Function::New(env, BindInterdomainPort));
  exports.Set("bindUnbound", Napi::Function::New(env, BindUnbound));
  exports.Set("unbind", Napi::Function::New(env, Unbind));
  exports.Set("notify", Napi::Function::New(env, Notify));
  exports.Set("reset", Napi::Function::New(env, Reset));
  exports.Set("restrictDomid", Napi::Function::New(env, Restrict));
  exports.Set("readPorts", Napi::Function::New(env, ReadPorts));
  exports.Set("unmask", Napi::Function::New(env, Unmask));
  exports.Set("Poller", Poller::Define(env));
  return exports;
}

}  // namespace

NODE_API_MODULE(xen_evtchn, Init)
