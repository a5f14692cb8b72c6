// What the tests in test/xen/ share: the project rule is that a test that needs Xen runs under the
// harness and does not quietly skip, so outside it (a plain `vitest run test/xen/...` on the host)
// every such test fails with this message instead of skipping.

import { existsSync } from 'node:fs';

/** True inside the dom0 that test/xen/run.sh (or run-in-dom0.sh) boots. */
export const inDom0 = process.env.XEN_VCHAN_IN_DOM0 === '1';

/** For a beforeEach (a failing beforeAll would report the tests as skipped): throws unless we run in the harness's dom0. */
export function requireDom0(what: string): void {
  if (!inDom0) {
    throw new Error(
      `${what} needs real Xen: run it in the harness's dom0 with \`bash test/xen/run.sh ${what}\` ` +
        '(XEN_VCHAN_IN_DOM0 is not set, so this is not the harness).',
    );
  }
}

/** The libxenvchan test peer (test/interop/vchan-peer.c) that test/xen/setup.sh builds, or '' outside the harness. */
export const interopPeerPath = process.env.XEN_VCHAN_INTEROP_PEER ?? '';

/** For a beforeEach: requireDom0, and throws unless the libxenvchan peer is built. */
export function requireDom0WithPeer(what: string): void {
  requireDom0(what);
  if (!interopPeerPath || !existsSync(interopPeerPath)) {
    throw new Error(
      `the libxenvchan peer is not built (${interopPeerPath || 'XEN_VCHAN_INTEROP_PEER unset'}): test/xen/setup.sh runs test/interop/build.sh`,
    );
  }
}
