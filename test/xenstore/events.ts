// Reading watch events with a time limit. A next() that timed out still waits for an event, so
// the following read must take its result rather than start another next(): abandoning it would
// lose the event it receives.
import type { Watch, WatchEvent } from '@xen-vchan/xenstore';

const waiting = new WeakMap<Watch, Promise<WatchEvent | null>>();
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** The next event, or null if none comes within `ms` (or the watch ended). */
export async function nextEvent(watch: Watch, ms = 2000): Promise<WatchEvent | null> {
  let next = waiting.get(watch);
  if (!next) {
    next = watch.next().then((result) => (result.done ? null : result.value));
    waiting.set(watch, next);
  }
  const timedOut = Symbol('timed out');
  const outcome = await Promise.race([next, sleep(ms).then(() => timedOut)]);
  if (outcome === timedOut) return null;
  waiting.delete(watch);
  return outcome as WatchEvent | null;
}

/** The paths of the events that arrive until `ms` pass without one, in order. */
export async function drain(watch: Watch, ms = 150): Promise<string[]> {
  const paths: string[] = [];
  for (let event = await nextEvent(watch, ms); event; event = await nextEvent(watch, ms)) paths.push(event.path);
  return paths;
}
