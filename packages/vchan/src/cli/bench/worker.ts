/**
 * A forked measurement process: `vchan bench` starts two of these (domains 1 and 2 on the
 * simulation) and drives them over Node's IPC channel, one request at a time per measurement.
 */
import { Endpoint } from './endpoint.js';

interface Request {
  id: number;
  op: string;
  args: unknown;
}

const endpoint = new Endpoint();

process.on('message', (message: Request) => {
  const { id, op, args } = message;
  if (op === 'exit') {
    void endpoint.closeAll().finally(() => process.send!({ id, result: null }, () => process.exit(0)));
    return;
  }
  endpoint.handle(op, args).then(
    (result) => process.send!({ id, result }),
    (error: Error & { code?: string }) => process.send!({ id, error: { message: error?.message ?? String(error), code: error?.code } }),
  );
});

// The parent went away (or is done): nothing here outlives it.
process.on('disconnect', () => {
  void endpoint.closeAll().finally(() => process.exit(0));
});
