/** Error type of every xen-vchan package: a stable `code` to branch on and a message that says what to do. */
export class XenVchanError extends Error {
  readonly code: string;
  declare readonly syscall?: string;
  declare readonly errno?: number;

  constructor(code: string, message: string, options: { syscall?: string; errno?: number; cause?: unknown } = {}) {
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
export function explainError(
  error: unknown,
  operation: string,
  advise: (code: string) => string | undefined = () => undefined,
): unknown {
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

export function invalidArgument(message: string): XenVchanError {
  return new XenVchanError('ERR_INVALID_ARG_VALUE', message);
}
