/**
 * A call the simulated hypervisor or xenstored refuses, as the real kernel or daemon would: `code`
 * is the errno name (EINVAL, ENOSPC...) it answers with. The daemon sends it back as an error reply;
 * any other error there is a bug, logged with its stack. The client raises a refusal again as one
 * of these rather than a XenVchanError, like the plain errors of a failed syscall, so that the
 * device layer's explained() still names the operation and adds its advice.
 */
export class SimFailure extends Error {
  constructor(
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}
