# Shared settings for the real-Xen harness; sourced by setup.sh, run-in-dom0.sh and run.sh.
# shellcheck disable=SC2034  # the settings are used by the scripts that source this file
# Everything is derived from this file's location or from XEN_VCHAN_* variables, so the
# harness works from any clone path (CI uses a fresh clone elsewhere).

XEN_HARNESS_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)
XEN_PROJECT_ROOT=$(cd "$XEN_HARNESS_DIR/../.." && pwd -P)

# The cache lives outside the clone so that it survives between CI runs on one machine.
XEN_CACHE=${XEN_VCHAN_XEN_CACHE:-/var/cache/xen-vchan-xen}

# Layout of the cache (all written by setup.sh):
XEN_DEBS=$XEN_CACHE/debs              # downloaded .deb files, reused as long as they exist
XEN_ROOT=$XEN_CACHE/root              # the .debs unpacked with dpkg -x (never installed)
XEN_TOOLS_BIN=$XEN_CACHE/bin          # wrappers that run Xen tools from $XEN_ROOT (used in dom0)
XEN_IMAGES=$XEN_CACHE/images          # hypervisor ELF, dom0 kernel, dom0 initramfs
XEN_LOGS=$XEN_CACHE/logs              # serial logs of recent boots
XEN_STAMP=$XEN_CACHE/setup.stamp
# The libxenvchan peer of the interop tests (test/interop/build.sh builds it; exported to dom0
# as XEN_VCHAN_INTEROP_PEER).
XEN_INTEROP_PEER=$XEN_CACHE/interop/vchan-peer

XEN_HYPERVISOR_ELF=$XEN_IMAGES/xen.elf
XEN_DOM0_KERNEL=$XEN_IMAGES/vmlinux   # ELF, or the bzImage if it could not be unpacked
XEN_DOM0_INITRD=$XEN_IMAGES/dom0-initrd.cpio.gz
# The second guest (a PV domU that dom0 starts with xl): it boots the same kernel with this
# initramfs (busybox, the Xen modules, node and the libraries of node and the libxenvchan peer),
# followed by a small archive of the project that the tests make in dom0 before each start
# (test/xen/domu/image.sh). Uncompressed: unpacking a gzip'd node under TCG costs seconds.
XEN_DOMU_BASE_INITRD=$XEN_IMAGES/domu-base.cpio
XEN_DOMU_MODULES="xen-evtchn xen-gntdev xen-gntalloc xenfs"

# Xen's own packages come from the Debian 12 archive; the hypervisor is pinned to the 4.17
# series because that is what bookworm ships and what the tests were written against.
XEN_UNPACKED_PACKAGES=(
  xen-hypervisor-4.17-amd64
  xen-utils-4.17 xen-utils-common xenstore-utils
  libxen-dev libxenmisc4.17 libxenstore4 libxentoolcore1 libxentoollog1 libxencall1
  libxenevtchn1 libxengnttab1 libxenforeignmemory1 libxendevicemodel1 libxenhypfs1
  libyajl2
  busybox-static
)
# Host tools that really are installed (they do not touch /boot or the host's services).
XEN_HOST_PACKAGES=(qemu-system-x86 cpio kmod xz-utils gcc libc6-dev file strace)
XEN_HOST_COMMANDS=(qemu-system-x86_64 cpio depmod modprobe xz gcc file ldd gzip flock timeout strace)

# Modules dom0 needs: the three devices under test plus xenfs/privcmd for xenstored, and the
# virtio-9p stack that carries the host's /usr, /etc and the project into dom0.
XEN_DOM0_MODULES="xen-evtchn xen-gntdev xen-gntalloc xenfs xen-privcmd 9p 9pnet_virtio virtio_pci"

xen_log() { echo "xen: $*" >&2; }
xen_die() { echo "xen: error: $*" >&2; exit 2; }

xen_now() { date +%s%N; }
# Seconds (one decimal) between two xen_now readings.
xen_secs() { local d=$(( ($2 - $1) / 100000000 )); echo "$((d / 10)).$((d % 10))"; }
