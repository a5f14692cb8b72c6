// What gntalloc and gntdev share of the kernel's uapi (include/uapi/xen/gntalloc.h, gntdev.h):
// SET_UNMAP_NOTIFY has the same number and the same struct on both devices, so it is one call.
#pragma once

#include <sys/ioctl.h>

#include "xen_vchan/native.h"

namespace xen_vchan {

struct UnmapNotify {
  uint64_t index;
  uint32_t action;
  uint32_t event_channel_port;
};

constexpr unsigned long kSetUnmapNotify = _IOC(_IOC_NONE, 'G', 7, sizeof(UnmapNotify));
static_assert(kSetUnmapNotify == 0x00104707, "IOCTL_GNTALLOC_SET_UNMAP_NOTIFY and IOCTL_GNTDEV_SET_UNMAP_NOTIFY");

// setUnmapNotify(fd, index, action, port). IoctlName is the device's name for the ioctl, which an
// error carries as its `syscall`.
template <const char* IoctlName>
Napi::Value SetUnmapNotify(const Napi::CallbackInfo& info) {
  UnmapNotify request{ToIndex(info[1]), ToU32(info[2]), ToU32(info[3])};
  return VoidResult(info.Env(), ioctl(ToFd(info[0]), kSetUnmapNotify, &request), IoctlName);
}

}  // namespace xen_vchan
