#!/usr/bin/env bash
# Builds the libxenvchan peer (test/interop/vchan-peer.c) against Debian's libxenvchan, headers
# and libraries taken from the real-Xen harness cache (test/xen/setup.sh unpacks them there).
# The binary goes into the cache, next to the libraries it needs: $XEN_VCHAN_XEN_CACHE/interop/.
# It is rebuilt only when the source, this script or the unpacked packages change.
#
# usage: test/interop/build.sh [--force]      (setup.sh calls it; it prints nothing when up to date)
# In dom0 run it with the cache's libraries on the loader path, e.g.
#   LD_LIBRARY_PATH=$XEN_VCHAN_XEN_ROOT/usr/lib/x86_64-linux-gnu $XEN_VCHAN_INTEROP_PEER --help
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../xen/common.sh"

src=$XEN_PROJECT_ROOT/test/interop/vchan-peer.c
lib=$XEN_ROOT/usr/lib/x86_64-linux-gnu
include=$XEN_ROOT/usr/include
[ -f "$include/libxenvchan.h" ] && [ -e "$lib/libxenvchan.so" ] ||
  xen_die "libxenvchan is not unpacked in $XEN_ROOT: run test/xen/setup.sh first"

key=$(cat "$src" "${BASH_SOURCE[0]}" "$XEN_ROOT/.unpacked" | sha256sum | cut -d' ' -f1)
if [ "${1:-}" != --force ] && [ -x "$XEN_INTEROP_PEER" ] &&
   [ "$(cat "$XEN_INTEROP_PEER.stamp" 2>/dev/null)" = "$key" ]; then
  exit 0
fi

mkdir -p "$(dirname "$XEN_INTEROP_PEER")"
# -rpath-link: libxenvchan's own dependencies (libxenstore, libxengnttab, ...) are in the same
# unpacked folder, not in the host's library path. No -rpath: at run time the caller points
# LD_LIBRARY_PATH at $lib, as the wrappers in $XEN_TOOLS_BIN do for Xen's tools.
gcc -std=gnu11 -O2 -g -Wall -Wextra -Werror \
  -I"$include" -o "$XEN_INTEROP_PEER.new" "$src" \
  -L"$lib" -Wl,-rpath-link,"$lib" -lxenvchan
mv "$XEN_INTEROP_PEER.new" "$XEN_INTEROP_PEER"
echo "$key" > "$XEN_INTEROP_PEER.stamp"
xen_log "setup: built $XEN_INTEROP_PEER"
