/**
 * Progress on stderr: a one-line bar redrawn in place on a terminal, one plain line per finished
 * measurement otherwise (logs, CI, tests).
 */
const WIDTH = 28;

function clock(seconds: number): string {
  const whole = Math.max(0, Math.round(seconds));
  return `${Math.floor(whole / 60)}:${String(whole % 60).padStart(2, '0')}`;
}

export class Progress {
  private done = 0;
  private doneWeight = 0;
  private current: { label: string; weight: number; started: number } | null = null;
  private timer: NodeJS.Timeout | null = null;
  private readonly started = performance.now();
  private readonly tty: boolean;

  constructor(
    private readonly total: number,
    private readonly totalWeight: number,
    private readonly out: NodeJS.WriteStream = process.stderr,
  ) {
    this.tty = Boolean(out.isTTY) && process.env.TERM !== 'dumb';
    if (this.tty) {
      this.timer = setInterval(() => this.draw(), 200);
      this.timer.unref();
    }
  }

  start(label: string, weight: number): void {
    this.current = { label, weight, started: performance.now() };
    this.draw();
  }

  /** One measurement finished; `summary` is its headline figure. */
  finish(summary: string): void {
    const current = this.current;
    this.current = null;
    this.done++;
    this.doneWeight += current?.weight ?? 0;
    // On a terminal the next start() redraws the bar.
    if (!this.tty)
      this.out.write(`[${String(this.done).padStart(String(this.total).length)}/${this.total}] ${current?.label ?? ''}: ${summary}\n`);
  }

  /** Prints a line above the bar (or as is). */
  note(text: string): void {
    if (this.tty) this.out.write('\r\x1b[K');
    this.out.write(`${text}\n`);
    this.draw();
  }

  /** Removes the bar. */
  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    if (this.tty) this.out.write('\r\x1b[K');
  }

  private draw(): void {
    if (!this.tty) return;
    const now = performance.now();
    const elapsed = (now - this.started) / 1000;
    let weight = this.doneWeight;
    if (this.current) weight += Math.min(this.current.weight * 0.95, (now - this.current.started) / 1000);
    const fraction = this.totalWeight > 0 ? Math.min(1, weight / this.totalWeight) : 0;
    const filled = Math.round(fraction * WIDTH);
    const left = fraction > 0.02 ? ` ~${clock((elapsed / fraction) * (1 - fraction))} left` : '';
    const label = this.current ? ` ${this.current.label}` : '';
    const columns = this.out.columns || 100;
    const line = `[${'#'.repeat(filled)}${'-'.repeat(WIDTH - filled)}] ${String(Math.round(fraction * 100)).padStart(3)}% ${this.done}/${this.total} ${clock(elapsed)}${left} |${label}`;
    this.out.write(`\r\x1b[K${line.slice(0, columns - 1)}`);
  }
}
