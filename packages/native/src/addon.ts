import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { XenVchanError } from './errors.js';

const require = createRequire(import.meta.url);

/** node-gyp-build's resolver: `resolve(dir)` names the addon file it would load, or throws. */
interface NodeGypBuild {
  resolve(dir: string): string;
}

/** What `pnpm pack:all` puts in the tarballs (docs/packaging.md); keep in step with scripts/prebuild-addon.mjs. */
const SHIPPED = 'linux-x64 and linux-arm64 with glibc';

let libcOfThisProcess: 'glibc' | 'musl' | undefined;

/**
 * The C library this Node runs on. node-gyp-build takes a machine for musl only when
 * /etc/alpine-release exists, so on another musl distribution it would pick a glibc prebuild;
 * checking turns that into an error that says so instead of a dlopen failure about symbols.
 */
function libc(): 'glibc' | 'musl' {
  if (libcOfThisProcess === undefined) {
    const { header } = process.report.getReport() as { header?: { glibcVersionRuntime?: string } };
    libcOfThisProcess = header?.glibcVersionRuntime ? 'glibc' : 'musl';
  }
  return libcOfThisProcess;
}

function platform(): string {
  return process.platform === 'linux'
    ? `${process.platform}-${process.arch} ${process.env.LIBC ?? libc()}`
    : `${process.platform}-${process.arch}`;
}

function packageName(root: string): string {
  try {
    return (require(path.join(root, 'package.json')) as { name: string }).name;
  } catch {
    return path.basename(root);
  }
}

/**
 * Loads the addon `name` of the package whose root is `packageRoot` (a file URL or path), the
 * file node-gyp-build chooses: `build/Release/*.node` when the package was compiled on this
 * machine (the workspace, or an install on a platform without a prebuild), else the matching
 * `prebuilds/<platform>-<arch>/*.node` that ships in the package. Nothing is compiled here.
 */
export function loadAddon<T>(packageRoot: string | URL, name: string): T {
  const root = path.resolve(typeof packageRoot === 'string' ? packageRoot : fileURLToPath(packageRoot));
  const nodeGypBuild = require('node-gyp-build') as NodeGypBuild;
  let file: string;
  try {
    file = nodeGypBuild.resolve(root);
  } catch (error) {
    throw new XenVchanError(
      'ERR_ADDON_MISSING',
      `No ${name} addon for ${platform()}: no prebuild in ${path.join(root, 'prebuilds')} matches, and none was compiled into ` +
        `${path.join(root, 'build', 'Release')}. The published packages carry prebuilds for ${SHIPPED}; elsewhere the ` +
        `package's install script compiles the addon, which needs python3, make and g++ and install scripts enabled ` +
        `(not --ignore-scripts; with pnpm, allow the build with \`pnpm approve-builds\`): install those, then ` +
        `\`npm rebuild ${packageName(root)}\`. ` +
        `In the xen-vchan repository, \`pnpm install\` builds every addon.`,
      { cause: error },
    );
  }
  const tags = path.basename(file).split('.');
  const tagged = tags.includes('musl') ? 'musl' : tags.includes('glibc') ? 'glibc' : undefined;
  if (process.platform === 'linux' && tagged !== undefined && tagged !== libc()) {
    throw new XenVchanError(
      'ERR_ADDON_MISSING',
      `The ${name} addon chosen for this machine, ${file}, is built for ${tagged}, but this Node runs on ${libc()}. ` +
        `Set LIBC=${libc()} in the environment so that a ${libc()} build is chosen, or compile the addon here ` +
        `(remove the package's prebuilds/ folder and reinstall it with python3, make and g++ present).`,
    );
  }
  try {
    return require(file) as T;
  } catch (error) {
    throw new XenVchanError(
      'ERR_ADDON_LOAD',
      `The ${name} addon ${file} was found but could not be loaded on ${platform()}: ${(error as Error).message}. ` +
        `The prebuilds need glibc 2.17 and libstdc++ from GCC 5 (GLIBCXX_3.4.21) or later; a file compiled on another ` +
        `machine must be rebuilt here (\`npm rebuild\`, or \`pnpm install\` in the repository).`,
      { cause: error },
    );
  }
}
