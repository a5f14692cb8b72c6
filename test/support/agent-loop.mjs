// The IPC side of every peer process: runs the command the test process names, with its
// arguments, and sends back the result or the error (message and code).
export function serveCommands(commands) {
  process.on('message', async ({ seq, command, args }) => {
    try {
      process.send({ seq, result: await commands[command](args ?? {}) });
    } catch (error) {
      process.send({ seq, error: { message: error.message, code: error.code } });
    }
  });
  process.send({ ready: true });
}
