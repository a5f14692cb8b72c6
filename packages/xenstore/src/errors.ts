import { explainError, XenVchanError } from '@xen-vchan/native';

/** What to do about an error XenStore answered with, as far as its code tells. */
export function xenstoreAdvice(code: string): string | undefined {
  switch (code) {
    case 'ENOENT':
      return 'There is no such node. A path without a leading "/" is relative to /local/domain/<own domid>/.';
    case 'EACCES':
      return (
        "This domain lacks the right: a node's first permission entry is its owner, who may do anything; " +
        "another domain gets its own entry if there is one, else the first entry's access (see getPermissions). dom0 may do anything."
      );
    case 'EPERM':
      return 'Only dom0 may give a node another owner (the first permission entry).';
    case 'EINVAL':
      return (
        'XenStore refused the request as malformed: paths use only A-Z a-z 0-9 - / _ @, ' +
        'do not end in "/" or contain "//", and have at most 3072 characters.'
      );
    case 'EAGAIN':
      return 'The transaction conflicted with another writer and was dropped; run it again (transaction() does that for you).';
    case 'E2BIG':
      return 'XenStore quota reached (1000 nodes or 128 watches per domain): remove the nodes and watches you no longer need.';
    case 'ENOSPC':
      return (
        'XenStore quota reached: at most 10 open transactions per domain (end the others first), 5 permission entries per node; ' +
        'real xenstored also limits a domain to 1000 nodes and a node to about 2 KiB.'
      );
    case 'EEXIST':
      return 'This connection already watches that path with that token.';
    case 'EBUSY':
      return 'Transactions do not nest: start a transaction from the store, not from another transaction.';
    case 'ENOSYS':
      return 'This XenStore does not implement that request.';
    default:
      return undefined;
  }
}

/** The error for a request XenStore refused with `code`. */
export function xenstoreError(code: string, operation: string): XenVchanError {
  const advice = xenstoreAdvice(code);
  return new XenVchanError(code, `XenStore ${operation} failed: ${code}.${advice ? ` ${advice}` : ''}`);
}

/** An error from the transport itself (an addon or socket error with an errno code), explained. */
export function transportError(error: unknown, operation: string): XenVchanError {
  const explained = explainError(error, `XenStore ${operation}`, xenstoreAdvice);
  if (explained instanceof XenVchanError) return explained;
  return new XenVchanError('EIO', `XenStore ${operation} failed: ${String((error as Error)?.message ?? error)}`, { cause: error });
}

export function handleClosed(): XenVchanError {
  return new XenVchanError('EBADF', 'This XenStore handle is closed; open a new one with openXenStore().');
}

export function connectionLost(address: string, why: string, cause?: unknown): XenVchanError {
  return new XenVchanError(
    'ECONNRESET',
    `Lost the XenStore connection (${address}): ${why}. Requests in flight failed and watches ended; open a new handle with openXenStore().`,
    cause === undefined ? {} : { cause },
  );
}

export function protocolError(address: string, why: string): XenVchanError {
  return new XenVchanError(
    'EPROTO',
    `XenStore (${address}) broke the wire protocol: ${why}. The connection was closed; open a new handle with openXenStore().`,
  );
}
