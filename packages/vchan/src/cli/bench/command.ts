import type { Command } from '../command.js';

export const benchCommand: Command = {
  name: 'bench',
  summary: 'throughput and latency between two processes, against Unix sockets, TCP and a C ring',
  usage: 'usage: vchan bench [options]\n\n(not written yet)',
  async run() {
    process.stderr.write('vchan bench: not written yet\n');
    return 1;
  },
};
