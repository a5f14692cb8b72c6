// A user's TypeScript program: the install test copies it into a new app and type-checks it
// (tsc --noEmit, skipLibCheck off) against the types of the installed tarballs.
import { connect, createServer, errorCode, type ServerOptions, type Vchan, XenVchanError, type XenVchanErrorCode } from '@xen-vchan/vchan';
// @ts-expect-error: the package's modules are reached through its exports only, never by file.
import type {} from '@xen-vchan/vchan/dist/stream.js';
import { chooseOrders } from '@xen-vchan/vchan/internal';

export async function exchange(options: ServerOptions): Promise<string> {
  const server = createServer(options, (channel: Vchan) => channel.end('hello'));
  await server.listen();
  try {
    const channel = await connect({ domid: 0, name: options.name, timeout: 1000 });
    let text = '';
    for await (const chunk of channel) text += String(chunk);
    return text;
  } catch (error) {
    const timedOut: XenVchanErrorCode = 'ETIMEDOUT';
    if (error instanceof XenVchanError && error.code === timedOut) return '';
    throw new Error(`failed with ${errorCode(error) ?? 'no code'}`, { cause: error });
  } finally {
    await server.close();
  }
}

export const orders: unknown = chooseOrders;
