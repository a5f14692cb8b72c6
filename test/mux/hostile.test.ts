// A peer that sends malformed frames: the session ends with EPROTO after sending go-away
// (protocol error), never throws past the library, and allocates nothing from the lengths it is
// sent. Frames for streams that ended here are dropped, as the spec allows.
import { once } from 'node:events';
import { afterEach, describe, expect, it } from 'vitest';
import { Flag, FrameType, GoAwayCode, INITIAL_WINDOW, Session } from '@xen-vchan/mux';
import { cleanup, frame, frameLog, socketPair } from './pair.js';

afterEach(cleanup);

/** Our session as `role` against a raw socket; returns both and the frames the raw end received. */
async function againstRaw(role: 'client' | 'server' = 'server') {
  const [ours, raw] = await socketPair();
  const session = new Session(ours, { role });
  const log = frameLog(raw);
  const errors: NodeJS.ErrnoException[] = [];
  session.on('error', (error) => errors.push(error));
  return { session, raw, log, errors, closed: sessionClose(session) };
}

/** The session ended with EPROTO, sent go-away (protocol error) and closed the transport. */
async function expectProtocolError(setup: Awaited<ReturnType<typeof againstRaw>>, message: RegExp) {
  const { log, errors } = setup;
  await setup.closed;
  expect(errors.map((error) => error.code)).toEqual(['EPROTO']);
  expect(errors[0]!.message).toMatch(message);
  await log.ended;
  expect(log.headers.at(-1)).toMatchObject({ type: FrameType.GoAway, length: GoAwayCode.ProtocolError });
}

/** Resolves on the session's 'close' (events.once would reject on its 'error', which these tests expect). */
function sessionClose(session: Session): Promise<void> {
  return new Promise((resolve) => session.once('close', () => resolve()));
}

const SYN_ODD = frame(FrameType.WindowUpdate, Flag.SYN, 1, 0);

describe('malformed frames end the session with EPROTO', () => {
  const cases: [string, Buffer[], RegExp][] = [
    ['a bad version', [Buffer.from([1, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0])], /version 1/],
    ['an unknown type', [frame(7, 0, 0, 0)], /unknown type 7/],
    ['a window update that overflows', [SYN_ODD, frame(FrameType.WindowUpdate, 0, 1, 0xffff_ffff)], /overflows/],
    ['data past the window', [SYN_ODD, frame(FrameType.Data, 0, 1, INITIAL_WINDOW + 1)], /262145 bytes, more than any stream's window/],
    [
      'data past the window in two frames',
      [SYN_ODD, frame(FrameType.Data, 0, 1, INITIAL_WINDOW, Buffer.alloc(INITIAL_WINDOW)), frame(FrameType.Data, 0, 1, 1, Buffer.alloc(1))],
      /1 bytes of data on stream 1, over the 0 bytes/,
    ],
    ['a huge length (no allocation)', [SYN_ODD, frame(FrameType.Data, 0, 1, 0xffff_ffff)], /4294967295 bytes/],
    ['a stream id reused', [SYN_ODD, frame(FrameType.WindowUpdate, Flag.RST, 1, 0), SYN_ODD], /opened stream 1 again/],
    [
      'a skipped stream id opened twice',
      [
        frame(FrameType.WindowUpdate, Flag.SYN, 7, 0),
        frame(FrameType.WindowUpdate, Flag.SYN, 3, 0),
        frame(FrameType.WindowUpdate, Flag.SYN, 3, 0),
      ],
      /opened stream 3 again/,
    ],
    ['stream ids skipped past the bound', [frame(FrameType.WindowUpdate, Flag.SYN, 1 + 2 * 1025, 0)], /more than 1024 lower ids unopened/],
    ['a stream id of the wrong parity', [frame(FrameType.WindowUpdate, Flag.SYN, 2, 0)], /even id, which only this side \(the server\)/],
    ['a frame for a stream never opened', [frame(FrameType.Data, 0, 9, 1, Buffer.alloc(1))], /stream 9, which was never opened/],
    ['data on stream 0', [frame(FrameType.Data, Flag.SYN, 0, 0)], /for stream 0/],
    ['a second FIN', [SYN_ODD, frame(FrameType.WindowUpdate, Flag.FIN, 1, 0), frame(FrameType.Data, Flag.FIN, 1, 0)], /second FIN/],
    [
      'data after FIN',
      [SYN_ODD, frame(FrameType.WindowUpdate, Flag.FIN, 1, 0), frame(FrameType.Data, 0, 1, 1, Buffer.alloc(1))],
      /after its FIN/,
    ],
    ['a ping on a stream', [frame(FrameType.Ping, Flag.SYN, 3, 0)], /ping on stream 3/],
    ['an unknown go-away code', [frame(FrameType.GoAway, 0, 0, 9)], /unknown code 9/],
  ];
  for (const [name, frames, message] of cases) {
    it(name, async () => {
      const setup = await againstRaw('server');
      setup.session.on('stream', (stream) => stream.on('error', () => {}));
      // One byte at a time for the first frame: a header split anywhere is still read right.
      const bytes = Buffer.concat(frames);
      for (let i = 0; i < Math.min(12, bytes.length); i++) setup.raw.write(bytes.subarray(i, i + 1));
      setup.raw.write(bytes.subarray(12));
      await expectProtocolError(setup, message);
    });
  }

  it('fails the streams with EPROTO too, and the process goes on', async () => {
    const setup = await againstRaw('client');
    const stream = setup.session.open();
    const failed = once(stream, 'error');
    setup.raw.write(frame(FrameType.WindowUpdate, Flag.SYN, 3, 0)); // odd: the client's ids
    expect(((await failed) as [NodeJS.ErrnoException])[0].code).toBe('EPROTO');
    await expectProtocolError(setup, /odd id/);
  });

  it("the peer's go-away (protocol error) ends the session with EPROTO; (internal error) with ECONNRESET", async () => {
    for (const [code, expected] of [
      [GoAwayCode.ProtocolError, 'EPROTO'],
      [GoAwayCode.InternalError, 'ECONNRESET'],
    ] as const) {
      const { raw, errors, closed } = await againstRaw();
      raw.write(frame(FrameType.GoAway, 0, 0, code));
      await closed;
      expect(errors.map((error) => error.code)).toEqual([expected]);
    }
  });
});

describe('what a peer may send without breaking the protocol', () => {
  it('frames for a stream that ended here are dropped, the session goes on', async () => {
    const { session, raw, log, errors } = await againstRaw('server');
    session.on('stream', (stream) => {
      stream.on('error', () => {});
      stream.destroy(); // RST
    });
    raw.write(SYN_ODD);
    raw.write(frame(FrameType.Data, 0, 1, 1000, Buffer.alloc(1000)));
    raw.write(frame(FrameType.WindowUpdate, 0, 1, 5));
    raw.write(frame(FrameType.Ping, Flag.SYN, 0, 42));
    await expect.poll(() => log.headers.find((h) => h.type === FrameType.Ping)).toMatchObject({ flags: Flag.ACK, length: 42 });
    expect(errors).toEqual([]);
    expect(session.closedReason).toBe(null);
    session.destroy();
  });

  it('SYNs out of order, as Go sends them for streams opened at once, each open a stream', async () => {
    const { session, raw, errors } = await againstRaw('server');
    const accepted: number[] = [];
    session.on('stream', (stream) => accepted.push(stream.id));
    for (const id of [5, 1, 9, 3, 7]) raw.write(frame(FrameType.WindowUpdate, Flag.SYN, id, 0));
    await expect.poll(() => accepted.length).toBe(5);
    expect(accepted).toEqual([5, 1, 9, 3, 7]);
    expect(errors).toEqual([]);
    session.destroy();
  });

  it('a flood of pings from a peer that does not read stops our reading; what we hold stays bounded', async () => {
    const [ours, raw] = await socketPair();
    const session = new Session(ours, { role: 'server' });
    const ping = frame(FrameType.Ping, Flag.SYN, 0, 1);
    const burst = Buffer.concat(Array.from({ length: 10_000 }, () => ping));
    raw.pause(); // never reads our answers
    for (let i = 0; i < 40; i++) {
      raw.write(burst);
      await new Promise((resolve) => setImmediate(resolve));
    }
    await new Promise((resolve) => setTimeout(resolve, 200));
    // Without the brake, 400 000 answers (4.8 MB) would wait in our socket's buffer.
    expect(ours.writableLength).toBeLessThan(1 << 20);
    expect(session.closedReason).toBe(null);
    raw.resume();
    session.destroy();
  });
});
