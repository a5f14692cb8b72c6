/** A request the simulated XenStore refuses; `code` is the errno name sent back in an ERROR reply. */
export class XsFailure extends Error {
  constructor(
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}
