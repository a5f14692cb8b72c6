// pnpm hooks of this workspace: how a package's manifest differs in its tarball.
module.exports = {
  hooks: {
    /**
     * In the workspace each addon package compiles its addon at `pnpm install` (`install:
     * xen-vchan-build-addon`, a bin of @xen-vchan/native that only the workspace has) and builds its
     * prebuilds at `prepack`. The tarball carries those prebuilds, and its install script is
     * node-gyp-build's, which loads the matching prebuild and exits, and compiles with node-gyp
     * only where none matches. Bins whose file is not packed (native's build tools) are dropped.
     */
    beforePacking(pkg) {
      if (pkg.scripts) {
        const scripts = { ...pkg.scripts };
        delete scripts.prepack;
        if (scripts.install === 'xen-vchan-build-addon') scripts.install = 'node-gyp-build';
        pkg.scripts = scripts;
        if (Object.keys(scripts).length === 0) delete pkg.scripts;
      }
      if (pkg.bin && typeof pkg.bin === 'object') {
        const packed = (file) => (pkg.files ?? []).some((entry) => file.replace(/^\.\//, '').startsWith(`${entry.replace(/\/$/, '')}/`));
        const bin = Object.fromEntries(Object.entries(pkg.bin).filter(([, file]) => packed(file)));
        pkg.bin = bin;
        if (Object.keys(bin).length === 0) delete pkg.bin;
      }
      return pkg;
    },
  },
};
