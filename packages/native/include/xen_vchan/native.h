// Helpers shared by the xen-vchan addons. Each addon stays a list of one-function-per-syscall
// wrappers; what they all need (errno -> JS error, the lifetime of mapped memory) lives here once.
#pragma once

#include <napi.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <fcntl.h>
#include <string>
#include <sys/mman.h>
#include <unistd.h>

namespace xen_vchan {

// Throws a JS Error carrying `code` (the errno name), `errno` and `syscall`. The TypeScript layer
// adds the advice a user needs (what the limit is, which device is missing, ...), because only it
// knows which operation the user asked for.
inline Napi::Value ThrowErrno(Napi::Env env, int err, const char* syscall) {
  const char* name = strerrorname_np(err);
  std::string code = name ? name : "E" + std::to_string(err);
  Napi::Error error = Napi::Error::New(env, code + ": " + strerror(err) + " (" + syscall + ")");
  error.Set("code", Napi::String::New(env, code));
  error.Set("errno", Napi::Number::New(env, err));
  error.Set("syscall", Napi::String::New(env, syscall));
  error.ThrowAsJavaScriptException();
  return env.Undefined();
}

inline Napi::Value ThrowUsage(Napi::Env env, const std::string& message) {
  Napi::Error error = Napi::TypeError::New(env, message);
  error.Set("code", Napi::String::New(env, "ERR_INVALID_ARG_VALUE"));
  error.ThrowAsJavaScriptException();
  return env.Undefined();
}

// Mapped memory reaches JS as an external ArrayBuffer. Two things can end a mapping: an explicit
// Unmap (release()), which must detach the buffer first so no JS view can reach the freed pages,
// or the garbage collector dropping a buffer nobody released. The Mapping record lets whichever
// comes second see that the pages are already gone; it is freed only by the finalizer, which V8
// runs exactly once.
struct Mapping {
  void* address;
  size_t length;
  bool unmapped;
};

inline void FinalizeMapping(Napi::Env, void*, Mapping* mapping) {
  if (!mapping->unmapped) munmap(mapping->address, mapping->length);
  delete mapping;
}

inline Napi::ArrayBuffer WrapMapping(Napi::Env env, void* address, size_t length) {
  auto* mapping = new Mapping{address, length, false};
  Napi::ArrayBuffer buffer = Napi::ArrayBuffer::New(env, address, length, FinalizeMapping, mapping);
  // The record travels with the buffer so Unmap can find it without a global table.
  napi_wrap(env, buffer, mapping, nullptr, nullptr, nullptr);
  return buffer;
}

// Detaches the buffer, then unmaps. Returns false (and unmaps nothing) if the buffer was not made
// by WrapMapping or was already unmapped.
inline bool UnmapBuffer(Napi::Env env, Napi::ArrayBuffer buffer) {
  Mapping* mapping = nullptr;
  if (napi_unwrap(env, buffer, reinterpret_cast<void**>(&mapping)) != napi_ok || mapping == nullptr)
    return false;
  if (mapping->unmapped) return false;
  // Taken before Detach: detaching may free the backing store and so run FinalizeMapping,
  // which deletes the record.
  void* address = mapping->address;
  size_t length = mapping->length;
  mapping->unmapped = true;
  buffer.Detach();
  munmap(address, length);
  return true;
}

// mmap of `length` bytes of `fd` at `offset`, shared, read-only unless `writable`.
inline Napi::Value MapShared(Napi::Env env, int fd, size_t length, uint64_t offset, bool writable) {
  int protection = PROT_READ | (writable ? PROT_WRITE : 0);
  void* address = mmap(nullptr, length, protection, MAP_SHARED, fd, static_cast<off_t>(offset));
  if (address == MAP_FAILED) return ThrowErrno(env, errno, "mmap");
  return WrapMapping(env, address, length);
}

inline uint32_t ToU32(const Napi::Value& value) { return value.As<Napi::Number>().Uint32Value(); }
inline int ToFd(const Napi::Value& value) { return value.As<Napi::Number>().Int32Value(); }

// open(path) -> fd, with the flags a device needs (always close-on-exec: children of a Node
// process must not keep our grants, ports or XenStore connection alive).
template <int Flags>
Napi::Value OpenDevice(const Napi::CallbackInfo& info) {
  std::string path = info[0].As<Napi::String>();
  int fd = open(path.c_str(), Flags | O_CLOEXEC);
  if (fd < 0) return ThrowErrno(info.Env(), errno, "open");
  return Napi::Number::New(info.Env(), fd);
}

// close(fd)
inline Napi::Value CloseFd(const Napi::CallbackInfo& info) {
  if (close(ToFd(info[0])) < 0) return ThrowErrno(info.Env(), errno, "close");
  return info.Env().Undefined();
}

}  // namespace xen_vchan
