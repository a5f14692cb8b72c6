import { errorCode } from '@xen-vchan/native';
import { exitCodeFor, EXIT, UsageError, type Command } from './command.js';
import { listenCommand, connectCommand } from './stdio.js';
import { proxyCommand } from './proxy.js';
import { simCommand } from './sim.js';
import { benchCommand } from './bench/command.js';

const commands: Command[] = [listenCommand, connectCommand, proxyCommand, benchCommand, simCommand];

const usage = `usage: vchan <command> [options]

Shared-memory channels between Xen domains (libxenvchan-compatible), from the shell.

commands:
${commands.map((command) => `  ${command.name.padEnd(9)} ${command.summary}`).join('\n')}

Run \`vchan <command> --help\` for a command's options.
Exit codes: 0 ok, 1 failure, 2 bad command line, 3 timed out, 4 the peer broke the protocol.`;

export async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (name === undefined || name === '--help' || name === '-h' || name === 'help') {
    (name === undefined ? process.stderr : process.stdout).write(`${usage}\n`);
    return name === undefined ? EXIT.usage : EXIT.ok;
  }
  const command = commands.find((candidate) => candidate.name === name);
  if (!command) {
    process.stderr.write(`vchan: unknown command "${name}"\n\n${usage}\n`);
    return EXIT.usage;
  }
  if (rest.includes('--help') || rest.includes('-h')) {
    process.stdout.write(`${command.usage}\n`);
    return EXIT.ok;
  }
  try {
    return await command.run(rest);
  } catch (error) {
    const exitCode = exitCodeFor(error);
    const { message } = error as { message?: string };
    // The line names the code a script could branch on; for our own usage errors the next line,
    // pointing at --help, says more.
    const code = error instanceof UsageError ? undefined : errorCode(error);
    process.stderr.write(`vchan ${name}: ${message ?? String(error)}${code && !message?.includes(code) ? ` (${code})` : ''}\n`);
    if (exitCode === EXIT.usage) process.stderr.write(`Run \`vchan ${name} --help\` for usage.\n`);
    return exitCode;
  }
}
