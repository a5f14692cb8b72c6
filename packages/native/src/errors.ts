import { isGuestDomainId, MAX_GUEST_DOMID } from './domains.js';

/**
 * The `code`s of xen-vchan's own errors, listed so that an editor offers them; each package's
 * README says when each is thrown. The type stays open: the devices and XenStore report any errno
 * name (ENOSPC, EACCES, ...) under its own name.
 */
export type XenVchanErrorCode =
  | 'ERR_INVALID_ARG_VALUE'
  | 'ERR_ADDON_MISSING'
  | 'ERR_ADDON_LOAD'
  | 'ERR_SERVER_ALREADY_LISTEN'
  | 'ERR_STREAM_DESTROYED'
  | 'ERR_STREAM_PREMATURE_CLOSE'
  | 'ERR_RPC_NO_METHOD'
  | 'ERR_RPC_ENCODE'
  | 'ERR_RPC_REMOTE'
  | 'ERR_TRANSACTION_ENDED'
  | 'ERR_MUX_TOO_MANY_STREAMS'
  | 'ERR_MUX_STREAM_IDS_EXHAUSTED'
  | 'ERR_VCHAN_READ_MODE'
  | 'ERR_VCHAN_VIEW_RELEASED'
  | 'ERR_VCHAN_WRITE_MODE'
  | 'ERR_VCHAN_NO_RESERVATION'
  | 'ABORT_ERR'
  | 'ETIMEDOUT'
  | 'ENOENT'
  | 'ECONNREFUSED'
  | 'ECONNRESET'
  | 'EPIPE'
  | 'EPROTO'
  | 'EMSGSIZE'
  | 'ESIMDOWN'
  | (string & {});

/** Error type of every xen-vchan package: a stable `code` to branch on and a message that says what to do. */
export class XenVchanError extends Error {
  readonly code: XenVchanErrorCode;
  declare readonly syscall?: string;
  declare readonly errno?: number;

  constructor(code: XenVchanErrorCode, message: string, options: { syscall?: string; errno?: number; cause?: unknown } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'XenVchanError';
    this.code = code;
    if (options.syscall !== undefined) this.syscall = options.syscall;
    if (options.errno !== undefined) this.errno = options.errno;
  }
}

interface SystemErrorLike {
  code?: unknown;
  syscall?: unknown;
  errno?: unknown;
  message?: unknown;
}

/**
 * Turns an error thrown by an addon (or by Node's fs) into a XenVchanError whose message names the
 * operation and, where `advise` knows one, what to do about it. Anything else is returned as is.
 */
export function explainError(error: unknown, operation: string, advise: (code: string) => string | undefined = () => undefined): unknown {
  if (error instanceof XenVchanError || typeof error !== 'object' || error === null) return error;
  const { code, syscall, errno, message } = error as SystemErrorLike;
  if (typeof code !== 'string') return error;
  const advice = advise(code);
  const text = `${operation} failed: ${typeof message === 'string' ? message : code}${advice ? `. ${advice}` : ''}`;
  return new XenVchanError(code, text, {
    cause: error,
    ...(typeof syscall === 'string' ? { syscall } : {}),
    ...(typeof errno === 'number' ? { errno } : {}),
  });
}

/** Runs `body`, rethrowing its error through explainError. */
export function explained<T>(operation: string, body: () => T, advise?: (code: string) => string | undefined): T {
  try {
    return body();
  } catch (error) {
    throw explainError(error, operation, advise);
  }
}

/** An argument the caller passed is out of range or of the wrong kind (`code` ERR_INVALID_ARG_VALUE, as Node's own). */
export function invalidArgument(message: string): XenVchanError {
  return new XenVchanError('ERR_INVALID_ARG_VALUE', message);
}

/**
 * The `code` of anything thrown (a XenVchanError, a Node system error, an addon error), or
 * undefined when it has none: the one way to branch on an error whose type is not known.
 */
export function errorCode(error: unknown): string | undefined {
  if (typeof error !== 'object' || error === null) return undefined;
  const { code } = error as { code?: unknown };
  return typeof code === 'string' ? code : undefined;
}

/**
 * A wait given up because its AbortSignal fired: shaped like Node's own AbortError (`name`
 * 'AbortError', `code` 'ABORT_ERR') so code written for fetch or streams recognises it, with the
 * signal's reason as `cause`. `what` names the wait ("The connect", "The send of a 12-byte
 * message"); `outcome` says what became of the operation, when the caller needs to know.
 */
export function abortError(reason: unknown, what: string, outcome?: string): XenVchanError {
  const error = new XenVchanError('ABORT_ERR', `${what} was aborted.${outcome ? ` ${outcome}` : ''}`, { cause: reason });
  error.name = 'AbortError';
  return error;
}

/**
 * Returns `domid` when it names a guest domain (an integer from 0 to 32751), else throws
 * ERR_INVALID_ARG_VALUE naming `what` (the option or argument, e.g. "domid (the server domain)").
 */
export function checkDomainId(domid: unknown, what = 'domid'): number {
  if (!isGuestDomainId(domid))
    throw invalidArgument(`${what} must be a domain id, an integer from 0 to ${MAX_GUEST_DOMID}; got ${String(domid)}`);
  return domid;
}
