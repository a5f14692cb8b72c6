import type { BackendName } from '@xen-vchan/native';

export interface EventChannelEvents {
  /** An event arrived on `port`. The port is now masked: call unmask(port) to hear it again. */
  event: [port: number];
  /** The device failed while waiting for events; the handle should be closed. */
  error: [error: Error];
}

export interface EventChannelOptions {
  /** 'auto' (default): 'xen' when /dev/xen/evtchn exists, else 'sim'. XEN_VCHAN_BACKEND overrides auto. */
  backend?: 'auto' | BackendName;
  /** Simulation only: the domain this handle acts as (default XEN_VCHAN_SIM_DOMID, else 0). */
  domid?: number;
  /** Simulation only: the state folder. */
  simDirectory?: string;
}

export const EVTCHN_DEVICE = '/dev/xen/evtchn';
