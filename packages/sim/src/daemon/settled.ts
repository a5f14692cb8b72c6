/**
 * Runs `step` for every item even if some throw, then rethrows the first failure: releasing what
 * a handle or a dead process held must not stop half-way and leak the rest.
 */
export function forEachSettled<T>(items: Iterable<T>, step: (item: T) => void): void {
  let failure: { error: unknown } | null = null;
  for (const item of items) {
    try {
      step(item);
    } catch (error) {
      failure ??= { error };
    }
  }
  if (failure) throw failure.error;
}

/** Runs every step, in order, whatever the others do; rethrows the first failure. */
export function runAll(...steps: (() => unknown)[]): void {
  forEachSettled(steps, (step) => step());
}
