// /dev/xen/gntalloc: one function per syscall. The ioctl structs are the kernel's uapi
// (include/uapi/xen/gntalloc.h), restated here so a build needs no Xen headers.
#include <fcntl.h>
#include <sys/ioctl.h>

#include <vector>

#include "xen_vchan/native.h"

using namespace xen_vchan;

namespace {

struct AllocGref {
  uint16_t domid;
  uint16_t flags;
  uint32_t count;
  uint64_t index;
  uint32_t gref_ids[1];
};
struct DeallocGref {
  uint64_t index;
  uint32_t count;
};
struct UnmapNotify {
  uint64_t index;
  uint32_t action;
  uint32_t event_channel_port;
};

constexpr unsigned long kAllocGref = _IOC(_IOC_NONE, 'G', 5, sizeof(AllocGref));
constexpr unsigned long kDeallocGref = _IOC(_IOC_NONE, 'G', 6, sizeof(DeallocGref));
constexpr unsigned long kSetUnmapNotify = _IOC(_IOC_NONE, 'G', 7, sizeof(UnmapNotify));
static_assert(kAllocGref == 0x00184705, "IOCTL_GNTALLOC_ALLOC_GREF");
static_assert(kDeallocGref == 0x00104706, "IOCTL_GNTALLOC_DEALLOC_GREF");
static_assert(kSetUnmapNotify == 0x00104707, "IOCTL_GNTALLOC_SET_UNMAP_NOTIFY");

// allocGref(fd, domid, count, writable) -> { index, refs }
Napi::Value AllocGrefs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  uint32_t count = ToU32(info[2]);
  if (count == 0) return ThrowUsage(env, "count must be at least 1");
  // The kernel writes count grant ids past the fixed header.
  std::vector<uint8_t> storage(offsetof(AllocGref, gref_ids) + count * sizeof(uint32_t));
  auto* request = reinterpret_cast<AllocGref*>(storage.data());
  request->domid = static_cast<uint16_t>(ToU32(info[1]));
  request->flags = info[3].ToBoolean() ? 1 : 0;
  request->count = count;
  if (ioctl(ToFd(info[0]), kAllocGref, request) < 0) return ThrowErrno(env, errno, "ioctl(IOCTL_GNTALLOC_ALLOC_GREF)");
  Napi::Array refs = Napi::Array::New(env, count);
  for (uint32_t i = 0; i < count; i++) refs.Set(i, Napi::Number::New(env, request->gref_ids[i]));
  Napi::Object result = Napi::Object::New(env);
  result.Set("index", Napi::Number::New(env, static_cast<double>(request->index)));
  result.Set("refs", refs);
  return result;
}

// deallocGref(fd, index, count)
Napi::Value DeallocGrefs(const Napi::CallbackInfo& info) {
  DeallocGref request{static_cast<uint64_t>(info[1].As<Napi::Number>().Int64Value()), ToU32(info[2])};
  if (ioctl(ToFd(info[0]), kDeallocGref, &request) < 0)
    return ThrowErrno(info.Env(), errno, "ioctl(IOCTL_GNTALLOC_DEALLOC_GREF)");
  return info.Env().Undefined();
}

// setUnmapNotify(fd, index, action, port)
Napi::Value SetUnmapNotify(const Napi::CallbackInfo& info) {
  UnmapNotify request{static_cast<uint64_t>(info[1].As<Napi::Number>().Int64Value()), ToU32(info[2]), ToU32(info[3])};
  if (ioctl(ToFd(info[0]), kSetUnmapNotify, &request) < 0)
    return ThrowErrno(info.Env(), errno, "ioctl(IOCTL_GNTALLOC_SET_UNMAP_NOTIFY)");
  return info.Env().Undefined();
}

// mmap(fd, length, offset, writable) -> ArrayBuffer
Napi::Value Mmap(const Napi::CallbackInfo& info) {
  return MapShared(info.Env(), ToFd(info[0]), info[1].As<Napi::Number>().Int64Value(),
                   info[2].As<Napi::Number>().Int64Value(), info[3].ToBoolean());
}

// munmap(buffer) -> whether it was still mapped
Napi::Value Munmap(const Napi::CallbackInfo& info) {
  return Napi::Boolean::New(info.Env(), UnmapBuffer(info.Env(), info[0].As<Napi::ArrayBuffer>()));
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("open", Napi::Function::New(env, OpenDevice<O_RDWR>));
  exports.Set("close", Napi::Function::New(env, CloseFd));
  exports.Set("allocGref", Napi::Function::New(env, AllocGrefs));
  exports.Set("deallocGref", Napi::Function::New(env, DeallocGrefs));
  exports.Set("setUnmapNotify", Napi::Function::New(env, SetUnmapNotify));
  exports.Set("mmap", Napi::Function::New(env, Mmap));
  exports.Set("munmap", Napi::Function::New(env, Munmap));
  return exports;
}

}  // namespace

NODE_API_MODULE(xen_gntalloc, Init)
