#!/bin/sh
# PID 1 of the second guest (a PV domU that dom0 starts with xl; see test/xen/domu.ts).
# The project's archive (image.sh) put this file here, the project at its host path and
# /etc/xen-vchan-domu (the settings image.sh wrote: PROJECT, PEER). We load the guest-side Xen
# drivers and hand over to the job agent (agent.mjs), which takes its jobs from XenStore. When the
# agent ends, the guest powers off; dom0 destroys it anyway when the tests are done.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
say() { echo "domu-init: $*"; }
uptime_s() { cut -d' ' -f1 /proc/uptime; }

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/shm /dev/pts /tmp /var/tmp /root
mount -t tmpfs -o mode=1777 tmpfs /dev/shm
# The root is already a RAM filesystem; a tmpfs over /tmp would hide a project that lives under
# /tmp (a CI clone may), since the project was unpacked at its own path.
chmod 1777 /tmp /var/tmp
# setup.sh stages the initramfs in a mktemp folder (0700), which becomes /: tests that run as a
# user other than root must reach /bin and the project.
chmod 755 /
ip link set lo up
# Which Xen modules to load: all four, unless dom0 chose (Guest.start's `modules`, passed as
# xen_vchan_domu_modules=a,b or =none on the kernel command line) so that a test can load the
# rest itself, as a user would. /dev/xen/xenbus is built into the kernel: the agent needs none.
modules="xen-evtchn xen-gntdev xen-gntalloc xenfs"
for arg in $(cat /proc/cmdline); do
  case $arg in
    xen_vchan_domu_modules=none) modules= ;;
    xen_vchan_domu_modules=*) modules=$(echo "${arg#*=}" | tr , ' ') ;;
  esac
done
for m in $modules; do
  modprobe "$m" || say "modprobe $m failed"
done
case " $modules " in
  *" xenfs "*) mkdir -p /proc/xen && { mount -t xenfs xenfs /proc/xen || say "cannot mount xenfs"; } ;;
esac
. /etc/xen-vchan-domu
say "drivers up at uptime $(uptime_s) s: $(ls /dev/xen | tr '\n' ' ')"

cd "$PROJECT" || say "no project at $PROJECT"
env -i HOME=/root PATH="$PATH" LANG=C.UTF-8 TERM=dumb \
  XEN_VCHAN_BACKEND=xen XEN_VCHAN_IN_DOMU=1 XEN_VCHAN_INTEROP_PEER="$PEER" \
  XEN_VCHAN_XEN_ROOT=/ \
  /usr/bin/node "$PROJECT/test/xen/domu/agent.mjs"
say "agent exited with status $? at uptime $(uptime_s) s; powering off"
sync
poweroff -f
