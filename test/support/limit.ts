import { readFileSync, writeFileSync } from 'node:fs';
import type { Gntalloc, SimGntalloc } from '@xen-vchan/gntalloc';

const LIMIT_FILE = '/sys/module/xen_gntalloc/parameters/limit';

/** Sets the domain's gntalloc limit the way an administrator would; returns a function that restores it. */
export function setGntallocLimit(device: Gntalloc, limit: number): () => void {
  if (device.backend === 'sim') {
    const sim = device as SimGntalloc;
    const before = sim.limit().limit;
    sim.setLimit(limit);
    return () => sim.setLimit(before);
  }
  const before = readFileSync(LIMIT_FILE, 'utf8').trim();
  writeFileSync(LIMIT_FILE, String(limit));
  return () => writeFileSync(LIMIT_FILE, before);
}
