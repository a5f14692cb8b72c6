import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import path from 'node:path';
import { XenVchanError } from './errors.js';

const require = createRequire(import.meta.url);

/**
 * Loads `build/Release/<name>.node` of the package whose root is `packageRoot` (a file URL or
 * path). The addons are built from source at install; a missing one means that build failed.
 */
export function loadAddon<T>(packageRoot: string | URL, name: string): T {
  const root = typeof packageRoot === 'string' ? packageRoot : fileURLToPath(packageRoot);
  const file = path.join(root, 'build', 'Release', `${name}.node`);
  try {
    return require(file) as T;
  } catch (error) {
    throw new XenVchanError(
      'ERR_ADDON_MISSING',
      `The native addon ${file} could not be loaded (${(error as Error).message}). ` +
        `Rebuild it with \`pnpm install\` (or \`pnpm rebuild\`) on this machine; it needs python3, make and g++.`,
      { cause: error },
    );
  }
}
