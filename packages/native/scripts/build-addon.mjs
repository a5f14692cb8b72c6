#!/usr/bin/env node
// Builds the addon of the package in the current directory from source with node-gyp.
// Node's headers are taken from the running Node's own prefix when it ships them (Debian's and
// distro builds do), because the download node-gyp would otherwise attempt is not possible on
// machines that reach only the package registries.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';

const require = createRequire(import.meta.url);
const nodeGyp = require.resolve('node-gyp/bin/node-gyp.js');
const args = [nodeGyp, 'rebuild'];
const prefix = path.resolve(process.execPath, '..', '..');
if (!process.env.npm_config_nodedir && existsSync(path.join(prefix, 'include', 'node', 'node_api.h'))) {
  args.push(`--nodedir=${prefix}`);
}
const result = spawnSync(process.execPath, args, { stdio: 'inherit' });
if (result.status !== 0) {
  console.error(
    `xen-vchan: building the native addon in ${process.cwd()} failed.\n` +
      "It needs python3, make and a C++ compiler (apt-get install python3 make g++) and Node's headers.",
  );
  process.exit(result.status ?? 1);
}
