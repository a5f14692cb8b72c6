// The few syscalls the simulated hypervisor needs that Node does not offer: a blocking Unix
// socket to the sim daemon (control calls are synchronous, like the real devices' ioctls),
// flock for the daemon's single-instance lock, mkfifo for event wake-ups, shared mmap, and the
// peer credentials of a connection (which process to kill when its domain is destroyed).
#include <fcntl.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include "xen_vchan/native.h"

using namespace xen_vchan;

namespace {

// connectUnix(path) -> blocking fd, close-on-exec so children never keep our liveness link open
Napi::Value ConnectUnix(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string path = info[0].As<Napi::String>();
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  if (path.size() >= sizeof address.sun_path) return ThrowUsage(env, "socket path too long: " + path);
  std::memcpy(address.sun_path, path.c_str(), path.size() + 1);
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return ThrowErrno(env, errno, "socket");
  if (connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) < 0) {
    int err = errno;
    close(fd);
    return ThrowErrno(env, err, "connect");
  }
  return Napi::Number::New(env, fd);
}

// flock(fd, exclusive, wait) -> true if taken, false if another holder has it (non-blocking)
Napi::Value Flock(const Napi::CallbackInfo& info) {
  int operation = (info[1].ToBoolean() ? LOCK_EX : LOCK_SH) | (info[2].ToBoolean() ? 0 : LOCK_NB);
  if (flock(ToFd(info[0]), operation) < 0) {
    if (errno == EWOULDBLOCK) return Napi::Boolean::New(info.Env(), false);
    return ThrowErrno(info.Env(), errno, "flock");
  }
  return Napi::Boolean::New(info.Env(), true);
}

// mkfifo(path, mode)
Napi::Value Mkfifo(const Napi::CallbackInfo& info) {
  std::string path = info[0].As<Napi::String>();
  return VoidResult(info.Env(), mkfifo(path.c_str(), ToU32(info[1])), "mkfifo");
}

// mmapPages(fds[], offsets[], writable) -> one ArrayBuffer with page i taken from fds[i] at
// offsets[i]: how gntdev shows several grants, possibly from different allocations, as one
// contiguous buffer. Reserves the whole range first so the pages land next to each other.
Napi::Value MmapPages(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Array fds = info[0].As<Napi::Array>();
  Napi::Array offsets = info[1].As<Napi::Array>();
  uint32_t count = fds.Length();
  if (count == 0 || offsets.Length() != count) return ThrowUsage(env, "need one offset per fd, at least one page");
  const size_t page = 4096;
  size_t length = count * page;
  void* base = mmap(nullptr, length, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (base == MAP_FAILED) return ThrowErrno(env, errno, "mmap");
  int protection = PROT_READ | (info[2].ToBoolean() ? PROT_WRITE : 0);
  for (uint32_t i = 0; i < count; i++) {
    void* at = static_cast<uint8_t*>(base) + i * page;
    off_t offset = static_cast<off_t>(offsets.Get(i).As<Napi::Number>().Int64Value());
    if (mmap(at, page, protection, MAP_SHARED | MAP_FIXED, ToFd(fds.Get(i)), offset) == MAP_FAILED) {
      int err = errno;
      munmap(base, length);
      return ThrowErrno(env, err, "mmap");
    }
  }
  return WrapMapping(env, base, length);
}

// peerPid(fd) -> the pid of the process that connected the Unix socket fd (SO_PEERCRED). The
// kernel's word, not the process's: the daemon kills by it, so a claimed pid must not do.
Napi::Value PeerPid(const Napi::CallbackInfo& info) {
  ucred credentials{};
  socklen_t length = sizeof credentials;
  if (getsockopt(ToFd(info[0]), SOL_SOCKET, SO_PEERCRED, &credentials, &length) < 0) return ThrowErrno(info.Env(), errno, "getsockopt");
  return Napi::Number::New(info.Env(), credentials.pid);
}

// mmap and munmap are the device addons' own (xen_vchan/native.h), on the page files.
Napi::Object Init(Napi::Env env, Napi::Object exports) {
  return ExportFunctions(env, exports,
                         {{"connectUnix", ConnectUnix}, {"flock", Flock}, {"mkfifo", Mkfifo},
                          {"mmap", Mmap}, {"mmapPages", MmapPages}, {"munmap", Munmap}, {"peerPid", PeerPid}});
}

}  // namespace

NODE_API_MODULE(xen_vchan_sim, Init)
