// Installing like a user: every package is packed as it would be published (`pnpm pack:all`,
// linux-x64 prebuilds), then installed with npm into new apps in a temporary folder outside the
// workspace, with no C or C++ compiler, make or python reachable. The installs must compile
// nothing and pull in no node-gyp; the installed CLI, a JavaScript program and a TypeScript program
// must work against what was installed.
import { execFile, spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import {
  closeSync,
  cpSync,
  existsSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readdirSync,
  readFileSync,
  realpathSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

/** The package that provides the `vchan` bin. */
const CLI_PACKAGE = '@xen-vchan/cli';
/** The library an application depends on. */
const LIBRARY = '@xen-vchan/vchan';

const root = path.resolve(fileURLToPath(new URL('../..', import.meta.url)));
const work = realpathSync(mkdtempSync(path.join(os.tmpdir(), 'xen-vchan-install-')));
const packs = path.join(work, 'packs');
const noCompiler = path.join(work, 'bin');
const compilerCalled = path.join(work, 'compiler-called');
const simDir = process.env.XEN_VCHAN_SIM_DIR!;

interface Manifest {
  name: string;
  version: string;
  license?: string;
  repository?: { directory?: string };
  engines?: { node?: string };
  os?: string[];
  files?: string[];
  bin?: Record<string, string>;
  types?: string;
  exports?: Record<string, string | Record<string, string>>;
  scripts?: Record<string, string>;
  dependencies?: Record<string, string>;
}

interface Tarball {
  file: string;
  manifest: Manifest;
  /** Paths inside the tarball, relative to its package/ folder. */
  entries: Set<string>;
  /** Where it was unpacked. */
  dir: string;
}

const tarballs = new Map<string, Tarball>();

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

function run(command: string, args: string[], options: { cwd?: string; env?: NodeJS.ProcessEnv; timeout?: number } = {}): Promise<Run> {
  return new Promise((resolve) => {
    execFile(
      command,
      args,
      { cwd: options.cwd ?? work, env: options.env, timeout: options.timeout ?? 120_000, maxBuffer: 64 << 20 },
      (error, stdout, stderr) => {
        const code = error ? (typeof error.code === 'number' ? error.code : 1) : 0;
        resolve({ code, stdout: String(stdout), stderr: String(stderr) });
      },
    );
  });
}

/** Fails with the command's output when it did not exit 0. */
function succeeded(what: string, result: Run): Run {
  if (result.code !== 0) throw new Error(`${what} exited with ${result.code}\n--- stdout\n${result.stdout}\n--- stderr\n${result.stderr}`);
  return result;
}

/**
 * The environment of a user's shell on a machine without build tools: PATH holds node, npm, npx
 * and sh only, CC and CXX name a program that records being called and fails, and nothing of the
 * workspace (pnpm's npm_* variables, vitest's) leaks in.
 */
function userEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [key, value] of Object.entries(process.env)) {
    if (!/^(npm_|pnpm_|PNPM_|VITEST|NODE_OPTIONS$|NODE_PATH$|INIT_CWD$|XEN_VCHAN_|CC$|CXX$|PATH$)/i.test(key)) env[key] = value;
  }
  const refuse = path.join(work, 'refuse-compiler');
  return { ...env, PATH: noCompiler, CC: refuse, CXX: refuse, XEN_VCHAN_BACKEND: 'sim', XEN_VCHAN_SIM_DIR: simDir };
}

function onPath(tool: string): string {
  for (const dir of (process.env.PATH ?? '').split(path.delimiter)) {
    if (dir && existsSync(path.join(dir, tool))) return realpathSync(path.join(dir, tool));
  }
  throw new Error(`${tool} is not on PATH`);
}

/** The tarballs `name` needs, itself included: its own packages' dependencies, transitively. */
function closure(name: string, seen = new Set<string>()): string[] {
  if (seen.has(name)) return [];
  seen.add(name);
  const tarball = tarballs.get(name);
  if (!tarball) throw new Error(`no tarball for ${name} in ${packs}`);
  const own = Object.keys(tarball.manifest.dependencies ?? {}).filter((dependency) => tarballs.has(dependency));
  return [tarball.file, ...own.flatMap((dependency) => closure(dependency, seen))];
}

/** A new app with these tarballs installed by npm; its directory and npm's output. */
async function installApp(name: string, files: string[]): Promise<{ app: string; output: string }> {
  const app = path.join(work, name);
  mkdirSync(app);
  writeFileSync(path.join(app, 'package.json'), `${JSON.stringify({ name, version: '1.0.0', private: true, type: 'module' }, null, 2)}\n`);
  const result = succeeded(
    `npm install in ${name}`,
    await run(path.join(noCompiler, 'npm'), ['install', '--no-audit', '--no-fund', '--foreground-scripts', ...files], {
      cwd: app,
      env: userEnv(),
      timeout: 300_000,
    }),
  );
  return { app, output: result.stdout + result.stderr };
}

/** Package count (as `npm ls --all`) and apparent size of an app's node_modules. */
async function footprint(app: string): Promise<{ packages: number; bytes: number }> {
  const listed = succeeded('npm ls', await run(path.join(noCompiler, 'npm'), ['ls', '--all', '--parseable'], { cwd: app, env: userEnv() }));
  const packages = listed.stdout.trim().split('\n').length - 1;
  let bytes = 0;
  const walk = (dir: string) => {
    for (const entry of readdirSync(dir, { withFileTypes: true })) {
      const file = path.join(dir, entry.name);
      if (entry.isDirectory()) walk(file);
      else bytes += lstatSync(file).size;
    }
  };
  walk(path.join(app, 'node_modules'));
  return { packages, bytes };
}

/** What an install must not have done: pull in node-gyp, build an addon, call a compiler. */
function expectNothingCompiled(app: string, output: string) {
  const modules = path.join(app, 'node_modules');
  expect(existsSync(path.join(modules, 'node-gyp'))).toBe(false);
  expect(existsSync(path.join(modules, 'prebuildify'))).toBe(false);
  for (const name of readdirSync(path.join(modules, '@xen-vchan'))) {
    expect(existsSync(path.join(modules, '@xen-vchan', name, 'build')), `${name} has a build/ folder`).toBe(false);
  }
  expect(existsSync(compilerCalled)).toBe(false);
  expect(output).not.toMatch(/gyp (info|ERR!)|node-gyp rebuild/);
}

const sha256 = (file: string) => createHash('sha256').update(readFileSync(file)).digest('hex');
const megabytes = (bytes: number) => `${(bytes / 1e6).toFixed(1)} MB`;

beforeAll(async () => {
  expect(work.startsWith(`${root}${path.sep}`)).toBe(false);
  const packed = await run('pnpm', ['run', 'pack:all'], {
    cwd: root,
    env: { ...process.env, XEN_VCHAN_PREBUILD_TARGETS: 'linux-x64', XEN_VCHAN_PACK_DIR: packs },
    timeout: 540_000,
  });
  succeeded('pnpm pack:all', packed);
  for (const file of readdirSync(packs).filter((name) => name.endsWith('.tgz'))) {
    const dir = path.join(work, 'unpacked', file.replace(/\.tgz$/, ''));
    mkdirSync(dir, { recursive: true });
    succeeded(`tar ${file}`, await run('tar', ['-xzf', path.join(packs, file), '-C', dir]));
    const listing = succeeded(`tar -t ${file}`, await run('tar', ['-tzf', path.join(packs, file)]));
    const entries = new Set(
      listing.stdout
        .trim()
        .split('\n')
        .map((entry) => entry.replace(/^package\//, '')),
    );
    const manifest = JSON.parse(readFileSync(path.join(dir, 'package', 'package.json'), 'utf8')) as Manifest;
    tarballs.set(manifest.name, { file: path.join(packs, file), manifest, entries, dir: path.join(dir, 'package') });
  }

  // PATH for the installs: node and npm, and nothing that could compile.
  mkdirSync(noCompiler);
  symlinkSync(process.execPath, path.join(noCompiler, 'node'));
  for (const tool of ['npm', 'npx', 'sh']) symlinkSync(onPath(tool), path.join(noCompiler, tool));
  writeFileSync(path.join(work, 'refuse-compiler'), `#!/bin/sh\necho "$0 $*" >> '${compilerCalled}'\nexit 1\n`, { mode: 0o755 });
}, 600_000);

afterAll(async () => {
  const cli = path.join(work, 'everything', 'node_modules', '.bin', 'vchan');
  if (existsSync(cli)) await run(path.join(noCompiler, 'node'), [cli, 'sim', 'stop'], { env: userEnv() });
  rmSync(work, { recursive: true, force: true });
});

describe('install like a user', () => {
  it('packs every package under packages/, each publishable as it is', () => {
    const dirs = readdirSync(path.join(root, 'packages')).filter((dir) => existsSync(path.join(root, 'packages', dir, 'package.json')));
    expect(tarballs.size).toBe(dirs.length);
    expect(tarballs.has(CLI_PACKAGE)).toBe(true);
    for (const { manifest, entries, dir } of tarballs.values()) {
      const what = `${manifest.name}: `;
      expect(readFileSync(path.join(dir, 'package.json'), 'utf8'), `${what}workspace: ranges are rewritten`).not.toMatch(/workspace:/);
      expect(manifest.license, what).toBe('MIT');
      expect(entries.has('LICENSE') && entries.has('README.md'), `${what}LICENSE and README.md`).toBe(true);
      expect(manifest.repository?.directory, what).toMatch(/^packages\//);
      expect(manifest.os, what).toEqual(['linux']);
      expect(manifest.engines?.node, what).toBe('^20.19.0 || >=22.12.0');
      // The declared entry points exist in the tarball.
      const targets = [
        manifest.types,
        ...Object.values(manifest.bin ?? {}),
        ...Object.values(manifest.exports ?? {}).flatMap((target) => (typeof target === 'string' ? [target] : Object.values(target))),
      ].filter((target): target is string => target !== undefined);
      for (const target of targets) expect(entries.has(target.replace(/^\.\//, '')), `${what}${target} is packed`).toBe(true);
      // Every source map resolves inside the tarball: nothing stale in dist/, no source left out.
      for (const entry of entries) {
        if (!entry.endsWith('.map')) continue;
        const map = JSON.parse(readFileSync(path.join(dir, entry), 'utf8')) as { sources: string[] };
        for (const source of map.sources) {
          const resolved = path.posix.normalize(path.posix.join(path.posix.dirname(entry), source));
          expect(entries.has(resolved), `${what}${entry} points at ${resolved}`).toBe(true);
        }
      }
      // Addon packages: the linux-x64 prebuild, the sources to compile elsewhere, node-gyp-build's install script.
      if (entries.has('binding.gyp')) {
        expect(
          [...entries].some((entry) => /^prebuilds\/linux-x64\/.+\.glibc\.node$/.test(entry)),
          `${what}prebuild`,
        ).toBe(true);
        expect(manifest.scripts, what).toEqual({ install: 'node-gyp-build' });
        expect(Object.keys(manifest.dependencies ?? {}), what).toEqual(expect.arrayContaining(['node-gyp-build', 'node-addon-api']));
      } else {
        expect(manifest.scripts?.install, what).toBeUndefined();
      }
      expect(Object.keys(manifest.dependencies ?? {}), what).not.toContain('node-gyp');
    }
  });

  it('the library alone: installs with npm and no compiler, compiles nothing, and type-checks a TypeScript program', async () => {
    const probe = await run(path.join(noCompiler, 'sh'), ['-c', 'command -v gcc g++ cc c++ make python3 python'], { env: userEnv() });
    expect(probe.stdout.trim()).toBe('');

    const { app, output } = await installApp('library', closure(LIBRARY));
    expectNothingCompiled(app, output);
    const { packages, bytes } = await footprint(app);
    console.log(`install: ${LIBRARY} alone from its tarballs: ${packages} packages, ${megabytes(bytes)} in node_modules`);

    cpSync(path.join(root, 'test', 'install', 'app', 'types.ts'), path.join(app, 'types.ts'));
    const compilerOptions = {
      target: 'ES2022',
      module: 'NodeNext',
      moduleResolution: 'NodeNext',
      lib: ['ES2022'],
      strict: true,
      noEmit: true,
      skipLibCheck: false,
      // Node's types from the workspace: the app installs nothing but our tarballs.
      typeRoots: [path.join(root, 'node_modules', '@types')],
      types: ['node'],
    };
    writeFileSync(path.join(app, 'tsconfig.json'), JSON.stringify({ compilerOptions, files: ['types.ts'] }, null, 2));
    const tsc = createRequire(path.join(root, 'package.json')).resolve('typescript/bin/tsc');
    succeeded(
      'tsc --noEmit against the installed types',
      await run(path.join(noCompiler, 'node'), [tsc, '-p', 'tsconfig.json'], { cwd: app, env: userEnv() }),
    );
  }, 400_000);

  it('every package, with the CLI: npx vchan, a checksummed pipe between two simulated domains, a createServer/connect program', async () => {
    const { app, output } = await installApp(
      'everything',
      [...tarballs.values()].map((tarball) => tarball.file),
    );
    expectNothingCompiled(app, output);
    const { packages, bytes } = await footprint(app);
    console.log(
      `install: every package (with the CLI, ${CLI_PACKAGE}) from the tarballs: ${packages} packages, ${megabytes(bytes)} in node_modules`,
    );
    expect(realpathSync(path.join(app, 'node_modules', '.bin', 'vchan'))).toMatch(
      new RegExp(`^${path.join(app, 'node_modules', CLI_PACKAGE).replace(/[/.+]/g, '\\$&')}/`),
    );

    const npx = path.join(noCompiler, 'npx');
    const help = succeeded('npx vchan --help', await run(npx, ['vchan', '--help'], { cwd: app, env: userEnv() }));
    expect(help.stdout).toMatch(/^usage: vchan <command>/);

    // Domain 1 sends a file with `vchan listen -s`; domain 2 receives it with `vchan connect -r`.
    const input = path.join(work, 'input');
    const received = path.join(work, 'received');
    writeFileSync(input, randomBytes(4 << 20));
    const name = `install-${process.pid}`;
    const end = (args: string[], stdin: string | undefined, stdout: string | undefined) => {
      const fds = [stdin ? openSync(stdin, 'r') : 'ignore', stdout ? openSync(stdout, 'w') : 'ignore'] as const;
      const child = spawn(npx, ['vchan', ...args], { cwd: app, env: userEnv(), stdio: [fds[0], fds[1], 'pipe'] });
      for (const fd of fds) if (typeof fd === 'number') closeSync(fd);
      let stderr = '';
      child.stderr!.on('data', (text: Buffer) => {
        stderr += String(text);
      });
      return new Promise<{ code: number | null; stderr: string }>((resolve) => child.on('exit', (code) => resolve({ code, stderr })));
    };
    const sender = end(['listen', '-d', '2', '-n', name, '--sim-domid', '1', '-s'], input, undefined);
    const receiver = end(['connect', '-d', '1', '-n', name, '--sim-domid', '2', '-r'], undefined, received);
    expect(await Promise.all([sender, receiver])).toEqual([
      { code: 0, stderr: expect.any(String) },
      { code: 0, stderr: expect.any(String) },
    ]);
    expect(sha256(received)).toBe(sha256(input));

    cpSync(path.join(root, 'test', 'install', 'app', 'pair.mjs'), path.join(app, 'pair.mjs'));
    const pair = succeeded('node pair.mjs', await run(path.join(noCompiler, 'node'), ['pair.mjs'], { cwd: app, env: userEnv() }));
    const sums = JSON.parse(pair.stdout) as { sent: string; received: string };
    expect(sums.received).toBe(sums.sent);
  }, 400_000);
});
