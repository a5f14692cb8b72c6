import { invalidArgument } from '@xen-vchan/native';

/** libxenvchan's conventional place for a vchan between a server and a client domain. */
export function conventionalPath(serverDomid: number, clientDomid: number, name: string): string {
  if (!/^[A-Za-z0-9_.-]+$/.test(name)) throw invalidArgument(`a vchan name is letters, digits, "_", "." and "-", got ${JSON.stringify(name)}`);
  return `/local/domain/${serverDomid}/data/vchan/${clientDomid}/${name}`;
}

/**
 * Parses a number the peer wrote into XenStore: ASCII decimal digits only, no sign, no spaces,
 * no leading zeros, at most u32. Anything else is refused rather than guessed at.
 */
export function parseXenStoreNumber(text: string): number | null {
  if (!/^(0|[1-9][0-9]{0,9})$/.test(text)) return null;
  const value = Number(text);
  return value <= 0xffffffff ? value : null;
}
