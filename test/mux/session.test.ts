// yamux sessions between two Node ends over a Unix socket pair: streams both ways, half-close,
// reset, flow control, ping and keepalive, go-away and the limits.
import { once } from 'node:events';
import { afterEach, describe, expect, it } from 'vitest';
import { Flag, FrameType, GoAwayCode, INITIAL_WINDOW, type MuxStream, Session } from '@xen-vchan/mux';
import { cleanup, frame, frameLog, randomData, readAll, sessionPair, sha256, socketPair, writeAll, nextEvent } from './pair.js';

afterEach(cleanup);

/** Echoes every stream the session accepts. */
function echo(session: Session): void {
  session.on('stream', (stream) => {
    stream.on('error', () => {});
    stream.pipe(stream);
  });
}

async function roundTrip(stream: MuxStream, data: Buffer): Promise<string> {
  const [received] = await Promise.all([readAll(stream), writeAll(stream, data)]);
  return sha256(received);
}

/** Resolves once the stream's writable side has finished (now or later). */
async function written(stream: MuxStream): Promise<void> {
  if (!stream.writableFinished) await once(stream, 'finish');
}

/** Resolves once the stream has closed (now or later). */
async function closed(stream: MuxStream): Promise<void> {
  if (!stream.closed) await once(stream, 'close');
}

/** Resolves once `check` holds, polling; fails after `ms`. */
async function until(check: () => boolean, what: string, ms = 5000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`still waiting for: ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

describe('streams', () => {
  it('carries many concurrent streams both ways, each intact (sha256)', async () => {
    const { client, server } = await sessionPair();
    echo(client);
    echo(server);
    const jobs: Promise<void>[] = [];
    for (let i = 0; i < 24; i++) {
      for (const [opener, label] of [
        [client, 'client'],
        [server, 'server'],
      ] as const) {
        const data = randomData(700_000);
        const stream = opener.open();
        expect(stream.id % 2).toBe(label === 'client' ? 1 : 0);
        jobs.push(roundTrip(stream, data).then((sum) => expect(sum, `${label} stream ${stream.id}`).toBe(sha256(data))));
      }
    }
    await Promise.all(jobs);
    await until(() => client.stats().streams === 0 && server.stats().streams === 0, 'every stream forgotten');
    await Promise.all([client.close(), server.close()]);
  });

  it('accepts with the async iterator, which ends when the session closes', async () => {
    const { client, server } = await sessionPair();
    const seen: number[] = [];
    const accepting = (async () => {
      for await (const stream of server) {
        seen.push(stream.id);
        stream.end(`hello ${stream.id}`);
        stream.resume();
      }
    })();
    const replies = await Promise.all([1, 2, 3].map(() => readAll(client.open().end())));
    expect(replies.map(String)).toEqual(['hello 1', 'hello 3', 'hello 5']);
    expect(seen).toEqual([1, 3, 5]);
    await client.close();
    await accepting;
  });

  it('half-close: after end() the other direction keeps flowing, both ways', async () => {
    const { client, server } = await sessionPair();
    // The server reads everything, and only then answers: the client's FIN does not end the reply.
    server.on('stream', async (stream) => {
      const request = await readAll(stream);
      for (let i = 0; i < 4; i++) stream.write(Buffer.alloc(300_000, i));
      stream.end(sha256(request));
    });
    const stream = client.open();
    const request = randomData(500_000);
    stream.end(request);
    await written(stream);
    const reply = await readAll(stream);
    expect(reply.length).toBe(1_200_000 + 64);
    expect(reply.subarray(1_200_000).toString()).toBe(sha256(request));
    await closed(stream);

    // The other way: the opener's peer ends first, the opener keeps writing.
    server.removeAllListeners('stream');
    const accepted = nextEvent(server, 'stream');
    const second = client.open();
    second.write('start');
    const [there] = (await accepted) as [MuxStream];
    there.end('bye');
    expect(String(await readAll(second))).toBe('bye');
    const tail = randomData(600_000);
    const arrived = readAll(there);
    await writeAll(second, tail);
    expect(sha256(await arrived)).toBe(sha256(Buffer.concat([Buffer.from('start'), tail])));
    await Promise.all([client.close(), server.close()]);
  });

  it('reset: destroy() sends RST, the other end fails with ECONNRESET and others go on', async () => {
    const { client, server } = await sessionPair();
    const accepted = nextEvent(server, 'stream');
    const doomed = client.open();
    doomed.write('x');
    const [there] = (await accepted) as [MuxStream];
    const failed = once(there, 'error');
    doomed.destroy();
    const [error] = (await failed) as [NodeJS.ErrnoException];
    expect(error.code).toBe('ECONNRESET');
    expect(error.message).toMatch(/reset yamux stream 1/);
    echo(server);
    const data = randomData(100_000);
    expect(await roundTrip(client.open(), data)).toBe(sha256(data));
    await Promise.all([client.close(), server.close()]);
  });
});

describe('flow control', () => {
  it('a stream whose reader stops holds one window; the sender waits, other streams flow', async () => {
    const { client, server } = await sessionPair();
    const streams: MuxStream[] = [];
    server.on('stream', (stream) => {
      streams.push(stream);
      if (streams.length > 1) stream.pipe(stream); // the first one is never read, yet
    });
    const slow = client.open();
    const slowData = randomData(2_000_000);
    slowData.fill(1, 0, 1); // at least one byte
    const slowWritten = writeAll(slow, Buffer.concat([slowData, Buffer.alloc(INITIAL_WINDOW)]));
    await until(() => slow.sendWindow === 0, 'the slow stream exhausts its window');
    await until(() => streams[0]?.readableLength === INITIAL_WINDOW, 'the receiver holding exactly one window');
    // Other streams are not held up by the stalled one.
    for (let i = 0; i < 4; i++) {
      const data = randomData(1_500_000);
      expect(await roundTrip(client.open(), data)).toBe(sha256(data));
    }
    expect(streams[0]!.readableLength).toBe(INITIAL_WINDOW);
    expect(slow.sendWindow).toBe(0);
    // Reading again lets the rest through, intact.
    const received = readAll(streams[0]!);
    await slowWritten;
    expect(sha256(await received)).toBe(sha256(Buffer.concat([slowData, Buffer.alloc(INITIAL_WINDOW)])));
    streams[0]!.end();
    await Promise.all([client.close(), server.close()]);
  });

  it('a larger maxStreamWindow is granted to the sender', async () => {
    const window = 1 << 20;
    const { client, server } = await sessionPair({}, { maxStreamWindow: window });
    const streams: MuxStream[] = [];
    server.on('stream', (stream) => {
      stream.on('error', () => {}); // reset below
      streams.push(stream);
    });
    const stream = client.open();
    stream.write(Buffer.alloc(3 << 20));
    stream.on('error', () => {});
    await until(() => stream.sendWindow === 0 && streams[0]?.readableLength === window, 'the sender fills the 1 MiB window');
    expect(streams[0]!.readableLength).toBe(window);
    stream.destroy();
    await Promise.all([client.close(), server.close()]);
  });
});

describe('ping and keepalive', () => {
  it('ping() measures a round trip both ways', async () => {
    const { client, server } = await sessionPair();
    const [there, back] = await Promise.all([client.ping(), server.ping()]);
    expect(there).toBeGreaterThan(0);
    expect(back).toBeGreaterThan(0);
    await Promise.all([client.close(), server.close()]);
  });

  it('keepalive fails the session, and its streams, with ETIMEDOUT when the peer stops answering', async () => {
    const [ours, silent] = await socketPair();
    silent.resume(); // reads and never answers
    const session = new Session(ours, { role: 'client', keepAliveInterval: 20, pingTimeout: 100 });
    const stream = session.open();
    const streamError = once(stream, 'error');
    const [error] = (await nextEvent(session, 'error')) as [NodeJS.ErrnoException];
    expect(error.code).toBe('ETIMEDOUT');
    expect(error.message).toMatch(/keepalive ping within 100 ms/);
    expect(((await streamError) as [NodeJS.ErrnoException])[0].code).toBe('ETIMEDOUT');
    await nextEvent(session, 'close');
    expect(() => session.open()).toThrow(expect.objectContaining({ code: 'EPIPE' }));
  });

  it('ping() rejects with ETIMEDOUT after its timeout; the session stays', async () => {
    const [ours, silent] = await socketPair();
    silent.resume();
    const session = new Session(ours, { role: 'server' });
    await expect(session.ping({ timeout: 50 })).rejects.toMatchObject({ code: 'ETIMEDOUT' });
    expect(session.closedReason).toBe(null);
    session.destroy();
  });
});

describe('go-away', () => {
  it('the peer refuses new streams; open ones go on; open() says why', async () => {
    const { client, server } = await sessionPair();
    echo(server);
    const accepted = nextEvent(server, 'stream');
    const stream = client.open();
    stream.write('before');
    await accepted; // a stream the server has not seen when it goes away is refused
    const away = nextEvent(client, 'goaway');
    server.goAway();
    await away;
    expect(client.remoteGoAway).toBe(true);
    expect(() => client.open()).toThrow(expect.objectContaining({ code: 'ECONNREFUSED', message: expect.stringMatching(/go-away/) }));
    const rest = readAll(stream);
    stream.end('after');
    expect(String(await rest)).toBe('beforeafter');
    // The server may still open streams of its own.
    echo(client);
    const data = randomData(10_000);
    expect(await roundTrip(server.open(), data)).toBe(sha256(data));
    await Promise.all([client.close(), server.close()]);
  });

  it('a stream the peer opens after our go-away is refused with RST', async () => {
    const [ours, raw] = await socketPair();
    const session = new Session(ours, { role: 'server' });
    const log = frameLog(raw);
    session.goAway();
    raw.write(frame(FrameType.WindowUpdate, Flag.SYN, 1, 0));
    await until(() => log.headers.some((h) => h.type === FrameType.WindowUpdate && h.flags & Flag.RST && h.streamId === 1), 'the RST');
    expect(log.headers[0]).toMatchObject({ type: FrameType.GoAway, length: GoAwayCode.Normal });
    expect(session.stats()).toMatchObject({ streams: 0, refused: 1 });
    session.destroy();
  });
});

describe('limits', () => {
  it('maxStreams: open() beyond it fails with ERR_MUX_TOO_MANY_STREAMS; the peer sees its extra streams refused', async () => {
    const { client, server } = await sessionPair({ maxStreams: 3 }, { maxStreams: 2 });
    echo(server);
    const held = [client.open(), client.open(), client.open()];
    expect(() => client.open()).toThrow(
      expect.objectContaining({ code: 'ERR_MUX_TOO_MANY_STREAMS', message: expect.stringMatching(/3 streams are open.*maxStreams/) }),
    );
    // The server takes two; the third is refused.
    const [error] = (await once(held[2]!, 'error')) as [NodeJS.ErrnoException];
    expect(error.code).toBe('ECONNREFUSED');
    expect(error.message).toMatch(/refused yamux stream 5/);
    expect(server.stats().refused).toBe(1);
    for (const stream of held.slice(0, 2)) stream.destroy();
    await until(() => client.stats().streams === 0, 'the client forgetting them');
    const data = randomData(1000);
    expect(await roundTrip(client.open(), data)).toBe(sha256(data));
    await Promise.all([client.close(), server.close()]);
  });

  it('acceptBacklog: streams nobody accepts wait up to the backlog, the rest are refused', async () => {
    const { client, server } = await sessionPair({}, { acceptBacklog: 2 });
    const opened = [client.open(), client.open(), client.open()];
    for (const stream of opened) stream.end('hi');
    const [error] = (await once(opened[2]!, 'error')) as [NodeJS.ErrnoException];
    expect(error.code).toBe('ECONNREFUSED');
    expect(server.stats()).toMatchObject({ backlog: 2, refused: 1 });
    const first = await server.accept();
    expect(first.id).toBe(1);
    expect(String(await readAll(first.end()))).toBe('hi');
    // The client's streams are still open; destroy() ends the sessions at once, without errors.
    client.destroy();
    server.destroy();
  });

  it('options out of range fail with ERR_INVALID_ARG_VALUE naming the option', async () => {
    const [socket] = await socketPair();
    const make = (options: object) => () => new Session(socket, { role: 'client', ...options });
    expect(make({ maxStreamWindow: 1000 })).toThrow(
      expect.objectContaining({ code: 'ERR_INVALID_ARG_VALUE', message: expect.stringMatching(/maxStreamWindow/) }),
    );
    expect(make({ acceptBacklog: 0 })).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG_VALUE' }));
    expect(make({ keepAliveInterval: -1 })).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG_VALUE' }));
    expect(() => new Session(socket, { role: 'peer' as 'client' })).toThrow(
      expect.objectContaining({ message: expect.stringMatching(/role/) }),
    );
  });
});

describe('ending', () => {
  it('the transport closing cuts open streams short with ECONNRESET; done streams keep their data', async () => {
    const { client, server, serverSocket } = await sessionPair();
    const done = client.open();
    const accepted = nextEvent(server, 'stream');
    done.end('request');
    const [there] = (await accepted) as [MuxStream];
    there.on('error', () => {}); // the server's end is cut short too
    there.end('answer');
    await written(done);
    await until(() => done.remoteFin, 'the FIN');
    const open = client.open();
    open.write('x');
    const failed = once(open, 'error');
    const sessionClosed = new Promise((resolve) => client.once('close', () => resolve(undefined)));
    // Unread data makes the kernel reset the connection: the session fails with ECONNRESET.
    const sessionFailed = nextEvent(client, 'error');
    serverSocket.destroy();
    const [error] = (await failed) as [NodeJS.ErrnoException];
    expect(error.code).toBe('ECONNRESET');
    expect(((await sessionFailed) as [NodeJS.ErrnoException])[0].code).toBe('ECONNRESET');
    expect(String(await readAll(done))).toBe('answer');
    await sessionClosed;
  });
});
