#!/bin/sh
# PID 1 of the Xen dom0 booted by run-in-dom0.sh (busybox sh, from the initramfs).
#
# Contract with the host, all through the 9p share tagged "job" (mounted at /job):
#   in:  /job/cmd.sh   bash script to run as root in the chroot (the host's /usr and /etc)
#        /job/shares   lines "TAG MODE PATH": 9p shares to mount at PATH in the chroot (ro|rw)
#        /job/options  sourced here; START_XENSTORED=1|0, RW_CACHE=9p cache mode of rw shares
#   out: /job/output   everything the job printed (the host tails it while we run)
#        /job/status   the job's exit status; its absence tells the host dom0 never finished
#        /job/timings  dom0 uptime when the job started and ended, peak memory use
# Whatever happens we end with `reboot -f`: QEMU runs with -no-reboot, so that is a clean exit.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin

say() { echo "dom0-init: $*"; }
uptime_s() { cut -d' ' -f1 /proc/uptime; }
finish() { sync; reboot -f; }

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /tmp
say "started at uptime $(uptime_s) s"
hostname xen-dom0
# Nothing configures networking here; tests that talk over 127.0.0.1 still need loopback.
ip link set lo up

for m in xen-evtchn xen-gntdev xen-gntalloc xen-privcmd xenfs virtio_pci 9pnet_virtio 9p; do
  modprobe "$m" || say "modprobe $m failed"
done
mkdir -p /proc/xen
mount -t xenfs xenfs /proc/xen || say "cannot mount xenfs"
say "modules loaded at uptime $(uptime_s) s"

NINEP=trans=virtio,version=9p2000.L,msize=262144
if ! mount -t 9p -o "$NINEP" job /job; then
  say "cannot mount the job share; nothing to run"
  finish
fi
START_XENSTORED=1
[ -f /job/options ] && . /job/options

# The chroot: the host's own userland, so node, bash and the project's native addons run as
# they do on the host. /usr is read-only and never changes under us, so let the guest cache it.
R=/sysroot
mkdir -p $R/usr $R/etc
mount -t 9p -o "$NINEP,ro,cache=loose" hostusr $R/usr || { say "cannot mount host /usr"; finish; }
mount -t 9p -o "$NINEP,ro" hostetc $R/etc || { say "cannot mount host /etc"; finish; }
for l in bin sbin lib lib64; do ln -s usr/$l $R/$l; done
mkdir -p $R/proc $R/sys $R/dev $R/tmp $R/run $R/var $R/root $R/job
mount -t proc proc $R/proc
mount -t sysfs sysfs $R/sys
mount -t xenfs xenfs $R/proc/xen
mount -t devtmpfs devtmpfs $R/dev
mkdir -p $R/dev/pts $R/dev/shm
mount -t devpts devpts $R/dev/pts
mount -t tmpfs -o mode=1777 tmpfs $R/dev/shm
mount -t tmpfs -o mode=1777 tmpfs $R/tmp
mount -t tmpfs -o mode=700 tmpfs $R/root
mount -t tmpfs tmpfs $R/var
mkdir -p $R/var/tmp $R/var/lib && chmod 1777 $R/var/tmp
ln -s ../run $R/var/run
# xenstored lives outside the chroot; sharing /run shares its socket (/run/xenstored/socket).
mount --bind /run $R/run
mount --bind /job $R/job

# Mount points may sit inside the tmpfs mounted above (a project under /tmp, the cache under
# /var), so the shares come last.
if [ -f /job/shares ]; then
  while read -r tag mode path; do
    [ -n "$tag" ] || continue
    opts=$NINEP
    [ "$mode" = ro ] && opts="$opts,ro,cache=loose"
    [ "$mode" = rw ] && [ -n "${RW_CACHE:-}" ] && [ "$RW_CACHE" != none ] && opts="$opts,cache=$RW_CACHE"
    mkdir -p "$R$path"
    mount -t 9p -o "$opts" "$tag" "$R$path" || say "cannot mount share $tag at $path"
  done < /job/shares
fi

if [ "$START_XENSTORED" = 1 ]; then
  mkdir -p /run/xenstored
  /usr/lib/xen-4.17/bin/xenstored --pid-file /run/xenstored.pid || say "xenstored failed to start"
  # libxenvchan and friends read their own domid and name from here; xen-init-dom0 would
  # write them on a real host, but it needs the whole toolstack.
  n=0
  until xenstore-write /local/domain/0/domid 0 /local/domain/0/name Domain-0 2>/dev/null; do
    n=$((n + 1))
    [ $n -ge 50 ] && { say "xenstored did not answer"; break; }
    sleep 0.1
  done
fi

# Sample memory once a second so the host can report how much of dom0_mem the job needed.
mem_used_mib() { awk '/^MemTotal:/ { t = $2 } /^MemAvailable:/ { a = $2 } END { print int((t - a) / 1024) }' /proc/meminfo; }
watch_memory() {
  peak=0
  while :; do
    used=$(mem_used_mib)
    [ "$used" -gt "$peak" ] && { peak=$used; echo "$peak" > /tmp/mem-peak; }
    sleep 1
  done
}
watch_memory &
watcher=$!

say "ready at uptime $(uptime_s) s; starting the job"
echo "job_start_uptime $(uptime_s)" > /job/timings
chroot $R /usr/bin/env -i HOME=/root TERM=dumb LANG=C.UTF-8 \
  PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
  /usr/bin/bash /job/cmd.sh </dev/null >>/job/output 2>&1
status=$?
echo "job_end_uptime $(uptime_s)" >> /job/timings
kill $watcher 2>/dev/null
echo "mem_peak_used_mib $(cat /tmp/mem-peak 2>/dev/null || echo 0)" >> /job/timings
echo "mem_total_mib $(awk '/^MemTotal:/ { print int($2 / 1024) }' /proc/meminfo)" >> /job/timings
# The rw shares cache writes in dom0; flush them before the host takes the status as "done".
sync
echo $status > /job/status
say "job exited with status $status at uptime $(uptime_s) s"
finish
