/**
 * Closes the file descriptor of a device handle that was garbage-collected without close(), as
 * Node does for a collected FileHandle: a program that drops a handle must not hold its grants,
 * ports or XenStore connection until it exits. One per addon, made with that addon's close().
 */
export class FdFinalizer {
  readonly #closeFd: (fd: number) => void;
  readonly #registry: FinalizationRegistry<number>;

  constructor(closeFd: (fd: number) => void) {
    this.#closeFd = closeFd;
    this.#registry = new FinalizationRegistry<number>((fd) => {
      try {
        closeFd(fd);
      } catch {
        // A finalizer has nobody to tell: the fd was closed some other way already.
      }
    });
  }

  /** Closes `fd` once `owner` is collected, unless close(owner, fd) came first. */
  register(owner: object, fd: number): void {
    this.#registry.register(owner, fd, owner);
  }

  /** Closes `fd` now, for `owner`'s own close(); the collector then has nothing left to do. */
  close(owner: object, fd: number): void {
    this.#registry.unregister(owner);
    this.#closeFd(fd);
  }
}
