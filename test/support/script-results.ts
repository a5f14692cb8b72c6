// What the scripts that play one domain's end (test/xen/domains/*.mjs) report, read the same way
// by the simulation's tests and the harness's.

/** How a script ended: its exit status or signal, and (the tail of) what it printed. */
export interface ScriptEnd {
  code: number | null;
  signal: string | null;
  output: string;
}

/** The `RESULT {...}` line a script prints last; throws with its output unless it exited 0 with one. */
export function resultOf<T>(ended: ScriptEnd, where: string): T {
  const line = ended.output
    .split('\n')
    .reverse()
    .find((text) => text.startsWith('RESULT '));
  if (ended.code !== 0 || !line) throw new Error(`${where} ended with ${ended.signal ?? `status ${ended.code}`}:\n${ended.output}`);
  return JSON.parse(line.slice('RESULT '.length)) as T;
}

/** What test/xen/domains/survivor.mjs reports once its peer's domain is gone. */
export interface Survived {
  code: string | null;
  message: string;
  failedAt: number;
  received: number;
  mappingsWhileOpen: number;
  mappingsAfter: number;
}

/** What test/xen/domains/both-ways.mjs reports: each direction's byte count and sha256. */
export interface BothWays {
  sent: { bytes: number; sha256: string };
  received: { bytes: number; sha256: string };
  seconds: number;
  mibps: number;
}
