#!/usr/bin/env bash
# `pnpm test:xen`: run the conformance suite and the Xen smoke test inside a real Xen dom0.
#
# usage: test/xen/run.sh [extra vitest arguments, e.g. a file filter or -t NAME]
# Needs: root, `pnpm install` (and the build) done on the host; everything Xen-side is
# prepared by setup.sh, which this calls first (a no-op once the cache is ready).
# Exit status: vitest's (non-zero when a test fails), 124 if the guest timed out, 125 if dom0
# never reported a status, 2 for setup/usage errors.
set -uo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

t_begin=$(xen_now)
bash "$XEN_HARNESS_DIR/setup.sh" || exit 2
t_setup=$(xen_now)

vitest_bin=node_modules/.bin/vitest
[ -x "$XEN_PROJECT_ROOT/$vitest_bin" ] ||
  xen_die "$XEN_PROJECT_ROOT/$vitest_bin not found: run pnpm install first"

# vitest writes a JSON report here (shared into dom0) so the summary below does not depend on
# parsing the human-readable output.
results=$(mktemp -d "${TMPDIR:-/tmp}/xen-vchan-results.XXXXXX")
trap 'rm -rf "$results"' EXIT

# The Xen benchmark writes its JSON where the project is shared (bench-results/ by default).
bench_env=(-e "XEN_VCHAN_BENCH_JSON=${XEN_VCHAN_BENCH_JSON:-bench-results/xen-bench.json}")
# Knobs of the bench, the two-domain tests and the experiments, passed on when set.
for name in XEN_VCHAN_BENCH_MIB XEN_VCHAN_BENCH_REPS XEN_VCHAN_DOMAINS_MIB \
            XEN_VCHAN_EXPERIMENTS XEN_VCHAN_PD_MEM XEN_VCHAN_PD_REPS XEN_VCHAN_PD_KERNEL_ARGS; do
  [ -n "${!name:-}" ] && bench_env+=(-e "$name=${!name}")
done
bash "$XEN_HARNESS_DIR/run-in-dom0.sh" -w "$results" -e XEN_VCHAN_BACKEND=xen "${bench_env[@]}" -- \
  "$vitest_bin" run --config test/xen/vitest.xen.config.ts \
  --reporter=verbose --reporter=json --outputFile.json="$results/vitest.json" "$@"
status=$?
t_end=$(xen_now)

summary=""
if [ -s "$results/vitest.json" ]; then
  summary=$(node -e '
    const r = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
    const skipped = r.numPendingTests + r.numTodoTests;
    // A file that fails as a whole (an import error, a failing hook) has no failed test of its own.
    const failedFiles = r.testResults.filter((file) => file.status === "failed").length;
    const files = failedFiles > 0 ? `, ${failedFiles} of ${r.testResults.length} files failed` : "";
    console.log(`${r.numPassedTests} passed, ${r.numFailedTests} failed, ${skipped} skipped${files}`);
    // Where the time went, slowest file first (TCG makes this the thing to watch in CI).
    const root = process.argv[2] + "/";
    for (const file of [...r.testResults].sort((a, b) => (b.endTime - b.startTime) - (a.endTime - a.startTime))) {
      const seconds = ((file.endTime - file.startTime) / 1000).toFixed(1).padStart(6);
      console.log(`xen:   ${seconds} s  ${file.name.replace(root, "")} (${file.assertionResults.length} tests, ${file.status})`);
    }
  ' "$results/vitest.json" "$XEN_PROJECT_ROOT")
fi
if [ -n "$summary" ]; then
  echo "xen: $summary"
else
  xen_log "no test report from dom0"
  [ $status = 0 ] && status=125
fi
xen_log "total wall $(xen_secs "$t_begin" "$t_end") s (setup $(xen_secs "$t_begin" "$t_setup") s, dom0 run $(xen_secs "$t_setup" "$t_end") s), exit status $status"
exit $status
