// What the two-domain tests poll: XenStore nodes that another domain writes, and conditions that
// hold once the other side has got there.
import { openXenStore } from '@xen-vchan/xenstore';

/** The node's value, or null when it does not exist (or dom0 may not read it), on a connection of its own. */
export async function readOrNull(path: string): Promise<string | null> {
  const xenstore = await openXenStore();
  try {
    return await xenstore.read(path);
  } catch {
    return null;
  } finally {
    xenstore.close();
  }
}

export async function xenstoreHas(path: string): Promise<boolean> {
  return (await readOrNull(path)) !== null;
}

/** Polls `check` every 100 ms until it holds; rejects after `timeout` ms. */
export async function until(what: string, check: () => boolean | Promise<boolean>, timeout = 60_000): Promise<void> {
  const deadline = Date.now() + timeout;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeout} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}
