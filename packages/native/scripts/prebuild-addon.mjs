#!/usr/bin/env node
// `xen-vchan-prebuild`, the prepack script of each addon package: builds the addon of the package
// in the current directory into prebuilds/<platform>-<arch>/<package>.<libc>.node with
// prebuildify, so that the tarball carries it and an install compiles nothing.
//
// The build runs in a scratch copy (.prebuild-work/) because prebuildify's `node-gyp rebuild`
// wipes build/ and moves the .node out of it: done in place, packing would pull the workspace's
// own addon from under the tests and tools that are running on it.
//
// N-API (--napi) makes one file serve every Node >= 20. prebuildify would ask node-gyp for the
// newest Node's headers (a download); npm_config_nodedir points node-gyp at this Node's own
// headers instead, which is all an N-API build needs, whatever the target architecture.
//
// Targets: XEN_VCHAN_PREBUILD_TARGETS, comma-separated, default "linux-x64,linux-arm64". arm64 is
// cross-compiled with Debian's g++-aarch64-linux-gnu; a target whose tools are missing fails
// before anything is built, so no tarball silently lacks a platform.
import { spawnSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';

const require = createRequire(import.meta.url);
const prebuildify = require.resolve('prebuildify/bin.js');
const nodeGyp = require.resolve('node-gyp/bin/node-gyp.js');

/** Every target, with the cross tools it needs on PATH (none: the host's compiler). */
const TARGETS = {
  'linux-x64': { arch: 'x64', tools: {} },
  'linux-arm64': {
    arch: 'arm64',
    tools: {
      CC: 'aarch64-linux-gnu-gcc',
      CXX: 'aarch64-linux-gnu-g++',
      LINK: 'aarch64-linux-gnu-g++',
      AR: 'aarch64-linux-gnu-ar',
      STRIP: 'aarch64-linux-gnu-strip',
    },
    install: 'apt-get install g++-aarch64-linux-gnu',
  },
};
const DEFAULT_TARGETS = 'linux-x64,linux-arm64';
const WORK = '.prebuild-work';

function fail(message) {
  console.error(`xen-vchan-prebuild (${process.cwd()}): ${message}`);
  process.exit(1);
}

function onPath(tool) {
  return (process.env.PATH ?? '').split(path.delimiter).some((dir) => dir && existsSync(path.join(dir, tool)));
}

if (process.platform !== 'linux' || process.arch !== 'x64') {
  fail(`prebuilds are made on linux-x64 (cross-compiling for the others); this is ${process.platform}-${process.arch}.`);
}
const { name } = JSON.parse(readFileSync('package.json', 'utf8'));
if (!existsSync('binding.gyp')) fail('no binding.gyp here: run this in an addon package.');

const prefix = path.resolve(process.execPath, '..', '..');
const nodedir = process.env.npm_config_nodedir || (existsSync(path.join(prefix, 'include', 'node', 'node_api.h')) ? prefix : undefined);
if (!nodedir) fail(`no Node headers in ${prefix}/include/node; set npm_config_nodedir to a Node prefix that has include/node.`);

const wanted = (process.env.XEN_VCHAN_PREBUILD_TARGETS || DEFAULT_TARGETS)
  .split(',')
  .map((target) => target.trim())
  .filter(Boolean);
for (const target of wanted) {
  const known = TARGETS[target];
  if (!known) fail(`unknown target ${target} in XEN_VCHAN_PREBUILD_TARGETS (known: ${Object.keys(TARGETS).join(', ')}).`);
  const missing = [...new Set(Object.values(known.tools))].filter((tool) => !onPath(tool));
  if (missing.length > 0) {
    fail(
      `${target} needs ${missing.join(', ')} (${known.install}); or pack without it: ` +
        `XEN_VCHAN_PREBUILD_TARGETS=${wanted.filter((other) => other !== target).join(',') || 'linux-x64'} pnpm pack:all.`,
    );
  }
}

rmSync('prebuilds', { recursive: true, force: true });
rmSync(WORK, { recursive: true, force: true });
try {
  // Inside the package, so that binding.gyp's require() of node-addon-api and @xen-vchan/native
  // resolves through the package's own node_modules.
  mkdirSync(WORK);
  cpSync('binding.gyp', path.join(WORK, 'binding.gyp'));
  cpSync('native', path.join(WORK, 'native'), { recursive: true });
  for (const target of wanted) {
    const { arch, tools } = TARGETS[target];
    const args = [
      prebuildify,
      '--napi',
      '--strip',
      '--tag-libc',
      `--name=${name}`,
      `--arch=${arch}`,
      `--target=${process.version.slice(1)}`,
      `--node-gyp=${nodeGyp}`,
      `--cwd=${WORK}`,
      '--out=.',
      ...(tools.STRIP ? [`--strip-bin=${tools.STRIP}`] : []),
    ];
    console.log(`xen-vchan-prebuild: ${name} for ${target}`);
    const result = spawnSync(process.execPath, args, { stdio: 'inherit', env: { ...process.env, ...tools, npm_config_nodedir: nodedir } });
    if (result.status !== 0) fail(`building the ${target} prebuild failed (it needs python3, make and a C++ compiler).`);
    const built = existsSync(path.join('prebuilds', target)) ? readdirSync(path.join('prebuilds', target)) : [];
    if (!built.some((file) => file.endsWith('.node'))) fail(`prebuildify left no .node in prebuilds/${target}.`);
  }
} finally {
  rmSync(WORK, { recursive: true, force: true });
}
