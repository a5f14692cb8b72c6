// /dev/xen/xenbus: one function per syscall, plus the shared Poller (xen_vchan/poller.h) that turns
// readability of the fd into a JS callback through libuv, so no thread blocks waiting for replies.
// The device carries the XenStore wire protocol; framing it is the TypeScript layer's job.
#include <fcntl.h>

#include "xen_vchan/native.h"
#include "xen_vchan/poller.h"

using namespace xen_vchan;

namespace {

// One message is at most 16 header bytes + 4096 payload bytes; a read may return several, or part
// of one, so any size works and this one drains a typical burst in one call.
constexpr size_t kReadChunk = 16384;

// read(fd) -> Buffer of what the driver has queued; empty when nothing is (EAGAIN)
Napi::Value Read(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  char chunk[kReadChunk];
  ssize_t got = read(ToFd(info[0]), chunk, sizeof chunk);
  if (got < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK) return Napi::Buffer<char>::New(env, 0);
    return ThrowErrno(env, errno, "read");
  }
  return Napi::Buffer<char>::Copy(env, chunk, static_cast<size_t>(got));
}

// write(fd, bytes) -> bytes taken; 0 when the driver cannot take them now (EAGAIN).
// The driver acts on a message once it holds all of it, so callers write whole messages.
Napi::Value Write(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Uint8Array bytes = info[1].As<Napi::Uint8Array>();
  ssize_t written = write(ToFd(info[0]), bytes.Data(), bytes.ByteLength());
  if (written < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK) return Napi::Number::New(env, 0);
    return ThrowErrno(env, errno, "write");
  }
  return Napi::Number::New(env, static_cast<double>(written));
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("Poller", Poller::Define(env));
  return ExportFunctions(env, exports, {{"open", OpenDevice<O_RDWR | O_NONBLOCK>}, {"close", CloseFd}, {"read", Read}, {"write", Write}});
}

}  // namespace

NODE_API_MODULE(xen_xenbus, Init)
