// What the Xen test files share for tidying up after each test: a queue of undo steps run in
// reverse after every test, and removing a XenStore path that may already be gone.
import { execFileSync } from 'node:child_process';
import { afterEach } from 'vitest';

let steps: (() => unknown)[] = [];

/** Runs `step` after the current test, before the ones registered earlier. */
export function onCleanup(step: () => unknown): void {
  steps.push(step);
}

afterEach(async () => {
  const pending = steps.reverse();
  steps = [];
  for (const step of pending) {
    try {
      await step();
    } catch {
      // best effort: a failed test already says what went wrong
    }
  }
});

export function xenstoreRemove(path: string): void {
  try {
    execFileSync('xenstore-rm', [path], { stdio: 'ignore' });
  } catch {
    // already gone
  }
}
