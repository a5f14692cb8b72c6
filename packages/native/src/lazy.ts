import { createRequire } from 'node:module';
import { errorCode, XenVchanError } from './errors.js';

/**
 * A loader for a module that only one backend needs, to be called on that backend's first use:
 * a static import would load it (for the simulation: its package and its addon) on the other
 * backend too, and the device `open*()` calls are synchronous, so `import()` cannot serve them.
 * `require()` of an ES module can (Node 20.19+, 22.12+); Node caches it, so later calls are cheap.
 * `from` is the caller's `import.meta.url`; `what` names the module in the error.
 */
export function lazyModule<T>(from: string | URL, specifier: string, what: string): () => T {
  const require = createRequire(from);
  return () => {
    try {
      return require(specifier) as T;
    } catch (error) {
      if (errorCode(error) !== 'ERR_REQUIRE_ESM') throw error;
      throw new XenVchanError(
        'ERR_REQUIRE_ESM',
        `${what} is loaded on first use with require() of an ES module, which Node ${process.version} does not allow here. ` +
          'Use Node 20.19 or later on 20, or 22.12 or later (and do not pass --no-experimental-require-module).',
        { cause: error },
      );
    }
  };
}
