// Run as a process of its own (test/conformance/backend-loading.test.ts): imports the whole public
// API, opens each device and XenStore on the backend XEN_VCHAN_BACKEND names (or auto), and prints
// as JSON what each open gave, the backend each handle took, and which of our modules and addons the process then holds. V8 reports
// every script it has compiled once its debugger is enabled, ES modules loaded through require()
// included, and every addon is a mapped file of the process; neither can miss a module that a
// hook on one loader (import or require) would not see.
import { readFileSync } from 'node:fs';
import { Session } from 'node:inspector/promises';
import path from 'node:path';
import { openEventChannel } from '@xen-vchan/evtchn';
import { openGntalloc } from '@xen-vchan/gntalloc';
import { openGntdev } from '@xen-vchan/gntdev';
import '@xen-vchan/vchan';
import { openXenStore } from '@xen-vchan/xenstore';

/** @typedef {{ outcomes: Record<string, string>; backends: Record<string, string>; scripts: string[]; addons: string[] }} LoadedModules */

/** @type {Record<string, string>} which backend (XenStore: transport) each handle that opened uses */
const backends = {};

/**
 * 'opened', or the code of what opening threw.
 * @param {string} name
 * @param {() => { close(): void; backend?: string; transport?: string } | Promise<{ close(): void; backend?: string; transport?: string }>} open
 * @returns {Promise<string>}
 */
async function outcome(name, open) {
  try {
    const handle = await open();
    backends[name] = String(handle.backend ?? handle.transport);
    handle.close();
    return 'opened';
  } catch (error) {
    return String(/** @type {{ code?: unknown }} */ (error).code);
  }
}

const outcomes = {
  gntalloc: await outcome('gntalloc', () => openGntalloc()),
  gntdev: await outcome('gntdev', () => openGntdev()),
  evtchn: await outcome('evtchn', () => openEventChannel()),
  xenstore: await outcome('xenstore', () => openXenStore()),
};

/** @type {string[]} */
const urls = [];
const session = new Session();
session.connect();
session.on('Debugger.scriptParsed', (message) => urls.push(message.params.url));
await session.post('Debugger.enable');
session.disconnect();

// "<package>/<file>" for the scripts of our packages, whether in this workspace or installed.
const ours = /\/(?:packages|node_modules\/@xen-vchan)\/([^/]+)\/dist\/(.+)$/;
const scripts = urls.flatMap((url) => {
  const match = ours.exec(url);
  return match ? [`${match[1]}/${match[2]}`] : [];
});
const addons = [...new Set(readFileSync('/proc/self/maps', 'utf8').match(/\S+\.node$/gm) ?? [])].map((file) => path.basename(file));

/** @type {LoadedModules} */
const report = { outcomes, backends, scripts, addons };
console.log(JSON.stringify(report));
