// The job agent of the second guest (started by init.sh as the domU's only long-lived process).
// dom0 has no shell in the guest, so it hands over jobs through XenStore, under the guest's own
// home, with the project's XenStore client over /dev/xen/xenbus:
//
//   data/agent/ready         written once at start: { node, uptime }
//   data/agent/jobs/<n>      dom0 writes { argv, env } to start job n (argv[0] is looked up on PATH)
//   data/agent/started/<n>   we write { pid } once it runs
//   data/agent/kill/<n>      dom0 writes a signal name to have job n killed
//   data/agent/done/<n>      we write { code, signal, output } when it ends; output is the last
//                            OUTPUT_TAIL bytes of its stdout and stderr as they came
//
// Every line a job prints also goes to the guest's console (dom0's xenconsoled logs it), so a
// failure can be read in full. dom0 may write anywhere; the guest owns data/ and may read it.
import { spawn } from 'node:child_process';
import { openXenStore } from '@xen-vchan/xenstore';

/** xenstored 4.17 refuses guests' values over 2048 bytes by default; records stay under this, encoded. */
const RECORD_LIMIT = 1900;
const OUTPUT_TAIL = 1500;

const xenstore = await openXenStore();
const self = await xenstore.ownDomid();
const base = `/local/domain/${self}/data/agent`;
/**
 * Every job seen, by its number; null for one that could not start.
 * @type {Map<string, import('node:child_process').ChildProcess | null>}
 */
const jobs = new Map();

/** @typedef {{ argv: string[]; env?: Record<string, string> }} JobRequest */
/** @typedef {{ code: number | null; signal: NodeJS.Signals | null; output: string }} JobDone */

/** @param {string} text */
function tail(text) {
  const bytes = Buffer.from(text);
  return bytes.length <= OUTPUT_TAIL ? text : bytes.subarray(bytes.length - OUTPUT_TAIL).toString('utf8');
}

/**
 * Writes a record; an output tail that grows too long once encoded is cut until it fits.
 * @param {string} id
 * @param {'started' | 'done'} key
 * @param {{ pid: number | undefined } | JobDone} value
 */
async function report(id, key, value) {
  let record = JSON.stringify(value);
  while (Buffer.byteLength(record) > RECORD_LIMIT && 'output' in value && value.output) {
    value = { ...value, output: value.output.slice(Math.ceil(value.output.length / 4)) };
    record = JSON.stringify(value);
  }
  try {
    await xenstore.write(`${base}/${key}/${id}`, record);
  } catch (error) {
    console.log(`agent: cannot write ${key}/${id}: ${/** @type {Error} */ (error).message}`);
    // dom0 waits for done/<n>: it gets one, without the output, rather than a timeout.
    if (key === 'done') await xenstore.write(`${base}/${key}/${id}`, JSON.stringify({ ...value, output: '' })).catch(() => {});
  }
}

/**
 * @param {string} id
 * @param {JobRequest} request
 */
function start(id, request) {
  let output = '';
  const child = spawn(request.argv[0], request.argv.slice(1), {
    env: { ...process.env, ...request.env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  jobs.set(id, child);
  const collect = (/** @type {Buffer} */ chunk) => {
    const text = chunk.toString('utf8');
    output = tail(output + text);
    for (const line of text.split('\n')) if (line) console.log(`[job ${id}] ${line}`);
  };
  child.stdout.on('data', collect);
  child.stderr.on('data', collect);
  child.on('spawn', () => void report(id, 'started', { pid: child.pid }));
  child.on('error', (error) => {
    output = tail(`${output}agent: cannot start ${request.argv[0]}: ${error.message}\n`);
  });
  child.on('close', (code, signal) => void report(id, 'done', { code, signal, output }));
}

async function scan() {
  const names = await xenstore.directory(`${base}/jobs`).catch(() => []);
  for (const id of names) {
    if (jobs.has(id)) continue;
    /** @type {JobRequest} */
    let request;
    try {
      request = JSON.parse(await xenstore.read(`${base}/jobs/${id}`));
    } catch (error) {
      jobs.set(id, null);
      await report(id, 'done', { code: null, signal: null, output: `agent: bad job ${id}: ${/** @type {Error} */ (error).message}` });
      continue;
    }
    try {
      start(id, request);
    } catch (error) {
      jobs.set(id, null);
      await report(id, 'done', {
        code: null,
        signal: null,
        output: `agent: cannot start job ${id}: ${/** @type {Error} */ (error).message}`,
      });
    }
  }
  for (const id of await xenstore.directory(`${base}/kill`).catch(() => [])) {
    const child = jobs.get(id);
    if (!child || child.exitCode !== null || child.signalCode !== null) continue;
    const signal = await xenstore.read(`${base}/kill/${id}`).catch(() => 'SIGKILL');
    // A signal name as dom0 wrote it: kill() throws on one it does not know.
    child.kill(/** @type {NodeJS.Signals} */ (signal));
  }
}

await xenstore.write(`${base}/ready`, JSON.stringify({ node: process.version, uptime: process.uptime() }));
console.log(`agent: domain ${self} ready, node ${process.version}`);
// The watch fires once when set and then on every change below base (our own writes included,
// which only cost a rescan).
for await (const _event of await xenstore.watch(base)) await scan();
