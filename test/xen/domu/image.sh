#!/usr/bin/env bash
# Makes the second guest's initramfs: the base from setup.sh (busybox, drivers, node, libraries)
# followed by an archive of this checkout's runtime files, so the guest runs the code under test.
# Linux unpacks concatenated cpio archives one after another, so the project's /init wins.
# Runs in dom0 (test/xen/domu.ts calls it) or on the host; it only reads the project.
#
# usage: test/xen/domu/image.sh OUTPUT
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../common.sh"
out=${1:?usage: image.sh OUTPUT}
[ -s "$XEN_DOMU_BASE_INITRD" ] || xen_die "missing $XEN_DOMU_BASE_INITRD: run test/xen/setup.sh first"
[ -x "$XEN_INTEROP_PEER" ] || xen_die "missing $XEN_INTEROP_PEER: run test/xen/setup.sh first"

stage=$(mktemp -d "${TMPDIR:-/tmp}/domu-stage.XXXXXX")
trap 'rm -rf "$stage"' EXIT
root=$XEN_PROJECT_ROOT
cd "$root"
# What `node` needs to run the packages, the agent and the tests' guest-side scripts: built
# output, addons, manifests and pnpm's links (relative, so the project keeps its host path).
{
  echo package.json
  for pkg in packages/*; do
    echo "$pkg/package.json"
    for sub in dist bin; do [ -d "$pkg/$sub" ] && find "$pkg/$sub" -type f ! -name '*.map'; done
    [ -d "$pkg/build/Release" ] && find "$pkg/build/Release" -maxdepth 1 -name '*.node'
    [ -d "$pkg/node_modules" ] && find "$pkg/node_modules" -maxdepth 2 -type l
  done
  find node_modules/@xen-vchan -maxdepth 1 -type l
  # The packages' third-party runtime dependencies, read from their manifests so a new one
  # reaches the guest too (node-addon-api is C++ headers, needed only to compile).
  for dep in $(node -e '
    const fs = require("node:fs");
    const names = new Set();
    for (const dir of fs.readdirSync("packages")) {
      const manifest = JSON.parse(fs.readFileSync(`packages/${dir}/package.json`, "utf8"));
      for (const [name, range] of Object.entries(manifest.dependencies ?? {}))
        if (!range.startsWith("workspace:") && name !== "node-addon-api") names.add(name);
    }
    console.log([...names].join("\n"));'); do
    found=$(find node_modules/.pnpm -maxdepth 4 -path "node_modules/.pnpm/${dep/\//+}@*/node_modules/$dep" | head -1)
    [ -n "$found" ] || xen_die "runtime dependency $dep is not installed: run pnpm install"
    find "$found/" -type f
  done
  for dir in test/xen/domu test/xen/domains test/interop test/support examples examples/two-guests; do
    [ -d "$dir" ] && find "$dir" -maxdepth 1 -name '*.mjs'
  done
  true
} | sort -u | cpio -pdm --quiet "$stage$root"
cp "$XEN_HARNESS_DIR/domu/init.sh" "$stage/init"
chmod 755 "$stage/init"
mkdir -p "$stage/etc" "$stage/usr/local/bin"
cp "$XEN_INTEROP_PEER" "$stage/usr/local/bin/vchan-peer"
printf 'PROJECT=%q\nPEER=%q\n' "$root" /usr/local/bin/vchan-peer > "$stage/etc/xen-vchan-domu"

cp "$XEN_DOMU_BASE_INITRD" "$out.new"
(cd "$stage" && find . -mindepth 1 -print0 | cpio --null -o -H newc --quiet) >> "$out.new"
mv "$out.new" "$out"
