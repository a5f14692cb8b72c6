import { explained } from '@xen-vchan/native';
import { SimConnection, simDomid, type SimFiles } from '@xen-vchan/sim';
import type { XenStoreOptions } from '../options.js';
import { connectSocket } from './socket.js';
import type { Transport, TransportHandlers } from './transport.js';

function simAdvice(files: SimFiles) {
  return (code: string): string | undefined =>
    code === 'ENOENT' || code === 'ECONNREFUSED'
      ? `The simulation daemon of ${files.directory} serves no XenStore: it may come from an older xen-vchan. ` +
        `Stop it (SimConnection.open().call('stop', {})) and try again; see ${files.log}.`
      : undefined;
}

/**
 * The simulation's XenStore socket. The daemon is started if needed, and this process keeps its
 * control link, which also keeps the daemon (and so the tree) alive while the process runs.
 * The caller must declare `domid` in the first message (XsType.SIM_DECLARE_DOMAIN).
 */
export async function connectSim(options: XenStoreOptions, handlers: TransportHandlers): Promise<{ transport: Transport; domid: number }> {
  const domid = simDomid(options.domid);
  const sim = explained('start the simulation', () => SimConnection.open(options.simDirectory));
  const transport = await connectSocket('sim', sim.files.xenstore, handlers, simAdvice(sim.files));
  return { transport, domid };
}
