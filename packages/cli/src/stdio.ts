import { pipeline } from 'node:stream/promises';
import { parseArgs } from 'node:util';
import { errorCode } from '@xen-vchan/native';
import { connect, createServer, pipeFdToVchan, pipeVchanToFd, type Vchan } from '@xen-vchan/vchan';
import { backendOptions, channelOptions, channelOptionsHelp, EXIT, parseDomid, parseSize, type Command } from './command.js';

const directionOptions = {
  'recv-only': { type: 'boolean', short: 'r' },
  'send-only': { type: 'boolean', short: 's' },
} as const;

const directionHelp = `  -r, --recv-only      only receive: stdin is not read; exits when the peer closes
  -s, --send-only      only send: stdin goes in, nothing is written to stdout
By default both: stdin goes to the peer and what the peer sends goes to stdout. A vchan has no
half-close, so at the end of stdin the channel closes (after everything was put into the ring;
the peer still reads all of it). Use -r on a side that only receives.`;

/** What a direction ends with when the channel closed under it: not a failure of ours. */
const CUT_SHORT: ReadonlySet<string | undefined> = new Set(['ERR_STREAM_PREMATURE_CLOSE', 'ERR_STREAM_DESTROYED']);

/**
 * Shuttles stdin/stdout over a connected channel; resolves when both directions are done.
 *
 * Both go between the rings and the kernel with no copy where the fd allows (pipeFdToVchan,
 * pipeVchanToFd: files, devices and pipes; see their table in the vchan README). Stdout is written
 * from views() only with -r: without it, the end of stdin ends the channel, and the bytes the
 * peer had put in the ring by then are still owed to stdout, which only the stream's buffer keeps
 * (views have none), so the two-way case writes stdout through the stream.
 */
async function shuttle(channel: Vchan, values: { 'recv-only'?: boolean; 'send-only'?: boolean }): Promise<number> {
  // What destroys the channel reaches the directions too (a wait on the ring rejects with it).
  channel.on('error', () => {});
  const jobs: Promise<unknown>[] = [];
  let input: Promise<unknown> | null = null;
  if (!values['recv-only']) input = pipeFdToVchan(0, channel);
  else process.stdin.destroy();
  if (values['send-only']) channel.resume();
  else if (values['recv-only']) jobs.push(pipeVchanToFd(channel, 1));
  else jobs.push(pipeline(channel, process.stdout));
  if (input) {
    // A pipe on stdin is read with blocking reads in libuv's threadpool, which nothing can call
    // off: once the channel is closed nothing more can go, so the command is done without waiting
    // for that read. The process itself exits only once the read returns (the writer writes again,
    // or closes), as `cat` would.
    const closed = new Promise((resolve) => channel.once('close', resolve));
    jobs.push(Promise.race([input, closed]));
  }
  const results = await Promise.allSettled(jobs);
  const failed = results.find((result) => result.status === 'rejected') as PromiseRejectedResult | undefined;
  if (failed && !CUT_SHORT.has(errorCode(failed.reason))) throw failed.reason;
  return EXIT.ok;
}

/** The options listen and connect share: the channel's, the direction's and the peer domain. */
const endOptions = { ...channelOptions, ...directionOptions, domain: { type: 'string', short: 'd' } } as const;

export const listenCommand: Command = {
  name: 'listen',
  summary: 'serve one vchan client and join it to stdin/stdout',
  usage: `usage: vchan listen --domain CLIENT [options]

Serves a vchan to domain CLIENT (publishing it in XenStore) and, once the client connects, copies
stdin into the channel and the channel to stdout.

  -d, --domain ID      the client's domain (required)
      --read-min SIZE  minimum size of the ring we read (default 64KiB; 0 and 0 = one page)
      --write-min SIZE minimum size of the ring we write (default 64KiB)
${directionHelp}
${channelOptionsHelp}

example:
  vchan listen -d 2 -n logs < app.log          # in domain 1
  vchan connect -d 1 -n logs -r > copy.log     # in domain 2`,
  async run(argv) {
    const { values } = parseArgs({
      args: argv,
      options: { ...endOptions, 'read-min': { type: 'string' }, 'write-min': { type: 'string' } },
    });
    const domid = parseDomid(values.domain, '--domain');
    const server = createServer({
      domid,
      name: values.name,
      ...(values.path ? { path: values.path } : {}),
      readMin: values['read-min'] === undefined ? 65536 : parseSize(values['read-min'], '--read-min'),
      writeMin: values['write-min'] === undefined ? 65536 : parseSize(values['write-min'], '--write-min'),
      ...backendOptions(values),
    });
    const channel = new Promise<Vchan>((resolve) => server.once('channel', resolve));
    await server.listen();
    process.stderr.write(`vchan listen: waiting for domain ${domid} at ${server.path}\n`);
    const stop = () => void server.close().then(() => process.exit(EXIT.failure));
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
    try {
      return await shuttle(await channel, values);
    } finally {
      await server.close();
    }
  },
};

export const connectCommand: Command = {
  name: 'connect',
  summary: 'connect to a vchan server and join it to stdin/stdout',
  usage: `usage: vchan connect --domain SERVER [options]

Waits for domain SERVER's vchan (through a XenStore watch), connects, and copies stdin into the
channel and the channel to stdout.

  -d, --domain ID      the server's domain (required)
  -t, --timeout MS     how long to wait for the server (default 10000; 0 = do not wait)
${directionHelp}
${channelOptionsHelp}`,
  async run(argv) {
    const { values } = parseArgs({
      args: argv,
      options: { ...endOptions, timeout: { type: 'string', short: 't', default: '10000' } },
    });
    const domid = parseDomid(values.domain, '--domain');
    const timeout = Number(values.timeout);
    if (!Number.isInteger(timeout) || timeout < 0) throw new Error(`--timeout must be milliseconds, got ${values.timeout}`);
    const controller = new AbortController();
    process.once('SIGINT', () => controller.abort());
    const channel = await connect({
      domid,
      name: values.name,
      ...(values.path ? { path: values.path } : {}),
      timeout,
      signal: controller.signal,
      ...backendOptions(values),
    });
    return shuttle(channel, values);
  },
};
