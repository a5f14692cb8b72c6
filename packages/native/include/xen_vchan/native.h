// Helpers shared by the xen-vchan addons. Each addon stays a list of one-function-per-syscall
// wrappers; what they all need (errno -> JS error, the lifetime of mapped memory) lives here once.
#pragma once

#include <napi.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <fcntl.h>
#include <initializer_list>
#include <string>
#include <sys/mman.h>
#include <unistd.h>

namespace xen_vchan {

// Every Linux errno by its name, as glibc's strerrorname_np() gives it (aliases such as
// EWOULDBLOCK take the name of the value they equal, EAGAIN). A table of our own and not that
// function because it only appeared in glibc 2.32: the prebuilt addons would not load on older
// guests (Debian 11, Ubuntu 20.04), and musl has no such function at all.
#define XEN_VCHAN_ERRNO_NAMES(X) \
    X(EPERM) X(ENOENT) X(ESRCH) X(EINTR) X(EIO) X(ENXIO) X(E2BIG) X(ENOEXEC) X(EBADF) X(ECHILD) X(EAGAIN) \
    X(ENOMEM) X(EACCES) X(EFAULT) X(ENOTBLK) X(EBUSY) X(EEXIST) X(EXDEV) X(ENODEV) X(ENOTDIR) X(EISDIR) \
    X(EINVAL) X(ENFILE) X(EMFILE) X(ENOTTY) X(ETXTBSY) X(EFBIG) X(ENOSPC) X(ESPIPE) X(EROFS) X(EMLINK) \
    X(EPIPE) X(EDOM) X(ERANGE) X(EDEADLK) X(ENAMETOOLONG) X(ENOLCK) X(ENOSYS) X(ENOTEMPTY) X(ELOOP) X(ENOMSG) \
    X(EIDRM) X(ECHRNG) X(EL2NSYNC) X(EL3HLT) X(EL3RST) X(ELNRNG) X(EUNATCH) X(ENOCSI) X(EL2HLT) X(EBADE) \
    X(EBADR) X(EXFULL) X(ENOANO) X(EBADRQC) X(EBADSLT) X(EBFONT) X(ENOSTR) X(ENODATA) X(ETIME) X(ENOSR) \
    X(ENONET) X(ENOPKG) X(EREMOTE) X(ENOLINK) X(EADV) X(ESRMNT) X(ECOMM) X(EPROTO) X(EMULTIHOP) X(EDOTDOT) \
    X(EBADMSG) X(EOVERFLOW) X(ENOTUNIQ) X(EBADFD) X(EREMCHG) X(ELIBACC) X(ELIBBAD) X(ELIBSCN) X(ELIBMAX) \
    X(ELIBEXEC) X(EILSEQ) X(ERESTART) X(ESTRPIPE) X(EUSERS) X(ENOTSOCK) X(EDESTADDRREQ) X(EMSGSIZE) \
    X(EPROTOTYPE) X(ENOPROTOOPT) X(EPROTONOSUPPORT) X(ESOCKTNOSUPPORT) X(EOPNOTSUPP) X(EPFNOSUPPORT) \
    X(EAFNOSUPPORT) X(EADDRINUSE) X(EADDRNOTAVAIL) X(ENETDOWN) X(ENETUNREACH) X(ENETRESET) X(ECONNABORTED) \
    X(ECONNRESET) X(ENOBUFS) X(EISCONN) X(ENOTCONN) X(ESHUTDOWN) X(ETOOMANYREFS) X(ETIMEDOUT) X(ECONNREFUSED) \
    X(EHOSTDOWN) X(EHOSTUNREACH) X(EALREADY) X(EINPROGRESS) X(ESTALE) X(EUCLEAN) X(ENOTNAM) X(ENAVAIL) \
    X(EISNAM) X(EREMOTEIO) X(EDQUOT) X(ENOMEDIUM) X(EMEDIUMTYPE) X(ECANCELED) X(ENOKEY) X(EKEYEXPIRED) \
    X(EKEYREVOKED) X(EKEYREJECTED) X(EOWNERDEAD) X(ENOTRECOVERABLE) X(ERFKILL) X(EHWPOISON)

inline const char* ErrnoName(int err) {
  switch (err) {
#define XEN_VCHAN_ERRNO_CASE(name) \
  case name:                       \
    return #name;
    XEN_VCHAN_ERRNO_NAMES(XEN_VCHAN_ERRNO_CASE)
#undef XEN_VCHAN_ERRNO_CASE
    default:
      return nullptr;
  }
}

// Throws a JS Error carrying `code` (the errno name), `errno` and `syscall`. The TypeScript layer
// adds the advice a user needs (what the limit is, which device is missing, ...), because only it
// knows which operation the user asked for.
inline Napi::Value ThrowErrno(Napi::Env env, int err, const char* syscall) {
  const char* name = ErrnoName(err);
  std::string code = name ? name : "E" + std::to_string(err);
  Napi::Error error = Napi::Error::New(env, code + ": " + strerror(err) + " (" + syscall + ")");
  error.Set("code", Napi::String::New(env, code));
  error.Set("errno", Napi::Number::New(env, err));
  error.Set("syscall", Napi::String::New(env, syscall));
  error.ThrowAsJavaScriptException();
  return env.Undefined();
}

// What a syscall that answers only success or failure gives JS: undefined, or its errno thrown.
// Called with the syscall's result as an argument, so nothing that could set errno runs between.
inline Napi::Value VoidResult(Napi::Env env, int result, const char* syscall) {
  if (result < 0) return ThrowErrno(env, errno, syscall);
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

inline uint32_t ToU32(const Napi::Value& value) { return value.As<Napi::Number>().Uint32Value(); }
inline int ToFd(const Napi::Value& value) { return value.As<Napi::Number>().Int32Value(); }
// gntalloc's and gntdev's index: the mmap offset of a range of slots, a 64-bit field in the ioctls.
inline uint64_t ToIndex(const Napi::Value& value) { return static_cast<uint64_t>(value.As<Napi::Number>().Int64Value()); }

// mmap(fd, length, offset, writable) -> ArrayBuffer over a shared mapping, read-only unless
// writable. The offset is the device's: gntalloc's and gntdev's index, or a page file's offset.
inline Napi::Value Mmap(const Napi::CallbackInfo& info) {
  size_t length = static_cast<size_t>(info[1].As<Napi::Number>().Int64Value());
  off_t offset = static_cast<off_t>(info[2].As<Napi::Number>().Int64Value());
  int protection = PROT_READ | (info[3].ToBoolean() ? PROT_WRITE : 0);
  void* address = mmap(nullptr, length, protection, MAP_SHARED, ToFd(info[0]), offset);
  if (address == MAP_FAILED) return ThrowErrno(info.Env(), errno, "mmap");
  return WrapMapping(info.Env(), address, length);
}

// munmap(buffer) -> whether it was still mapped (see UnmapBuffer)
inline Napi::Value Munmap(const Napi::CallbackInfo& info) {
  return Napi::Boolean::New(info.Env(), UnmapBuffer(info.Env(), info[0].As<Napi::ArrayBuffer>()));
}

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
inline Napi::Value CloseFd(const Napi::CallbackInfo& info) { return VoidResult(info.Env(), close(ToFd(info[0])), "close"); }

// One function an addon exports: its JS name and the wrapper that makes the call.
struct Export {
  const char* name;
  Napi::Value (*function)(const Napi::CallbackInfo&);
};

// Sets each function on `exports`, so that an addon's Init is just the list of what it offers.
inline Napi::Object ExportFunctions(Napi::Env env, Napi::Object exports, std::initializer_list<Export> functions) {
  for (const Export& function : functions) exports.Set(function.name, Napi::Function::New(env, function.function));
  return exports;
}

}  // namespace xen_vchan
