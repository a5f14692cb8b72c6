import { closeSync, openSync, writeSync } from 'node:fs';
import type { EventChannels } from './event-channels.js';
import type { Ending } from './handles.js';
import { runAll } from './settled.js';

/** What gntalloc's or gntdev's unmap notification does when the page is let go. */
export interface UnmapNotify {
  file: string;
  offset: number;
  clearByte: boolean;
  port: { domid: number; port: number } | null;
}

/** A notification as a process asks for it: the port is one of its own domain's. */
type WantedNotify = Omit<UnmapNotify, 'port'> & { port: number | null };

/**
 * Unmap notifications (IOCTL_GNTALLOC_SET_UNMAP_NOTIFY, IOCTL_GNTDEV_SET_UNMAP_NOTIFY): clear a
 * byte of the shared page and send an event when the page is let go. A notification that will
 * send holds its port open until it has run or been dropped.
 */
export class UnmapNotifications {
  constructor(private readonly events: EventChannels) {}

  /**
   * Gives `holder` (a gntalloc grant, a gntdev mapping) the notification domain `domid` asks for,
   * dropping the one it had: only the last one asked for runs. Its port, if any, must be bound in
   * `domid` (EINVAL), and is then held open until the notification has run or been dropped.
   */
  set(holder: { notify: UnmapNotify | null }, domid: number, wanted: WantedNotify): void {
    const { file, offset, clearByte, port } = wanted;
    if (port !== null) this.events.hold(domid, port);
    this.drop(holder.notify);
    holder.notify = { file, offset, clearByte, port: port === null ? null : { domid, port } };
  }

  /** A notification runs only where a kernel is left to run it: not for a destroyed domain. */
  end(notify: UnmapNotify | null, ending: Ending): void {
    if (ending === 'process') this.fire(notify);
    else this.drop(notify);
  }

  /** Does what an unmap notification asks: clear the byte, send the event, let go of the port. */
  private fire(notify: UnmapNotify | null): void {
    if (!notify) return;
    // Each part even if another fails (say the page file was removed by hand): the port hold must go.
    runAll(
      () => notify.clearByte && clearByte(notify.file, notify.offset),
      () => notify.port && this.events.signal(notify.port.domid, notify.port.port),
      () => this.drop(notify),
    );
  }

  private drop(notify: UnmapNotify | null): void {
    if (notify?.port) this.events.release(notify.port.domid, notify.port.port);
  }
}

function clearByte(file: string, offset: number): void {
  const fd = openSync(file, 'r+');
  try {
    writeSync(fd, Buffer.of(0), 0, 1, offset);
  } finally {
    closeSync(fd);
  }
}
