import type { EventChannel } from '@xen-vchan/evtchn';

/** Resolves with the time it took for `port` to report an event on `channel`; rejects after `timeoutMs`. */
export function nextEvent(channel: EventChannel, port: number, timeoutMs: number): Promise<number> {
  const started = performance.now();
  return new Promise((resolve, reject) => {
    const onEvent = (got: number) => {
      if (got !== port) return;
      clearTimeout(timer);
      channel.off('event', onEvent);
      resolve(performance.now() - started);
    };
    const timer = setTimeout(() => {
      channel.off('event', onEvent);
      reject(new Error(`no event on port ${port} within ${timeoutMs} ms`));
    }, timeoutMs);
    channel.on('event', onEvent);
  });
}

/** Counts the events on `port` from now on. */
export function countEvents(channel: EventChannel, port: number): { readonly count: number; stop(): void } {
  const counter = {
    count: 0,
    stop: () => channel.off('event', onEvent),
  };
  const onEvent = (got: number) => {
    if (got === port) counter.count++;
  };
  channel.on('event', onEvent);
  return counter;
}
