import { closeSync, existsSync } from 'node:fs';
import { parseArgs } from 'node:util';
import type { SimDomainDestroyed } from '@xen-vchan/sim';
import { EXIT, parseDomid, UsageError, type Command } from './command.js';

type Sim = typeof import('@xen-vchan/sim');

function daemonRunning({ simFiles, simAddon }: Sim, directory: string): boolean {
  const socket = simFiles(directory).socket;
  if (!existsSync(socket)) return false;
  try {
    closeSync(simAddon.connectUnix(socket));
    return true;
  } catch {
    return false;
  }
}

export const simCommand: Command = {
  name: 'sim',
  summary: "start, stop or inspect the simulation's daemon (domains, grants, ports, clients); destroy a domain",
  usage: `usage: vchan sim <start|stop|status> [options]
       vchan sim destroy <domid> [options]

  start          start the simulation's daemon (it keeps running until stopped)
  stop           stop it; it removes its state (grant pages, port tables, wake-up FIFOs)
  status         what is in use: domains, grants, event-channel ports, client processes;
                 anything listed after every user exited is a leak
  destroy DOMID  end a domain as \`xl destroy\` or a crash does: its processes are killed
                 (SIGKILL), no unmap notification runs, its peers' ports turn unbound with
                 no event, its XenStore nodes go (@releaseDomain fires); pages others map
                 stay until they unmap. Domain 0 cannot be destroyed; exit 1 on refusal

      --dir DIR  the state folder (default $XEN_VCHAN_SIM_DIR or /dev/shm/xen-vchan-sim-<uid>)
      --json     status (or what destroy did) as JSON
  -h, --help     this text`,
  async run(argv) {
    const { values, positionals } = parseArgs({
      args: argv,
      allowPositionals: true,
      options: { dir: { type: 'string' }, json: { type: 'boolean' }, help: { type: 'boolean', short: 'h' } },
    });
    const action = positionals[0];
    // Loaded here, not at the top: the other commands run on real Xen, where the simulation and
    // its addon have no business being loaded.
    const sim = await import('@xen-vchan/sim');
    const { SimConnection, destroySimDomain } = sim;
    const directory = sim.simDirectory(values.dir);
    switch (action) {
      case 'start': {
        process.env.XEN_VCHAN_SIM_IDLE_MS ??= '0';
        const connection = SimConnection.open(directory);
        const { daemonPid } = connection.call('status', {});
        connection.close();
        process.stdout.write(`sim daemon ${daemonPid} serves ${directory}\n`);
        return EXIT.ok;
      }
      case 'stop': {
        if (!daemonRunning(sim, directory)) {
          process.stdout.write(`no sim daemon runs for ${directory}\n`);
          return EXIT.ok;
        }
        SimConnection.open(directory).call('stop', {});
        process.stdout.write(`stopped the sim daemon of ${directory}\n`);
        return EXIT.ok;
      }
      case 'status': {
        if (!daemonRunning(sim, directory)) {
          if (values.json) process.stdout.write(`${JSON.stringify({ running: false, directory })}\n`);
          else process.stdout.write(`no sim daemon runs for ${directory} (nothing is in use)\n`);
          return EXIT.ok;
        }
        const connection = SimConnection.open(directory);
        const status = connection.call('status', {});
        connection.close();
        const clients = status.clients.filter((client) => client.pid !== process.pid);
        if (values.json) {
          process.stdout.write(`${JSON.stringify({ running: true, ...status, clients }, null, 2)}\n`);
          return EXIT.ok;
        }
        const lines = [
          `sim daemon ${status.daemonPid} serves ${status.directory}`,
          `clients: ${clients.length === 0 ? 'none' : clients.map((client) => `pid ${client.pid} (${client.handles} handles)`).join(', ')}`,
          'domains:',
          ...status.domains.map(
            (domain) =>
              `  ${String(domain.domid).padStart(5)}  grants ${domain.grants}/${domain.limit}  ports ${domain.ports}${destroyedNote[domain.state] ?? ''}`,
          ),
          `grants: ${status.grants.length}`,
          ...status.grants.map(
            (grant) =>
              `  domain ${grant.domid} ref ${grant.ref} -> domain ${grant.grantee} ${grant.writable ? 'rw' : 'ro'}, mapped ${grant.mappedBy}x${grant.released ? ', released by its owner' : ''}`,
          ),
          `ports: ${status.ports.length}`,
          ...status.ports.map(
            (port) =>
              `  domain ${port.domid} port ${port.port} ${port.state} -> domain ${port.remoteDomain}${port.state === 'interdomain' ? ` port ${port.remotePort}` : ''}`,
          ),
        ];
        process.stdout.write(`${lines.join('\n')}\n`);
        return EXIT.ok;
      }
      case 'destroy': {
        if (positionals.length !== 2) throw new UsageError('say which domain to destroy: vchan sim destroy <domid>');
        const domid = parseDomid(positionals[1], 'the domain to destroy');
        if (!daemonRunning(sim, directory)) {
          process.stdout.write(`no sim daemon runs for ${directory}: there is no domain ${domid} to destroy\n`);
          return EXIT.ok;
        }
        try {
          const destroyed = destroySimDomain(domid, { simDirectory: directory });
          process.stdout.write(values.json ? `${JSON.stringify(destroyed)}\n` : `${destroyedLine(destroyed)}\n`);
        } finally {
          SimConnection.open(directory).close();
        }
        return EXIT.ok;
      }
      default:
        throw new UsageError(`say start, stop, status or destroy${action ? `, not ${action}` : ''}`);
    }
  },
};

/** Status notes by domain state; a daemon from before domain destruction gives no state. */
const destroyedNote: Record<string, string> = { zombie: '  destroyed, its pages still mapped by others', gone: '  destroyed' };

function destroyedLine(destroyed: SimDomainDestroyed): string {
  const plural = (count: number, what: string) => `${count} ${what}${count === 1 ? '' : 's'}`;
  const killed = destroyed.killed.length === 0 ? 'killed no process' : `killed pid ${destroyed.killed.join(', ')}`;
  return (
    `destroyed domain ${destroyed.domid}: ${killed}; closed ${plural(destroyed.handlesClosed, 'handle')} and ${plural(destroyed.portsClosed, 'port')} ` +
    `without unmap notifications; ${plural(destroyed.grantsStillMapped, 'grant')} still mapped by others; ` +
    `removed ${plural(destroyed.xenstoreNodesRemoved, 'XenStore node')}`
  );
}
