// /dev/xen/gntdev: one function per syscall. The ioctl structs are the kernel's uapi
// (include/uapi/xen/gntdev.h), restated here so a build needs no Xen headers; SET_UNMAP_NOTIFY,
// which gntalloc has too, is in xen_vchan/grants.h.
#include <fcntl.h>
#include <sys/ioctl.h>

#include <vector>

#include "xen_vchan/grants.h"
#include "xen_vchan/native.h"

using namespace xen_vchan;

namespace {

struct GrantRef {
  uint32_t domid;
  uint32_t ref;
};
struct MapGrantRef {
  uint32_t count;
  uint32_t pad;
  uint64_t index;
  GrantRef refs[1];
};
struct UnmapGrantRef {
  uint64_t index;
  uint32_t count;
  uint32_t pad;
};
struct CopySegment {
  union {
    void* virt;
    struct {
      uint32_t ref;
      uint16_t offset;
      uint16_t domid;
    } foreign;
  } source, dest;
  uint16_t len;
  uint16_t flags;
  int16_t status;
};
struct GrantCopy {
  unsigned int count;
  CopySegment* segments;
};

constexpr unsigned long kMapGrantRef = _IOC(_IOC_NONE, 'G', 0, sizeof(MapGrantRef));
constexpr unsigned long kUnmapGrantRef = _IOC(_IOC_NONE, 'G', 1, sizeof(UnmapGrantRef));
constexpr unsigned long kGrantCopy = _IOC(_IOC_NONE, 'G', 8, sizeof(GrantCopy));
static_assert(kMapGrantRef == 0x00184700, "IOCTL_GNTDEV_MAP_GRANT_REF");
static_assert(kUnmapGrantRef == 0x00104701, "IOCTL_GNTDEV_UNMAP_GRANT_REF");
static_assert(kGrantCopy == 0x00104708, "IOCTL_GNTDEV_GRANT_COPY");
static_assert(sizeof(CopySegment) == 24, "struct gntdev_grant_copy_segment");

constexpr uint16_t kCopySourceIsRef = 1;
constexpr uint16_t kCopyDestIsRef = 2;

// mapGrantRef(fd, domid, refs[]) -> index (the mmap offset of the reserved slots). The ioctl
// takes a domid per ref; one mapping here is always of a single domain's grants.
Napi::Value MapGrantRefs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  uint32_t domid = ToU32(info[1]);
  Napi::Array refs = info[2].As<Napi::Array>();
  uint32_t count = refs.Length();
  if (count == 0) return ThrowUsage(env, "need at least one ref");
  std::vector<uint8_t> storage(offsetof(MapGrantRef, refs) + count * sizeof(GrantRef));
  auto* request = reinterpret_cast<MapGrantRef*>(storage.data());
  request->count = count;
  for (uint32_t i = 0; i < count; i++) request->refs[i] = GrantRef{domid, ToU32(refs.Get(i))};
  if (ioctl(ToFd(info[0]), kMapGrantRef, request) < 0) return ThrowErrno(env, errno, "ioctl(IOCTL_GNTDEV_MAP_GRANT_REF)");
  return Napi::Number::New(env, static_cast<double>(request->index));
}

// unmapGrantRef(fd, index, count)
Napi::Value UnmapGrantRefs(const Napi::CallbackInfo& info) {
  UnmapGrantRef request{ToIndex(info[1]), ToU32(info[2]), 0};
  return VoidResult(info.Env(), ioctl(ToFd(info[0]), kUnmapGrantRef, &request), "ioctl(IOCTL_GNTDEV_UNMAP_GRANT_REF)");
}

// One side of a copy segment: a Uint8Array of ours (at least len bytes), or {domid, ref, offset}.
bool ReadCopyEnd(Napi::Value end, uint16_t len, uint16_t isRefFlag, CopySegment& segment, bool isSource) {
  auto& side = isSource ? segment.source : segment.dest;
  if (end.IsTypedArray()) {
    Napi::Uint8Array bytes = end.As<Napi::Uint8Array>();
    if (bytes.ByteLength() < len) return false;
    side.virt = bytes.Data();
    return true;
  }
  Napi::Object foreign = end.As<Napi::Object>();
  side.foreign.domid = static_cast<uint16_t>(ToU32(foreign.Get("domid")));
  side.foreign.ref = ToU32(foreign.Get("ref"));
  side.foreign.offset = static_cast<uint16_t>(ToU32(foreign.Get("offset")));
  segment.flags |= isRefFlag;
  return true;
}

// grantCopy(fd, [{source, dest, length}]) -> statuses (GNTST_*, 0 = okay)
Napi::Value GrantCopySegments(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Array list = info[1].As<Napi::Array>();
  std::vector<CopySegment> segments(list.Length());
  for (uint32_t i = 0; i < list.Length(); i++) {
    Napi::Object item = list.Get(i).As<Napi::Object>();
    CopySegment& segment = segments[i];
    std::memset(&segment, 0, sizeof segment);
    segment.len = static_cast<uint16_t>(ToU32(item.Get("length")));
    if (!ReadCopyEnd(item.Get("source"), segment.len, kCopySourceIsRef, segment, true) ||
        !ReadCopyEnd(item.Get("dest"), segment.len, kCopyDestIsRef, segment, false))
      return ThrowUsage(env, "grant copy segment " + std::to_string(i) + ": local buffer shorter than length");
  }
  GrantCopy request{static_cast<unsigned int>(segments.size()), segments.data()};
  if (ioctl(ToFd(info[0]), kGrantCopy, &request) < 0) return ThrowErrno(env, errno, "ioctl(IOCTL_GNTDEV_GRANT_COPY)");
  Napi::Array statuses = Napi::Array::New(env, segments.size());
  for (uint32_t i = 0; i < segments.size(); i++) statuses.Set(i, Napi::Number::New(env, segments[i].status));
  return statuses;
}

// setUnmapNotify, mmap and munmap are the shared ones (xen_vchan/grants.h, native.h); the first
// names this device's ioctl in its errors, and mmap takes mapGrantRef's index as its offset.
constexpr char kSetUnmapNotifyName[] = "ioctl(IOCTL_GNTDEV_SET_UNMAP_NOTIFY)";

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  return ExportFunctions(env, exports,
                         {{"open", OpenDevice<O_RDWR>}, {"close", CloseFd},
                          {"mapGrantRef", MapGrantRefs}, {"unmapGrantRef", UnmapGrantRefs}, {"grantCopy", GrantCopySegments},
                          {"setUnmapNotify", SetUnmapNotify<kSetUnmapNotifyName>}, {"mmap", Mmap}, {"munmap", Munmap}});
}

}  // namespace

NODE_API_MODULE(xen_gntdev, Init)
