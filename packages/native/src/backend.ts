import { existsSync } from 'node:fs';
import { invalidArgument } from './errors.js';

export type BackendName = 'xen' | 'sim';
export type BackendChoice = BackendName | 'auto';

/**
 * Which backend a device handle uses: an explicit choice wins, then XEN_VCHAN_BACKEND, then
 * `auto`, which is `xen` exactly when the real device node exists.
 */
export function chooseBackend(choice: BackendChoice | undefined, devicePath: string): BackendName {
  const wanted = choice ?? (process.env.XEN_VCHAN_BACKEND as BackendChoice | undefined) ?? 'auto';
  if (wanted === 'xen' || wanted === 'sim') return wanted;
  if (wanted !== 'auto') {
    throw invalidArgument(`Unknown backend "${String(wanted)}": use "xen", "sim" or "auto" (option backend or XEN_VCHAN_BACKEND).`);
  }
  return existsSync(devicePath) ? 'xen' : 'sim';
}
