// The IPC side of every peer process: runs the command the test process names, with its
// arguments, and sends back the result or the error (message and code).
//
// Each command states the arguments it takes; they arrive as the test process sent them (see
// Peer.call in peer.mjs), which is where the arguments are taken on trust.
/** @typedef {{ seq: number; command: string; args?: Record<string, unknown> }} AgentCall */

/**
 * @param {Record<string, (args: never) => unknown>} commands
 */
export function serveCommands(commands) {
  const send = process.send?.bind(process);
  if (!send) throw new Error('an agent needs an IPC channel: start it with Peer.start (peer.mjs)');
  process.on('message', async (/** @type {AgentCall} */ { seq, command, args }) => {
    try {
      send({ seq, result: await commands[command](/** @type {never} */ (args ?? {})) });
    } catch (error) {
      const { message, code } = /** @type {NodeJS.ErrnoException} */ (error);
      send({ seq, error: { message, code } });
    }
  });
  send({ ready: true });
}
