/**
 * A vchan's XenStore keys, as libxenvchan lays them out: where they live (the conventional path),
 * how the server writes them (ring-ref and event-channel, readable by the client only) and how
 * the client waits for them and reads them (values the server controls, so checked).
 */
import { errorCode, invalidArgument, XenVchanError } from '@xen-vchan/native';
import type { XenStore } from '@xen-vchan/xenstore';
import { abortError } from './errors.js';

/** libxenvchan's conventional place for a vchan between a server and a client domain. */
export function conventionalPath(serverDomid: number, clientDomid: number, name: string): string {
  if (!/^[A-Za-z0-9_.-]+$/.test(name))
    throw invalidArgument(`a vchan name is letters, digits, "_", "." and "-", got ${JSON.stringify(name)}`);
  return `/local/domain/${serverDomid}/data/vchan/${clientDomid}/${name}`;
}

/**
 * Parses a number the peer wrote into XenStore: ASCII decimal digits only, no sign, no spaces,
 * no leading zeros, at most u32. Anything else is refused rather than guessed at.
 */
function parseXenStoreNumber(text: string): number | null {
  if (!/^(0|[1-9][0-9]{0,9})$/.test(text)) return null;
  const value = Number(text);
  return value <= 0xffffffff ? value : null;
}

/** What a server publishes: its control page's grant and its event-channel port. */
export interface Published {
  ringRef: number;
  port: number;
}

/** Writes ring-ref and event-channel in one transaction, readable by the client only. */
export async function publish(xenstore: XenStore, path: string, self: number, client: number, shared: Published): Promise<void> {
  const permissions = [
    { domid: self, access: 'none' as const },
    { domid: client, access: 'read' as const },
  ];
  await xenstore.transaction(async (tx) => {
    await tx.write(`${path}/ring-ref`, String(shared.ringRef));
    await tx.write(`${path}/event-channel`, String(shared.port));
    await tx.setPermissions(`${path}/ring-ref`, permissions);
    await tx.setPermissions(`${path}/event-channel`, permissions);
  });
}

async function readPublished(xenstore: XenStore, path: string): Promise<Published | null> {
  const read = async (key: string) => {
    try {
      return await xenstore.read(`${path}/${key}`);
    } catch (error) {
      // Until the server publishes, the path may not exist; xenstored then answers EACCES rather
      // than ENOENT when the parent is not ours to read. Both mean "not there (for us) yet".
      const code = errorCode(error);
      if (code === 'ENOENT' || code === 'EACCES') return null;
      throw error;
    }
  };
  const [ringText, portText] = await Promise.all([read('ring-ref'), read('event-channel')]);
  if (ringText === null || portText === null) return null;
  const ringRef = parseXenStoreNumber(ringText);
  const port = parseXenStoreNumber(portText);
  if (ringRef === null || port === null || ringRef === 0 || port === 0) {
    throw new XenVchanError(
      'EPROTO',
      `The server published nonsense at ${path}: ring-ref ${JSON.stringify(ringText)}, event-channel ${JSON.stringify(portText)} (expected positive decimal numbers).`,
    );
  }
  return { ringRef, port };
}

/**
 * Waits (with a XenStore watch) until the server at `path` has published both keys, and reads
 * them. Rejects with ETIMEDOUT after `timeout` (0: look once, ENOENT if not there), with ABORT_ERR
 * on `signal`, and with EPROTO when what is there is not a pair of positive numbers.
 */
export async function waitForServer(xenstore: XenStore, path: string, timeout: number, signal?: AbortSignal): Promise<Published> {
  if (signal?.aborted) throw abortError(signal.reason, 'The connect');
  const found = await readPublished(xenstore, path);
  if (found || timeout === 0) {
    if (found) return found;
    throw new XenVchanError('ENOENT', `No vchan server has published at ${path} (or not for this domain).`);
  }
  // The watch fires once when set and then on every change below the path.
  const watch = await xenstore.watch(path);
  let timer: NodeJS.Timeout | undefined;
  let onAbort: (() => void) | undefined;
  const stop = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () =>
        reject(
          new XenVchanError(
            'ETIMEDOUT',
            `No vchan server published at ${path} within ${timeout} ms, or not readably for this domain. Is the server running, for this client domain and name?`,
          ),
        ),
      timeout,
    );
    onAbort = () => reject(abortError(signal?.reason, 'The connect'));
    signal?.addEventListener('abort', onAbort, { once: true });
  });
  try {
    const iterator = watch[Symbol.asyncIterator]();
    for (;;) {
      const next = await Promise.race([iterator.next(), stop]);
      if (next.done) throw new XenVchanError('ECONNRESET', `The XenStore watch on ${path} ended before a server published.`);
      const published = await Promise.race([readPublished(xenstore, path), stop]);
      if (published) return published;
    }
  } finally {
    clearTimeout(timer);
    if (onAbort) signal?.removeEventListener('abort', onAbort);
    await watch.close().catch(() => {});
  }
}
