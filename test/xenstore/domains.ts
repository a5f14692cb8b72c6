// Other simulated domains, each a separate Node process using the public client, for the
// cross-process XenStore tests. They share the test file's simulation folder through the
// environment that test/support/setup.ts prepared.
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('../..', import.meta.url));

export class DomainError extends Error {
  constructor(
    message: string,
    readonly code: string | undefined,
  ) {
    super(message);
  }
}

const program = (domid: number, body: string) => `
  import { openXenStore } from '@xen-vchan/xenstore';
  const xs = await openXenStore({ domid: ${domid} });
  try {
    const result = await (async () => { ${body} })();
    console.log(JSON.stringify({ ok: result ?? null }));
  } catch (error) {
    console.log(JSON.stringify({ error: { code: error.code, message: error.message } }));
  } finally {
    xs.close();
  }
`;

/**
 * Runs `body` (the body of an async function with `xs`, an open XenStore of domain `domid`) in a
 * new process; resolves with what it returns, or rejects with its error and code.
 */
export function inDomain<T = unknown>(domid: number, body: string): Promise<T> {
  return new Promise((resolve, reject) => {
    execFile(
      process.execPath,
      ['--input-type=module', '-e', program(domid, body)],
      { cwd: root, env: process.env },
      (error, stdout, stderr) => {
        if (error) {
          reject(new Error(`domain ${domid} process failed: ${error.message}\n${stderr}`));
          return;
        }
        const outcome = JSON.parse(stdout.trim().split('\n').pop()!) as { ok?: T; error?: { code?: string; message: string } };
        if (outcome.error) reject(new DomainError(outcome.error.message, outcome.error.code));
        else resolve(outcome.ok as T);
      },
    );
  });
}

/**
 * A long-running process of domain `domid` that runs `body` (with `xs` and `emit(value)`, which
 * prints a JSON line) and then stays until killed; `lines` yields what it emits.
 */
export function startDomain(
  domid: number,
  body: string,
): { child: ChildProcess; lines: AsyncIterableIterator<unknown>; stop(): Promise<void> } {
  const code = `
    import { openXenStore } from '@xen-vchan/xenstore';
    const xs = await openXenStore({ domid: ${domid} });
    const emit = (value) => console.log(JSON.stringify(value));
    ${body}
  `;
  const child = spawn(process.execPath, ['--input-type=module', '-e', code], {
    cwd: root,
    env: process.env,
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const reader = createInterface({ input: child.stdout! });
  async function* parse() {
    for await (const line of reader) yield JSON.parse(line) as unknown;
  }
  return {
    child,
    lines: parse(),
    async stop() {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      await exited;
    },
  };
}
