// Builds dist/streamgate.browser.js: the browser entry (src/browser.ts) and everything it
// uses as one ES2020 module with no imports. Deterministic: the same sources and the same
// esbuild (pinned in package-lock.json) give the same bytes, which test/bundle.test.ts
// checks against the committed file.
//
//   node scripts/build-browser.mjs [OUTFILE]

import { readFileSync } from "node:fs";
import { dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { build } from "esbuild";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const outfile = resolve(process.argv[2] ?? resolve(root, "dist/streamgate.browser.js"));
const { version } = JSON.parse(readFileSync(resolve(root, "package.json"), "utf8"));

await build({
  absWorkingDir: root,
  entryPoints: ["src/browser.ts"],
  outfile,
  tsconfig: "tsconfig.json",
  bundle: true,
  format: "esm",
  platform: "browser",
  target: "es2020",
  charset: "utf8",
  legalComments: "none",
  sourcemap: false,
  minify: false,
  logLevel: "warning",
  banner: {
    js:
      `// streamgate ${version}: the Streamgate client for browsers, one ES module, no dependencies.\n` +
      "// Generated from clients/typescript/src by `npm run build`; do not edit.",
  },
});
