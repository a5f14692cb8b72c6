/**
 * A forked measurement process: `vchan bench` starts two of these (domains 1 and 2 on the
 * simulation) and drives them over Node's IPC channel, one request at a time per measurement.
 * The endpoint checks each request's fields (requests.ts); a message that is not even a request
 * is answered with EPROTO if it has an id to answer to, and dropped if not, never thrown.
 */
import { errorCode } from '@xen-vchan/native';
import { Endpoint } from './endpoint.js';

interface Request {
  id: number;
  op: unknown;
  args: unknown;
}

const endpoint = new Endpoint();

/** A reply to a parent that has gone is dropped: 'disconnect' ends this process anyway. */
function reply(message: object): void {
  if (process.connected) process.send!(message, () => {});
}

process.on('message', (message: unknown) => {
  const id = (message as Partial<Request> | null)?.id;
  if (typeof id !== 'number' || !Number.isSafeInteger(id)) return;
  const { op, args } = message as Request;
  if (op === 'exit') {
    void endpoint.closeAll().finally(() => process.send!({ id, result: null }, () => process.exit(0)));
    return;
  }
  endpoint.handle(op, args).then(
    (result) => reply({ id, result }),
    (error: Error | undefined) => reply({ id, error: { message: error?.message ?? String(error), code: errorCode(error) } }),
  );
});

// The parent went away (or is done): nothing here outlives it.
process.on('disconnect', () => {
  void endpoint.closeAll().finally(() => process.exit(0));
});
