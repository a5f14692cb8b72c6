// The report every fuzz part starts from: the fields each has (see PartReport in fuzz.mjs), plus
// the part's own counters.

/**
 * @template {Record<string, number>} C
 * @param {string} part
 * @param {number} seed
 * @param {number} seconds
 * @param {C} counters  the part's own counters, with their starting values
 */
export function startReport(part, seed, seconds, counters) {
  return {
    part,
    seed,
    seconds,
    iterations: 0,
    violations: 0,
    closedByViolation: 0,
    ...counters,
    slowestCloseMs: 0,
    /** @type {Record<string, number>} */
    errors: {},
    /** @type {string[]} */
    failures: [],
  };
}
