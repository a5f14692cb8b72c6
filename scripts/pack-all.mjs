#!/usr/bin/env node
// `pnpm pack:all` (after `tsc -b`): packs every package under packages/ into one folder, packs/ or
// XEN_VCHAN_PACK_DIR, as it would be published. pnpm (never npm) packs them: it rewrites
// `workspace:*` to the version, runs each addon package's prepack (the prebuilds, for the targets
// in XEN_VCHAN_PREBUILD_TARGETS) and the beforePacking hook of .pnpmfile.cjs.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, rmSync, statSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(fileURLToPath(new URL('..', import.meta.url)));

/**
 * tsc -b never deletes what a removed or renamed source once produced, and such a file would ship
 * (and its map would point at a source the tarball lacks). Removes every dist/ output whose
 * src/ TypeScript is gone; nothing that still has a source is touched, so concurrent users of
 * dist/ are safe.
 */
function removeStaleOutputs(packageDir) {
  const dist = path.join(packageDir, 'dist');
  if (!existsSync(dist)) return;
  for (const entry of readdirSync(dist, { recursive: true })) {
    const file = String(entry);
    const stem = file.match(/^(.*?)(\.d)?\.js(\.map)?$|^(.*?)\.d\.ts(\.map)?$/);
    if (!stem) continue;
    const source = path.join(packageDir, 'src', `${stem[1] ?? stem[4]}.ts`);
    if (!existsSync(source)) {
      rmSync(path.join(dist, file));
      console.log(`pack:all: removed ${path.relative(root, path.join(dist, file))} (its source is gone)`);
    }
  }
}
for (const name of readdirSync(path.join(root, 'packages'))) removeStaleOutputs(path.join(root, 'packages', name));
const destination = path.resolve(root, process.env.XEN_VCHAN_PACK_DIR || 'packs');
mkdirSync(destination, { recursive: true });
for (const file of readdirSync(destination)) {
  if (file.endsWith('.tgz')) rmSync(path.join(destination, file));
}
// Two at a time: each addon package compiles its prebuilds, one C++ file per target.
const result = spawnSync(
  'pnpm',
  ['-r', '--workspace-concurrency=2', '--filter', './packages/*', 'pack', '--pack-destination', destination],
  { cwd: root, stdio: 'inherit' },
);
if (result.error) {
  console.error(`pack:all: could not run pnpm (${result.error.message}); it needs pnpm 10 on PATH.`);
  process.exit(1);
}
if (result.status !== 0) {
  console.error('pack:all: packing failed (see above).');
  process.exit(result.status ?? 1);
}
const tarballs = readdirSync(destination).filter((file) => file.endsWith('.tgz'));
console.log(`pack:all: ${tarballs.length} tarballs in ${destination}`);
for (const file of tarballs.sort()) console.log(`  ${file}  ${(statSync(path.join(destination, file)).size / 1024).toFixed(0)} KiB`);
