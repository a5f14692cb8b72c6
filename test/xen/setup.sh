#!/usr/bin/env bash
# Prepare the real-Xen test rig: host tools, Debian's Xen 4.17 + 6.1 kernel unpacked into a
# cache, and the dom0 initramfs. Safe to run again: when nothing it depends on changed, it
# only checks a stamp and returns in well under a second.
#
# Nothing Xen-related is installed into the host: the hypervisor, kernel and Xen tools are
# fetched with `apt-get download` and unpacked with `dpkg -x` into $XEN_VCHAN_XEN_CACHE
# (default /var/cache/xen-vchan-xen). Installing them would touch /boot, grub and systemd.
#
# usage: test/xen/setup.sh [--force]
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

force=0
[ "${1:-}" = --force ] && force=1

[ "$(id -u)" = 0 ] || xen_die "setup needs root (apt-get, and the cache under /var/cache)"
mkdir -p "$XEN_CACHE"

# Two runs at once (a developer and CI on the same machine) must not rebuild the same files.
exec 9>>"$XEN_CACHE/setup.lock"
flock -w 1800 9 || xen_die "timed out waiting for the setup lock $XEN_CACHE/setup.lock"

# What the outputs depend on: the scripts that make them. The kernel version is pinned in
# the cache on first use, so a newer Debian kernel does not force a rebuild.
stamp_key() {
  # The guest's base image carries the host's node, which must match what the addons were built for.
  { cat "$XEN_HARNESS_DIR/setup.sh" "$XEN_HARNESS_DIR/common.sh" "$XEN_HARNESS_DIR/dom0-init.sh"
    node --version; readlink -f "$(command -v node)"; } | sha256sum | cut -d' ' -f1
}
host_tools_present() {
  local c
  for c in "${XEN_HOST_COMMANDS[@]}"; do command -v "$c" >/dev/null || return 1; done
}
outputs_present() {
  [ -s "$XEN_HYPERVISOR_ELF" ] && [ -s "$XEN_DOM0_KERNEL" ] && [ -s "$XEN_DOM0_INITRD" ] &&
    [ -s "$XEN_DOMU_BASE_INITRD" ] &&
    [ -d "$XEN_TOOLS_BIN" ]
}

# The libxenvchan peer of the interop tests; build.sh is a no-op while it is up to date.
build_interop_peer() {
  local force_build=()
  [ $force = 1 ] && force_build=(--force)
  bash "$XEN_PROJECT_ROOT/test/interop/build.sh" "${force_build[@]+"${force_build[@]}"}"
}

if [ $force = 0 ] && [ -f "$XEN_STAMP" ] && [ "$(cat "$XEN_STAMP")" = "$(stamp_key)" ] &&
   host_tools_present && outputs_present; then
  build_interop_peer
  xen_log "setup: up to date (cache $XEN_CACHE)"
  exit 0
fi

t0=$(xen_now)
apt_updated=0
apt_update_once() {
  [ $apt_updated = 1 ] && return
  xen_log "setup: apt-get update"
  apt-get update -q >/dev/null
  apt_updated=1
}

# --- host tools -------------------------------------------------------------------------
if ! host_tools_present; then
  apt_update_once
  xen_log "setup: installing host tools: ${XEN_HOST_PACKAGES[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
    "${XEN_HOST_PACKAGES[@]}" >/dev/null
  host_tools_present || xen_die "host tools still missing after apt-get install"
fi

# --- kernel version, pinned on first use ------------------------------------------------
if [ -s "$XEN_CACHE/kver" ]; then
  kver=$(cat "$XEN_CACHE/kver")
else
  apt_update_once
  kver=$(apt-cache depends linux-image-amd64 |
         awk '$1 == "Depends:" && $2 ~ /^linux-image-[0-9]/ { sub("linux-image-", "", $2); print $2; exit }')
  [ -n "$kver" ] || xen_die "cannot tell which kernel linux-image-amd64 points at"
  echo "$kver" > "$XEN_CACHE/kver"
fi
xen_log "setup: dom0 kernel $kver"

# --- packages, unpacked ------------------------------------------------------------------
# Only redone when the package set or the kernel changes, not when a script does: other runs
# may have a guest up that reads the unpacked tree over 9p while this one rebuilds the initramfs.
unpack_key="v1 $kver ${XEN_UNPACKED_PACKAGES[*]}"
if [ $force = 1 ] || [ "$(cat "$XEN_ROOT/.unpacked" 2>/dev/null)" != "$unpack_key" ] ||
   [ ! -s "$XEN_HYPERVISOR_ELF" ] || [ ! -s "$XEN_DOM0_KERNEL" ] || [ ! -d "$XEN_TOOLS_BIN" ]; then
  # download what is missing
  mkdir -p "$XEN_DEBS"
  wanted=("${XEN_UNPACKED_PACKAGES[@]}" "linux-image-$kver")
  missing=()
  for p in "${wanted[@]}"; do
    compgen -G "$XEN_DEBS/${p}_*.deb" >/dev/null || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    apt_update_once
    xen_log "setup: downloading ${missing[*]}"
    # apt drops privileges to _apt for downloads; the cache dir is root's, so stay root.
    (cd "$XEN_DEBS" && apt-get download -q -o APT::Sandbox::User=root "${missing[@]}" >/dev/null)
  fi

  # unpack into a fresh tree, then swap it in
  rm -rf "$XEN_ROOT.new"
  mkdir -p "$XEN_ROOT.new"
  for p in "${wanted[@]}"; do
    debs=("$XEN_DEBS/${p}_"*.deb)
    # If several versions piled up, the newest sorts last.
    dpkg -x "${debs[-1]}" "$XEN_ROOT.new"
  done
  rm -rf "$XEN_ROOT"
  mv "$XEN_ROOT.new" "$XEN_ROOT"
  depmod -b "$XEN_ROOT" "$kver"

  # boot images
  mkdir -p "$XEN_IMAGES"
  # Debian ships xen as a gzip'd 32-bit multiboot ELF; QEMU's -kernel takes the ELF itself.
  xen_gz=$(ls "$XEN_ROOT"/boot/xen-4.17*-amd64.gz | tail -1)
  zcat "$xen_gz" > "$XEN_HYPERVISOR_ELF"
  # Hand Xen the kernel already decompressed: un-xz-ing the bzImage inside the emulated Xen
  # costs ~2.5 s of every boot, here it is done once. Keep the bzImage if that fails.
  vmlinuz=$XEN_ROOT/boot/vmlinuz-$kver
  xz_at=$(LC_ALL=C grep -obUaP '\xfd7zXZ\x00' "$vmlinuz" | head -1 | cut -d: -f1 || true)
  rm -f "$XEN_DOM0_KERNEL.new"
  # xz complains about the bytes after its stream (the rest of the bzImage); the output is whole.
  [ -n "$xz_at" ] && { tail -c +"$((xz_at + 1))" "$vmlinuz" | xz -dcq > "$XEN_DOM0_KERNEL.new" 2>/dev/null || true; }
  if [ -s "$XEN_DOM0_KERNEL.new" ] && [ "$(head -c 4 "$XEN_DOM0_KERNEL.new" | od -An -c | tr -d ' ')" = 177ELF ]; then
    mv "$XEN_DOM0_KERNEL.new" "$XEN_DOM0_KERNEL"
  else
    xen_log "setup: cannot unpack the bzImage; dom0 boots from it (slower)"
    rm -f "$XEN_DOM0_KERNEL.new"
    cp "$vmlinuz" "$XEN_DOM0_KERNEL"
  fi

  # wrappers for the Xen tools, for jobs in dom0:
  # dom0's userland is the host's /usr, which has no Xen tools. The unpacked tree is shared into
  # dom0 at the same path, and these wrappers point the loader at its libraries, so a test can
  # call xenstore-read or vchan-socket-proxy by name without LD_LIBRARY_PATH leaking elsewhere.
  rm -rf "$XEN_TOOLS_BIN"
  mkdir -p "$XEN_TOOLS_BIN"
  make_wrapper() {
    local target=$1 name
    name=$(basename "$target")
    printf '#!/bin/sh\nLD_LIBRARY_PATH=%s${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}\nexport LD_LIBRARY_PATH\nexec %s "$@"\n' \
      "$XEN_ROOT/usr/lib/x86_64-linux-gnu" "$target" > "$XEN_TOOLS_BIN/$name"
    chmod 755 "$XEN_TOOLS_BIN/$name"
  }
  for f in "$XEN_ROOT"/usr/bin/xenstore* "$XEN_ROOT"/usr/lib/xen-4.17/bin/*; do
    [ -f "$f" ] && [ -x "$f" ] && make_wrapper "$f"
  done

  echo "$unpack_key" > "$XEN_ROOT/.unpacked"
fi

# --- initramfs helpers ----------------------------------------------------------------------
# Busybox with every applet as a link, in $1/bin.
stage_busybox() {
  mkdir -p "$1/bin"
  cp "$XEN_ROOT/bin/busybox" "$1/bin/busybox"
  for applet in $("$1/bin/busybox" --list); do
    [ -e "$1/bin/$applet" ] || ln -s busybox "$1/bin/$applet"
  done
}
# The modules $2 (and what they depend on) of the pinned kernel, in stage $1, with depmod run.
stage_modules() {
  local m ko rel
  mkdir -p "$1/lib/modules/$kver"
  for m in $2; do
    modprobe -d "$XEN_ROOT" -S "$kver" --show-depends "$m" | awk '$1 == "insmod" { print $2 }'
  done | sort -u | while read -r ko; do
    rel=${ko#"$XEN_ROOT"/}
    mkdir -p "$1/$(dirname "$rel")"
    cp "$ko" "$1/$rel"
  done
  cp "$XEN_ROOT/lib/modules/$kver"/modules.{order,builtin,builtin.modinfo} "$1/lib/modules/$kver/"
  depmod -b "$1" "$kver"
}
# Copy executable $2 to path $3 in stage $1, with the shared libraries it needs. Libraries found
# in the unpacked tree take precedence over the host's (libxenstore etc.).
copy_with_libs() {
  local stage=$1 src=$2 dst=$3 lib rel
  mkdir -p "$stage/$(dirname "$dst")"
  cp -L "$src" "$stage/$dst"
  file -L "$src" | grep -q 'dynamically linked' || return 0
  for lib in $(LD_LIBRARY_PATH="$XEN_ROOT/usr/lib/x86_64-linux-gnu" ldd "$src" |
               awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }'); do
    rel=${lib#"$XEN_ROOT"}
    [ -e "$stage/$rel" ] && continue
    mkdir -p "$stage/$(dirname "$rel")"
    cp -L "$lib" "$stage/$rel"
  done
}
stages=()
trap 'rm -rf "${stages[@]}"' EXIT
# Sets $stage to a new staging folder with the skeleton both guests share.
new_stage() {
  stage=$(mktemp -d "$XEN_CACHE/initrd-stage.XXXXXX")
  stages+=("$stage")
  mkdir -p "$stage"/{bin,sbin,usr/bin,usr/sbin,proc,sys,dev,tmp,run,etc,root}
  echo "root:x:0:0:root:/root:/bin/sh" > "$stage/etc/passwd"
  echo "root:x:0:" > "$stage/etc/group"
  stage_busybox "$stage"
}
xenstore_tools="xenstore xenstore-read xenstore-write xenstore-ls xenstore-list xenstore-rm
                xenstore-exists xenstore-chmod xenstore-watch"

# --- dom0 initramfs -----------------------------------------------------------------------
# It holds only what must exist before the 9p shares are up: busybox, the modules, xenstored
# (which runs outside the chroot), the xenstore client and the libraries of those.
new_stage
mkdir -p "$stage"/{job,sysroot} "$stage"/var/{lib/xenstored,log/xen}
ln -s ../run "$stage/var/run"
stage_modules "$stage" "$XEN_DOM0_MODULES"
copy_with_libs "$stage" "$XEN_ROOT/usr/lib/xen-4.17/bin/xenstored" /usr/lib/xen-4.17/bin/xenstored
for tool in $xenstore_tools; do
  [ -e "$XEN_ROOT/usr/bin/$tool" ] && copy_with_libs "$stage" "$XEN_ROOT/usr/bin/$tool" "/usr/bin/$tool"
done
# glibc dlopen()s libgcc_s for thread cancellation/unwinding; ldd cannot see that.
copy_with_libs "$stage" /lib/x86_64-linux-gnu/libgcc_s.so.1 /lib/x86_64-linux-gnu/libgcc_s.so.1
cp "$XEN_HARNESS_DIR/dom0-init.sh" "$stage/init"
chmod 755 "$stage/init"
(cd "$stage" && find . -print0 | cpio --null -o -H newc --quiet) | gzip -1 > "$XEN_DOM0_INITRD.new"
mv "$XEN_DOM0_INITRD.new" "$XEN_DOM0_INITRD"

# --- domU base initramfs ------------------------------------------------------------------
# What every second guest has before the project's own archive is laid over it: busybox, the
# guest-side Xen modules, the xenstore tools, node, and the libraries of the libxenvchan peer.
# /init comes with the project's archive (test/xen/domu/init.sh), so it can change per run.
build_interop_peer
new_stage
stage_modules "$stage" "$XEN_DOMU_MODULES"
for tool in $xenstore_tools; do
  [ -e "$XEN_ROOT/usr/bin/$tool" ] && copy_with_libs "$stage" "$XEN_ROOT/usr/bin/$tool" "/usr/bin/$tool"
done
copy_with_libs "$stage" "$(readlink -f "$(command -v node)")" /usr/bin/node
copy_with_libs "$stage" /lib/x86_64-linux-gnu/libgcc_s.so.1 /lib/x86_64-linux-gnu/libgcc_s.so.1
# The peer itself comes with the project's archive; its libraries (libxenvchan and the Xen
# libraries under it) go where the peer's usual LD_LIBRARY_PATH points, as in dom0.
copy_with_libs "$stage" "$XEN_INTEROP_PEER" /tmp/vchan-peer
rm "$stage/tmp/vchan-peer"
(cd "$stage" && find . -print0 | cpio --null -o -H newc --quiet) > "$XEN_DOMU_BASE_INITRD.new"
mv "$XEN_DOMU_BASE_INITRD.new" "$XEN_DOMU_BASE_INITRD"

mkdir -p "$XEN_LOGS"
build_interop_peer
stamp_key > "$XEN_STAMP"
xen_log "setup: done in $(xen_secs "$t0" "$(xen_now)") s (initramfs $(du -h "$XEN_DOM0_INITRD" | cut -f1), domU base $(du -h "$XEN_DOMU_BASE_INITRD" | cut -f1), cache $XEN_CACHE)"
