// /dev/xen/gntalloc: one function per syscall. The ioctl structs are the kernel's uapi
// (include/uapi/xen/gntalloc.h), restated here so a build needs no Xen headers; SET_UNMAP_NOTIFY,
// which gntdev has too, is in xen_vchan/grants.h.
#include <fcntl.h>
#include <sys/ioctl.h>

#include <vector>

#include "xen_vchan/grants.h"
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

constexpr unsigned long kAllocGref = _IOC(_IOC_NONE, 'G', 5, sizeof(AllocGref));
constexpr unsigned long kDeallocGref = _IOC(_IOC_NONE, 'G', 6, sizeof(DeallocGref));
static_assert(kAllocGref == 0x00184705, "IOCTL_GNTALLOC_ALLOC_GREF");
static_assert(kDeallocGref == 0x00104706, "IOCTL_GNTALLOC_DEALLOC_GREF");

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
  DeallocGref request{ToIndex(info[1]), ToU32(info[2])};
  return VoidResult(info.Env(), ioctl(ToFd(info[0]), kDeallocGref, &request), "ioctl(IOCTL_GNTALLOC_DEALLOC_GREF)");
}

// setUnmapNotify, mmap and munmap are the shared ones (xen_vchan/grants.h, native.h); the first
// names this device's ioctl in its errors, and mmap takes allocGref's index as its offset.
constexpr char kSetUnmapNotifyName[] = "ioctl(IOCTL_GNTALLOC_SET_UNMAP_NOTIFY)";

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  return ExportFunctions(env, exports,
                         {{"open", OpenDevice<O_RDWR>}, {"close", CloseFd},
                          {"allocGref", AllocGrefs}, {"deallocGref", DeallocGrefs},
                          {"setUnmapNotify", SetUnmapNotify<kSetUnmapNotifyName>}, {"mmap", Mmap}, {"munmap", Munmap}});
}

}  // namespace

NODE_API_MODULE(xen_gntalloc, Init)
