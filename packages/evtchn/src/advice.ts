import { errorCode, explainError, MAX_GUEST_DOMID } from '@xen-vchan/native';

/** What to tell a user when /dev/xen/evtchn does not open. */
export function evtchnOpenAdvice(code: string): string | undefined {
  if (code === 'EACCES' || code === 'EPERM')
    return 'Opening /dev/xen/evtchn needs root, or a group and udev rule giving you the device (docs/real-xen.md).';
  return evtchnAdvice(code);
}

/** What to tell a user for each errno the event-channel device gives. */
export function evtchnAdvice(code: string): string | undefined {
  switch (code) {
    case 'ENOENT':
      return 'There is no /dev/xen/evtchn: load the module (modprobe xen-evtchn) or use the simulation (backend "sim").';
    case 'EACCES':
      return 'This handle is restricted to another domain (restrictDomain), or the device needs root.';
    case 'EPERM':
      return 'Opening /dev/xen/evtchn needs root (or a udev rule giving you the device).';
    case 'EINVAL':
      return 'Xen refused: the remote port must be an unbound port that its domain offered to this domain.';
    case 'ENOTCONN':
      return 'That port was not bound by this handle.';
    case 'EFBIG':
      return 'Events overflowed the queue; call reset() and re-check the shared state.';
    default:
      return undefined;
  }
}

export function restrictAdvice(code: string): string | undefined {
  if (code === 'EINVAL') return `A handle can be restricted to a domain from 1 to ${MAX_GUEST_DOMID}, not to dom0.`;
  if (code === 'EACCES') return 'This handle is already restricted; a restriction cannot be changed. Open a new handle.';
  return evtchnAdvice(code);
}

/**
 * Xen's answer to a bind of port 0 of `domid` (see EventChannel.domainExists): the remote domain
 * is looked up before the port, so ESRCH says it is gone and EINVAL that it exists.
 */
export function existenceFromBind(bindPortZero: () => void, domid: number): boolean {
  try {
    bindPortZero();
    return true;
  } catch (error) {
    const code = errorCode(error);
    if (code === 'EINVAL') return true;
    if (code === 'ESRCH') return false;
    throw explainError(error, `evtchn domainExists(${domid})`, evtchnAdvice);
  }
}
