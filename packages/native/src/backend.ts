import { existsSync } from 'node:fs';
import { invalidArgument } from './errors.js';

export type BackendName = 'xen' | 'sim';
export type BackendChoice = BackendName | 'auto';

/** Where Linux puts Xen's device nodes; it exists only in a Xen domain with a Xen driver loaded. */
export const XEN_DEVICE_DIRECTORY = '/dev/xen';

let autoChoice: BackendName | undefined;

/**
 * Which backend a device handle or XenStore client uses: an explicit choice wins, then
 * XEN_VCHAN_BACKEND, then `auto`, which is `xen` exactly when /dev/xen exists.
 *
 * `auto` is decided once for the whole process and never per device: in a guest that lacks one
 * module (say xen-gntalloc), a per-device choice would pair a simulated gntalloc with the real
 * XenStore and publish grants that no peer can ever map. Deciding once makes that device fail with
 * its own ENOENT, whose message names the module to load.
 */
export function chooseBackend(choice?: BackendChoice): BackendName {
  const wanted = choice ?? (process.env.XEN_VCHAN_BACKEND as BackendChoice | undefined) ?? 'auto';
  if (wanted === 'xen' || wanted === 'sim') return wanted;
  if (wanted !== 'auto') {
    throw invalidArgument(`Unknown backend "${String(wanted)}": use "xen", "sim" or "auto" (option backend or XEN_VCHAN_BACKEND).`);
  }
  autoChoice ??= existsSync(XEN_DEVICE_DIRECTORY) ? 'xen' : 'sim';
  return autoChoice;
}
