import { errorCode, isGuestDomainId, MAX_GUEST_DOMID, XenVchanError } from '@xen-vchan/native';

/** One `vchan` subcommand. `run` returns the process exit code (see EXIT in main.ts). */
export interface Command {
  name: string;
  /** One line for `vchan --help`. */
  summary: string;
  /** The full `vchan <name> --help` text. */
  usage: string;
  run(argv: string[]): Promise<number>;
}

/** Exit codes scripts can rely on. */
export const EXIT = {
  ok: 0,
  /** The peer, the data or the system failed (connection lost, checksum mismatch, ...). */
  failure: 1,
  /** Bad command line: unknown option, missing argument. */
  usage: 2,
  /** Gave up waiting (connect timeout). */
  timeout: 3,
  /** The peer broke the protocol (EPROTO). */
  protocol: 4,
} as const;

/** A bad command line (exit 2), with `code` ERR_USAGE; the message says which argument and why. */
export class UsageError extends XenVchanError {
  constructor(message: string) {
    super('ERR_USAGE', message);
    this.name = 'UsageError';
  }
}

/** The codes of a bad command line: ours, parseArgs' and an option the library refused. */
const USAGE_CODES: ReadonlySet<string> = new Set([
  'ERR_USAGE',
  'ERR_PARSE_ARGS_UNKNOWN_OPTION',
  'ERR_PARSE_ARGS_INVALID_OPTION_VALUE',
  'ERR_PARSE_ARGS_UNEXPECTED_POSITIONAL',
  'ERR_INVALID_ARG_VALUE',
]);

/** Maps an error to the exit code that says what kind of failure it was. */
export function exitCodeFor(error: unknown): number {
  const code = errorCode(error);
  if (code !== undefined && USAGE_CODES.has(code)) return EXIT.usage;
  if (code === 'ETIMEDOUT') return EXIT.timeout;
  if (code === 'EPROTO') return EXIT.protocol;
  return EXIT.failure;
}

/** Parses a domain id argument strictly. */
export function parseDomid(text: string | undefined, what: string): number {
  if (text === undefined || !/^(0|[1-9][0-9]*)$/.test(text) || !isGuestDomainId(Number(text))) {
    throw new UsageError(`${what} must be a domain id (0 to ${MAX_GUEST_DOMID}), got ${JSON.stringify(text)}`);
  }
  return Number(text);
}

/** Parses a byte size: 4096, 64K, 64KiB, 1M, 1MiB, 1G. */
export function parseSize(text: string | undefined, what: string): number {
  const match = /^(\d+)\s*(|B|K|KiB|M|MiB|G|GiB)$/i.exec(text ?? '');
  if (!match) throw new UsageError(`${what} must be a size like 4096, 64KiB or 1MiB, got ${JSON.stringify(text)}`);
  const unit = { '': 1, b: 1, k: 1024, kib: 1024, m: 2 ** 20, mib: 2 ** 20, g: 2 ** 30, gib: 2 ** 30 }[match[2]!.toLowerCase()]!;
  return Number(match[1]) * unit;
}

/** Options every channel-making subcommand shares. */
export const channelOptions = {
  name: { type: 'string', short: 'n', default: 'vchan' },
  path: { type: 'string' },
  backend: { type: 'string', default: 'auto' },
  'sim-domid': { type: 'string' },
  help: { type: 'boolean', short: 'h' },
} as const;

export const channelOptionsHelp = `  -n, --name NAME      vchan name under /local/domain/<server>/data/vchan/<client>/ (default vchan)
      --path PATH      a XenStore path of your own instead
      --backend B      auto (default: xen when /dev/xen exists), xen or sim
      --sim-domid ID   simulation only: the domain this process plays (default $XEN_VCHAN_SIM_DOMID or 0)
  -h, --help           this text`;

export function backendOptions(values: { backend?: string; 'sim-domid'?: string }) {
  const backend = values.backend ?? 'auto';
  if (backend !== 'auto' && backend !== 'xen' && backend !== 'sim')
    throw new UsageError(`--backend must be auto, xen or sim, got ${backend}`);
  return {
    backend: backend as 'auto' | 'xen' | 'sim',
    ...(values['sim-domid'] !== undefined ? { simDomid: parseDomid(values['sim-domid'], '--sim-domid') } : {}),
  };
}
